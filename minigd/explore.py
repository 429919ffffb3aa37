"""explore: a widget panel that retrains a small MLP on every change of lr, batch size, epochs,
optimizer, schedule, hidden width or activation, and redraws what happened (TensorFlow
Playground for mini-batch gradient descent).

Needs ipywidgets (``pip install "minigd[notebook]"``), imported only when ``explore`` is called.
"""

import contextlib
import math
import time
import warnings
from io import BytesIO

import numpy as np

from . import _validation as check
from .datasets import load_mnist_sample
from .layers import Dense, ReLU, Sigmoid, Tanh
from .model import Sequential
from .optim import SGD, Adam, AdamW
from .schedules import CosineAnnealing, CyclicLR, StepDecay, Warmup
from .training import fit

OPTIMIZERS = ("SGD", "SGD + momentum 0.9", "Adam", "AdamW")
SCHEDULES = ("constant", "step decay", "cosine", "warmup + cosine", "cyclic")
ACTIVATIONS = {"ReLU": ReLU, "Tanh": Tanh, "Sigmoid": Sigmoid}
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
HIDDEN_WIDTHS = (2, 4, 8, 16, 32, 64, 128)
INSTALL_HINT = 'pip install "minigd[notebook]"'


def _ipywidgets():
    try:
        import ipywidgets
    except ImportError as error:
        raise ImportError(
            f"mg.explore needs ipywidgets, which is not installed: "
            f"{INSTALL_HINT} (or pip install ipywidgets)"
        ) from error
    return ipywidgets


@contextlib.contextmanager
def _one_numba_thread():
    """Numba kernels on one thread: on these small problems the parallel kernels' start-up
    costs more than they save, and on a busy machine their threads wait for each other
    (measured: a run of 20,000 single-sample updates took 185 s on 2 threads, 8 s on 1)."""
    import numba

    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def _make_optimizer(name, params, lr):
    if name == "SGD":
        return SGD(params, lr=lr)
    if name == "SGD + momentum 0.9":
        return SGD(params, lr=lr, momentum=0.9)
    if name == "Adam":
        return Adam(params, lr=lr)
    return AdamW(params, lr=lr)


