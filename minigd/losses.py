"""Losses: the Loss base class (value and gradient, target kind, metrics) and SoftmaxCrossEntropy.

A loss of your own subclasses :class:`Loss`, sets ``target_kind`` and writes
``value_and_grad(outputs, targets) -> (mean loss, d loss / d outputs)`` in NumPy; ``fit``,
``evaluate`` and the callbacks then take it like a built-in (it trains on the per-iteration
path; only SoftmaxCrossEntropy has a fused whole-epoch kernel).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from . import _validation as check
from .backend import kernels as _active_kernels
from .hooks import hooks_apply

TARGET_KINDS = ("classes", "values")


class Loss:
    """Base class of every loss: mean over the batch of a per-sample loss of the model's outputs.

    Class attributes
    ----------------
    name : str or None, default None
        Registry name (``"softmax_cross_entropy"``); a subclass may set one.
    target_kind : {"classes", "values"}, default "values"
        "classes": targets are integer class ids in [0, n_outputs), shape (N,), gathered as
        int64. "values": targets are real numbers of shape (N,) (a model with one output) or
        (N, n_outputs), gathered as floats of the model's dtype; a 1-D y reaches the loss as
        (batch, 1), so targets always have the outputs' shape.
    metric_names : tuple of str
        The keys of :meth:`metrics`: ("accuracy",) for "classes", ("mse", "r2") for "values".
        ``fit`` records each as ``val_<name>`` per epoch when it has validation data.

    What a subclass writes
    ----------------------
    ``value_and_grad(self, outputs, targets) -> (float, ndarray)``: the mean loss of the batch and
    its gradient with respect to ``outputs`` (same shape as outputs), in NumPy.

    Example
    -------
    >>> class MSE(mg.Loss):
    ...     target_kind = "values"
    ...     def value_and_grad(self, outputs, targets):
    ...         diff = outputs - targets
    ...         return float(np.mean(diff ** 2)), 2 * diff / diff.size
    """

    name: str | None = None
    target_kind = "values"

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Names of the metrics :meth:`metrics` returns (they follow ``target_kind``)."""
        return ("accuracy",) if self.target_kind == "classes" else ("mse", "r2")

    def value_and_grad(self, outputs: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
        """(mean loss as a float, d loss / d outputs): the math a subclass writes, in NumPy."""
        raise NotImplementedError(
            f"{type(self).__name__} must define value_and_grad(outputs, targets) -> (float, grad)"
        )

    def value_and_grad_into(self, outputs, targets, grad_out, kernels):
        """Mean loss (float); writes d loss / d outputs into ``grad_out`` (outputs' shape).

        The engine hook that ``fit`` calls once per iteration with a reused ``grad_out``; the
        default calls :meth:`value_and_grad` and copies its gradient. ``kernels`` is the active
        backend's kernel namespace (built-ins use it; the default ignores it).
        """
        value, grad = self.value_and_grad(outputs, targets)
        grad = np.asarray(grad)
        if grad.shape != grad_out.shape:
            raise ValueError(
                f"{type(self).__name__}.value_and_grad returned a gradient of shape "
                f"{grad.shape}; it must have the outputs' shape {grad_out.shape}"
            )
        grad_out[...] = grad
        return float(value)

    def check_targets(self, y: Any, n_samples: int, n_outputs: int, name: str = "y") -> np.ndarray:
        """``y`` checked for this loss: int64 class ids (N,) or a real array (N, n_outputs).

        Raises ValueError (TypeError for a wrong dtype) naming the argument, the loss and the
        form it expects. Values targets are not copied: a (N,) array comes back as an (N, 1)
        view, a memmap stays a memmap.
        """
        try:
            if self.target_kind == "classes":
                return check.labels(name, y, n_samples, n_outputs)
            return check.values(name, y, n_samples, n_outputs)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{exc}. {self.expected_targets(n_outputs)}") from None

    def expected_targets(self, n_outputs):
        """One sentence: this loss and the targets it takes (used in error messages)."""
        if self.target_kind == "classes":
            return (
                f"Loss {type(self).__name__} takes integer class ids in [0, {n_outputs}), "
                f"shape (N,)"
            )
        shape = "(N,) or (N, 1)" if n_outputs == 1 else f"(N, {n_outputs})"
        return (
            f"Loss {type(self).__name__} takes real-valued targets of shape {shape}, one per "
            f"model output"
        )

    def metrics(self, outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        """Dict of the metrics of ``outputs`` against ``targets``, over all the rows given.

        "classes": {"accuracy": fraction whose largest output is the target class}.
        "values": {"mse": mean squared error over all entries, "r2": coefficient of
        determination 1 - SSE / SST, both summed over all outputs (sklearn's ``r2_score``,
        with ``multioutput="variance_weighted"`` for several outputs; NaN for constant
        targets)}.
        """
        if self.target_kind == "classes":
            if np.ndim(targets) == 2:  # class probabilities: the most likely class
                targets = np.asarray(targets).argmax(axis=1)
            correct = np.count_nonzero(outputs.argmax(axis=1) == targets)
            return {"accuracy": correct / outputs.shape[0]}
        outputs = np.asarray(outputs, dtype=np.float64)
        targets = np.asarray(targets, dtype=np.float64).reshape(outputs.shape)
        sse = float(np.sum((outputs - targets) ** 2))
        sst = float(np.sum((targets - targets.mean(axis=0)) ** 2))
        return {"mse": sse / outputs.size, "r2": 1.0 - sse / sst if sst > 0 else float("nan")}

    def fused_role(self):
        """None: this loss has no fused whole-epoch kernel (only built-ins declare one)."""
        return None

    def __repr__(self):
        return f"{type(self).__name__}()"


class SoftmaxCrossEntropy(Loss):
    """Mean cross-entropy of softmax(logits) against integer class labels or class probabilities.

    loss = (1/n) sum_i [ log sum_j exp(z_ij) - z_i,y_i ];   dloss/dz = (softmax(z) - onehot(y)) / n

    Targets are class ids of shape (N,), or class probabilities of shape (N, C) (one-hot or
    soft labels: each row >= 0 and summing to 1 within 1e-4), as torch's ``cross_entropy``
    with probability targets: loss = -(1/n) sum_ij t_ij log softmax(z)_ij, dloss/dz =
    (softmax(z) * sum_j t_ij - t) / n. Probability targets train on the per-iteration path.

    The mean over the batch matches ``torch.nn.CrossEntropyLoss()`` (reduction="mean").
    ``forward`` computes the gradient in the same pass; ``backward`` returns it.
    """

    name = "softmax_cross_entropy"
    target_kind = "classes"

    def __init__(self) -> None:
        self._grad = np.empty((0, 0))
        self._n = None

    def check_targets(self, y: Any, n_samples: int, n_outputs: int, name: str = "y") -> np.ndarray:
        """Class ids (N,) as int64, or class probabilities (N, n_outputs) returned without a
        copy (rows >= 0 summing to 1 within 1e-4); ValueError/TypeError otherwise."""
        if getattr(y, "ndim", np.ndim(y)) != 2:
            return super().check_targets(y, n_samples, n_outputs, name)
        expected = self.expected_targets(n_outputs)
        try:
            y = check.values(name, y, n_samples, n_outputs)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{exc}. {expected}") from None
        for start in range(0, y.shape[0], 65536):
            block = np.asarray(y[start : start + 65536], dtype=np.float64)
            if (block < 0).any():
                row = start + int(np.argmax((block < 0).any(axis=1)))
                raise ValueError(f"{name} row {row} has a negative probability. {expected}")
            bad = np.abs(block.sum(axis=1) - 1.0) > 1e-4
            if bad.any():
                row = start + int(np.argmax(bad))
                raise ValueError(
                    f"{name} row {row} sums to {block[row - start].sum():.6g}, not 1. {expected}"
                )
        return y

    def expected_targets(self, n_outputs):
        """One sentence: the targets this loss takes (class ids or class probabilities)."""
        return (
            f"Loss {type(self).__name__} takes integer class ids in [0, {n_outputs}) of "
            f"shape (N,), or class probabilities of shape (N, {n_outputs}) whose rows are "
            f">= 0 and sum to 1"
        )

    def value_and_grad_into(self, outputs, targets, grad_out, kernels):
        """Mean loss; the gradient goes into ``grad_out`` through the backend's fused kernel
        (class ids) or NumPy (class probabilities)."""
        if targets.ndim == 2:
            return _probability_cross_entropy(outputs, targets, grad_out)
        return kernels.softmax_cross_entropy(outputs, targets, grad_out)

    def value_and_grad(self, outputs: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
        """(mean loss, gradient) of logits ``outputs`` against class ids ``targets`` (new array)."""
        value = SoftmaxCrossEntropy.forward(self, outputs, targets)
        return value, self.backward()

    def _forward_backward(self, logits, labels, kernels=None):
        """Loss of a batch (float); the gradient stays in a reused buffer, returned by _gradient."""
        kernels = kernels or _active_kernels()
        n, k = logits.shape
        if self._grad.shape[0] < n or self._grad.shape[1] != k or self._grad.dtype != logits.dtype:
            self._grad = np.empty((max(n, self._grad.shape[0]), k), dtype=logits.dtype)
        self._n = n
        return self.value_and_grad_into(logits, labels, self._grad[:n], kernels)

    def _gradient(self):
        return self._grad[: self._n]

    def forward(self, logits: np.ndarray, y: npt.ArrayLike) -> float:
        """Mean loss (a Python float) of ``logits`` (n, classes) against labels ``y`` (n,) or
        class probabilities (n, classes)."""
        logits = np.asarray(check.features("logits", logits))
        if logits.dtype.type not in (np.float32, np.float64):
            logits = logits.astype(np.float64)
        y = self.check_targets(y, logits.shape[0], logits.shape[1])
        if y.ndim == 2:
            y = np.asarray(y, dtype=logits.dtype)
        return self._forward_backward(np.ascontiguousarray(logits), np.ascontiguousarray(y))

    __call__ = forward

    def backward(self) -> np.ndarray:
        """d(mean loss)/d(logits) of the last forward, shape (n, classes) (a new array)."""
        if self._n is None:
            raise RuntimeError("backward() needs a forward() first")
        return self._gradient().copy()

    def fused_role(self):
        """ "softmax_cross_entropy": the fused epoch kernel computes this loss itself (None for
        a subclass that overrides the math, which then runs on the per-iteration path)."""
        cls = type(self)
        if (
            cls.value_and_grad_into is not SoftmaxCrossEntropy.value_and_grad_into
            or cls.value_and_grad is not SoftmaxCrossEntropy.value_and_grad
        ):
            return None
        return "softmax_cross_entropy"


class MSELoss(Loss):
    """Mean squared error over all elements, as ``torch.nn.MSELoss()`` (reduction="mean").

    loss = (1 / (N k)) sum_ij (o_ij - t_ij)^2,   d loss / d o = 2 (o - t) / (N k)   (o the
    outputs, t the targets)

    Targets are real numbers of shape (N,) for a model with one output or (N, k) for k outputs
    (``target_kind = "values"``); ``fit`` and ``evaluate`` record ``mse`` and ``r2`` with it.
    Training runs on the per-iteration path, with the backend's ``mse_loss`` kernel writing the
    gradient into a reused buffer (no allocation per iteration).

    Example
    -------
    >>> X, y = mg.datasets.make_regression(n_samples=500, n_features=8, noise=0.1, seed=0)
    >>> model = mg.Sequential(mg.Dense(8, 32), mg.ReLU(), mg.Dense(32, 1), seed=0)
    >>> history = mg.fit(model, X, y, optimizer=mg.Adam(model.parameters(), lr=1e-2),
    ...                  loss=mg.MSELoss(), epochs=20, batch_size=32, seed=0)
    """

    name = "mse"
    target_kind = "values"

    def value_and_grad(self, outputs: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
        """(mean squared error, its gradient 2 (outputs - targets) / size) in NumPy (new array)."""
        outputs = np.asarray(outputs)
        if outputs.dtype.type not in (np.float32, np.float64):
            outputs = outputs.astype(np.float64)
        targets = np.asarray(targets, dtype=outputs.dtype)
        if targets.shape != outputs.shape:
            if targets.ndim == 1 and outputs.ndim == 2 and outputs.shape[1] == 1:
                targets = targets.reshape(-1, 1)
            else:
                raise ValueError(
                    f"MSELoss: targets of shape {targets.shape} do not match "
                    f"outputs of shape {outputs.shape}; give (N,) for one output "
                    f"or (N, k) for k outputs"
                )
        diff = outputs - targets
        return float(np.mean(diff * diff)), diff * (2.0 / diff.size)

    def value_and_grad_into(self, outputs, targets, grad_out, kernels):
        """Mean loss; the gradient goes into ``grad_out`` through the backend's mse kernel (a
        subclass that overrides ``value_and_grad`` gets its own math instead: see
        :func:`loss_and_grad`)."""
        return float(kernels.mse_loss(outputs, targets, grad_out))

    def __call__(self, outputs: np.ndarray, targets: np.ndarray) -> float:
        """The mean squared error of ``outputs`` against ``targets`` (a float)."""
        return self.value_and_grad(outputs, targets)[0]


def loss_and_grad(loss, outputs, targets, grad_out, kernels):
    """The engine's call for a loss: ``loss.value_and_grad_into(...)``, except for a subclass of a
    built-in that rewrote :meth:`Loss.value_and_grad` only, which gets the math it wrote (the
    rule of :mod:`minigd.hooks`)."""
    if hooks_apply(type(loss), ("value_and_grad_into",), ("value_and_grad",)):
        return loss.value_and_grad_into(outputs, targets, grad_out, kernels)
    return Loss.value_and_grad_into(loss, outputs, targets, grad_out, kernels)


def _probability_cross_entropy(logits, targets, grad_out):
    """Mean of -sum_j t_ij log softmax(z)_ij; grad_out = (softmax(z) * sum_j t_ij - t) / n."""
    n = logits.shape[0]
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(z).sum(axis=1, keepdims=True))
    log_p = z - log_sum
    t = np.asarray(targets, dtype=np.float64)
    value = float(-(t * log_p).sum() / n)
    grad_out[...] = (np.exp(log_p) * t.sum(axis=1, keepdims=True) - t) / n
    return value
