"""``minigd train --task regression`` and ``--schedule onecycle|warm-restarts|multistep|poly``:
the run, its outputs, the schedules the flags build, and the flags rejected at parse time."""

import json

import numpy as np
import pytest

import minigd as mg
from minigd.cli import build_parser, check_arguments, main
from minigd.cli.common import make_schedule, regression_sample, updates_per_epoch


@pytest.fixture(autouse=True)
def keep_backend():
    with mg.use_backend(mg.get_backend()):
        yield


def parse(argv):
    return check_arguments(build_parser().parse_args(argv))


def test_regression_sample_is_offline_and_deterministic():
    X, y, X_test, y_test = regression_sample()
    assert (X.shape, y.shape, X_test.shape, y_test.shape) == (
        (8000, 16),
        (8000,),
        (2000, 16),
        (2000,),
    )
    np.testing.assert_array_equal(regression_sample()[1], y)
    X2, y2 = mg.datasets.make_regression(n_samples=50, n_features=3, n_targets=2, seed=1)
    assert X2.shape == (50, 3) and y2.shape == (50, 2) and X2.dtype == np.float32
    assert not np.array_equal(y2, mg.datasets.make_regression(50, 3, 2, seed=2)[1])
    with pytest.raises(ValueError, match="noise"):
        mg.datasets.make_regression(noise=-1)


