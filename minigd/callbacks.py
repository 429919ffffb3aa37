"""Callbacks: small policy objects that ``fit`` calls at the start and end of epochs.

A callback reads and steers the run through the :class:`~minigd.training.TrainingState` it is
given (``state.model``, ``state.history``, ``state.stop_training``, ``state.lr_scale``, ...).
Overriding ``on_iteration_end`` makes ``fit`` call Python after every update, which turns off
the fused one-kernel epoch of the Numba backend for that run (the per-iteration path is slower
at small batches but records the same history).
"""

from __future__ import annotations

import math
import warnings

from . import _validation as check
from .losses import Loss


class Callback:
    """Base class; every hook receives the TrainingState and returns nothing."""

    def on_train_begin(self, state):
        pass

    def on_epoch_begin(self, state):
        pass

    def on_iteration_end(self, state):
        pass

    def on_epoch_end(self, state):
        pass

    def on_train_end(self, state):
        pass

    @property
    def per_iteration(self):
        return type(self).on_iteration_end is not Callback.on_iteration_end


# Hooks of Keras, PyTorch Lightning and fastai that fit never calls, and the minigd hook to use.
FOREIGN_HOOKS = {
    "on_batch_end": "on_iteration_end",
    "on_train_batch_end": "on_iteration_end",
    "on_step_end": "on_iteration_end",
    "after_batch": "on_iteration_end",
    "after_step": "on_iteration_end",
    "on_batch_begin": None,
    "on_train_batch_begin": None,
    "on_step_begin": None,
    "before_batch": None,
    "on_epoch_start": "on_epoch_begin",
    "on_train_epoch_start": "on_epoch_begin",
    "before_epoch": "on_epoch_begin",
    "on_train_epoch_end": "on_epoch_end",
    "on_validation_end": "on_epoch_end",
    "on_validation_epoch_end": "on_epoch_end",
    "after_epoch": "on_epoch_end",
    "on_train_start": "on_train_begin",
    "on_fit_start": "on_train_begin",
    "before_fit": "on_train_begin",
    "on_fit_end": "on_train_end",
    "after_fit": "on_train_end",
}
_warned_hooks: set[tuple[type, str]] = set()


def warn_foreign_hooks(callback):
    """Warn once per class and hook when ``callback`` defines a hook (Keras, Lightning, fastai
    names such as ``on_batch_end``) that ``fit`` never calls, naming the minigd hook to use."""
    cls = type(callback)
    for name, ours in FOREIGN_HOOKS.items():
        if not callable(getattr(callback, name, None)) or (cls, name) in _warned_hooks:
            continue
        _warned_hooks.add((cls, name))
        if ours is None:
            fix = (
                "minigd has no hook before an update; use on_iteration_end (after each "
                "update) or on_epoch_begin"
            )
        else:
            fix = f"rename it to {ours}(self, state)"
        warnings.warn(
            f"{cls.__name__}.{name} is never called by minigd's fit: {fix}. "
            f"minigd's hooks: on_train_begin, on_epoch_begin, on_iteration_end, "
            f"on_epoch_end, on_train_end",
            UserWarning,
            stacklevel=4,
        )


MONITORS = ("val_loss", "val_accuracy", "train_loss")
MAXIMIZED = ("accuracy", "r2")  # metrics where higher is better (mode="auto" picks "max")


def _loss_classes(cls=Loss):
    for sub in cls.__subclasses__():
        yield sub
        yield from _loss_classes(sub)


def known_monitors():
    """Every name an epoch can record for the losses defined so far: train_loss, val_loss and
    val_<metric> for each metric of each Loss class (the built-ins' and yours)."""
    names = ["train_loss", "val_loss"]
    for cls in [Loss, *_loss_classes()]:
        try:
            metrics = cls.__new__(cls).metric_names
        except Exception:  # a metric_names property that needs __init__: check later
            continue
        names += [f"val_{m}" for m in metrics if f"val_{m}" not in names]
    return tuple(names)


