"""Plots of a SweepResult: a batch size x lr heatmap and loss curves per cell (matplotlib)."""

import math

import numpy as np

from .. import _validation as check
from .sweep import COLUMNS, SweepResult

CURVE_VALUES = ("train_loss", "val_loss", "val_accuracy")


def _check_result(result):
    if not isinstance(result, SweepResult):
        raise TypeError(
            f"result must be a SweepResult (from mg.sweep), got {type(result).__name__}"
        )


def _pyplot():
    import matplotlib.pyplot as plt

    return plt


def _mean_over_seeds(result, value):
    """{(batch_size, lr): (mean of value over the cell's seeds, all seeds diverged)}."""
    groups = {}
    for row in result.table:
        groups.setdefault((row["batch_size"], row["lr"]), []).append(row)
    means = {}
    for key, rows in groups.items():
        values = [r[value] for r in rows if not r["diverged"] and math.isfinite(r[value])]
        means[key] = (
            float(np.mean(values)) if values else math.nan,
            all(r["diverged"] for r in rows),
        )
    return means


def sweep_heatmap(result, value="val_accuracy", ax=None, annotate=True, cmap=None):
    """Heatmap of one table column over batch size (x) and lr (y), averaged over seeds.

    Cells where every seed diverged are hatched and marked "div"; with ``scaling`` each batch
    size has its own lr, so the map is one row with the lr written in each cell. Returns the
    Axes.

    Parameters
    ----------
    result : SweepResult
    value : a numeric column, default "val_accuracy" (also "train_loss", "val_loss",
        "train_accuracy", "updates", "seconds")
    ax : matplotlib Axes or None
    annotate : bool, default True: write the value in each cell
    cmap : colormap name, default "viridis" (reversed for losses and seconds, so better is
        always brighter)
    """
    _check_result(result)
    numeric = tuple(c for c in COLUMNS if c not in ("batch_size", "lr", "seed", "diverged"))
    check.choice("value", value, numeric)
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4.2))
    means = _mean_over_seeds(result, value)
    batches = sorted({b for b, _ in means})
    scaled = result.config.get("scaling") is not None
    lrs = [None] if scaled else sorted({lr for _, lr in means}, reverse=True)
    grid = np.full((len(lrs), len(batches)), np.nan)
    diverged = np.zeros_like(grid, dtype=bool)
    for (b, lr), (mean, all_diverged) in means.items():
        i, j = (0 if scaled else lrs.index(lr)), batches.index(b)
        grid[i, j], diverged[i, j] = mean, all_diverged
    lower_is_better = "loss" in value or value == "seconds"
    cmap = cmap or ("viridis_r" if lower_is_better else "viridis")
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, aspect="auto")
    ax.figure.colorbar(image, ax=ax, label=value)
    ax.set_xticks(range(len(batches)), [str(b) for b in batches])
    ax.set_xlabel("batch size")
    if scaled:
        ax.set_yticks([0], [f"{result.config['scaling']} scaling"])
    else:
        ax.set_yticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
        ax.set_ylabel("learning rate")
    finite = grid[np.isfinite(grid)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for (b, lr), (mean, _) in means.items():
        i, j = (0 if scaled else lrs.index(lr)), batches.index(b)
        if diverged[i, j]:
            ax.add_patch(
                plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="xx", color="0.5", lw=0)
            )
        if annotate:
            text = "div" if diverged[i, j] else _format(mean, value)
            if scaled:
                text += f"\nlr {lr:.3g}"
            dark = np.isfinite(mean) and ((mean < middle) != lower_is_better)
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize="small",
                color="white" if dark else "black",
            )
    seeds = len(result.config.get("seeds", [None]))
    ax.set_title(
        f"{value} after {result.config.get('epochs')} epochs"
        + (f" (mean of {seeds} seeds)" if seeds > 1 else ""),
        fontsize="medium",
    )
    ax.figure.tight_layout()
    return ax


def _format(value, name):
    if not math.isfinite(value):
        return "n/a"
    if "accuracy" in name:
        return f"{100 * value:.1f}%"
    if name == "updates":
        return f"{value:.0f}"
    return f"{value:.3g}"


