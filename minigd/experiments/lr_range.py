"""LR range test (Smith 2017; fastai's ``lr_find``): train a copy of the model while the learning
rate grows every iteration, and read a good learning rate off the loss curve."""

from __future__ import annotations

import csv
import json
import math
from typing import Callable

import numpy as np

from .. import _validation as check
from .._io import atomic_open
from ..backend import kernels as _active_kernels
from ..data import BatchIterator
from ..model import Sequential
from ..optim import Optimizer
from ..progress import progress_bar
from ..registry import build_optimizer

MODES = ("exp", "linear")
RULES = ("steepest", "min_div_10", "valley")
MAIN_RULE = "min_div_10"
STOP_REASONS = ("completed", "diverged", "non-finite")


def lr_ramp(start_lr, end_lr, num_iter, mode="exp"):
    """The learning rates of the range test: ``num_iter`` values from start_lr to end_lr.

    exp:    lr_i = start_lr * (end_lr / start_lr) ** (i / (num_iter - 1))
    linear: lr_i = start_lr + (end_lr - start_lr) * i / (num_iter - 1)

    Both ends are included (fastai stops one step short of end_lr; here lr_{num_iter-1} = end_lr).
    """
    start_lr = check.real("start_lr", start_lr, low=0.0, low_open=True)
    end_lr = check.real("end_lr", end_lr, low=0.0, low_open=True)
    if not start_lr < end_lr:
        raise ValueError(
            f"start_lr must be smaller than end_lr, got start_lr={start_lr:g}, end_lr={end_lr:g}"
        )
    num_iter = check.positive_int("num_iter", num_iter)
    if num_iter < 2:
        raise ValueError(f"num_iter must be >= 2 (the ramp needs two ends), got {num_iter}")
    mode = check.choice("mode", mode, MODES)
    fraction = np.arange(num_iter) / (num_iter - 1)
    if mode == "exp":
        lrs = start_lr * (end_lr / start_lr) ** fraction
    else:
        lrs = start_lr + (end_lr - start_lr) * fraction
    lrs[-1] = end_lr
    return lrs


def smooth_losses(losses, smooth):
    """Exponential moving average with bias correction (fastai):
    avg_i = smooth * avg_{i-1} + (1 - smooth) * loss_i,  smoothed_i = avg_i / (1 - smooth ** (i+1)).
    ``smooth=0`` returns the raw losses."""
    smooth = check.real("smooth", smooth, low=0.0, high=1.0, high_open=True)
    out = np.empty(len(losses))
    avg = 0.0
    for i, value in enumerate(losses):
        avg = smooth * avg + (1 - smooth) * value
        out[i] = avg / (1 - smooth ** (i + 1))
    return out


# ---- suggestion rules (fastai.callback.schedule: steep, minimum, valley) ------------------------
def steepest(lrs, losses):
    """lr where the loss falls fastest against log(lr): argmin of d loss / d log lr (forward
    differences, the lr at the left end of the steepest segment)."""
    grads = np.diff(losses) / np.diff(np.log(lrs))
    return float(lrs[int(np.argmin(grads))])


def min_div_10(lrs, losses):
    """One tenth of the lr at the minimum loss."""
    return float(lrs[int(np.argmin(losses))] / 10)


def valley(lrs, losses):
    """fastai's valley rule: the longest decreasing subsequence of the loss is the valley; suggest
    the point about 2/3 of the way down it (index start + s + s/2 with s = length / 3)."""
    n = len(losses)
    lengths = np.ones(n, dtype=np.int64)
    max_end = 0
    for i in range(1, n):
        higher = losses[:i] > losses[i]
        if higher.any():
            lengths[i] = lengths[:i][higher].max() + 1
        if lengths[max_end] < lengths[i]:
            max_end = i
    max_start = max_end - lengths[max_end]
    sections = (max_end - max_start) / 3
    index = max_start + int(sections) + int(sections / 2)
    return float(lrs[min(max(index, 0), n - 1)])


SUGGESTION_RULES = {"steepest": steepest, "min_div_10": min_div_10, "valley": valley}


