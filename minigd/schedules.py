"""Learning-rate schedules: pure closed-form functions ``lr = s(t)``.

``t`` counts from 0 in the schedule's ``unit``: ``"epoch"`` (the first epoch uses s(0)) or
``"iteration"`` (the first update uses s(0)). ``fit`` evaluates the schedule before every update.
The schedules with a ``torch.optim.lr_scheduler`` counterpart give its numbers:
StepDecay = StepLR, ExponentialDecay = ExponentialLR, CosineAnnealing = CosineAnnealingLR,
CyclicLR = CyclicLR (cycle_momentum=False), Warmup = ChainedScheduler(LinearLR, ...),
Chain = SequentialLR.

Batch-size schedules (``BatchSizeSchedule``: ConstantBatchSize, StepBatchSize, FunctionBatchSize)
are per-epoch functions ``B = s(e)`` passed to ``fit(..., batch_size=s)``.
"""
import math
import numbers

import numpy as np

from . import _validation as check

UNITS = ("epoch", "iteration")


def _check_t(t):
    if isinstance(t, (bool, np.bool_)) or not isinstance(t, numbers.Integral) or t < 0:
        raise ValueError(f"t must be an integer >= 0, got {t!r}")
    return int(t)


def _gamma(value, name="gamma"):
    return check.real(name, value, low=0.0, high=1.0, low_open=True)


class Schedule:
    """Base class: subclasses define ``_value(t)`` and hold their arguments."""

    def __init__(self, unit):
        self.unit = check.choice("unit", unit, UNITS)

    def __call__(self, t):
        return self._value(_check_t(t))

    def values(self, steps):
        """np.array of s(0), ..., s(steps - 1)."""
        steps = check.positive_int("steps", steps)
        return np.array([self._value(t) for t in range(steps)])

    def _args(self):
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._args().items())
        return f"{type(self).__name__}({args})"


def _lr(name, value):
    return check.real(name, value, low=0.0)


class Constant(Schedule):
    """s(t) = lr."""
    name = "constant"

    def __init__(self, lr, unit="epoch"):
        super().__init__(unit)
        self.lr = _lr("lr", lr)

    def _value(self, t):
        return self.lr