def _check_monitor(monitor):
    """A str naming a value some loss records; the exact check is at the start of fit."""
    if not isinstance(monitor, str):
        raise TypeError(f"monitor must be a str such as 'val_loss', got {type(monitor).__name__}")
    known = known_monitors()
    if monitor not in known:
        raise ValueError(
            f"monitor must be one of the values an epoch records: {known}, got {monitor!r}"
        )
    return monitor


def check_recorded(monitor, state):
    """ValueError unless this run's epochs record ``monitor`` (listing what they record), or
    when it is a validation value and fit has no validation_data."""
    recorded = state.history.monitorable
    if monitor not in recorded:
        raise ValueError(
            f"monitor={monitor!r} is not recorded by this run (loss "
            f"{type(state.loss).__name__}); its epochs record {recorded}"
        )
    if monitor.startswith("val_") and not state.has_validation:
        raise ValueError(f"monitor={monitor!r} needs validation_data in fit()")


def _monitored(state, monitor):
    value = state.history.epochs[monitor][-1]
    if value is None:
        raise ValueError(f"monitor={monitor!r} needs validation_data in fit()")
    return value


def _mode(monitor, mode):
    check.choice("mode", mode, ("auto", "min", "max"))
    if mode == "auto":
        return "max" if any(monitor.endswith(m) for m in MAXIMIZED) else "min"
    return mode


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    Improvement means value < best - min_delta ("min") or value > best + min_delta ("max";
    "auto" picks max for accuracies). With ``restore_best=True`` the weights of the best epoch
    are put back when training ends, however it ends (stopped, out of epochs, diverged, or
    interrupted by an exception).

    Parameters
    ----------
    monitor : str, default "val_loss": any value the epoch records: "train_loss", "val_loss",
        or "val_<metric>" of the loss ("val_accuracy"; "val_mse", "val_r2" for regression).
        Checked against the loss's record when fit starts (ValueError listing the names).
    patience : int >= 1, default 5
    min_delta : float >= 0, default 0
    restore_best : bool, default True
    mode : {"auto", "min", "max"}, default "auto" ("max" for accuracy and r2, else "min")

    ``update(value) -> bool`` feeds one epoch's value by hand (True when it is the new best),
    for use and testing without training.
    """

    def __init__(
        self, monitor="val_loss", patience=5, min_delta=0.0, restore_best=True, mode="auto"
    ):
        self.monitor = _check_monitor(monitor)
        self.patience = check.positive_int("patience", patience)
        self.min_delta = check.non_negative("min_delta", min_delta)
        self.restore_best = check.boolean("restore_best", restore_best)
        self.mode = _mode(self.monitor, mode)
        self.reset()

    def reset(self):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = None
        self.wait = 0
        self.stopped_epoch = None
        self.should_stop = False
        self.best_weights = None
        self._epoch = 0

    def _improved(self, value):
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def update(self, value):
        """Record one epoch's monitored value; returns True if it is the new best."""
        value = check.real("value", value, finite=False)
        self._epoch += 1
        if math.isfinite(value) and self._improved(value):
            self.best, self.best_epoch, self.wait = value, self._epoch, 0
            return True
        self.wait += 1
        if self.wait >= self.patience:
            self.should_stop = True
            self.stopped_epoch = self._epoch
        return False

    def on_train_begin(self, state):
        check_recorded(self.monitor, state)
        self.reset()

    def state_dict(self):
        """Counters, best value and (with restore_best) the best weights, for checkpoints."""
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "stopped_epoch": self.stopped_epoch,
            "should_stop": self.should_stop,
            "_epoch": self._epoch,
            "best_weights": self.best_weights,
        }

    def load_state_dict(self, state):
        """Continue from :meth:`state_dict`'s values."""
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
        self.stopped_epoch, self.should_stop = state["stopped_epoch"], state["should_stop"]
        self._epoch, self.best_weights = state["_epoch"], state["best_weights"]

    def on_epoch_end(self, state):
        self._epoch = state.epoch - 1
        if self.update(_monitored(state, self.monitor)):
            if self.restore_best:
                self.best_weights = state.model.state_dict()
        if self.should_stop:
            state.stop_training = True
            state.history.stopped_early = True

    def on_train_end(self, state):
        if self.restore_best and self.best_weights is not None:
            state.model.load_state_dict(self.best_weights)

    def __repr__(self):
        return (
            f"EarlyStopping(monitor={self.monitor!r}, patience={self.patience}, "
            f"min_delta={self.min_delta}, restore_best={self.restore_best})"
        )


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` stalls (torch ReduceLROnPlateau).

    A value is better when value < best * (1 - threshold) ("min", threshold_mode "rel"),
    value < best - threshold ("abs"), and mirrored for "max". After more than ``patience`` bad
    epochs: new_lr = max(lr * factor, min_lr), applied if lr - new_lr > eps, then ``cooldown``
    epochs without counting. In ``fit`` the reduction multiplies ``state.lr_scale``, so it
    composes with a schedule: lr = schedule(t) * lr_scale.

    ``step(value, lr) -> new lr`` feeds one epoch by hand, for use and testing without training.
    """

    def __init__(
        self,
        monitor="val_loss",
        factor=0.1,
        patience=10,
        threshold=1e-4,
        threshold_mode="rel",
        cooldown=0,
        min_lr=0.0,
        eps=1e-8,
        mode="auto",
    ):
        self.monitor = _check_monitor(monitor)
        self.factor = check.real("factor", factor, low=0.0, high=1.0, low_open=True, high_open=True)
        self.patience = check.non_negative_int("patience", patience)
        self.threshold = check.non_negative("threshold", threshold)
        self.threshold_mode = check.choice("threshold_mode", threshold_mode, ("rel", "abs"))
        self.cooldown = check.non_negative_int("cooldown", cooldown)
        self.min_lr = check.non_negative("min_lr", min_lr)
        self.eps = check.non_negative("eps", eps)
        self.mode = _mode(self.monitor, mode)
        self.reset()

    def reset(self):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.reductions = []

    def _is_better(self, value):
        if self.mode == "min":
            bound = (
                self.best * (1 - self.threshold)
                if self.threshold_mode == "rel"
                else self.best - self.threshold
            )
            return value < bound
        bound = (
            self.best * (1 + self.threshold)
            if self.threshold_mode == "rel"
            else self.best + self.threshold
        )
        return value > bound

    def step(self, value, lr):
        """Feed one epoch's monitored value and the current lr; return the lr to use next."""
        value = check.real("value", value, finite=False)
        lr = check.real("lr", lr, low=0.0)
        if self._is_better(value):
            self.best, self.num_bad_epochs = value, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            new_lr = max(lr * self.factor, self.min_lr)
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
            if lr - new_lr > self.eps:
                return new_lr
        return lr

    def on_train_begin(self, state):
        check_recorded(self.monitor, state)
        self.reset()

    def state_dict(self):
        """Best value, counters and the reductions so far, for checkpoints."""
        return {
            "best": self.best,
            "num_bad_epochs": self.num_bad_epochs,
            "cooldown_counter": self.cooldown_counter,
            "reductions": list(self.reductions),
        }

    def load_state_dict(self, state):
        """Continue from :meth:`state_dict`'s values."""
        self.best, self.num_bad_epochs = state["best"], state["num_bad_epochs"]
        self.cooldown_counter = state["cooldown_counter"]
        self.reductions = [tuple(r) for r in state["reductions"]]

    def on_epoch_end(self, state):
        lr = state.current_lr
        new_lr = self.step(_monitored(state, self.monitor), lr)
        if new_lr != lr and lr > 0:
            state.lr_scale *= new_lr / lr
            self.reductions.append((state.epoch, lr, new_lr))

    def __repr__(self):
        return (
            f"ReduceLROnPlateau(monitor={self.monitor!r}, factor={self.factor}, "
            f"patience={self.patience}, min_lr={self.min_lr})"
        )
