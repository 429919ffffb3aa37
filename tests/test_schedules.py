"""Schedules at known points, and against torch.optim.lr_scheduler in float64."""

import math

import numpy as np
import pytest

import minigd as mg
from minigd import schedules as S


def test_constant_and_step_decay_known_points():
    assert S.Constant(0.1)(0) == S.Constant(0.1)(99) == 0.1
    s = S.StepDecay(1.0, step_size=3, gamma=0.5)
    assert [s(t) for t in range(7)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]


def test_exponential_decay_known_points():
    s = S.ExponentialDecay(2.0, gamma=0.5)
    assert [s(t) for t in range(4)] == [2.0, 1.0, 0.5, 0.25]


def test_cosine_known_points_and_beyond_t_max():
    s = S.CosineAnnealing(1.0, t_max=10, min_lr=0.1)
    assert s(0) == 1.0
    assert s(5) == pytest.approx(0.55)
    assert s(10) == pytest.approx(0.1)
    assert s(15) == pytest.approx(0.55)
    assert s(20) == pytest.approx(1.0)


def test_cyclic_triangular_known_points():
    s = S.CyclicLR(0.1, 1.1, step_size=4)
    expected = [0.1, 0.35, 0.6, 0.85, 1.1, 0.85, 0.6, 0.35, 0.1, 0.35]
    np.testing.assert_allclose([s(t) for t in range(10)], expected)
    assert s.unit == "iteration"


def test_cyclic_triangular2_halves_each_cycle_and_exp_range_decays():
    s = S.CyclicLR(0.0, 1.0, step_size=2, mode="triangular2")
    assert [s(t) for t in (2, 6, 10)] == [1.0, 0.5, 0.25]
    e = S.CyclicLR(0.0, 1.0, step_size=2, mode="exp_range", gamma=0.9)
    assert e(2) == pytest.approx(0.81)
    assert e(6) == pytest.approx(0.9**6)


def test_warmup_ramps_linearly_then_follows_inner():
    s = S.Warmup(S.Constant(1.0), warmup_steps=4, start_factor=0.2)
    np.testing.assert_allclose([s(t) for t in range(6)], [0.2, 0.4, 0.6, 0.8, 1.0, 1.0])


def test_chain_restarts_time_at_each_boundary():
    s = S.Chain([S.Constant(0.01), S.ExponentialDecay(1.0, 0.5)], boundaries=[3])
    assert [s(t) for t in range(6)] == [0.01, 0.01, 0.01, 1.0, 0.5, 0.25]


def test_scaling_rules():
    assert mg.linear_scaling(0.1, 256, 32) == pytest.approx(0.8)
    assert mg.sqrt_scaling(0.1, 256, 64) == pytest.approx(0.2)
    assert mg.linear_scaling(0.1, 16, 64) == pytest.approx(0.025)


def test_values_and_t_validation():
    s = S.ExponentialDecay(1.0, 0.5)
    np.testing.assert_allclose(s.values(3), [1, 0.5, 0.25])
    for bad in (-1, 1.5, "2"):
        with pytest.raises(ValueError, match="t must be"):
            s(bad)


@pytest.mark.parametrize(
    "factory,match",
    [
        (lambda: S.StepDecay(0.1, 0), "step_size"),
        (lambda: S.StepDecay(0.1, 2, gamma=0), "gamma"),
        (lambda: S.StepDecay(0.1, 2, gamma=1.5), "gamma"),
        (lambda: S.ExponentialDecay(0.1, gamma=-0.5), "gamma"),
        (lambda: S.CyclicLR(1.0, 0.1, 10), "base_lr"),
        (lambda: S.CyclicLR(0.1, 1.0, 10, mode="sine"), "mode"),
        (lambda: S.CosineAnnealing(0.1, 0), "t_max"),
        (lambda: S.Constant(-1.0), "lr"),
        (lambda: S.Constant(0.1, unit="batch"), "unit"),
        (lambda: S.Warmup(S.Constant(0.1), 0), "warmup_steps"),
        (lambda: S.Chain([S.Constant(0.1), S.Constant(0.2)], [0]), "boundaries"),
        (lambda: S.Chain([S.Constant(0.1), S.CyclicLR(0.1, 1, 2)], [3]), "unit"),
    ],
)
def test_schedule_arguments_are_checked(factory, match):
    with pytest.raises((ValueError, TypeError), match=match):
        factory()


def torch_lrs(torch, make_scheduler, steps, lr=1.0):
    param = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = torch.optim.SGD([param], lr=lr)
    scheduler = make_scheduler(opt)
    values = []
    for _ in range(steps):
        values.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return np.array(values)


def test_schedules_match_torch():
    torch = pytest.importorskip("torch")
    sched = torch.optim.lr_scheduler
    cases = [
        (S.StepDecay(0.5, 3, 0.3), lambda o: sched.StepLR(o, 3, 0.3), 0.5, 20),
        (S.ExponentialDecay(0.5, 0.9), lambda o: sched.ExponentialLR(o, 0.9), 0.5, 20),
        (S.CosineAnnealing(0.5, 7, 0.01), lambda o: sched.CosineAnnealingLR(o, 7, 0.01), 0.5, 30),
        (
            S.CyclicLR(0.01, 0.3, 5, step_size_down=3),
            lambda o: sched.CyclicLR(o, 0.01, 0.3, 5, 3, cycle_momentum=False),
            0.01,
            30,
        ),
        (
            S.CyclicLR(0.01, 0.3, 4, mode="triangular2"),
            lambda o: sched.CyclicLR(o, 0.01, 0.3, 4, mode="triangular2", cycle_momentum=False),
            0.01,
            30,
        ),
        (
            S.CyclicLR(0.01, 0.3, 4, mode="exp_range", gamma=0.97),
            lambda o: sched.CyclicLR(
                o, 0.01, 0.3, 4, mode="exp_range", gamma=0.97, cycle_momentum=False
            ),
            0.01,
            30,
        ),
        (
            S.Warmup(S.StepDecay(0.5, 4, 0.5), 3, start_factor=0.25),
            lambda o: sched.ChainedScheduler(
                [sched.LinearLR(o, 0.25, total_iters=3), sched.StepLR(o, 4, 0.5)]
            ),
            0.5,
            15,
        ),
    ]
    for ours, make, lr, steps in cases:
        np.testing.assert_allclose(
            ours.values(steps), torch_lrs(torch, make, steps, lr), rtol=1e-12, err_msg=repr(ours)
        )


def test_plain_callable_is_accepted_as_epoch_schedule():
    s = S.as_schedule(lambda t: 0.1 / (1 + t))
    assert s.unit == "epoch" and s(1) == 0.05
    with pytest.raises(ValueError, match="schedule"):
        S.as_schedule(lambda t: -1.0)(0)
    assert math.isclose(S.as_schedule(S.Constant(0.3))(5), 0.3)