def test_train_regression_writes_the_same_files_and_reports_r2(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--task",
            "regression",
            "--epochs",
            "4",
            "--optimizer",
            "adam",
            "--lr",
            "0.01",
            "--hidden",
            "32",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "MSELoss" in text and "val_r2" in text and "test R²:" in text
    for name in (
        "history.csv",
        "epochs.csv",
        "history.json",
        "history.png",
        "model.npz",
        "run.json",
    ):
        assert (out / name).is_file(), name
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["task"] == "regression" and run["test_accuracy"] is None
    assert run["test_r2"] > 0.85 and run["test_mse"] < 0.25  # linear least squares: ~0.86
    history = mg.History.from_json(out / "history.json")
    assert history.epochs["val_r2"][-1] > history.epochs["val_r2"][0]
    with np.load(out / "model.npz") as weights:
        assert weights["2.weight"].shape == (32, 1)


def test_train_regression_on_an_npz_with_two_targets(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3)).astype(np.float32)
    Y = np.c_[X @ [1.0, 2.0, -1.0], X[:, 0] - X[:, 2]].astype(np.float32)
    path = tmp_path / "reg.npz"
    np.savez(path, X=X, y=Y, X_test=X[:50], y_test=Y[:50])
    assert (
        main(
            [
                "train",
                "--task",
                "regression",
                "--data",
                str(path),
                "--epochs",
                "3",
                "--hidden",
                "8",
                "--optimizer",
                "adam",
                "--lr",
                "0.01",
                "--quiet",
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    assert "test R²" in capsys.readouterr().out


def test_regression_rejects_mnist_and_classification_rejects_real_targets(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--task", "regression", "--data", "mnist"])
    assert info.value.code == 2 and "--data mnist holds class ids" in capsys.readouterr().err
    path = tmp_path / "reg.npz"
    np.savez(path, X=np.zeros((10, 2)), y=np.linspace(0, 1, 10))
    assert main(["train", "--data", str(path), "--epochs", "1", "--out", str(tmp_path / "o")]) == 2


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            [
                "--schedule",
                "onecycle",
                "--pct-start",
                "0.25",
                "--anneal",
                "linear",
                "--div-factor",
                "10",
                "--final-div-factor",
                "100",
                "--three-phase",
                "--base-momentum",
                "0.8",
                "--max-momentum",
                "0.9",
            ],
            mg.OneCycle(
                0.1,
                total_steps=40,
                pct_start=0.25,
                anneal="linear",
                div_factor=10,
                final_div_factor=100,
                three_phase=True,
                base_momentum=0.8,
                max_momentum=0.9,
            ),
        ),
        (
            ["--schedule", "onecycle", "--no-cycle-momentum", "--momentum", "0.9"],
            mg.OneCycle(0.1, total_steps=40, cycle_momentum=False),
        ),
        (["--schedule", "onecycle"], mg.OneCycle(0.1, total_steps=40)),
        (
            ["--schedule", "warm-restarts", "--t0", "2", "--t-mult", "2", "--min-lr", "0.01"],
            mg.CosineWarmRestarts(0.1, t_0=2, t_mult=2, min_lr=0.01),
        ),
        (["--schedule", "warm-restarts"], mg.CosineWarmRestarts(0.1, t_0=3)),
        (
            ["--schedule", "multistep", "--milestones", "2,7", "--gamma", "0.5"],
            mg.MultiStepDecay(0.1, milestones=[2, 7], gamma=0.5),
        ),
        (["--schedule", "multistep"], mg.MultiStepDecay(0.1, milestones=[5, 7])),
        (
            ["--schedule", "poly", "--power", "2"],
            mg.PolynomialDecay(0.1, total_steps=10, power=2.0),
        ),
        (["--schedule", "poly"], mg.PolynomialDecay(0.1, total_steps=10)),
    ],
)
def test_schedule_flags_build_the_schedule(argv, expected):
    args = parse(["train", "--epochs", "10", "--lr", "0.1"] + argv)
    schedule = make_schedule(args, 4)
    assert repr(schedule) == repr(expected)
    t = np.arange(40 if expected.unit == "iteration" else 10)
    np.testing.assert_array_equal([schedule(i) for i in t], [expected(i) for i in t])


def test_updates_per_epoch_follows_drop_last():
    assert updates_per_epoch(parse(["train", "--batch-size", "64"]), 1000) == 16
    assert updates_per_epoch(parse(["train", "--batch-size", "64", "--drop-last"]), 1000) == 15


def test_onecycle_run_spans_every_update(tmp_path):
    code = main(
        [
            "train",
            "--task",
            "regression",
            "--epochs",
            "2",
            "--batch-size",
            "500",
            "--drop-last",
            "--schedule",
            "onecycle",
            "--lr",
            "0.01",
            "--optimizer",
            "adam",
            "--quiet",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    lrs = mg.History.from_json(tmp_path / "history.json").iterations["lr"]
    assert len(lrs) == 28 and lrs[-1] == pytest.approx(0.01 / 25 / 1e4)
    assert max(lrs) == pytest.approx(0.01, rel=1e-2)  # the peak falls between steps 7 and 8


REJECTED = [
    (["--schedule", "poly", "--milestones", "3"], "--milestones is used by --schedule multistep"),
    (["--schedule", "multistep", "--power", "2"], "--power is used by --schedule poly"),
    (["--schedule", "cosine", "--t0", "2"], "--t0 is used by --schedule warm-restarts"),
    (["--schedule", "step", "--pct-start", "0.2"], "--pct-start is used by --schedule onecycle"),
    (["--t-mult", "2"], "--schedule constant would ignore it"),
    (["--schedule", "poly", "--three-phase"], "--three-phase is used by --schedule onecycle"),
    (["--schedule", "onecycle", "--warmup", "1"], "drop --warmup"),
    (["--schedule", "onecycle", "--momentum", "0.9"], "--no-cycle-momentum"),
    (
        ["--schedule", "onecycle", "--no-cycle-momentum", "--base-momentum", "0.8"],
        "drop one or the other",
    ),
    (
        ["--schedule", "onecycle", "--base-momentum", "0.9", "--max-momentum", "0.8"],
        "must not exceed --max-momentum",
    ),
    (["--schedule", "multistep", "--milestones", "3,10"], "not below --epochs 10"),
    (["--schedule", "warm-restarts", "--min-lr", "1"], "must not exceed --lr"),
]


@pytest.mark.parametrize("argv, message", REJECTED)
def test_flags_that_do_not_apply_are_parse_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--epochs", "10", "--quiet"] + argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--pct-start", "1"),
        ("--pct-start", "0"),
        ("--milestones", "5,3"),
        ("--milestones", "2,2"),
        ("--t0", "0"),
        ("--t-mult", "0"),
        ("--power", "0"),
        ("--anneal", "cosine"),
    ],
)
def test_bad_numbers_are_rejected_when_parsed(flag, value, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["train", flag, value])
    assert info.value.code == 2 and f"argument {flag}" in capsys.readouterr().err


def test_build_schedule_by_name_checks_its_arguments():
    build = mg.registry.build_schedule
    assert (
        build("poly", 0.1, epochs=4, updates_per_epoch=[3, 3, 2, 2], unit="iteration").total_steps
        == 10
    )
    assert build("onecycle", 0.1, epochs=2, updates_per_epoch=5).total_steps == 10
    assert build("cyclic", 0.1, epochs=2, updates_per_epoch=5, max_lr=0.5).max_lr == 0.5
    with pytest.raises(
        TypeError, match="'poly' does not take 'milestones'; it takes total_steps, power, unit"
    ):
        build("poly", 0.1, epochs=2, updates_per_epoch=5, milestones=[1])
    with pytest.raises(ValueError, match="wraps other schedules"):
        build("warmup", 0.1, epochs=2, updates_per_epoch=5)
    with pytest.raises(ValueError, match="3 entries for 2 epochs"):
        build("cosine", 0.1, epochs=2, updates_per_epoch=[1, 2, 3])
    with pytest.raises(ValueError, match="schedule must be one of"):
        build("linear", 0.1, epochs=2, updates_per_epoch=5)