def sweep_curves(result, x="epoch", value="train_loss", ax=None, seed=None):
    """Per-epoch curves of every (batch size, lr) cell on one Axes, against epochs or updates.

    ``x="epoch"`` puts the cells side by side per pass over the data; ``x="update"`` places
    each epoch's point at the number of optimizer steps taken by its end, which shows how many
    fewer updates a large batch needs for a given loss. Colour encodes the batch size, line
    style the lr; curves are averaged over seeds (or show one ``seed``). A diverged cell's
    curve ends where it diverged, with a cross. Returns the Axes.

    Parameters
    ----------
    result : SweepResult
    x : "epoch" (default) or "update"
    value : "train_loss" (default), "val_loss" or "val_accuracy"
    ax : matplotlib Axes or None
    seed : int or None (default: mean over the seeds that completed the epoch)
    """
    _check_result(result)
    check.choice("x", x, ("epoch", "update"))
    check.choice("value", value, CURVE_VALUES)
    if value != "train_loss" and not any(
        h.epochs[value] and h.epochs[value][0] is not None for h in result.histories.values()
    ):
        raise ValueError(f"value={value!r} needs a sweep run with validation_data")
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.2))
    batches = sorted({row["batch_size"] for row in result.table})
    lrs = sorted({row["lr"] for row in result.table})
    colors = plt.get_cmap("viridis")(np.linspace(0.05, 0.9, len(batches)))
    styles = ["-", "--", ":", "-."]
    seeds = sorted({row["seed"] for row in result.table}) if seed is None else [seed]
    for b_index, b in enumerate(batches):
        for l_index, lr in enumerate(lrs):
            curves = [
                _curve(result.histories[(b, lr, s)], x, value)
                for s in seeds
                if (b, lr, s) in result.histories
            ]
            if not curves:
                continue
            xs, ys, diverged = _average(curves)
            style = "-" if result.config.get("scaling") else styles[l_index % len(styles)]
            (line,) = ax.plot(
                xs, ys, style, marker="o", ms=3, color=colors[b_index], label=f"B={b}, lr={lr:.3g}"
            )
            if diverged and len(xs):
                ax.plot(xs[-1], ys[-1], "x", color=line.get_color(), ms=9, mew=2)
    if x == "epoch":
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch" if x == "epoch" else "updates (optimizer steps)")
    ax.set_ylabel(value)
    plotted = np.array([v for line in ax.get_lines() for v in line.get_ydata()], dtype=float)
    plotted = plotted[np.isfinite(plotted) & (plotted > 0)]
    if "loss" in value and plotted.size and plotted.max() > 20 * plotted.min():
        ax.set_yscale("log")
    if x == "update":
        ax.set_xscale("log")
    curves = sum(1 for line in ax.get_lines() if line.get_label().startswith("B="))
    ax.legend(fontsize="x-small", ncol=2 if curves > 6 else 1)
    ax.set_title(
        f"{value} per epoch against {'epochs' if x == 'epoch' else 'updates'}", fontsize="medium"
    )
    ax.figure.tight_layout()
    return ax


def _curve(history, x, value):
    """(x values, y values, diverged) of one history's completed epochs."""
    it = history.iterations
    ends = {}
    for epoch, step in zip(it["epoch"], it["step"]):
        ends[epoch] = step
    epochs = history.epochs["epoch"]
    xs = list(epochs) if x == "epoch" else [ends[e] for e in epochs]
    ys = [math.nan if v is None else v for v in history.epochs[value]]
    return xs, ys, history.diverged


def _average(curves):
    """Mean over seeds, epoch by epoch, as far as the longest curve goes."""
    length = max(len(c[0]) for c in curves)
    xs, ys = [], []
    for i in range(length):
        points = [(c[0][i], c[1][i]) for c in curves if i < len(c[0])]
        xs.append(float(np.mean([p[0] for p in points])))
        ys.append(float(np.mean([p[1] for p in points])))
    return xs, ys, any(c[2] for c in curves)
