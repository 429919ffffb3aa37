"""Learning-rate schedules: pure closed-form functions ``lr = s(t)``.

``t`` counts from 0 in the schedule's ``unit``: ``"epoch"`` (the first epoch uses s(0)) or
``"iteration"`` (the first update uses s(0)). ``fit`` evaluates the schedule before every update.
The schedules with a ``torch.optim.lr_scheduler`` counterpart give its numbers:
StepDecay = StepLR, ExponentialDecay = ExponentialLR, CosineAnnealing = CosineAnnealingLR,
CyclicLR = CyclicLR (cycle_momentum=False), Warmup = ChainedScheduler(LinearLR, ...),
Chain = SequentialLR, OneCycle = OneCycleLR (with its momentum cycling),
CosineWarmRestarts = CosineAnnealingWarmRestarts, MultiStepDecay = MultiStepLR,
PolynomialDecay = PolynomialLR.

``s.momentum(t)`` is None for every schedule except OneCycle, whose ``sets_momentum`` is True:
fit then sets SGD's momentum or Adam's beta1 to ``s.momentum(t)`` before each update.

Batch-size schedules (``BatchSizeSchedule``: ConstantBatchSize, StepBatchSize, FunctionBatchSize)
are per-epoch functions ``B = s(e)`` passed to ``fit(..., batch_size=s)``.
"""

from __future__ import annotations

import bisect
import math
import numbers
from typing import Callable, Sequence

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
    """Base class: subclasses define ``value(t)`` and hold their arguments."""

    def __init__(self, unit: str) -> None:
        self.unit = check.choice("unit", unit, UNITS)

    def __call__(self, t: int) -> float:
        return self.value(_check_t(t))

    def value(self, t: int) -> float:
        """s(t) for a checked step t >= 0; every subclass defines it."""
        raise NotImplementedError

    def values(self, steps: int) -> np.ndarray:
        """np.array of s(0), ..., s(steps - 1)."""
        steps = check.positive_int("steps", steps)
        return np.array([self.value(t) for t in range(steps)])

    #: True when ``momentum(t)`` gives values that fit applies (SGD's momentum, Adam's beta1).
    sets_momentum = False

    def momentum(self, t: int) -> float | None:
        """The momentum of step t (SGD's momentum, Adam's beta1); None: this schedule leaves it."""
        _check_t(t)
        return None

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

    def __init__(self, lr: float, unit: str = "epoch") -> None:
        super().__init__(unit)
        self.lr = _lr("lr", lr)

    def value(self, t: int) -> float:
        return self.lr


