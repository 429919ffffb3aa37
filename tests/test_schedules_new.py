"""OneCycle, CosineWarmRestarts, MultiStepDecay, PolynomialDecay: known points, torch in float64."""

import doctest
import math

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import minigd as mg  # noqa: E402
from minigd import schedules as S  # noqa: E402

NEW = (S.OneCycle, S.CosineWarmRestarts, S.MultiStepDecay, S.PolynomialDecay)


# ---- known points, by hand ----------------------------------------------------------------------


def test_one_cycle_two_phases_known_points():
    # peak at pct_start * total_steps - 1 = 4; initial_lr = 1 / 4, min_lr = 0.25 / 5
    s = S.OneCycle(1.0, total_steps=10, pct_start=0.5, div_factor=4.0, final_div_factor=5.0)
    assert s.initial_lr == 0.25 and s.min_lr == 0.05
    assert s(0) == pytest.approx(0.25, rel=1e-15)
    assert s(2) == pytest.approx((0.25 + 1.0) / 2, rel=1e-15)  # half-way up the cosine
    assert s(4) == 1.0
    assert s(9) == pytest.approx(0.05, rel=1e-15)
    assert [s.momentum(t) for t in (0, 4, 9)] == pytest.approx([0.95, 0.85, 0.95], rel=1e-15)
    assert s.momentum(2) == pytest.approx(0.9, rel=1e-15)
    assert s.sets_momentum is True and s.unit == "iteration"


def test_one_cycle_linear_and_three_phase_known_points():
    lin = S.OneCycle(1.0, 10, pct_start=0.5, anneal="linear", div_factor=4.0, final_div_factor=5.0)
    assert lin(1) == pytest.approx(0.4375) and lin(5) == pytest.approx(1 + (0.05 - 1) * 0.2)
    # three phases: up 0..2, down 2..4 to initial_lr, then to min_lr at 9, momentum held at max
    s = S.OneCycle(
        1.0,
        10,
        pct_start=0.3,
        anneal="linear",
        div_factor=10.0,
        final_div_factor=10.0,
        three_phase=True,
    )
    np.testing.assert_allclose(
        s.values(10), [0.1, 0.55, 1.0, 0.55, 0.1, 0.082, 0.064, 0.046, 0.028, 0.01], rtol=1e-12
    )
    np.testing.assert_allclose(
        [s.momentum(t) for t in range(10)], [0.95, 0.9, 0.85, 0.9] + [0.95] * 6, rtol=1e-12
    )


def test_one_cycle_refuses_steps_past_the_cycle():
    s = S.OneCycle(0.1, total_steps=10)
    s(9)
    for t in (10, 11, 10**6):
        with pytest.raises(ValueError, match="past the end.*total_steps"):
            s(t)
        with pytest.raises(ValueError, match="past the end"):
            s.momentum(t)
    with pytest.raises(ValueError, match="past the end"):
        s.values(11)


def test_one_cycle_without_momentum_cycling_and_the_base_class_default():
    s = S.OneCycle(0.1, 20, cycle_momentum=False)
    assert s.sets_momentum is False and s.momentum(3) is None
    assert s(3) == S.OneCycle(0.1, 20)(3)
    for other in (
        S.Constant(0.1),
        S.CosineWarmRestarts(0.1, 3),
        S.MultiStepDecay(0.1, [2]),
        S.PolynomialDecay(0.1, 5),
        S.Warmup(S.Constant(0.1), 2),
    ):
        assert other.sets_momentum is False and other.momentum(4) is None
    with pytest.raises(ValueError, match="t must be"):
        S.Constant(0.1).momentum(-1)
    with pytest.raises(ValueError, match="t must be"):
        s.momentum(-1)


def test_cosine_warm_restarts_known_points():
    s = S.CosineWarmRestarts(1.0, t_0=4)
    np.testing.assert_allclose(
        s.values(9),
        [1, (1 + math.sqrt(0.5)) / 2, 0.5, (1 - math.sqrt(0.5)) / 2] * 2 + [1],
        rtol=1e-12,
    )
    g = S.CosineWarmRestarts(2.0, t_0=2, t_mult=2, min_lr=1.0)  # restarts at 0, 2, 6, 14
    assert [g(t) for t in (0, 2, 6, 14, 30)] == [2.0] * 5
    assert g(1) == pytest.approx(1.5) and g(4) == pytest.approx(1.5)
    assert g(10) == pytest.approx(1.5)
    assert g(13) == pytest.approx(1 + (1 + math.cos(7 * math.pi / 8)) / 2)