def suggest(lrs, smoothed_loss, num_iter, skip_end=5):
    """{rule: lr} from the smoothed curve, as fastai: drop the first num_iter // 10 points
    (the moving average is still warming up) and the last ``skip_end`` (the blow-up), and any
    non-finite tail. Fewer than 3 points left: use every finite point."""
    lrs = np.asarray(lrs, dtype=float)
    smoothed_loss = np.asarray(smoothed_loss, dtype=float)
    finite = np.isfinite(smoothed_loss)
    n = int(np.argmin(finite)) if not finite.all() else len(finite)
    lrs, smoothed_loss = lrs[:n], smoothed_loss[:n]
    start, end = num_iter // 10, n - skip_end
    if end - start >= 3:
        lrs, smoothed_loss = lrs[start:end], smoothed_loss[start:end]
    if len(lrs) < 2:
        return {rule: math.nan for rule in RULES}
    return {rule: SUGGESTION_RULES[rule](lrs, smoothed_loss) for rule in RULES}


# ---- result --------------------------------------------------------------------------------------
def _json_number(value):
    value = float(value)
    return value if math.isfinite(value) else str(value)


class LRRangeResult:
    """What an LR range test recorded: one entry per iteration, and the suggested learning rates.

    Attributes
    ----------
    lr, loss, smoothed_loss : float64 arrays of equal length (iterations run)
        ``loss[i]`` is the batch loss before the update made with ``lr[i]``, as in History.
    suggestions : dict rule -> lr for "steepest", "min_div_10" and "valley"
    stop_reason : "completed", "diverged" (smoothed loss > diverge_threshold * best) or
        "non-finite" (the last loss is NaN/inf; its update was not applied)
    config : dict of the arguments (seed included, also when drawn fresh)
    """

    def __init__(self, lr, loss, smoothed_loss, suggestions, stop_reason, config):
        self.lr = np.asarray(lr, dtype=np.float64)
        self.loss = np.asarray(loss, dtype=np.float64)
        self.smoothed_loss = np.asarray(smoothed_loss, dtype=np.float64)
        if not len(self.lr) == len(self.loss) == len(self.smoothed_loss):
            raise ValueError("lr, loss and smoothed_loss must have the same length")
        self.suggestions = {rule: float(suggestions[rule]) for rule in RULES}
        self.stop_reason = check.choice("stop_reason", stop_reason, STOP_REASONS)
        self.config = dict(config)

    @property
    def suggestion(self):
        """The main suggestion: "min_div_10" (the steadiest of the three rules on MNIST-like
        problems; see docs/guides/lr_range.md)."""
        return self.suggestions[MAIN_RULE]

    @property
    def n_iterations(self):
        return len(self.lr)

    def to_dict(self):
        return {
            "lr": [_json_number(v) for v in self.lr],
            "loss": [_json_number(v) for v in self.loss],
            "smoothed_loss": [_json_number(v) for v in self.smoothed_loss],
            "suggestions": {k: _json_number(v) for k, v in self.suggestions.items()},
            "stop_reason": self.stop_reason,
            "config": self.config,
        }

    @classmethod
    def from_dict(cls, data):
        arrays = {key: [float(v) for v in data[key]] for key in ("lr", "loss", "smoothed_loss")}
        suggestions = {k: float(v) for k, v in data["suggestions"].items()}
        return cls(
            suggestions=suggestions,
            stop_reason=data["stop_reason"],
            config=data["config"],
            **arrays,
        )

    def to_json(self, path):
        """Write arrays, suggestions, stop reason and config as JSON (atomically)."""
        with atomic_open(path, "w") as handle:
            json.dump(self.to_dict(), handle, indent=1)

    @classmethod
    def from_json(cls, path):
        with open(path) as handle:
            return cls.from_dict(json.load(handle))

    def to_csv(self, path):
        """Write one row per iteration: iteration, lr, loss, smoothed_loss (atomically)."""
        with atomic_open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["iteration", "lr", "loss", "smoothed_loss"])
            for i, row in enumerate(zip(self.lr, self.loss, self.smoothed_loss), start=1):
                writer.writerow([i, *(repr(float(v)) for v in row)])

    def __eq__(self, other):
        return isinstance(other, LRRangeResult) and self.to_dict() == other.to_dict()

    def __repr__(self):
        rules = ", ".join(f"{k}={v:.3g}" for k, v in self.suggestions.items())
        return (
            f"LRRangeResult({self.n_iterations} iterations, lr {self.lr[0]:.3g} -> "
            f"{self.lr[-1]:.3g}, {self.stop_reason}; suggestions: {rules})"
        )