class StepDecay(Schedule):
    """s(t) = lr * gamma ** floor(t / step_size)   (torch StepLR)."""

    name = "step"

    def __init__(self, lr: float, step_size: int, gamma: float = 0.1, unit: str = "epoch") -> None:
        super().__init__(unit)
        self.lr = _lr("lr", lr)
        self.step_size = check.positive_int("step_size", step_size)
        self.gamma = _gamma(gamma)

    def value(self, t: int) -> float:
        return self.lr * self.gamma ** (t // self.step_size)


class ExponentialDecay(Schedule):
    """s(t) = lr * gamma ** t   (torch ExponentialLR)."""

    name = "exponential"

    def __init__(self, lr: float, gamma: float, unit: str = "epoch") -> None:
        super().__init__(unit)
        self.lr = _lr("lr", lr)
        self.gamma = _gamma(gamma)

    def value(self, t: int) -> float:
        return self.lr * self.gamma**t


class CosineAnnealing(Schedule):
    """s(t) = min_lr + (lr - min_lr) * (1 + cos(pi * t / t_max)) / 2   (torch CosineAnnealingLR).

    Past t_max the cosine continues, as torch's does: it climbs back to lr at 2 * t_max and
    repeats with period 2 * t_max (use Chain with a Constant to hold min_lr instead).
    """

    name = "cosine"

    def __init__(self, lr: float, t_max: int, min_lr: float = 0.0, unit: str = "epoch") -> None:
        super().__init__(unit)
        self.lr = _lr("lr", lr)
        self.t_max = check.positive_int("t_max", t_max)
        self.min_lr = _lr("min_lr", min_lr)
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed lr ({self.lr})")

    def value(self, t: int) -> float:
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

    def __init__(
        self,
        base_lr,
        max_lr,
        step_size,
        mode="triangular",
        gamma=1.0,
        step_size_down=None,
        unit="iteration",
    ):
        super().__init__(unit)
        self.base_lr = _lr("base_lr", base_lr)
        self.max_lr = _lr("max_lr", max_lr)
        if self.base_lr > self.max_lr:
            raise ValueError(f"base_lr ({self.base_lr}) must not exceed max_lr ({self.max_lr})")
        self.step_size = check.positive_int("step_size", step_size)
        self.step_size_down = (
            self.step_size
            if step_size_down is None
            else check.positive_int("step_size_down", step_size_down)
        )
        self.mode = check.choice("mode", mode, self.MODES)
        self.gamma = _gamma(gamma)

    def value(self, t: int) -> float:
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
            scale = self.gamma**t
        return self.base_lr + (self.max_lr - self.base_lr) * height * scale


class Warmup(Schedule):
    """Linear warmup in front of a schedule: s(t) = inner(t) * f(t).

    f(t) = start_factor + (1 - start_factor) * t / warmup_steps for t < warmup_steps, then 1.
    Same numbers as torch's ChainedScheduler([LinearLR(start_factor, total_iters=warmup_steps),
    inner]). ``warmup_steps`` counts in the inner schedule's unit.
    """

    name = "warmup"

    def __init__(self, schedule: Schedule, warmup_steps: int, start_factor: float = 1 / 3) -> None:
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a minigd schedule, got {type(schedule).__name__}")
        super().__init__(schedule.unit)
        self.schedule = schedule
        self.warmup_steps = check.positive_int("warmup_steps", warmup_steps)
        self.start_factor = check.real(
            "start_factor", start_factor, low=0.0, high=1.0, low_open=True
        )

    def value(self, t: int) -> float:
        factor = 1.0
        if t < self.warmup_steps:
            factor = self.start_factor + (1 - self.start_factor) * t / self.warmup_steps
        return self.schedule.value(t) * factor


class Chain(Schedule):
    """Schedules one after another: from ``boundaries[i-1]`` on, schedules[i](t - boundaries[i-1]).

    ``Chain([Constant(0.01), CosineAnnealing(0.1, 90)], boundaries=[10])`` holds 0.01 for 10
    steps, then anneals from 0.1 with its own t starting at 0 (torch SequentialLR, optax
    join_schedules). All schedules share one unit.
    """

    name = "chain"

    def __init__(self, schedules: Sequence[Schedule], boundaries: Sequence[int]) -> None:
        schedules, boundaries = list(schedules), list(boundaries)
        if not schedules or not all(isinstance(s, Schedule) for s in schedules):
            raise TypeError("schedules must be a non-empty list of minigd schedules")
        if len(boundaries) != len(schedules) - 1:
            raise ValueError(
                f"boundaries needs {len(schedules) - 1} entries for "
                f"{len(schedules)} schedules, got {len(boundaries)}"
            )
        boundaries = [check.positive_int(f"boundaries[{i}]", b) for i, b in enumerate(boundaries)]
        if any(b <= a for a, b in zip(boundaries, boundaries[1:])):
            raise ValueError(f"boundaries must increase strictly, got {boundaries}")
        units = {s.unit for s in schedules}
        if len(units) != 1:
            raise ValueError(f"all chained schedules need one unit, got {sorted(units)}")
        super().__init__(units.pop())
        self.schedules, self.boundaries = schedules, boundaries

    def value(self, t: int) -> float:
        start = 0
        for schedule, boundary in zip(self.schedules, self.boundaries):
            if t < boundary:
                return schedule.value(t - start)
            start = boundary
        return self.schedules[-1].value(t - start)


class OneCycle(Schedule):
    """One-cycle policy (Smith & Topin 2019), as torch OneCycleLR with cycle_momentum=True.

    The lr rises from ``initial_lr = max_lr / div_factor`` to ``max_lr`` over the first
    ``pct_start * total_steps - 1`` steps, then falls to ``min_lr = initial_lr /
    final_div_factor`` at step ``total_steps - 1``; the momentum moves the opposite way, from
    ``max_momentum`` down to ``base_momentum`` at the lr peak and back up. ``three_phase=True``
    falls back to initial_lr at step ``2 * pct_start * total_steps - 2`` first, then to min_lr
    with the momentum held at max_momentum (the paper's version). Each phase interpolates with
    ``anneal``: "cos" gives end + (start - end) * (1 + cos(pi * pct)) / 2, "linear" gives
    start + (end - start) * pct, pct the fraction of the phase done (torch's arithmetic).

    ``s(t)`` is the lr and ``s.momentum(t)`` the momentum (SGD's momentum, Adam's beta1) of step
    t = 0 .. total_steps - 1; a t past the cycle is a ValueError, as torch's stepping past
    total_steps is (torch also computes t = total_steps, which no update uses).

    Parameters
    ----------
    max_lr : float > 0, the peak lr
    total_steps : int >= 1, the number of steps in the cycle (the updates of the run)
    pct_start : float in (0, 1), default 0.3, the fraction of the cycle spent rising
    anneal : "cos" (default) or "linear" (torch's anneal_strategy)
    div_factor : float > 0, default 25.0
    final_div_factor : float > 0, default 1e4
    three_phase : bool, default False
    base_momentum, max_momentum : floats in [0, 1), defaults 0.85 and 0.95, base <= max
    cycle_momentum : bool, default True; False leaves the momentum alone (momentum(t) is None)
    unit : "iteration" (default, as torch) or "epoch"

    Example
    -------
    >>> s = OneCycle(0.1, total_steps=100)
    >>> round(s(29), 6), s.momentum(29)
    (0.1, 0.85)
    """

    name = "onecycle"
    ANNEALS = ("cos", "linear")

    def __init__(
        self,
        max_lr,
        total_steps,
        pct_start=0.3,
        anneal="cos",
        div_factor=25.0,
        final_div_factor=1e4,
        three_phase=False,
        base_momentum=0.85,
        max_momentum=0.95,
        cycle_momentum=True,
        unit="iteration",
    ):
        super().__init__(unit)
        self.max_lr = check.real("max_lr", max_lr, low=0.0, low_open=True)
        self.total_steps = check.positive_int("total_steps", total_steps)
        self.pct_start = check.real(
            "pct_start", pct_start, low=0.0, high=1.0, low_open=True, high_open=True
        )
        self.anneal = check.choice("anneal", anneal, self.ANNEALS)
        self.div_factor = check.real("div_factor", div_factor, low=0.0, low_open=True)
        self.final_div_factor = check.real(
            "final_div_factor", final_div_factor, low=0.0, low_open=True
        )
        self.three_phase = check.boolean("three_phase", three_phase)
        self.base_momentum = check.real(
            "base_momentum", base_momentum, low=0.0, high=1.0, high_open=True
        )
        self.max_momentum = check.real(
            "max_momentum", max_momentum, low=0.0, high=1.0, high_open=True
        )
        if self.base_momentum > self.max_momentum:
            raise ValueError(
                f"base_momentum ({self.base_momentum}) must not exceed max_momentum "
                f"({self.max_momentum})"
            )
        self.cycle_momentum = check.boolean("cycle_momentum", cycle_momentum)
        peak = float(self.pct_start * self.total_steps) - 1
        if peak == 0:  # torch's OneCycleLR divides by zero at step 0 here
            raise ValueError(
                f"pct_start * total_steps = {self.pct_start} * {self.total_steps} is "
                f"1, a rising phase of zero steps: change pct_start or total_steps"
            )
        low, top = self.initial_lr, self.max_lr
        m_low, m_top = self.base_momentum, self.max_momentum
        if self.three_phase:  # (end_step, start_lr, end_lr, start_momentum, end_momentum)
            self._phases = (
                (peak, low, top, m_top, m_low),
                (float(2 * self.pct_start * self.total_steps) - 2, top, low, m_low, m_top),
                (self.total_steps - 1, low, self.min_lr, m_top, m_top),
            )
        else:
            self._phases = (
                (peak, low, top, m_top, m_low),
                (self.total_steps - 1, top, self.min_lr, m_low, m_top),
            )

    @property
    def initial_lr(self):
        """The lr of step 0: max_lr / div_factor."""
        return self.max_lr / self.div_factor

    @property
    def min_lr(self):
        """The lr of the last step: initial_lr / final_div_factor."""
        return self.initial_lr / self.final_div_factor

    @property
    def sets_momentum(self):
        return self.cycle_momentum

    def momentum(self, t: int) -> float | None:
        """The momentum of step t (SGD's momentum, Adam's beta1); None if cycle_momentum=False."""
        t = _check_t(t)
        if not self.cycle_momentum:
            return None
        pct, phase = self._locate(t)
        return self._interpolate(phase[3], phase[4], pct)

    def value(self, t: int) -> float:
        pct, phase = self._locate(t)
        return self._interpolate(phase[1], phase[2], pct)

    def _locate(self, t):
        """(fraction of the phase done, phase) of step t, found as torch's get_lr finds it."""
        if t >= self.total_steps:
            raise ValueError(
                f"t = {t} is past the end of {self!r}, which covers t = 0 .. "
                f"{self.total_steps - 1}: set total_steps to the number of "
                f"{self.unit}s of the run"
            )
        start = 0.0
        for i, phase in enumerate(self._phases):
            end = phase[0]
            if t <= end or i == len(self._phases) - 1:
                return (t - start) / (end - start), phase
            start = end

    def _interpolate(self, start, end, pct):
        if self.anneal == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start


class CosineWarmRestarts(Schedule):
    """Cosine annealing with warm restarts (SGDR), as torch CosineAnnealingWarmRestarts.

    s(t) = min_lr + (lr - min_lr) * (1 + cos(pi * t_cur / t_i)) / 2, where the first period has
    t_i = t_0 steps, each later one t_mult times the one before, and t_cur counts the steps
    since the last restart. At a restart the lr jumps back to lr. With t_mult = 1 that is
    t_cur = t mod t_0. Integer steps only (torch's stepping with no epoch argument).

    Parameters
    ----------
    lr : float >= 0, the lr at each restart
    t_0 : int >= 1, the length of the first period
    t_mult : int >= 1, default 1, the growth factor of the period
    min_lr : float in [0, lr], default 0
    unit : "epoch" (default) or "iteration"

    Example
    -------
    >>> CosineWarmRestarts(1.0, t_0=2, t_mult=2).values(7).round(3).tolist()
    [1.0, 0.5, 1.0, 0.854, 0.5, 0.146, 1.0]
    """

    name = "warm-restarts"

    def __init__(
        self, lr: float, t_0: int, t_mult: int = 1, min_lr: float = 0.0, unit: str = "epoch"
    ) -> None:
        super().__init__(unit)
        self.lr = _lr("lr", lr)
        self.t_0 = check.positive_int("t_0", t_0)
        self.t_mult = check.positive_int("t_mult", t_mult)
        self.min_lr = _lr("min_lr", min_lr)
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed lr ({self.lr})")

    def value(self, t: int) -> float:
        t_cur, t_i = t, self.t_0
        if self.t_mult == 1:
            t_cur = t % t_i
        else:
            while t_cur >= t_i:
                t_cur -= t_i
                t_i *= self.t_mult
        return self.min_lr + (self.lr - self.min_lr) * (1 + math.cos(math.pi * t_cur / t_i)) / 2


class MultiStepDecay(Schedule):
    """s(t) = lr * gamma ** (number of milestones <= t)   (torch MultiStepLR).

    ``MultiStepDecay(0.1, milestones=[30, 80])`` gives 0.1 for t < 30, 0.01 for 30 <= t < 80
    and 0.001 from t = 80 on.

    Parameters
    ----------
    lr : float >= 0, the lr before the first milestone
    milestones : strictly increasing ints >= 0 (may be empty)
    gamma : float in (0, 1], default 0.1, the factor at each milestone
    unit : "epoch" (default) or "iteration"
    """

    name = "multistep"

    def __init__(
        self, lr: float, milestones: Sequence[int], gamma: float = 0.1, unit: str = "epoch"
    ) -> None:
        super().__init__(unit)
        self.lr = _lr("lr", lr)
        if isinstance(milestones, (str, bytes)) or not hasattr(milestones, "__iter__"):
            raise TypeError(f"milestones must be a list of ints, got {milestones!r}")
        milestones = tuple(
            check.non_negative_int(f"milestones[{i}]", m) for i, m in enumerate(milestones)
        )
        if any(b <= a for a, b in zip(milestones, milestones[1:])):
            raise ValueError(
                f"milestones must increase strictly, got {list(milestones)}: "
                f"sort them and drop repeats"
            )
        self.milestones = milestones
        self.gamma = _gamma(gamma)

    def value(self, t: int) -> float:
        return self.lr * self.gamma ** bisect.bisect_right(self.milestones, t)


class PolynomialDecay(Schedule):
    """s(t) = lr * (1 - min(t, total_steps) / total_steps) ** power   (torch PolynomialLR).

    The lr reaches 0 at t = total_steps and stays 0 after it (torch's PolynomialLR has no end
    lr and no cycling); power = 1 is a linear decay.

    Parameters
    ----------
    lr : float >= 0, the lr at t = 0
    total_steps : int >= 1, the step at which the lr reaches 0 (torch's total_iters)
    power : float > 0, default 1.0
    unit : "epoch" (default) or "iteration"
    """

    name = "poly"

    def __init__(
        self, lr: float, total_steps: int, power: float = 1.0, unit: str = "epoch"
    ) -> None:
        super().__init__(unit)
        self.lr = _lr("lr", lr)
        self.total_steps = check.positive_int("total_steps", total_steps)
        self.power = check.real("power", power, low=0.0, low_open=True)

    def value(self, t: int) -> float:
        return self.lr * (1.0 - min(self.total_steps, t) / self.total_steps) ** self.power


def _scaling_args(lr, batch_size, base_batch_size):
    return (
        _lr("lr", lr),
        check.positive_int("batch_size", batch_size),
        check.positive_int("base_batch_size", base_batch_size),
    )


def _ratio(batch_size, base_batch_size):
    try:
        return batch_size / base_batch_size
    except OverflowError:
        raise ValueError(
            f"batch_size / base_batch_size = {batch_size} / {base_batch_size} is "
            f"beyond the float range"
        ) from None


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
    return _finite_lr(
        lr * math.sqrt(_ratio(batch_size, base_batch_size)), batch_size, base_batch_size
    )


def _finite_lr(scaled, batch_size, base_batch_size):
    if not math.isfinite(scaled):
        raise ValueError(
            f"the scaled lr overflows: batch_size={batch_size} is too large for "
            f"base_batch_size={base_batch_size}"
        )
    return scaled


def as_schedule(schedule: Schedule | Callable[[int], float] | None) -> Schedule | None:
    """Accept a Schedule, or a plain callable t -> lr (treated as per epoch)."""
    if schedule is None or isinstance(schedule, Schedule):
        return schedule
    if isinstance(schedule, BatchSizeSchedule):
        raise TypeError(
            f"schedule got the batch-size schedule {schedule!r}: pass it as batch_size="
        )
    if callable(schedule):
        return FunctionSchedule(schedule)
    raise TypeError(
        f"schedule must be a minigd schedule or a callable t -> lr, got {type(schedule).__name__}"
    )


class FunctionSchedule(Schedule):
    """Wrap a callable ``fn(t) -> lr``; its values are checked when used."""

    def __init__(self, fn: Callable[[int], float], unit: str = "epoch") -> None:
        super().__init__(getattr(fn, "unit", unit))
        self.fn = fn

    def value(self, t: int) -> float:
        return check.real(f"schedule({t})", self.fn(t), low=0.0)


# ---- batch-size schedules ------------------------------------------------------------------


class BatchSizeSchedule:
    """Base class of batch-size schedules: ``B = s(e)``, a positive int for each epoch e >= 0.

    ``fit(..., batch_size=s)`` sets the batch size of epoch e (counted from 0, so the first epoch
    uses s(0)) before the epoch starts; within an epoch it is fixed. Increasing the batch size
    lowers the gradient noise like decaying the lr does (Smith et al. 2017, "Don't decay the
    learning rate, increase the batch size"), with fewer updates per epoch.
    Subclasses define ``value(e)``.
    """

    unit = "epoch"

    def __call__(self, e: int) -> int:
        return self.value(_check_t(e))

    def value(self, e: int) -> int:
        """s(e) for a checked epoch e >= 0; every subclass defines it."""
        raise NotImplementedError

    def values(self, epochs: int) -> list[int]:
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

    def __init__(self, batch_size: int) -> None:
        self.batch_size = check.positive_int("batch_size", batch_size)

    def value(self, e: int) -> int:
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

    def __init__(
        self, batch_size: int, step_size: int, factor: int = 2, max_batch_size: int | None = None
    ) -> None:
        self.batch_size = check.positive_int("batch_size", batch_size)
        self.step_size = check.positive_int("step_size", step_size)
        self.factor = check.real("factor", factor, low=1.0)
        if isinstance(factor, numbers.Integral):
            self.factor = int(factor)
        self.max_batch_size = None
        if max_batch_size is not None:
            self.max_batch_size = check.positive_int("max_batch_size", max_batch_size)
            if self.max_batch_size < self.batch_size:
                raise ValueError(
                    f"max_batch_size ({self.max_batch_size}) must be >= batch_size "
                    f"({self.batch_size})"
                )

    def value(self, e: int) -> int:
        k = e // self.step_size
        if isinstance(self.factor, int):
            size = self.batch_size * self.factor**k
        else:
            try:
                size = round(self.batch_size * self.factor**k)
            except OverflowError:
                size = math.inf
        if self.max_batch_size is not None:
            size = min(size, self.max_batch_size)
        if size == math.inf:
            raise ValueError(f"{self!r} overflows at epoch {e}: set max_batch_size")
        return int(size)


class FunctionBatchSize(BatchSizeSchedule):
    """Wrap a callable ``fn(e) -> batch size``; each value must be an int >= 1."""

    def __init__(self, fn: Callable[[int], int]) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable e -> batch size, got {type(fn).__name__}")
        self.fn = fn

    def value(self, e: int) -> int:
        return check.positive_int(f"batch_size({e})", self.fn(e))


def as_batch_size_schedule(
    batch_size: int | BatchSizeSchedule | Callable[[int], int],
) -> BatchSizeSchedule:
    """Accept an int (constant), a BatchSizeSchedule, or a callable e -> positive int."""
    if isinstance(batch_size, BatchSizeSchedule):
        return batch_size
    if isinstance(batch_size, numbers.Integral) and not isinstance(batch_size, (bool, np.bool_)):
        return ConstantBatchSize(batch_size)
    if isinstance(batch_size, Schedule):
        raise TypeError(
            f"batch_size got the learning-rate schedule {batch_size!r}: pass it as "
            f"schedule=, and a batch-size schedule (e.g. StepBatchSize) as batch_size="
        )
    if callable(batch_size):
        return FunctionBatchSize(batch_size)
    raise TypeError(
        f"batch_size must be a positive int, a batch-size schedule or a callable "
        f"epoch -> batch size, got {batch_size!r} ({type(batch_size).__name__})"
    )
