"""The command line checks numbers when it parses them, rejects flags that would be ignored,
states every default, prints its version and trains on the user's own .npz data."""

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest

import minigd as mg
from minigd.cli import args as cli_args
from minigd.cli import build_parser, check_arguments, load_npz, main

OWN_COMMANDS = ("train", "lr-find", "noise-scale")


@pytest.fixture(autouse=True)
def keep_backend():
    """main(--backend ...) sets the backend for the process; put it back after each test."""
    with mg.use_backend(mg.get_backend()):
        yield


def subparser(name):
    return build_parser()._subparsers._group_actions[0].choices[name]


def parse(argv):
    return check_arguments(build_parser().parse_args(argv))


# ---- numbers are checked when parsed -------------------------------------------------------
BAD_NUMBERS = [
    ("train", "--batch-size", "0"),
    ("train", "--batch-size", "-3"),
    ("train", "--batch-size", "x"),
    ("train", "--epochs", "0"),
    ("train", "--lr", "0"),
    ("train", "--lr", "nan"),
    ("train", "--lr", "-0.1"),
    ("train", "--momentum", "1"),
    ("train", "--momentum", "-0.5"),
    ("train", "--weight-decay", "-1"),
    ("train", "--validation-split", "1"),
    ("train", "--step-size", "0"),
    ("train", "--gamma", "0"),
    ("train", "--gamma", "1.5"),
    ("train", "--min-lr", "-1"),
    ("train", "--max-lr", "inf"),
    ("train", "--warmup", "-1"),
    ("train", "--early-stopping", "-2"),
    ("train", "--seed", "-1"),
    ("train", "--seed", "1.5"),
    ("train", "--checkpoint-every", "0"),
    ("train", "--hidden", "0"),
    ("lr-find", "--num-iter", "0"),
    ("lr-find", "--start-lr", "0"),
    ("lr-find", "--end-lr", "-1"),
    ("lr-find", "--smooth", "1"),
    ("lr-find", "--diverge-threshold", "0.5"),
    ("lr-find", "--batch-size", "0"),
    ("noise-scale", "--small-batch", "0"),
    ("noise-scale", "--big-batch", "0"),
    ("noise-scale", "--n-pairs", "0"),
    ("noise-scale", "--epochs", "-1"),
    ("noise-scale", "--batch-size", "0"),
    ("noise-scale", "--lr", "0"),
]