# ---- the test ------------------------------------------------------------------------------------
def _make_optimizer(optimizer, params, lr):
    if isinstance(optimizer, str):
        return build_optimizer(optimizer.lower(), params, lr)  # ValueError: unknown name
    if isinstance(optimizer, Optimizer):
        raise TypeError(
            "optimizer must be 'sgd', 'adam', 'adamw' or a factory params -> "
            "Optimizer (e.g. lambda params: mg.SGD(params, lr=0.1, momentum=0.9)), "
            "got an optimizer instance: it would update your model, not the copy"
        )
    if not callable(optimizer):
        raise TypeError(
            f"optimizer must be 'sgd', 'adam', 'adamw' or a factory params -> "
            f"Optimizer, got {type(optimizer).__name__}"
        )
    built = optimizer(params)
    if not isinstance(built, Optimizer):
        raise TypeError(
            f"the optimizer factory must return a minigd Optimizer, got {type(built).__name__}"
        )
    if {id(p) for p in built.params} != {id(p) for p in params}:
        raise ValueError(
            "the optimizer factory must build the optimizer on the params it is "
            "given (the copy's parameters)"
        )
    return built


def lr_range_test(
    model: Sequential,
    X: np.ndarray,
    y: np.ndarray,
    *,
    optimizer: str | Callable[..., Optimizer] = "sgd",
    start_lr: float = 1e-6,
    end_lr: float = 10.0,
    num_iter: int = 100,
    batch_size: int = 64,
    mode: str = "exp",
    smooth: float = 0.98,
    diverge_threshold: float | None = 4.0,
    seed: int | None = None,
    progress: bool = False,
) -> LRRangeResult:
    """LR range test: train a copy of ``model`` with the lr growing every iteration; the loss
    curve against lr shows where training is fastest and where it blows up.

    lr_i = start_lr * (end_lr / start_lr) ** (i / (num_iter - 1))  ("exp"; "linear" is
    start_lr + (end_lr - start_lr) * i / (num_iter - 1)), one update per mini-batch, epochs
    cycled as needed. The batch losses are smoothed by an exponential moving average with bias
    correction (fastai); the test stops early when smoothed > diverge_threshold * best smoothed
    or a loss is NaN/inf. Suggestions (``result.suggestions``), computed on the smoothed curve
    without its first num_iter // 10 and last 5 points, as fastai:
    "steepest" (most negative d loss / d log lr), "min_div_10" (lr at the minimum / 10; the
    main one, ``result.suggestion``) and "valley" (fastai's default: ~2/3 down the longest
    descending stretch).

    ``model`` is not changed: the test runs on ``model.clone()``.

    On the MNIST sample (784-128-10 ReLU, plain SGD, batch 64) min_div_10 gives 0.05-0.17 over
    10 seeds, steepest 0.28-0.45 and valley 0.008-0.064 (docs/guides/lr_range.md).

    Parameters
    ----------
    model : Sequential
    X : array-like (N, features); y : array-like (N,) class ids
    optimizer : "sgd" | "adam" | "adamw" (default hyperparameters) or a factory
        ``params -> Optimizer`` such as ``lambda p: mg.SGD(p, lr=0.1, momentum=0.9)``
        (its lr is overwritten every iteration), default "sgd"
    start_lr, end_lr : float, 0 < start_lr < end_lr, default 1e-6 and 10
    num_iter : int >= 2, default 100
    batch_size : int >= 1, default 64 (short last batches are dropped while N >= batch_size,
        so every lr sees a full batch)
    mode : "exp" (default) or "linear"
    smooth : float in [0, 1), default 0.98 (0: no smoothing)
    diverge_threshold : float > 1 or None (never stop early), default 4
    seed : int or None, default None; seeds the batch order, so two runs with the same seed
        and the same starting weights are bit-identical (the seed used is in result.config)
    progress : bool, default False; a tqdm bar (hidden when not a terminal)

    Returns
    -------
    LRRangeResult (lr, loss, smoothed_loss, suggestions, stop_reason, config)

    Example
    -------
    >>> X, y, _, _ = mg.datasets.load_mnist_sample()
    >>> model = mg.Sequential(mg.Dense(784, 128), mg.ReLU(), mg.Dense(128, 10), seed=0)
    >>> result = mg.lr_range_test(model, X, y, seed=0)
    >>> result.suggestions
    {'steepest': 0.385..., 'min_div_10': 0.0533..., 'valley': 0.0642...}
    >>> mg.plot.lr_range_test(result)
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a minigd Sequential, got {type(model).__name__}")
    lrs = lr_ramp(start_lr, end_lr, num_iter, mode)
    smooth = check.real("smooth", smooth, low=0.0, high=1.0, high_open=True)
    if diverge_threshold is not None:
        diverge_threshold = check.real(
            "diverge_threshold", diverge_threshold, low=1.0, low_open=True
        )
    batch_size = check.positive_int("batch_size", batch_size)
    progress = check.boolean("progress", progress)
    X = check.features("X", X, model.n_features)
    y = check.labels("y", y, X.shape[0], model.n_outputs)

    copy = model.clone()
    opt = _make_optimizer(optimizer, copy.parameters(), float(lrs[0]))
    iterator = BatchIterator(
        X,
        y,
        batch_size,
        shuffle=True,
        drop_last=X.shape[0] >= batch_size,
        seed=seed,
        dtype=copy.dtype,
        validate=False,
        reuse_buffers=True,
    )
    config = {
        "start_lr": float(lrs[0]),
        "end_lr": float(lrs[-1]),
        "num_iter": len(lrs),
        "mode": mode,
        "batch_size": batch_size,
        "smooth": smooth,
        "diverge_threshold": diverge_threshold,
        "seed": iterator.seed,
        "optimizer": repr(opt),
        "model": [repr(layer) for layer in model.layers],
    }
    losses, smoothed, stop_reason = _run(
        copy, opt, iterator, lrs, smooth, diverge_threshold, progress
    )
    n = len(losses)
    return LRRangeResult(
        lrs[:n], losses, smoothed, suggest(lrs[:n], smoothed, len(lrs)), stop_reason, config
    )


def _run(model, optimizer, iterator, lrs, smooth, diverge_threshold, progress):
    """One update per lr; returns (losses, smoothed losses, stop reason)."""
    kernels = _active_kernels()
    grad = np.empty((iterator.batch_size, model.n_outputs), dtype=model.dtype)
    num_iter = len(lrs)
    losses, smoothed = np.empty(num_iter), np.empty(num_iter)
    avg, best, i = 0.0, math.inf, 0
    bar = progress_bar(num_iter, "lr range test", progress)
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # a blow-up is expected, and caught
            for xb, yb in _cycle(iterator, num_iter):
                optimizer.lr = lrs[i]
                logits = model.forward_batch(xb, kernels)
                dlogits = grad[: len(yb)]  # softmax cross-entropy and its gradient, one pass
                value = kernels.softmax_cross_entropy(logits, yb, dlogits)
                avg = smooth * avg + (1 - smooth) * value
                losses[i], smoothed[i] = value, avg / (1 - smooth ** (i + 1))
                i += 1
                bar.update()
                if not math.isfinite(value):
                    return losses[:i], smoothed[:i], "non-finite"
                model.backward_batch(dlogits, kernels=kernels)
                optimizer.step()
                best = min(best, smoothed[i - 1])
                if diverge_threshold is not None and smoothed[i - 1] > diverge_threshold * best:
                    return losses[:i], smoothed[:i], "diverged"
    finally:
        bar.close()
    return losses, smoothed, "completed"


def _cycle(iterator, count):
    """The first ``count`` batches of epochs 0, 1, 2, ... of ``iterator``."""
    epoch, produced = 0, 0
    while True:
        for batch in iterator.batches(epoch):
            yield batch
            produced += 1
            if produced == count:
                return
        epoch += 1