class StepDecay(Schedule):
    """s(t) = lr * gamma ** floor(t / step_size)   (torch StepLR)."""
    name = "step"

    def __init__(self, lr, step_size, gamma=0.1, unit="epoch"):
        super().__init__(unit)
        self.lr = _lr("lr", lr)
        self.step_size = check.positive_int("step_size", step_size)
        self.gamma = _gamma(gamma)

    def _value(self, t):
        return self.lr * self.gamma ** (t // self.step_size)


class ExponentialDecay(Schedule):
    """s(t) = lr * gamma ** t   (torch ExponentialLR)."""
    name = "exponential"

    def __init__(self, lr, gamma, unit="epoch"):
        super().__init__(unit)
        self.lr = _lr("lr", lr)
        self.gamma = _gamma(gamma)

    def _value(self, t):
        return self.lr * self.gamma ** t


class CosineAnnealing(Schedule):
    """s(t) = min_lr + (lr - min_lr) * (1 + cos(pi * t / t_max)) / 2   (torch CosineAnnealingLR).

    Past t_max the cosine continues, as torch's does: it climbs back to lr at 2 * t_max and
    repeats with period 2 * t_max (use Chain with a Constant to hold min_lr instead).
    """
    name = "cosine"

    def __init__(self, lr, t_max, min_lr=0.0, unit="epoch"):
        super().__init__(unit)
        self.lr = _lr("lr", lr)
        self.t_max = check.positive_int("t_max", t_max)
        self.min_lr = _lr("min_lr", min_lr)
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed lr ({self.lr})")

    def _value(self, t):
        return self.min_lr + (self.lr - self.min_lr) * (1 + math.cos(math.pi * t / self.t_max)) / 2


class CyclicLR(Schedule):
    """Cyclical learning rate (Smith 2017), as torch CyclicLR without momentum cycling.

    A cycle rises from base_lr to max_lr in ``step_size`` steps and falls back in
    ``step_size_down`` (default step_size). With x the position in the cycle,
    s(t) = base_lr + (max_lr - base_lr) * h(x) * scale, where scale is 1 ("triangular"),
    1 / 2 ** (cycle - 1) ("triangular2", cycle counted from 1) or gamma ** t ("exp_range").
    """
    name = "cyclic"
    MODES = ("triangular", "triangular2", "exp_range")

    def __init__(self, base_lr, max_lr, step_size, mode="triangular", gamma=1.0,
                 step_size_down=None, unit="iteration"):
        super().__init__(unit)
        self.base_lr = _lr("base_lr", base_lr)
        self.max_lr = _lr("max_lr", max_lr)
        if self.base_lr > self.max_lr:
            raise ValueError(f"base_lr ({self.base_lr}) must not exceed max_lr ({self.max_lr})")
        self.step_size = check.positive_int("step_size", step_size)
        self.step_size_down = (self.step_size if step_size_down is None
                               else check.positive_int("step_size_down", step_size_down))
        self.mode = check.choice("mode", mode, self.MODES)
        self.gamma = _gamma(gamma)

    def _value(self, t):
        total = self.step_size + self.step_size_down
        ratio = self.step_size / total
        cycle = math.floor(1 + t / total)
        x = 1.0 + t / total - cycle
        height = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
        if self.mode == "triangular":
            scale = 1.0
        elif self.mode == "triangular2":
            scale = 1 / (2.0 ** (cycle - 1))
        else:
            scale = self.gamma ** t
        return self.base_lr + (self.max_lr - self.base_lr) * height * scale


class Warmup(Schedule):
    """Linear warmup in front of a schedule: s(t) = inner(t) * f(t).

    f(t) = start_factor + (1 - start_factor) * t / warmup_steps for t < warmup_steps, then 1.
    Same numbers as torch's ChainedScheduler([LinearLR(start_factor, total_iters=warmup_steps),
    inner]). ``warmup_steps`` counts in the inner schedule's unit.
    """
    name = "warmup"

    def __init__(self, schedule, warmup_steps, start_factor=1 / 3):
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a minigd schedule, got {type(schedule).__name__}")
        super().__init__(schedule.unit)
        self.schedule = schedule
        self.warmup_steps = check.positive_int("warmup_steps", warmup_steps)
        self.start_factor = check.real("start_factor", start_factor, low=0.0, high=1.0,
                                       low_open=True)

    def _value(self, t):
        factor = 1.0
        if t < self.warmup_steps:
            factor = self.start_factor + (1 - self.start_factor) * t / self.warmup_steps
        return self.schedule._value(t) * factor


class Chain(Schedule):
    """Schedules one after another: from ``boundaries[i-1]`` on, schedules[i](t - boundaries[i-1]).

    ``Chain([Constant(0.01), CosineAnnealing(0.1, 90)], boundaries=[10])`` holds 0.01 for 10
    steps, then anneals from 0.1 with its own t starting at 0 (torch SequentialLR, optax
    join_schedules). All schedules share one unit.
    """
    name = "chain"

    def __init__(self, schedules, boundaries):
        schedules, boundaries = list(schedules), list(boundaries)
        if not schedules or not all(isinstance(s, Schedule) for s in schedules):
            raise TypeError("schedules must be a non-empty list of minigd schedules")
        if len(boundaries) != len(schedules) - 1:
            raise ValueError(f"boundaries needs {len(schedules) - 1} entries for "
                             f"{len(schedules)} schedules, got {len(boundaries)}")
        boundaries = [check.positive_int(f"boundaries[{i}]", b) for i, b in enumerate(boundaries)]
        if any(b <= a for a, b in zip(boundaries, boundaries[1:])):
            raise ValueError(f"boundaries must increase strictly, got {boundaries}")
        units = {s.unit for s in schedules}
        if len(units) != 1:
            raise ValueError(f"all chained schedules need one unit, got {sorted(units)}")
        super().__init__(units.pop())
        self.schedules, self.boundaries = schedules, boundaries

    def _value(self, t):
        start = 0
        for schedule, boundary in zip(self.schedules, self.boundaries):
            if t < boundary:
                return schedule._value(t - start)
            start = boundary
        return self.schedules[-1]._value(t - start)


def _scaling_args(lr, batch_size, base_batch_size):
    return (_lr("lr", lr), check.positive_int("batch_size", batch_size),
            check.positive_int("base_batch_size", base_batch_size))


def _ratio(batch_size, base_batch_size):
    try:
        return batch_size / base_batch_size
    except OverflowError:
        raise ValueError(f"batch_size / base_batch_size = {batch_size} / {base_batch_size} is "
                         f"beyond the float range") from None


def linear_scaling(lr, batch_size, base_batch_size):
    """Linear scaling rule (Goyal et al. 2017): lr * batch_size / base_batch_size."""
    lr, batch_size, base_batch_size = _scaling_args(lr, batch_size, base_batch_size)
    try:
        scaled = lr * batch_size / base_batch_size
    except OverflowError:  # an int beyond the float range: divide the ints exactly first
        scaled = lr * _ratio(batch_size, base_batch_size)
    return _finite_lr(scaled, batch_size, base_batch_size)


def sqrt_scaling(lr, batch_size, base_batch_size):
    """Square-root scaling rule (Hoffer et al. 2017): lr * sqrt(batch_size / base_batch_size)."""
    lr, batch_size, base_batch_size = _scaling_args(lr, batch_size, base_batch_size)
    return _finite_lr(lr * math.sqrt(_ratio(batch_size, base_batch_size)), batch_size,
                      base_batch_size)


def _finite_lr(scaled, batch_size, base_batch_size):
    if not math.isfinite(scaled):
        raise ValueError(f"the scaled lr overflows: batch_size={batch_size} is too large for "
                         f"base_batch_size={base_batch_size}")
    return scaled


def as_schedule(schedule):
    """Accept a Schedule, or a plain callable t -> lr (treated as per epoch)."""
    if schedule is None or isinstance(schedule, Schedule):
        return schedule
    if isinstance(schedule, BatchSizeSchedule):
        raise TypeError(f"schedule got the batch-size schedule {schedule!r}: pass it as "
                        f"batch_size=")
    if callable(schedule):
        return FunctionSchedule(schedule)
    raise TypeError(f"schedule must be a minigd schedule or a callable t -> lr, got "
                    f"{type(schedule).__name__}")


class FunctionSchedule(Schedule):
    """Wrap a callable ``fn(t) -> lr``; its values are checked when used."""

    def __init__(self, fn, unit="epoch"):
        super().__init__(getattr(fn, "unit", unit))
        self.fn = fn

    def _value(self, t):
        return check.real(f"schedule({t})", self.fn(t), low=0.0)


# ---- batch-size schedules ------------------------------------------------------------------

class BatchSizeSchedule:
    """Base class of batch-size schedules: ``B = s(e)``, a positive int for each epoch e >= 0.

    ``fit(..., batch_size=s)`` sets the batch size of epoch e (counted from 0, so the first epoch
    uses s(0)) before the epoch starts; within an epoch it is fixed. Increasing the batch size
    lowers the gradient noise like decaying the lr does (Smith et al. 2017, "Don't decay the
    learning rate, increase the batch size"), with fewer updates per epoch.
    Subclasses define ``_value(e)``.
    """
    unit = "epoch"

    def __call__(self, e):
        return self._value(_check_t(e))

    def values(self, epochs):
        """List of s(0), ..., s(epochs - 1)."""
        epochs = check.positive_int("epochs", epochs)
        return [self(e) for e in range(epochs)]

    def _args(self):
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._args().items())
        return f"{type(self).__name__}({args})"


