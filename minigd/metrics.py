"""Evaluation: mean loss and the loss's metrics (accuracy, or mse and r2) of a model on data."""

from __future__ import annotations

import numpy as np

from . import _validation as check
from .backend import kernels as _active_kernels
from .losses import Loss, SoftmaxCrossEntropy, loss_and_grad
from .model import Sequential, chunk_rows, evaluating


def _check_model(model):
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a minigd Sequential, got {type(model).__name__}")


def check_loss(loss):
    """``loss``, or a new SoftmaxCrossEntropy for None; TypeError for anything but a Loss."""
    if loss is None:
        return SoftmaxCrossEntropy()
    if not isinstance(loss, Loss):
        raise TypeError(
            f"loss must be a minigd Loss (SoftmaxCrossEntropy or a subclass of "
            f"mg.Loss), got {type(loss).__name__}"
        )
    return loss


def evaluate(
    model: Sequential,
    X: np.ndarray,
    y: np.ndarray,
    chunk_size: int | None = None,
    loss: Loss | None = None,
) -> dict[str, float]:
    """{"loss": mean loss, and the loss's metrics} of ``model`` over all of (X, y), in eval mode
    (the model's mode is restored after).

    With the default SoftmaxCrossEntropy that is {"loss", "accuracy"} (fraction correct); a loss
    with ``target_kind="values"`` gives {"loss", "mse", "r2"} (see :meth:`minigd.Loss.metrics`).
    X is read ``chunk_size`` rows at a time (default: 4096, fewer for wide rows, ~16 MiB); the
    mean loss is the sample-weighted mean of the chunks' losses, and the metrics are computed
    once over all outputs (kept: N x n_outputs values of the model's dtype).

    Parameters
    ----------
    model : Sequential
    X : array-like (N, features); may be an np.memmap (read in chunks, never copied)
    y : targets of the loss: class ids (N,), or real values (N,) / (N, n_outputs)
    chunk_size : int >= 1 or None, default None
    loss : Loss or None, default None (SoftmaxCrossEntropy)
    """
    _check_model(model)
    loss = check_loss(loss)
    chunk_size = (
        chunk_rows(model.n_features, model.dtype)
        if chunk_size is None
        else check.positive_int("chunk_size", chunk_size)
    )
    X = model.check_input(X, "X")
    y = loss.check_targets(y, X.shape[0], model.n_outputs)
    kernels = _active_kernels()
    n = X.shape[0]
    grad = np.empty((min(chunk_size, n), model.n_outputs), dtype=model.dtype)
    outputs = np.empty((n, model.n_outputs), dtype=model.dtype)
    targets_dtype = np.int64 if y.ndim == 1 else model.dtype  # ids, or values/probabilities
    total_loss = 0.0
    with evaluating(model):
        for start in range(0, n, chunk_size):
            xb = np.ascontiguousarray(X[start : start + chunk_size], dtype=model.dtype)
            yb = np.ascontiguousarray(y[start : start + chunk_size], dtype=targets_dtype)
            logits = model.forward_batch(xb, kernels)
            outputs[start : start + len(yb)] = logits
            total_loss += loss_and_grad(loss, logits, yb, grad[: len(yb)], kernels) * len(yb)
    return {"loss": total_loss / n, **loss.metrics(outputs, y)}


def accuracy(model: Sequential, X: np.ndarray, y: np.ndarray) -> float:
    """Fraction of rows of X whose predicted class equals y."""
    _check_model(model)
    X = model.check_input(X, "X")
    y = check.labels("y", y, X.shape[0], model.n_outputs)
    return float(np.mean(model.predict(X) == y))