def make_schedule(name, lr, epochs, updates_per_epoch):
    """The explorer's schedule ``name`` (one of SCHEDULES) peaking at ``lr``, or None (constant).

    step decay: x0.3 at every third of the epochs; cosine: to 0 over all updates; warmup +
    cosine: the same after a linear warmup over the first tenth; cyclic: triangular between
    lr/10 and lr, one cycle per epoch.
    """
    check.choice("schedule", name, SCHEDULES)
    total = epochs * updates_per_epoch
    if name == "constant":
        return None
    if name == "step decay":
        return StepDecay(lr, step_size=max(1, math.ceil(epochs / 3)), gamma=0.3)
    if name == "cosine":
        return CosineAnnealing(lr, t_max=total, unit="iteration")
    if name == "warmup + cosine":
        return Warmup(
            CosineAnnealing(lr, t_max=total, unit="iteration"),
            warmup_steps=max(1, total // 10),
            start_factor=0.01,
        )
    return CyclicLR(lr / 10, lr, step_size=max(1, updates_per_epoch // 2))


def _split(data, n_train, n_val, seed):
    if data is None:
        X, y = load_mnist_sample()[:2]
    else:
        if not isinstance(data, (tuple, list)) or len(data) != 2:
            raise TypeError("data must be a pair (X, y) or None for the bundled MNIST sample")
        X = check.features("data[0]", data[0])
        y = check.labels("data[1]", data[1], X.shape[0])
    if n_train + n_val > X.shape[0]:
        raise ValueError(
            f"n_train + n_val ({n_train} + {n_val}) must not exceed the "
            f"{X.shape[0]} rows of the data; lower n_train or n_val"
        )
    rows = np.sort(np.random.default_rng(seed).permutation(X.shape[0])[: n_train + n_val])
    train, val = rows[:n_train], rows[n_train:]
    return X[train], y[train], X[val], y[val]


class Explorer:
    """The panel that :func:`explore` returns: widgets, figure and the latest run.

    Attributes
    ----------
    widgets : dict name -> widget ("lr", "batch_size", "epochs", "optimizer", "schedule",
        "hidden", "activation"); setting a value (by hand or from Python) retrains.
    panel : the ipywidgets box to display (the Explorer displays as it in Jupyter)
    figure : matplotlib Figure; lines : dict name -> Line2D ("loss", "epoch_train_loss",
        "train_loss", "val_loss", "lr", "val_accuracy")
    image : the ipywidgets Image that shows the figure; status : the text line under it
    history : History of the latest run; retrains : runs so far; seconds : wall time of the
        latest change (train + draw), train_seconds : of its training alone
    """

    def __init__(self, widgets_module, X, y, X_val, y_val, settings, seed):
        w = widgets_module
        self.X, self.y, self.X_val, self.y_val, self.seed = X, y, X_val, y_val, seed
        self.n_classes = int(max(y.max(), y_val.max())) + 1
        slider = {"continuous_update": False, "style": {"description_width": "80px"}}
        self.widgets = {
            "lr": w.FloatLogSlider(
                value=settings["lr"],
                base=10,
                min=-4,
                max=1,
                step=0.05,
                readout_format=".2g",
                description="lr",
                **slider,
            ),
            "batch_size": w.SelectionSlider(
                options=BATCH_SIZES,
                value=settings["batch_size"],
                description="batch size",
                **slider,
            ),
            "epochs": w.IntSlider(
                value=settings["epochs"], min=1, max=20, description="epochs", **slider
            ),
            "hidden": w.SelectionSlider(
                options=HIDDEN_WIDTHS,
                value=settings["hidden"],
                description="hidden width",
                **slider,
            ),
            "optimizer": w.Dropdown(
                options=OPTIMIZERS,
                value=settings["optimizer"],
                description="optimizer",
                style=slider["style"],
            ),
            "schedule": w.Dropdown(
                options=SCHEDULES,
                value=settings["schedule"],
                description="schedule",
                style=slider["style"],
            ),
            "activation": w.Dropdown(
                options=tuple(ACTIVATIONS),
                value=settings["activation"],
                description="activation",
                style=slider["style"],
            ),
        }
        self.image = w.Image(format="png")
        self.status = w.HTML()
        names = list(self.widgets)
        controls = w.HBox(
            [
                w.VBox([self.widgets[n] for n in names[:4]]),
                w.VBox([self.widgets[n] for n in names[4:]]),
            ]
        )
        self.panel = w.VBox([controls, self.status, self.image])
        self.retrains, self.seconds, self.train_seconds, self.history = 0, None, None, None
        self._build_figure()
        for widget in self.widgets.values():
            widget.observe(self._changed, names="value")
        self.retrain()

    @property
    def settings(self):
        """The current widget values as a dict."""
        return {name: widget.value for name, widget in self.widgets.items()}

    def _changed(self, change):
        self.retrain()

    def retrain(self):
        """Train a fresh model with the current settings (same seed) and redraw."""
        started = time.perf_counter()
        s = self.settings
        model = Sequential(
            Dense(self.X.shape[1], s["hidden"]),
            ACTIVATIONS[s["activation"]](),
            Dense(s["hidden"], self.n_classes),
            seed=self.seed,
        )
        optimizer = _make_optimizer(s["optimizer"], model.parameters(), s["lr"])
        per_epoch = math.ceil(self.X.shape[0] / s["batch_size"])
        schedule = make_schedule(s["schedule"], s["lr"], s["epochs"], per_epoch)
        with warnings.catch_warnings(record=True), _one_numba_thread():
            warnings.simplefilter("always")
            self.history = fit(
                model,
                self.X,
                self.y,
                optimizer=optimizer,
                epochs=s["epochs"],
                batch_size=s["batch_size"],
                schedule=schedule,
                seed=self.seed,
                validation_data=(self.X_val, self.y_val),
                verbose=0,
            )
        self.train_seconds = time.perf_counter() - started
        self._draw()
        self.retrains += 1
        self.seconds = time.perf_counter() - started
        self.status.value = self._status_text(per_epoch)

    def _status_text(self, per_epoch):
        h, s = self.history, self.settings
        text = (
            f"{self.X.shape[0]} samples / batch {s['batch_size']} = {per_epoch} updates per "
            f"epoch, x {s['epochs']} epochs = {s['epochs'] * per_epoch} updates; "
        )
        if h.diverged:
            d = h.divergence
            text += (
                f"<b>diverged</b> at epoch {d['epoch']}, update {d['step']} "
                f"(lr {d['lr']:.3g}): try a smaller lr"
            )
        else:
            text += f"held-out accuracy <b>{100 * h.epochs['val_accuracy'][-1]:.1f}%</b>"
        return text + f" &nbsp; ({self.seconds:.2f} s)"

    def _build_figure(self):
        from matplotlib.figure import Figure

        fig = Figure(figsize=(10, 5.2), dpi=72)
        (a_it, a_ep), (a_lr, a_acc) = fig.subplots(2, 2)
        self.lines = {
            "loss": a_it.plot([], [], lw=0.6, alpha=0.6, label="batch loss")[0],
            "epoch_train_loss": a_it.plot(
                [], [], "o", ms=4, color="tab:orange", label="epoch mean"
            )[0],
            "train_loss": a_ep.plot([], [], "o-", ms=3, color="tab:orange", label="train")[0],
            "val_loss": a_ep.plot([], [], "s-", ms=3, color="tab:green", label="held-out")[0],
            "lr": a_lr.plot([], [], color="tab:purple")[0],
            "val_accuracy": a_acc.plot([], [], "s-", ms=3, color="tab:green")[0],
        }
        a_it.set(title="loss of every update", xlabel="update")
        a_ep.set(title="loss per epoch", xlabel="epoch")
        a_lr.set(title="learning rate", xlabel="update")
        a_acc.set(title="held-out accuracy", xlabel="epoch")
        a_it.legend(loc="upper right", fontsize="small")
        a_ep.legend(loc="upper right", fontsize="small")
        fig.subplots_adjust(left=0.07, right=0.98, bottom=0.09, top=0.94, hspace=0.45, wspace=0.2)
        self.figure, self._axes = fig, (a_it, a_ep, a_lr, a_acc)

    def _draw(self):
        it, ep = self.history.iterations, self.history.epochs
        steps = np.asarray(it["step"], dtype=float)
        losses = np.asarray(it["loss"], dtype=float)
        finite = np.isfinite(losses)
        self.lines["loss"].set_data(steps, np.where(finite, losses, np.nan))
        self.lines["lr"].set_data(steps, np.asarray(it["lr"], dtype=float))
        epochs = np.asarray(ep["epoch"], dtype=float)
        ends = np.searchsorted(np.asarray(it["epoch"]), epochs, side="right") - 1
        train = np.asarray(ep["train_loss"], dtype=float)
        self.lines["epoch_train_loss"].set_data(steps[ends] if len(ends) else [], train)
        self.lines["train_loss"].set_data(epochs, train)
        self.lines["val_loss"].set_data(epochs, np.asarray(ep["val_loss"], dtype=float))
        self.lines["val_accuracy"].set_data(epochs, np.asarray(ep["val_accuracy"], dtype=float))
        for ax in self._axes:
            ax.relim()
            ax.autoscale_view()
        if finite.any():
            high = float(np.percentile(losses[finite], 99))
            self._axes[0].set_ylim(0, max(high, 1e-3) * 1.05)
        buffer = BytesIO()
        self.figure.savefig(buffer, format="png", pil_kwargs={"compress_level": 1})
        self.image.value = buffer.getvalue()

    def _repr_mimebundle_(self, **kwargs):
        return self.panel._repr_mimebundle_(**kwargs)


def explore(
    data=None,
    *,
    n_train=1000,
    n_val=500,
    lr=0.1,
    batch_size=32,
    epochs=5,
    optimizer="SGD",
    schedule="constant",
    hidden=32,
    activation="ReLU",
    seed=0,
):
    """An interactive panel: sliders for lr (log scale), batch size, epochs, hidden width and
    menus for optimizer, schedule and activation; every change retrains a 1-hidden-layer MLP
    from the same seed and redraws the loss of every update, the loss per epoch, the lr and
    the held-out accuracy.

    Parameters
    ----------
    data : (X, y) or None, default None (the training part of the bundled MNIST sample)
    n_train, n_val : int >= 1, default 1000 and 500
        Rows drawn (fixed by ``seed``) for training and for the held-out accuracy; both come
        from ``data``'s rows, never from the sample's test part.
    lr : float in [1e-4, 10], default 0.1; batch_size : one of BATCH_SIZES, default 32;
    epochs : int in 1..20, default 5; optimizer : one of OPTIMIZERS, default "SGD";
    schedule : one of SCHEDULES, default "constant"; hidden : one of HIDDEN_WIDTHS, default 32;
    activation : "ReLU", "Tanh" or "Sigmoid", default "ReLU"
        The starting values of the widgets.
    seed : int, default 0; seeds the subset, the weights and the shuffling

    Returns an :class:`Explorer` (display it as a cell's last expression). Each run trains
    with the Numba kernels on one thread (faster on problems this small). Seconds per change,
    measured with ``taskset -c 0,1 python benchmarks/explore_timing.py`` (Numba backend, 2
    cores shared with other work, load average ~7): 0.51 s median, 0.61 s at most over 19
    changes at usual settings (about 0.13 s training, the rest drawing); the largest settings
    take longer: batch 1 x 20 epochs 1.3 s, and with hidden width 128 3.0 s. The first run
    also compiles the Numba kernels once (or loads them from the cache).

    Raises ImportError naming ``pip install "minigd[notebook]"`` when ipywidgets is missing.
    """
    widgets = _ipywidgets()
    n_train = check.positive_int("n_train", n_train)
    n_val = check.positive_int("n_val", n_val)
    seed = check.non_negative_int("seed", seed)
    lr = check.real("lr", lr, low=1e-4, high=10.0)
    epochs = check.positive_int("epochs", epochs)
    if epochs > 20:
        raise ValueError(f"epochs must be in 1..20, got {epochs}")
    check.choice("batch_size", batch_size, BATCH_SIZES)
    check.choice("hidden", hidden, HIDDEN_WIDTHS)
    check.choice("optimizer", optimizer, OPTIMIZERS)
    check.choice("schedule", schedule, SCHEDULES)
    check.choice("activation", activation, tuple(ACTIVATIONS))
    X, y, X_val, y_val = _split(data, n_train, n_val, seed)
    settings = {
        "lr": lr,
        "batch_size": batch_size,
        "epochs": epochs,
        "optimizer": optimizer,
        "schedule": schedule,
        "hidden": hidden,
        "activation": activation,
    }
    return Explorer(widgets, X, y, X_val, y_val, settings, seed)
