"""Softmax cross-entropy, fused with its gradient."""
import numpy as np

from . import _validation as check
from .backend import kernels as _active_kernels


class SoftmaxCrossEntropy:
    """Mean cross-entropy of softmax(logits) against integer class labels.

    loss = (1/n) sum_i [ log sum_j exp(z_ij) - z_i,y_i ];   dloss/dz = (softmax(z) - onehot(y)) / n

    The mean over the batch matches ``torch.nn.CrossEntropyLoss()`` (reduction="mean").
    ``forward`` computes the gradient in the same pass; ``backward`` returns it.
    """
    name = "softmax_cross_entropy"

    def __init__(self):
        self._grad = np.empty((0, 0))
        self._n = None

    def _forward_backward(self, logits, labels, kernels=None):
        """Loss of a batch (float); the gradient stays in a reused buffer, returned by _gradient."""
        kernels = kernels or _active_kernels()
        n, k = logits.shape
        if self._grad.shape[0] < n or self._grad.shape[1] != k or self._grad.dtype != logits.dtype:
            self._grad = np.empty((max(n, self._grad.shape[0]), k), dtype=logits.dtype)
        self._n = n
        return kernels.softmax_cross_entropy(logits, labels, self._grad[:n])

    def _gradient(self):
        return self._grad[:self._n]

    def forward(self, logits, y):
        """Mean loss (a Python float) of ``logits`` (n, classes) against labels ``y`` (n,)."""
        logits = np.asarray(check.features("logits", logits))
        if logits.dtype.type not in (np.float32, np.float64):
            logits = logits.astype(np.float64)
        y = check.labels("y", y, logits.shape[0], logits.shape[1])
        return self._forward_backward(np.ascontiguousarray(logits), np.ascontiguousarray(y))

    __call__ = forward

    def backward(self):
        """d(mean loss)/d(logits) of the last forward, shape (n, classes) (a new array)."""
        if self._n is None:
            raise RuntimeError("backward() needs a forward() first")
        return self._gradient().copy()

    def __repr__(self):
        return "SoftmaxCrossEntropy()"