class ConstantBatchSize(BatchSizeSchedule):
    """s(e) = batch_size."""

    def __init__(self, batch_size):
        self.batch_size = check.positive_int("batch_size", batch_size)

    def _value(self, e):
        return self.batch_size


class StepBatchSize(BatchSizeSchedule):
    """s(e) = min(batch_size * factor ** (e // step_size), max_batch_size), rounded to an int.

    The batch-size mirror of StepDecay: ``StepBatchSize(32, step_size=2, factor=5)`` gives
    32, 32, 160, 160, 800, ... and tracks ``StepDecay(lr, 2, gamma=1/5)`` at batch 32 in loss
    per epoch with ever fewer updates per epoch.

    Parameters
    ----------
    batch_size : int >= 1, the batch size of the first ``step_size`` epochs
    step_size : int >= 1, epochs between increases
    factor : real >= 1, default 2 (an int factor keeps every size exact)
    max_batch_size : int >= batch_size or None (default: no cap)

    Example
    -------
    >>> StepBatchSize(32, step_size=2, factor=5, max_batch_size=1000).values(7)
    [32, 32, 160, 160, 800, 800, 1000]
    """

    def __init__(self, batch_size, step_size, factor=2, max_batch_size=None):
        self.batch_size = check.positive_int("batch_size", batch_size)
        self.step_size = check.positive_int("step_size", step_size)
        self.factor = check.real("factor", factor, low=1.0)
        if isinstance(factor, numbers.Integral):
            self.factor = int(factor)
        self.max_batch_size = None
        if max_batch_size is not None:
            self.max_batch_size = check.positive_int("max_batch_size", max_batch_size)
            if self.max_batch_size < self.batch_size:
                raise ValueError(f"max_batch_size ({self.max_batch_size}) must be >= batch_size "
                                 f"({self.batch_size})")

    def _value(self, e):
        k = e // self.step_size
        if isinstance(self.factor, int):
            size = self.batch_size * self.factor ** k
        else:
            try:
                size = round(self.batch_size * self.factor ** k)
            except OverflowError:
                size = math.inf
        if self.max_batch_size is not None:
            size = min(size, self.max_batch_size)
        if size == math.inf:
            raise ValueError(f"{self!r} overflows at epoch {e}: set max_batch_size")
        return int(size)


class FunctionBatchSize(BatchSizeSchedule):
    """Wrap a callable ``fn(e) -> batch size``; each value must be an int >= 1."""

    def __init__(self, fn):
        if not callable(fn):
            raise TypeError(f"fn must be callable e -> batch size, got {type(fn).__name__}")
        self.fn = fn

    def _value(self, e):
        return check.positive_int(f"batch_size({e})", self.fn(e))


def as_batch_size_schedule(batch_size):
    """Accept an int (constant), a BatchSizeSchedule, or a callable e -> positive int."""
    if isinstance(batch_size, BatchSizeSchedule):
        return batch_size
    if isinstance(batch_size, numbers.Integral) and not isinstance(batch_size, (bool, np.bool_)):
        return ConstantBatchSize(batch_size)
    if isinstance(batch_size, Schedule):
        raise TypeError(f"batch_size got the learning-rate schedule {batch_size!r}: pass it as "
                        f"schedule=, and a batch-size schedule (e.g. StepBatchSize) as batch_size=")
    if callable(batch_size):
        return FunctionBatchSize(batch_size)
    raise TypeError(f"batch_size must be a positive int, a batch-size schedule or a callable "
                    f"epoch -> batch size, got {batch_size!r} ({type(batch_size).__name__})")