def test_multistep_decay_known_points():
    s = S.MultiStepDecay(1.0, milestones=[3, 5], gamma=0.5)
    assert [s(t) for t in range(7)] == [1, 1, 1, 0.5, 0.5, 0.25, 0.25]
    assert s(10**9) == 0.25
    assert S.MultiStepDecay(1.0, [0, 2], 0.5).values(3).tolist() == [0.5, 0.5, 0.25]
    assert S.MultiStepDecay(0.3, []).values(3).tolist() == [0.3] * 3
    assert S.MultiStepDecay(0.3, np.array([4, 9])).milestones == (4, 9)


def test_polynomial_decay_known_points_and_zero_after_total_steps():
    s = S.PolynomialDecay(1.0, total_steps=4, power=2.0)
    assert s.values(7).tolist() == [1.0, 0.5625, 0.25, 0.0625, 0.0, 0.0, 0.0]
    np.testing.assert_allclose(
        S.PolynomialDecay(0.5, 5).values(7), [0.5, 0.4, 0.3, 0.2, 0.1, 0, 0], rtol=1e-12, atol=0
    )


def test_units_repr_and_docstring_examples():
    made = [
        S.OneCycle(0.1, 50, pct_start=0.25, anneal="linear", three_phase=True),
        S.CosineWarmRestarts(0.1, 3, t_mult=2, min_lr=0.01, unit="iteration"),
        S.MultiStepDecay(0.1, [3, 7], gamma=0.5),
        S.PolynomialDecay(0.1, 9, power=0.5),
    ]
    assert [s.unit for s in made] == ["iteration", "iteration", "epoch", "epoch"]
    for s in made:
        again = eval(repr(s), vars(S))
        assert repr(again) == repr(s) and again.values(40).tolist() == s.values(40).tolist()
    assert repr(made[2]) == "MultiStepDecay(unit='epoch', lr=0.1, milestones=(3, 7), gamma=0.5)"
    for cls in NEW:
        finder = doctest.DocTestFinder(recurse=False)
        for test in finder.find(cls, globs={cls.__name__: cls}):
            assert doctest.DocTestRunner().run(test).failed == 0, cls.__name__


# ---- arguments ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "factory,match",
    [
        (lambda: S.OneCycle(0.0, 10), "max_lr"),
        (lambda: S.OneCycle(-0.1, 10), "max_lr"),
        (lambda: S.OneCycle(0.1, 0), "total_steps"),
        (lambda: S.OneCycle(0.1, -5), "total_steps"),
        (lambda: S.OneCycle(0.1, 2.5), "total_steps"),
        (lambda: S.OneCycle(0.1, 10, pct_start=0.0), "pct_start"),
        (lambda: S.OneCycle(0.1, 10, pct_start=1.0), "pct_start"),
        (lambda: S.OneCycle(0.1, 10, pct_start=-0.2), "pct_start"),
        (lambda: S.OneCycle(0.1, 10, pct_start=0.1), "pct_start"),  # a rising phase of zero steps
        (lambda: S.OneCycle(0.1, 10, anneal="cosine"), "anneal"),
        (lambda: S.OneCycle(0.1, 10, div_factor=0), "div_factor"),
        (lambda: S.OneCycle(0.1, 10, final_div_factor=-1), "final_div_factor"),
        (lambda: S.OneCycle(0.1, 10, three_phase="yes"), "three_phase"),
        (lambda: S.OneCycle(0.1, 10, max_momentum=1.0), "max_momentum"),
        (lambda: S.OneCycle(0.1, 10, base_momentum=-0.1), "base_momentum"),
        (lambda: S.OneCycle(0.1, 10, base_momentum=0.9, max_momentum=0.8), "base_momentum"),
        (lambda: S.OneCycle(0.1, 10, unit="batch"), "unit"),
        (lambda: S.CosineWarmRestarts(0.1, 0), "t_0"),
        (lambda: S.CosineWarmRestarts(0.1, -3), "t_0"),
        (lambda: S.CosineWarmRestarts(0.1, 3, t_mult=0), "t_mult"),
        (lambda: S.CosineWarmRestarts(0.1, 3, t_mult=1.5), "t_mult"),
        (lambda: S.CosineWarmRestarts(0.1, 3, min_lr=0.2), "min_lr"),
        (lambda: S.CosineWarmRestarts(-0.1, 3), "lr"),
        (lambda: S.MultiStepDecay(0.1, [5, 3]), "milestones"),
        (lambda: S.MultiStepDecay(0.1, [3, 3]), "milestones"),
        (lambda: S.MultiStepDecay(0.1, [-1, 3]), r"milestones\[0\]"),
        (lambda: S.MultiStepDecay(0.1, [1, 2.5]), r"milestones\[1\]"),
        (lambda: S.MultiStepDecay(0.1, 3), "milestones"),
        (lambda: S.MultiStepDecay(0.1, "3"), "milestones"),
        (lambda: S.MultiStepDecay(0.1, [3], gamma=0), "gamma"),
        (lambda: S.MultiStepDecay(0.1, [3], gamma=1.5), "gamma"),
        (lambda: S.PolynomialDecay(0.1, 0), "total_steps"),
        (lambda: S.PolynomialDecay(0.1, -4), "total_steps"),
        (lambda: S.PolynomialDecay(0.1, 4, power=0), "power"),
        (lambda: S.PolynomialDecay(0.1, 4, power=-1.0), "power"),
        (lambda: S.PolynomialDecay(-0.1, 4), "lr"),
    ],
)
def test_new_schedule_arguments_are_checked(factory, match):
    with pytest.raises((ValueError, TypeError), match=match):
        factory()


