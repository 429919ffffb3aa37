"""Evaluation: accuracy and mean loss of a model on a dataset, computed in chunks."""
import numpy as np

from . import _validation as check
from .backend import kernels as _active_kernels
from .model import Sequential, chunk_rows, evaluating


def _check_model(model):
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a minigd Sequential, got {type(model).__name__}")


def evaluate(model, X, y, chunk_size=None):
    """{"loss": mean softmax cross-entropy, "accuracy": fraction correct} over all of (X, y),
    in eval mode (the model's mode is restored after).

    X is read ``chunk_size`` rows at a time (default: 4096, fewer for wide rows, ~16 MiB).
    """
    _check_model(model)
    chunk_size = (chunk_rows(model.n_features, model.dtype) if chunk_size is None
                  else check.positive_int("chunk_size", chunk_size))
    X = check.features("X", X, model.n_features)
    y = check.labels("y", y, X.shape[0], model.n_outputs)
    kernels = _active_kernels()
    grad = np.empty((min(chunk_size, X.shape[0]), model.n_outputs), dtype=model.dtype)
    total_loss, correct = 0.0, 0
    with evaluating(model):
        for start in range(0, X.shape[0], chunk_size):
            xb = np.ascontiguousarray(X[start:start + chunk_size], dtype=model.dtype)
            yb = np.ascontiguousarray(y[start:start + chunk_size])
            logits = model.forward_batch(xb, kernels)
            correct += int(np.count_nonzero(logits.argmax(axis=1) == yb))
            total_loss += kernels.softmax_cross_entropy(logits, yb, grad[:len(yb)]) * len(yb)
    return {"loss": total_loss / X.shape[0], "accuracy": correct / X.shape[0]}


def accuracy(model, X, y):
    """Fraction of rows of X whose predicted class equals y."""
    _check_model(model)
    X = check.features("X", X, model.n_features)
    y = check.labels("y", y, X.shape[0], model.n_outputs)
    return float(np.mean(model.predict(X) == y))
