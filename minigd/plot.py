"""Plots of a run's history and of schedules (matplotlib, imported on first use)."""
import numpy as np

from . import _validation as check
from .history import History
from .plot_compare import compare  # noqa: F401  (mg.plot.compare)
from .schedules import Schedule, as_schedule


def _pyplot():
    import matplotlib.pyplot as plt
    return plt


def history(history, ax=None, log_loss=False):
    """Per-iteration loss (with validation loss at epoch ends) over a second panel of lr.

    Vertical lines mark epoch boundaries and a cross marks a divergence. Returns the Figure.
    """
    if not isinstance(history, History):
        raise TypeError(f"history must be a minigd History, got {type(history).__name__}")
    plt = _pyplot()
    if ax is None:
        fig, (ax_loss, ax_lr) = plt.subplots(2, 1, sharex=True, figsize=(8, 5.5),
                                             gridspec_kw={"height_ratios": [3, 1.3]})
    else:
        ax_loss, ax_lr = ax
        fig = ax_loss.figure
    it = history.iterations
    steps = np.asarray(it["step"])
    loss = np.asarray(it["loss"], dtype=float)
    ax_loss.plot(steps, loss, lw=0.8, alpha=0.6, label="batch loss (train)")
    ends = _epoch_end_steps(history)
    ep = history.epochs
    if len(ends):
        ax_loss.plot(ends, ep["train_loss"], "o-", ms=3, label="epoch mean (train)")
        if ep["val_loss"] and ep["val_loss"][0] is not None:
            ax_loss.plot(ends, ep["val_loss"], "s-", ms=3, label="validation")
    for end in ends[:-1]:
        for a in (ax_loss, ax_lr):
            a.axvline(end + 0.5, color="0.8", lw=0.6, zorder=0)
    if history.diverged:
        ax_loss.axvline(history.divergence["step"], color="red", ls="--", label="diverged")
    if log_loss:
        ax_loss.set_yscale("log")
    ax_loss.set_ylabel("loss")
    ax_loss.legend(loc="upper right", fontsize="small")
    ax_loss.set_title(f"{history.n_epochs} epochs, {history.n_iterations} iterations"
                      " (grey lines: epoch boundaries)", fontsize="medium")
    ax_lr.plot(steps, it["lr"], color="tab:purple", lw=1)
    ax_lr.set_ylabel("lr")
    ax_lr.set_xlabel("iteration (update step)")
    fig.tight_layout()
    return fig


def _epoch_end_steps(history):
    it = history.iterations
    completed = set(history.epochs["epoch"])
    ends = {}
    for epoch, step in zip(it["epoch"], it["step"]):
        if epoch in completed:
            ends[epoch] = step
    return np.array([ends[e] for e in history.epochs["epoch"] if e in ends])


def schedule(schedule, steps, ax=None, label=None):
    """Plot lr = schedule(t) for t = 0 .. steps - 1; returns the Axes."""
    schedule = as_schedule(schedule)
    if schedule is None:
        raise TypeError("schedule must be a minigd schedule or a callable, got None")
    steps = check.positive_int("steps", steps)
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3))
    ax.plot(np.arange(steps), schedule.values(steps), label=label or repr(schedule)[:60])
    ax.set_xlabel(f"t ({schedule.unit}s)")
    ax.set_ylabel("lr")
    return ax


def save(fig, path, dpi=110):
    """Save a Figure atomically (temp file + replace)."""
    from ._io import atomic_open
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, dpi=dpi, format=str(path).rsplit(".", 1)[-1])