@pytest.mark.parametrize(
    "factory,match",
    [
        (lambda: S.OneCycle(0.1, -5), "total_steps"),
        (lambda: S.OneCycle(0.1, 10, pct_start=1.5), "pct_start"),
        (lambda: S.MultiStepDecay(0.1, [5, 3]), "milestones"),
        (lambda: S.CosineWarmRestarts(0.1, 0), "t_0"),
    ],
)
def test_bad_values_are_value_errors(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


@pytest.mark.parametrize(
    "schedule",
    [
        S.OneCycle(0.1, 10),
        S.CosineWarmRestarts(0.1, 3),
        S.MultiStepDecay(0.1, [2]),
        S.PolynomialDecay(0.1, 4),
    ],
)
def test_negative_and_fractional_steps_are_refused(schedule):
    for bad in (-1, 1.5):
        with pytest.raises(ValueError, match="t must be"):
            schedule(bad)


# ---- torch, float64 -----------------------------------------------------------------------------


def torch_run(torch, make_scheduler, steps, optimizer="sgd", lr=1.0):
    """The lr and momentum (SGD's momentum, Adam's betas[0]) of each of ``steps`` updates."""
    param = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    if optimizer == "sgd":
        opt = torch.optim.SGD([param], lr=lr, momentum=0.5)
    else:
        opt = torch.optim.Adam([param], lr=lr)
    scheduler = make_scheduler(opt)
    lrs, momenta = [], []
    for _ in range(steps):
        group = opt.param_groups[0]
        lrs.append(group["lr"])
        momenta.append(group["momentum"] if optimizer == "sgd" else group["betas"][0])
        param.grad = torch.ones_like(param)
        opt.step()
        scheduler.step()
    return np.array(lrs), np.array(momenta)


ONE_CYCLE_CASES = [
    dict(max_lr=0.5, total_steps=40),
    dict(max_lr=0.5, total_steps=37, pct_start=0.27, anneal="linear"),
    dict(
        max_lr=2.0,
        total_steps=50,
        pct_start=0.4,
        div_factor=10.0,
        final_div_factor=100.0,
        three_phase=True,
    ),
    dict(
        max_lr=0.1,
        total_steps=23,
        pct_start=0.61,
        anneal="linear",
        three_phase=True,
        base_momentum=0.7,
        max_momentum=0.99,
    ),
    dict(max_lr=0.1, total_steps=3, pct_start=0.2),  # rising phase shorter than one step
    dict(max_lr=0.1, total_steps=1),
    dict(max_lr=0.3, total_steps=12, pct_start=0.5, three_phase=True),
]


@pytest.mark.parametrize("kwargs", ONE_CYCLE_CASES)
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_one_cycle_lr_and_momentum_match_torch(kwargs, optimizer):
    torch = pytest.importorskip("torch")
    ours = S.OneCycle(**kwargs)
    theirs = dict(kwargs, anneal_strategy=kwargs.get("anneal", "cos"))
    theirs.pop("anneal", None)
    steps = kwargs["total_steps"]
    lrs, momenta = torch_run(
        torch, lambda o: torch.optim.lr_scheduler.OneCycleLR(o, **theirs), steps, optimizer
    )
    np.testing.assert_allclose(ours.values(steps), lrs, rtol=1e-12, atol=0, err_msg=repr(ours))
    np.testing.assert_allclose(
        [ours.momentum(t) for t in range(steps)], momenta, rtol=1e-12, atol=0, err_msg=repr(ours)
    )


def test_one_cycle_without_momentum_cycling_matches_torch():
    torch = pytest.importorskip("torch")
    ours = S.OneCycle(0.4, 30, pct_start=0.35, cycle_momentum=False)
    lrs, momenta = torch_run(
        torch,
        lambda o: torch.optim.lr_scheduler.OneCycleLR(
            o, 0.4, total_steps=30, pct_start=0.35, cycle_momentum=False
        ),
        30,
    )
    np.testing.assert_allclose(ours.values(30), lrs, rtol=1e-12, atol=0)
    assert set(momenta) == {0.5}  # torch leaves the optimizer's momentum alone, as fit will


@pytest.mark.parametrize(
    "ours,make,lr,steps",
    [
        (S.CosineWarmRestarts(0.5, 7), lambda L, o: L.CosineAnnealingWarmRestarts(o, 7), 0.5, 60),
        (
            S.CosineWarmRestarts(0.5, 3, t_mult=2, min_lr=0.01),
            lambda L, o: L.CosineAnnealingWarmRestarts(o, 3, T_mult=2, eta_min=0.01),
            0.5,
            100,
        ),
        (
            S.CosineWarmRestarts(0.2, 1, t_mult=3, min_lr=0.05),
            lambda L, o: L.CosineAnnealingWarmRestarts(o, 1, T_mult=3, eta_min=0.05),
            0.2,
            130,
        ),
        (S.CosineWarmRestarts(0.2, 1), lambda L, o: L.CosineAnnealingWarmRestarts(o, 1), 0.2, 10),
        (
            S.MultiStepDecay(0.5, [3, 7, 8, 20], gamma=0.3),
            lambda L, o: L.MultiStepLR(o, [3, 7, 8, 20], gamma=0.3),
            0.5,
            30,
        ),
        (S.MultiStepDecay(0.5, [0, 4]), lambda L, o: L.MultiStepLR(o, [0, 4]), 0.5, 10),
        (S.MultiStepDecay(0.5, []), lambda L, o: L.MultiStepLR(o, []), 0.5, 5),
        (S.PolynomialDecay(0.5, 10), lambda L, o: L.PolynomialLR(o, total_iters=10), 0.5, 25),
        (
            S.PolynomialDecay(0.5, 13, power=2.5),
            lambda L, o: L.PolynomialLR(o, total_iters=13, power=2.5),
            0.5,
            25,
        ),
        (
            S.PolynomialDecay(0.5, 17, power=0.5),
            lambda L, o: L.PolynomialLR(o, total_iters=17, power=0.5),
            0.5,
            40,
        ),
        (
            S.PolynomialDecay(0.5, 1, power=3.0),
            lambda L, o: L.PolynomialLR(o, total_iters=1, power=3.0),
            0.5,
            4,
        ),
    ],
)
def test_lr_schedules_match_torch(ours, make, lr, steps):
    torch = pytest.importorskip("torch")
    L = torch.optim.lr_scheduler
    lrs, _ = torch_run(torch, lambda o: make(L, o), steps, lr=lr)
    np.testing.assert_allclose(ours.values(steps), lrs, rtol=1e-12, atol=0, err_msg=repr(ours))


# ---- plot and fit -------------------------------------------------------------------------------


def test_plot_schedule_draws_lr_and_the_momentum_of_one_cycle():
    s = S.OneCycle(0.2, 40)
    ax = mg.plot.schedule(s, 40)
    fig = ax.figure
    assert len(fig.axes) == 2 and ax.get_ylabel() == "lr"
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), s.values(40))
    twin = fig.axes[-1]
    assert twin.get_ylabel() == "momentum"
    np.testing.assert_array_equal(twin.lines[0].get_ydata(), [s.momentum(t) for t in range(40)])
    plt.close(fig)
    ax = mg.plot.schedule(s, 40, momentum=False)
    assert len(ax.figure.axes) == 1
    plt.close(ax.figure)


