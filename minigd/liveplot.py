"""LivePlot: a callback that redraws the run's loss, lr and epoch metrics in place in Jupyter.

Only matplotlib and IPython's display are used: the figure is a plain
``matplotlib.figure.Figure`` (not registered with pyplot, so Jupyter does not show it a second
time), rendered to PNG and shown through one display handle that every redraw updates.
"""

import bisect
import math
import sys
import time
import warnings

import numpy as np

from . import _validation as check
from .backend import get_backend
from .callbacks import Callback

_warned = False  # "not in a notebook" is said once per process


def _clock():
    return time.perf_counter()


def _in_notebook():
    """True inside a Jupyter kernel (an IPython shell with a kernel); never imports IPython."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class _Screen:
    """One output area of the notebook, updated in place."""

    def __init__(self, png):
        from IPython.display import Image, display

        self._image = Image
        self._handle = display(Image(data=png, format="png"), display_id=True)

    def update(self, png):
        self._handle.update(self._image(data=png, format="png"))


def _open_screen(png):
    return _Screen(png)


def _warn_outside_notebook():
    global _warned
    if _warned:
        return
    _warned = True
    warnings.warn(
        "LivePlot draws only in a Jupyter notebook (no IPython kernel is running "
        "here), so it does nothing in this run. Plot the history after fit instead: "
        "mg.plot.history(history).",
        UserWarning,
        stacklevel=4,
    )


def _epoch_end_steps(history):
    """The step of the last update of every recorded epoch (epochs are in increasing order)."""
    it, epochs = history.iterations, history.epochs["epoch"]
    ends = []
    for e in epochs:
        index = bisect.bisect_right(it["epoch"], e)
        ends.append(it["step"][index - 1] if index else 0)
    return ends


def _nan_if_none(values):
    return np.array([np.nan if v is None else v for v in values], dtype=float)


class LivePlot(Callback):
    """Redraw the training curves in place in a Jupyter notebook while ``fit`` runs.

    Three panels: the loss of every update (raw, and smoothed by a bias-corrected exponential
    moving average), with the epoch's mean train loss and the validation loss at each epoch
    end; the lr of every update; the validation accuracy per epoch (with ``validation_data``).
    Outside a notebook (no IPython kernel) it does nothing and warns once per process.

    Parameters
    ----------
    every : int >= 1, None or "auto", default "auto"
        Consider a redraw every ``every`` updates (and at every epoch end). None redraws only
        at epoch ends; LivePlot then needs no call after each update, so on the Numba backend
        ``fit`` keeps its fused one-call epoch. An int makes ``fit`` take its per-iteration
        path, which on the Numba backend is slower at small batches (see "Cost" below).
        "auto" is 10 on the NumPy backend (per-iteration anyway) and None on Numba.
    smooth : float in [0, 1), default 0.9
        Weight of the past in the moving average of the loss (0: no smoothing).
    min_interval : float >= 0, default 1.0
        Seconds at least between two redraws.
    max_overhead : float in (0, 1], default 0.03
        After a redraw that took ``d`` seconds the next waits at least ``d / max_overhead``
        seconds, so drawing takes at most about this fraction of the run's time.
    figsize : (width, height) in inches, default (11, 3.4)
    dpi : int, default 72

    The final picture is always drawn at the end of training. ``redraws`` and ``draw_seconds``
    count what this run spent on drawing; ``figure`` and ``lines`` (a dict of the Line2D
    objects: "loss", "smoothed", "train_loss", "val_loss", "lr", "val_accuracy") hold the plot.

    Cost: a redraw renders the figure to PNG, about 0.08 s for an 880-update history and
    0.3 s for 4,380 updates (2 shared cores). After a redraw of ``d`` seconds the next waits
    ``d / max_overhead``, so drawing stays near ``max_overhead`` of the run, plus one final
    redraw (what ``mg.plot.history`` after training would cost); a run shorter than
    ``min_interval`` is drawn once, at its end. Measured inside a Jupyter kernel on the bundled
    sample (``python benchmarks/liveplot_overhead.py --epochs 20 --batch 32``): drawing took
    3.5% of the run on the Numba backend (every="auto": 3 redraws), 5.1% on NumPy, 3.2% with
    every=10 (17 redraws). On the shared test machine the wall-clock difference with and
    without LivePlot varied by more than that, so the benchmark prints both. The larger cost
    is the path: on the Numba backend an int ``every`` (like any per-update callback) moves
    ``fit`` from the fused epoch to the per-iteration path, +70% at batch 64 in the same
    benchmark (``--epochs 8``); hence every="auto", which keeps the fused epoch there.

    Example
    -------
    >>> history = mg.fit(model, X, y, optimizer=opt, epochs=10, batch_size=64,
    ...                  validation_data=(X_val, y_val), callbacks=[mg.LivePlot()], verbose=0)
    """

    def __init__(
        self,
        every="auto",
        smooth=0.9,
        min_interval=1.0,
        max_overhead=0.03,
        figsize=(11, 3.4),
        dpi=72,
    ):
        if every is not None and every != "auto":
            every = check.positive_int("every", every)
        self.every = every
        self.smooth = check.real("smooth", smooth, low=0.0, high=1.0, high_open=True)
        self.min_interval = check.non_negative("min_interval", min_interval)
        self.max_overhead = check.real(
            "max_overhead", max_overhead, low=0.0, high=1.0, low_open=True
        )
        if not (isinstance(figsize, (tuple, list)) and len(figsize) == 2):
            raise TypeError(f"figsize must be a pair (width, height) in inches, got {figsize!r}")
        self.figsize = (
            check.real("figsize[0]", figsize[0], low=0.0, low_open=True),
            check.real("figsize[1]", figsize[1], low=0.0, low_open=True),
        )
        self.dpi = check.positive_int("dpi", dpi)
        self.active = None
        self.figure, self.lines = None, {}
        self.redraws, self.draw_seconds = 0, 0.0

    @property
    def per_iteration(self):
        """True only when a call after every update is needed (``every`` set, in a notebook)."""
        return self._every() is not None and self.active is not False

    def _every(self):
        if self.every == "auto":
            return 10 if get_backend() == "numpy" else None
        return self.every

    def on_train_begin(self, state):
        self.active = _in_notebook()
        if not self.active:
            _warn_outside_notebook()
            return
        self.redraws, self.draw_seconds = 0, 0.0
        self._smoothed, self._average, self._finite = [], 0.0, 0
        self._since, self._wait, self._last = 0, self.min_interval, _clock()
        self._epochs, self._period = state.epochs, self._every()
        started = _clock()
        self._build_figure()  # shown at the first redraw, so a short run draws only once
        self.draw_seconds += _clock() - started
        self._screen = None

    def on_iteration_end(self, state):
        if not self.active:
            return
        self._since += 1
        if self._since >= self._period:
            self._since = 0
            self._maybe_redraw(state.history)

    def on_epoch_end(self, state):
        if self.active:
            self._maybe_redraw(state.history)

    def on_train_end(self, state):
        if self.active:
            self.redraw(state.history)

    def _maybe_redraw(self, history):
        if _clock() - self._last >= self._wait:
            self.redraw(history)

    def redraw(self, history):
        """Put ``history`` into the lines and update the picture in the notebook now."""
        started = _clock()
        self._set_data(history)
        if self._screen is None:
            self._screen = _open_screen(self._render())
        else:
            self._screen.update(self._render())
        self.redraws += 1
        self._last = _clock()
        cost = self._last - started
        self.draw_seconds += cost
        self._wait = max(self.min_interval, cost / self.max_overhead)

    def _build_figure(self):
        from matplotlib.figure import Figure

        fig = Figure(figsize=self.figsize, dpi=self.dpi)
        ax_loss, ax_lr, ax_acc = fig.subplots(1, 3, gridspec_kw={"width_ratios": [2.2, 1.2, 1.2]})
        lines = {
            "loss": ax_loss.plot([], [], lw=0.6, alpha=0.35, color="tab:blue", label="batch loss")[
                0
            ],
            "smoothed": ax_loss.plot(
                [], [], lw=1.4, color="tab:blue", label=f"smoothed ({self.smooth:g})"
            )[0],
            "train_loss": ax_loss.plot(
                [], [], "o-", ms=3, color="tab:orange", label="epoch mean (train)"
            )[0],
            "val_loss": ax_loss.plot([], [], "s-", ms=3, color="tab:green", label="validation")[0],
            "lr": ax_lr.plot([], [], color="tab:purple", lw=1)[0],
            "val_accuracy": ax_acc.plot([], [], "s-", ms=3, color="tab:green")[0],
        }
        ax_loss.set(xlabel="update", ylabel="loss", title="loss")
        ax_loss.legend(loc="upper right", fontsize="small")
        ax_lr.set(xlabel="update", title="learning rate")
        ax_acc.set(xlabel="epoch", title="validation accuracy")
        fig.subplots_adjust(left=0.05, right=0.99, bottom=0.15, top=0.84, wspace=0.25)
        self.figure, self.lines = fig, lines
        self._axes = (ax_loss, ax_lr, ax_acc)

    def _smooth_new(self, losses):
        beta = self.smooth
        for value in losses[len(self._smoothed) :]:
            if math.isfinite(value):
                self._finite += 1
                self._average = beta * self._average + (1 - beta) * value
            self._smoothed.append(
                self._average / (1 - beta**self._finite) if self._finite else math.nan
            )
        return self._smoothed

    def _set_data(self, history):
        it, ep = history.iterations, history.epochs
        steps = np.asarray(it["step"], dtype=float)
        losses = np.asarray(it["loss"], dtype=float)
        lines = self.lines
        lines["loss"].set_data(steps, np.where(np.isfinite(losses), losses, np.nan))
        lines["smoothed"].set_data(steps, np.asarray(self._smooth_new(it["loss"])))
        lines["lr"].set_data(steps, np.asarray(it["lr"], dtype=float))
        ends = np.asarray(_epoch_end_steps(history), dtype=float)
        lines["train_loss"].set_data(ends, np.asarray(ep["train_loss"], dtype=float))
        lines["val_loss"].set_data(ends, _nan_if_none(ep["val_loss"]))
        lines["val_accuracy"].set_data(
            np.asarray(ep["epoch"], dtype=float), _nan_if_none(ep["val_accuracy"])
        )
        for ax in self._axes:
            ax.relim()
            ax.autoscale_view()
        self.figure.suptitle(self._status(history), fontsize="medium")

    def _status(self, history):
        it, ep = history.iterations, history.epochs
        if not it["step"]:
            return "waiting for the first update"
        text = f"epoch {it['epoch'][-1]}/{self._epochs}, update {it['step'][-1]}"
        if self._smoothed and math.isfinite(self._smoothed[-1]):
            text += f", smoothed loss {self._smoothed[-1]:.4f}"
        if ep["val_accuracy"] and ep["val_accuracy"][-1] is not None:
            text += f", val accuracy {100 * ep['val_accuracy'][-1]:.2f}%"
        if history.diverged:
            text += " - diverged"
        return text

    def _render(self):
        from io import BytesIO

        buffer = BytesIO()
        self.figure.savefig(buffer, format="png", dpi=self.dpi, pil_kwargs={"compress_level": 1})
        return buffer.getvalue()

    def __repr__(self):
        return (
            f"LivePlot(every={self.every!r}, smooth={self.smooth}, "
            f"min_interval={self.min_interval}, max_overhead={self.max_overhead})"
        )