@pytest.mark.parametrize("command,flag,value", BAD_NUMBERS)
def test_bad_numbers_are_parse_errors_naming_the_flag(command, flag, value, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, flag, value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: " in err and "Traceback" not in err


def test_batch_size_zero_from_the_shell_is_a_clean_error():
    result = subprocess.run(
        [sys.executable, "-m", "minigd", "train", "--batch-size", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "argument --batch-size: must be an integer >= 1, got '0'" in result.stderr
    assert "Traceback" not in result.stderr and "ZeroDivisionError" not in result.stderr


@pytest.mark.parametrize("command", OWN_COMMANDS + ("sweep",))
def test_every_numeric_flag_has_a_checking_type(command):
    checks = {
        getattr(cli_args, name)
        for name in dir(cli_args)
        if not name.startswith("_") and callable(getattr(cli_args, name))
    }
    for action in subparser(command)._actions:
        assert action.type not in (int, float), action.dest
        if action.type is not None:
            assert action.type in checks, action.dest


def test_good_numbers_pass():
    args = parse(
        [
            "train",
            "--batch-size",
            "1",
            "--lr",
            "1e-3",
            "--momentum",
            "0",
            "--validation-split",
            "0",
            "--seed",
            "0",
            "--gamma",
            "1",
            "--schedule",
            "step",
        ]
    )
    assert (args.batch_size, args.lr, args.momentum, args.validation_split) == (1, 1e-3, 0.0, 0.0)
    assert args.gamma == 1.0
    assert parse(["lr-find", "--diverge-threshold", "0"]).diverge_threshold == 0.0
    assert parse(["noise-scale", "--epochs", "0"]).epochs == 0


def test_cli_args_functions_raise_argparse_errors():
    assert cli_args.positive_int("7") == 7
    assert cli_args.fraction("0.5") == 0.5
    assert cli_args.hidden_sizes("64,32") == [64, 32]
    assert cli_args.positive_ints("32, 128") == [32, 128]
    assert cli_args.nonnegative_ints("0,1") == [0, 1]
    for function, text in [(cli_args.positive_ints, "32,32"), (cli_args.positive_floats, ",")]:
        with pytest.raises(argparse.ArgumentTypeError, match="repeated|at least one"):
            function(text)
    for function, text in [
        (cli_args.positive_int, "0"),
        (cli_args.nonnegative_int, "-1"),
        (cli_args.positive_float, "0"),
        (cli_args.nonnegative_float, "-inf"),
        (cli_args.fraction, "1.0"),
        (cli_args.decay_factor, "0"),
        (cli_args.threshold_or_zero, "1"),
        (cli_args.subset_size, "1"),
        (cli_args.n_jobs, "0"),
        (cli_args.n_jobs, "-2"),
        (cli_args.positive_ints, "32,0"),
        (cli_args.positive_floats, "nan"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError, match="must be"):
            function(text)


# ---- flags that would be ignored ---------------------------------------------------------------
IGNORED = [
    (
        ["train", "--optimizer", "adam", "--momentum", "0.9"],
        "--momentum applies to --optimizer rmsprop or sgd",
    ),
    (["train", "--optimizer", "adamw", "--nesterov"], "--nesterov applies to --optimizer sgd"),
    (["lr-find", "--optimizer", "adam", "--momentum", "0.5"], "--momentum applies"),
    (["noise-scale", "--optimizer", "adamw", "--nesterov"], "--nesterov applies"),
    (
        ["train", "--schedule", "cosine", "--gamma", "0.5"],
        "--gamma is used by --schedule step or exponential or multistep only",
    ),
    (["train", "--schedule", "cosine", "--max-lr", "1"], "--max-lr is used by --schedule cyclic"),
    (
        ["train", "--schedule", "cosine", "--step-size", "2"],
        "--step-size is used by --schedule step or cyclic only",
    ),
    (["train", "--schedule", "step", "--min-lr", "0.01"], "--min-lr is used by --schedule cosine"),
    (["train", "--min-lr", "0.01"], "--schedule constant would ignore it"),
    (["train", "--schedule", "exponential", "--step-size", "2"], "--step-size"),
    (["train", "--schedule", "cyclic", "--gamma", "0.5"], "--gamma"),
    (["train", "--nesterov"], "--nesterov needs --momentum > 0"),
]


@pytest.mark.parametrize("argv,message", IGNORED)
def test_flags_that_do_not_apply_are_errors_saying_why(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv + ["--quiet"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and f"minigd {argv[0]}: error:" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--optimizer", "sgd", "--momentum", "0.9", "--nesterov"],
        ["train", "--schedule", "step", "--step-size", "2", "--gamma", "0.5"],
        ["train", "--schedule", "exponential", "--gamma", "0.9"],
        ["train", "--schedule", "cosine", "--min-lr", "0.001"],
        ["train", "--schedule", "cyclic", "--max-lr", "1", "--step-size", "10"],
        ["train", "--optimizer", "adam", "--weight-decay", "0.01", "--warmup", "1"],
        ["lr-find", "--optimizer", "adamw"],
    ],
)
def test_flags_that_apply_are_accepted(argv):
    parse(argv)


def test_unset_flags_get_their_defaults_after_the_check():
    args = parse(["train"])
    assert (args.momentum, args.nesterov, args.min_lr) == (0.0, False, 0.0)
    assert parse(["train", "--optimizer", "adam"]).momentum == 0.0


# ---- help, version -----------------------------------------------------------------------------
@pytest.mark.parametrize("command", OWN_COMMANDS)
def test_help_of_every_flag_states_its_default(command):
    for action in subparser(command)._actions:
        if action.option_strings and action.dest != "help":
            assert "(default: " in action.help, action.option_strings


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"minigd {mg.__version__}"


# ---- --data file.npz ---------------------------------------------------------------------------
def blobs(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    X = rng.normal(size=(n, 6)) * 0.5 + np.eye(3, 6)[y] * 3
    return X.astype(np.float32), y


def test_train_on_your_own_npz(tmp_path, capsys):
    X, y = blobs(300, 0)
    X_test, y_test = blobs(100, 1)
    path = tmp_path / "mine.npz"
    np.savez(path, X=X, y=y, X_test=X_test, y_test=y_test)
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--data",
            str(path),
            "--hidden",
            "8",
            "--epochs",
            "3",
            "--batch-size",
            "32",
            "--backend",
            "numpy",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "270 train / 30 validation / 100 test" in text
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["data"] == str(path) and run["test_accuracy"] > 0.9
    assert np.load(out / "model.npz")["0.weight"].shape == (6, 8)


def test_train_on_an_npz_without_a_test_set(tmp_path, capsys):
    X, y = blobs(200, 0)
    path = tmp_path / "mine.npz"
    np.savez(path, X=X, y=y)
    code = main(
        [
            "train",
            "--data",
            str(path),
            "--hidden",
            "4",
            "--epochs",
            "1",
            "--quiet",
            "--backend",
            "numpy",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    assert code == 0
    assert "test accuracy: none" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "run.json").read_text())["test_accuracy"] is None


@pytest.mark.parametrize(
    "arrays,message",
    [
        (dict(X=np.zeros((4, 2))), "no array 'y'"),
        (dict(features=np.zeros((4, 2)), labels=np.zeros(4, int)), "no array 'X' or 'y'"),
        (dict(X=np.zeros(4), y=np.zeros(4, int)), "must be 2-D"),
        (dict(X=np.zeros((4, 2)), y=np.zeros(5, int)), "5 labels but X has 4"),
        (dict(X=np.zeros((4, 2)), y=np.full(4, 0.5)), "integer class ids"),
        (
            dict(X=np.zeros((4, 2)), y=np.zeros(4, int), X_test=np.zeros((2, 2))),
            "X_test and y_test",
        ),
        (
            dict(
                X=np.zeros((4, 2)),
                y=np.zeros(4, int),
                X_test=np.zeros((2, 3)),
                y_test=np.zeros(2, int),
            ),
            "X_test has 3 features but X has 2",
        ),
        (dict(X=np.array([[1, "a"]], dtype=object), y=np.zeros(1, int)), "pickle"),
    ],
)
def test_bad_npz_files_are_clear_errors(tmp_path, arrays, message, capsys):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="--data .*bad.npz") as info:
        load_npz(str(path))
    assert message in str(info.value)
    assert main(["train", "--data", str(path), "--quiet", "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err


def test_npy_and_garbage_files_are_clear_errors(tmp_path):
    np.save(tmp_path / "one.npy", np.zeros((3, 2)))
    with pytest.raises(ValueError, match="single .npy array"):
        load_npz(str(tmp_path / "one.npy"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match="cannot read it as .npz"):
        load_npz(str(tmp_path / "junk.npz"))


def test_lr_find_reads_your_npz(tmp_path):
    X, y = blobs(300, 0)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    out = tmp_path / "lr"
    assert (
        main(
            [
                "lr-find",
                "--data",
                str(tmp_path / "d.npz"),
                "--num-iter",
                "10",
                "--hidden",
                "4",
                "--backend",
                "numpy",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert len(json.loads((out / "lr_range.json").read_text())["lr"]) <= 10


# ---- the first-run compile line ----------------------------------------------------------------
def test_fit_and_train_print_the_same_compile_line(monkeypatch, capsys, tmp_path):
    from minigd import backend
    from minigd.kernels import jit

    monkeypatch.setattr(jit, "needs_compilation", lambda: True)
    X, y = blobs(50, 0)
    model = mg.Sequential(mg.Dense(6, 4), mg.ReLU(), mg.Dense(4, 3), seed=0)
    with mg.use_backend("numba"):
        monkeypatch.setattr(backend, "_announced", False)
        mg.fit(
            model,
            X,
            y,
            optimizer=mg.SGD(model.parameters(), lr=0.1),
            epochs=1,
            batch_size=16,
            verbose=2,
        )
        first = capsys.readouterr().out.splitlines()
        mg.fit(
            model,
            X,
            y,
            optimizer=mg.SGD(model.parameters(), lr=0.1),
            epochs=1,
            batch_size=16,
            verbose=2,
        )
        again = capsys.readouterr().out
        monkeypatch.setattr(backend, "_announced", False)
        mg.fit(
            model,
            X,
            y,
            optimizer=mg.SGD(model.parameters(), lr=0.1),
            epochs=1,
            batch_size=16,
            verbose=0,
        )
        silent = capsys.readouterr().out
    assert first[0] == backend.COMPILE_MESSAGE and first[1].startswith("plan:")
    assert "compiling" not in again and silent == ""
    np.savez(tmp_path / "d.npz", X=X, y=y)
    monkeypatch.setattr(backend, "_announced", False)
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "d.npz"),
                "--hidden",
                "4",
                "--epochs",
                "1",
                "--backend",
                "numba",
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == backend.COMPILE_MESSAGE
    assert sum(line == backend.COMPILE_MESSAGE for line in lines) == 1


def test_no_compile_line_on_the_numpy_backend(monkeypatch, capsys):
    from minigd import backend

    monkeypatch.setattr(backend, "_announced", False)
    X, y = blobs(40, 0)
    model = mg.Sequential(mg.Dense(6, 3), seed=0)
    with mg.use_backend("numpy"):
        mg.fit(
            model,
            X,
            y,
            optimizer=mg.SGD(model.parameters(), lr=0.1),
            epochs=1,
            batch_size=16,
            verbose=2,
        )
    assert "compiling" not in capsys.readouterr().out