@pytest.mark.parametrize(
    "schedule",
    [S.CosineWarmRestarts(0.1, 5, 2), S.MultiStepDecay(0.1, [4]), S.PolynomialDecay(0.1, 8, 2.0)],
)
def test_plot_schedule_draws_the_other_new_schedules(schedule):
    ax = mg.plot.schedule(schedule, 12)
    assert len(ax.figure.axes) == 1 and ax.get_xlabel() == "t (epochs)"
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), schedule.values(12))
    with pytest.raises(ValueError, match="momentum"):
        mg.plot.schedule(schedule, 12, momentum=True)
    plt.close("all")


def test_fit_records_the_lr_of_the_new_schedules():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 5))
    y = (X[:, 0] > 0).astype(int)
    for schedule in (
        S.OneCycle(0.5, total_steps=12),
        S.CosineWarmRestarts(0.5, 2, 2),
        S.MultiStepDecay(0.5, [1, 2], 0.5),
        S.PolynomialDecay(0.5, 3, 2.0),
    ):
        model = mg.Sequential(mg.Dense(5, 4), mg.Tanh(), mg.Dense(4, 2), seed=0, dtype=np.float64)
        history = mg.fit(
            model,
            X,
            y,
            optimizer=mg.SGD(model.parameters(), lr=1.0),
            epochs=3,
            batch_size=25,
            schedule=schedule,
            seed=0,
            verbose=0,
        )
        it = history.iterations
        t = [
            s - 1 if schedule.unit == "iteration" else e - 1
            for e, s in zip(it["epoch"], it["step"])
        ]
        assert it["lr"] == [schedule(i) for i in t], repr(schedule)
