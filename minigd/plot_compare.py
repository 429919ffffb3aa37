"""Overlay several runs' curves on one Axes, against updates or against epochs.

Exposed as :func:`minigd.plot.compare`.
"""

import math

import numpy as np

from . import _validation as check
from .history import EPOCH_KEYS, History

ITERATION_COLUMNS = ("loss", "lr", "batch_size")
EPOCH_COLUMNS = tuple(key for key in EPOCH_KEYS if key != "epoch")
X_AXES = ("step", "epoch")


def compare(histories, labels=None, x="step", y="loss", smooth=1, ax=None, log=False):
    """Plot one curve per run: ``y`` against updates (``x="step"``) or epochs (``x="epoch"``).

    Iteration columns ("loss", "lr", "batch_size") are drawn at every update; epoch columns
    ("train_loss", "val_loss", "val_accuracy", "seconds", "samples_per_second") at the end of
    each epoch. Against epochs, update i of an epoch of n iterations sits at
    x = epoch - 1 + i / n, so runs with different batch sizes line up epoch for epoch.
    ``smooth=k`` draws the trailing mean of the last k updates (iteration columns only).
    A run that diverged ends with a red cross at its last finite point.

    Parameters
    ----------
    histories : dict {label: History} or sequence of History
    labels : sequence of str, default None (the dict's keys, else "run 0", "run 1", ...)
    x : {"step", "epoch"}, default "step"
    y : str, default "loss"
    smooth : int >= 1, default 1 (no smoothing)
    ax : matplotlib Axes, default None (a new figure)
    log : bool, default False (log-scaled y axis)

    Returns the Axes.

    Note: the length of an epoch is read from the run's completed epochs; a run that stopped
    inside its first epoch is drawn as if that epoch ended at its last recorded update.

    Example
    -------
    >>> ax = mg.plot.compare({"batch 16": h16, "batch 256": h256}, x="epoch", smooth=20)
    """
    runs = _runs(histories, labels)
    x = check.choice("x", x, X_AXES)
    y = check.choice("y", y, ITERATION_COLUMNS + EPOCH_COLUMNS)
    smooth = check.positive_int("smooth", smooth)
    log = check.boolean("log", log)
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(8, 4.5))
    for label, history in runs:
        xs, ys = _curve(history, label, x, y, smooth)
        (line,) = ax.plot(
            xs,
            ys,
            lw=1.2 if y in EPOCH_COLUMNS else 1.0,
            marker="o" if y in EPOCH_COLUMNS else None,
            ms=3,
            label=label,
        )
        if history.diverged and len(xs):
            ax.plot(xs[-1], ys[-1], "x", color="red", ms=9, mew=2)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("update (step)" if x == "step" else "epoch")
    ylabel = y.replace("_", " ")
    if smooth > 1 and y in ITERATION_COLUMNS:
        ylabel += f" (mean of last {smooth} updates)"
    ax.set_ylabel(ylabel)
    ax.legend(fontsize="small")
    return ax


def _runs(histories, labels):
    if isinstance(histories, History):
        raise TypeError(
            "histories must be a dict or a sequence of History objects; wrap a single run in a list"
        )
    if isinstance(histories, dict):
        if labels is not None:
            raise TypeError(
                "labels must be None when histories is a dict (its keys are the labels)"
            )
        pairs = [(str(k), v) for k, v in histories.items()]
    else:
        histories = list(histories)
        if labels is None:
            labels = [f"run {i}" for i in range(len(histories))]
        labels = [str(label) for label in labels]
        if len(labels) != len(histories):
            raise ValueError(f"labels has {len(labels)} entries for {len(histories)} histories")
        pairs = list(zip(labels, histories))
    if not pairs:
        raise ValueError("histories is empty")
    for label, history in pairs:
        if not isinstance(history, History):
            raise TypeError(
                f"histories[{label!r}] must be a minigd History, got {type(history).__name__}"
            )
    return pairs


def _epoch_lengths(history):
    """{epoch: iterations in that epoch} for every epoch with a recorded iteration."""
    it = history.iterations
    counts = {}
    for epoch, iteration in zip(it["epoch"], it["iteration"]):
        counts[epoch] = max(counts.get(epoch, 0), iteration)
    completed = [counts[e] for e in history.epochs["epoch"] if e in counts]
    if completed:
        for epoch in counts:
            if epoch not in history.epochs["epoch"]:
                counts[epoch] = max(completed)
    return counts


def _curve(history, label, x, y, smooth):
    if y in ITERATION_COLUMNS:
        it = history.iterations
        ys = np.asarray(it[y], dtype=float)
        if x == "step":
            xs = np.asarray(it["step"], dtype=float)
        else:
            lengths = _epoch_lengths(history)
            xs = np.array([e - 1 + i / lengths[e] for e, i in zip(it["epoch"], it["iteration"])])
        finite = np.isfinite(ys)
        xs, ys = xs[finite], ys[finite]
        return xs, _trailing_mean(ys, smooth)
    values = history.epochs[y]
    if any(v is None for v in values):
        raise ValueError(f"run {label!r} has no {y!r}: pass validation_data to fit")
    ys = np.asarray(values, dtype=float)
    if x == "epoch":
        xs = np.asarray(history.epochs["epoch"], dtype=float)
    else:
        ends = {}
        for epoch, step in zip(history.iterations["epoch"], history.iterations["step"]):
            ends[epoch] = step
        xs = np.array([ends.get(e, math.nan) for e in history.epochs["epoch"]], dtype=float)
    return xs, ys


def _trailing_mean(values, window):
    """Mean of the last ``window`` values at each position (fewer at the start)."""
    if window == 1 or values.size == 0:
        return values
    sums = np.cumsum(np.concatenate([[0.0], values]))
    ends = np.arange(1, values.size + 1)
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)
