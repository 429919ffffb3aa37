"""Plots of a run's history and of schedules (matplotlib, imported on first use)."""

import numpy as np

from . import _validation as check
from .history import History
from .plot_compare import compare  # noqa: F401  (mg.plot.compare)
from .schedules import as_schedule


def _pyplot():
    import matplotlib.pyplot as plt

    return plt


def _two_panels(ax, figsize, height_ratios):
    """(fig, top, bottom): the given pair of Axes, or a new figure of two rows sharing x."""
    if ax is not None:
        top, bottom = ax
        return top.figure, top, bottom
    fig, (top, bottom) = _pyplot().subplots(
        2, 1, sharex=True, figsize=figsize, gridspec_kw={"height_ratios": height_ratios}
    )
    return fig, top, bottom


def history(history, ax=None, log_loss=False, grad_norm=False):
    """Per-iteration loss (with validation loss at epoch ends) over a second panel of lr.

    Vertical lines mark epoch boundaries and a cross marks a divergence. With
    ``grad_norm=True`` the lr panel also shows each update's gradient norm before clipping
    (``history.iterations["grad_norm"]``) on its right axis, log scale. Returns the Figure.
    """
    if not isinstance(history, History):
        raise TypeError(f"history must be a minigd History, got {type(history).__name__}")
    fig, ax_loss, ax_lr = _two_panels(ax, (8, 5.5), [3, 1.3])
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
    ax_loss.set_title(
        f"{history.n_epochs} epochs, {history.n_iterations} iterations"
        " (grey lines: epoch boundaries)",
        fontsize="medium",
    )
    ax_lr.plot(steps, it["lr"], color="tab:purple", lw=1)
    ax_lr.set_ylabel("lr")
    ax_lr.set_xlabel("iteration (update step)")
    if grad_norm:
        norms = np.array([np.nan if v is None else v for v in it.get("grad_norm", [])], dtype=float)
        ax_norm = ax_lr.twinx()
        ax_norm.plot(steps[: len(norms)], norms, color="tab:green", lw=0.8)
        ax_norm.set_ylabel("grad norm")
        if np.any(norms > 0):
            ax_norm.set_yscale("log")
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


def schedule(schedule, steps, ax=None, label=None, momentum=None):
    """Plot lr = schedule(t) for t = 0 .. steps - 1; returns the Axes.

    ``momentum``: also plot schedule.momentum(t), dashed, on a right-hand axis (default: when the
    schedule sets the momentum, as OneCycle does); that twin Axes is ``ax.figure.axes[-1]``.
    """
    schedule = as_schedule(schedule)
    if schedule is None:
        raise TypeError("schedule must be a minigd schedule or a callable, got None")
    steps = check.positive_int("steps", steps)
    momentum = schedule.sets_momentum if momentum is None else check.boolean("momentum", momentum)
    if momentum and not schedule.sets_momentum:
        raise ValueError(f"momentum=True, but {schedule!r} does not set the momentum")
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3))
    ax.plot(np.arange(steps), schedule.values(steps), label=label or repr(schedule)[:60])
    ax.set_xlabel(f"t ({schedule.unit}s)")
    ax.set_ylabel("lr")
    if momentum:
        twin = ax.twinx()
        twin.plot(
            np.arange(steps),
            [schedule.momentum(t) for t in range(steps)],
            "--",
            color="tab:gray",
            label="momentum",
        )
        twin.set_ylabel("momentum")
    return ax


def save(fig, path, dpi=110):
    """Save a Figure atomically (temp file + replace)."""
    from ._io import atomic_open

    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, dpi=dpi, format=str(path).rsplit(".", 1)[-1])


def sweep_heatmap(result, value="val_accuracy", ax=None, annotate=True, cmap=None):
    """Heatmap of a sweep's ``value`` over batch size x lr (mean over seeds); the Axes.

    See :func:`minigd.experiments.sweep_plots.sweep_heatmap`.
    """
    from .experiments.sweep_plots import sweep_heatmap as draw

    return draw(result, value=value, ax=ax, annotate=annotate, cmap=cmap)


def sweep_curves(result, x="epoch", value="train_loss", ax=None, seed=None):
    """Per-epoch loss of every sweep cell against epochs or updates (``x``); the Axes.

    See :func:`minigd.experiments.sweep_plots.sweep_curves`.
    """
    from .experiments.sweep_plots import sweep_curves as draw

    return draw(result, x=x, value=value, ax=ax, seed=seed)


def lr_range_test(result, ax=None, log_x=None):
    """Loss against lr of an LR range test (raw and smoothed), suggestions marked; the Axes.

    ``log_x``: log-scaled lr axis (default: True for mode "exp", False for "linear").
    """
    from .experiments.lr_range import LRRangeResult

    if not isinstance(result, LRRangeResult):
        raise TypeError(f"result must be an LRRangeResult, got {type(result).__name__}")
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    ax.plot(result.lr, result.loss, lw=0.8, alpha=0.35, color="tab:blue", label="batch loss")
    ax.plot(result.lr, result.smoothed_loss, lw=1.8, color="tab:blue", label="smoothed loss")
    markers = {
        "steepest": ("tab:orange", "v"),
        "min_div_10": ("tab:green", "o"),
        "valley": ("tab:red", "s"),
    }
    for rule, lr in result.suggestions.items():
        if np.isfinite(lr):
            color, marker = markers[rule]
            y = np.interp(np.log(lr), np.log(result.lr), result.smoothed_loss)
            ax.plot([lr], [y], marker, color=color, ms=8, label=f"{rule}: {lr:.3g}")
    finite = result.smoothed_loss[np.isfinite(result.smoothed_loss)]
    if finite.size:
        top = finite[: int(np.argmin(finite)) + 1].max()
        low = np.nanmin(np.where(np.isfinite(result.loss), result.loss, np.nan))
        ax.set_ylim(min(low, finite.min()) * 0.95, top * 1.15)
    if log_x is None:
        log_x = result.config.get("mode", "exp") == "exp"
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.set_title(
        f"LR range test: {result.n_iterations} iterations, batch "
        f"{result.config.get('batch_size')} ({result.stop_reason})",
        fontsize="medium",
    )
    ax.legend(fontsize="small")
    ax.figure.tight_layout()
    return ax


def noise_scale(tracker, ax=None):
    """B_simple (with standard errors) and the loss against update steps, from a
    GradientNoiseScale callback (or its ``records`` dict); returns the Figure."""
    from .experiments.noise_scale import RECORD_KEYS, GradientNoiseScale

    records = tracker.records if isinstance(tracker, GradientNoiseScale) else tracker
    if not isinstance(records, dict) or not set(RECORD_KEYS) <= set(records):
        raise TypeError("tracker must be a GradientNoiseScale callback or its records dict")
    fig, ax_b, ax_loss = _two_panels(ax, (7, 5), [3, 2])
    step = np.asarray(records["step"])
    ax_b.errorbar(
        step,
        records["b_simple"],
        yerr=records["b_simple_stderr"],
        fmt="o-",
        ms=4,
        capsize=3,
        color="tab:red",
    )
    ax_b.set_ylabel("B_simple = tr(Sigma) / |G|^2")
    ax_b.set_title("gradient noise scale (critical batch size estimate)", fontsize="medium")
    ax_loss.plot(step, records["loss"], "s-", ms=3)
    ax_loss.set_ylabel("loss")
    ax_loss.set_xlabel("update step")
    fig.tight_layout()
    return fig
