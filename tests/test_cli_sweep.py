"""minigd sweep: parse-time checks naming the flag, flags that do not apply, the optimizer and
model flags, --storage resume and Dask from the command line."""

import argparse
import json

import pytest

import minigd as mg
from minigd.cli import build_parser, main
from minigd.experiments.sweep import SweepResult

SMALL = [
    "sweep",
    "--subset",
    "200",
    "--batch-sizes",
    "50,100",
    "--lrs",
    "0.1",
    "--epochs",
    "1",
    "--hidden",
    "8",
    "--backend",
    "numpy",
]


@pytest.fixture(autouse=True)
def restore_backend():
    backend = mg.get_backend()
    yield
    mg.set_backend(backend)


def sweep_parser():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["sweep"]


def test_every_sweep_flag_states_its_default():
    for action in sweep_parser()._actions:
        if action.dest != "help":
            assert "default" in (action.help or ""), action.option_strings


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--batch-sizes", "32,0"),
        ("--batch-sizes", "32,32"),
        ("--lrs", "0.1,-1"),
        ("--lrs", "nan"),
        ("--base-lr", "0"),
        ("--base-batch-size", "0"),
        ("--seeds", "-1"),
        ("--epochs", "0"),
        ("--epochs", "1.5"),
        ("--momentum", "1"),
        ("--momentum", "-0.1"),
        ("--weight-decay", "-1"),
        ("--subset", "1"),
        ("--validation-split", "1"),
        ("--n-jobs", "0"),
        ("--n-jobs", "-2"),
        ("--dask-workers", "0"),
    ],
)
def test_bad_numbers_fail_at_parse_time_naming_the_flag(flag, value, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", flag, value])
    assert exit_.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, words",
    [
        (["--lrs", "0.1", "--base-lr", "0.2"], "--base-lr only applies with --scaling"),
        (["--base-batch-size", "64"], "--base-batch-size only applies with --scaling"),
        (
            ["--optimizer", "adam", "--momentum", "0.9"],
            "--momentum applies to --optimizer rmsprop or sgd only",
        ),
        (["--optimizer", "adamw", "--nesterov"], "--nesterov applies to --optimizer sgd only"),
        (["--nesterov"], "--nesterov needs --momentum > 0"),
        (["--joblib-backend", "dask"], "--dask-workers N starts a local one"),
        (["--dask-workers", "2", "--joblib-backend", "loky"], "drop --joblib-backend loky"),
    ],
)
def test_flags_that_do_not_apply_are_errors(args, words, tmp_path, capsys):
    code = main(["sweep", *args, "--out", str(tmp_path)])
    assert code == 2 and words in capsys.readouterr().err
    assert not (tmp_path / "sweep.csv").exists()


def test_dask_workers_and_scheduler_exclude_each_other(capsys):
    with pytest.raises(SystemExit):
        main(["sweep", "--dask-workers", "2", "--dask-scheduler", "tcp://127.0.0.1:8786"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_optimizer_and_init_flags_reach_the_cells(tmp_path):
    assert (
        main(
            SMALL
            + [
                "--momentum",
                "0.9",
                "--weight-decay",
                "0.001",
                "--init",
                "xavier",
                "--quiet",
                "--out",
                str(tmp_path / "a"),
            ]
        )
        == 0
    )
    assert main(SMALL + ["--quiet", "--out", str(tmp_path / "b")]) == 0
    a = SweepResult.from_json(tmp_path / "a" / "sweep.json")
    b = SweepResult.from_json(tmp_path / "b" / "sweep.json")
    assert a.config["optimizer_kwargs"] == {"weight_decay": 0.001, "momentum": 0.9}
    assert "init='xavier'" in a.config["build_model"] and "init='he'" in b.config["build_model"]
    assert a.column("train_loss") != b.column("train_loss")
    assert main(SMALL + ["--scaling", "sqrt", "--quiet", "--out", str(tmp_path / "c")]) == 2


def test_sweep_shares_the_data_flags_of_train(tmp_path):
    """--data takes the user's .npz (no X_test needed) and --nesterov reaches the cells."""
    import numpy as np

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 90)
    X = (rng.normal(size=(90, 5)) + 2 * np.eye(3, 5)[y]).astype(np.float32)
    np.savez(tmp_path / "own.npz", X=X, y=y)
    assert (
        main(
            [
                "sweep",
                "--data",
                str(tmp_path / "own.npz"),
                "--batch-sizes",
                "30",
                "--lrs",
                "0.1",
                "--epochs",
                "1",
                "--hidden",
                "4",
                "--backend",
                "numpy",
                "--momentum",
                "0.5",
                "--nesterov",
                "--quiet",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 0
    )
    result = SweepResult.from_json(tmp_path / "o" / "sweep.json")
    assert result.config["optimizer_kwargs"] == {
        "weight_decay": 0.0,
        "momentum": 0.5,
        "nesterov": True,
    }
    assert "(5, 4, 3)" in result.config["build_model"] and len(result) == 1


def test_storage_rerun_resumes(tmp_path, capsys):
    db = tmp_path / "sweep.db"
    args = SMALL + ["--storage", str(db)]
    assert main(args + ["--out", str(tmp_path / "first")]) == 0
    first = capsys.readouterr().out
    assert "resuming" not in first and f"storage {db}" in first
    assert main(args + ["--out", str(tmp_path / "again")]) == 0
    assert "resuming: 2 of 2 cells done" in capsys.readouterr().out
    a = json.loads((tmp_path / "first" / "sweep.json").read_text())
    b = json.loads((tmp_path / "again" / "sweep.json").read_text())
    assert a["table"] == b["table"]  # stored rows, timings included
    assert (
        SweepResult.from_storage(db).table
        == SweepResult.from_json(tmp_path / "first" / "sweep.json").table
    )
    (tmp_path / "notes.db").write_text("not a database")
    code = main(SMALL + ["--storage", str(tmp_path / "notes.db"), "--out", str(tmp_path / "x")])
    assert code == 2 and "notes.db' is not a minigd sweep database" in capsys.readouterr().err
    assert (tmp_path / "notes.db").read_text() == "not a database"


def test_dask_workers_runs_the_sweep_on_a_local_cluster(tmp_path, capsys):
    pytest.importorskip("dask.distributed")
    assert main(SMALL + ["--out", str(tmp_path / "serial"), "--quiet"]) == 0
    assert main(SMALL + ["--dask-workers", "2", "--out", str(tmp_path / "dask")]) == 0
    printed = capsys.readouterr().out
    assert "dask: 2 workers, scheduler tcp://" in printed and "n_jobs -1" in printed
    serial = json.loads((tmp_path / "serial" / "sweep.json").read_text())
    on_dask = json.loads((tmp_path / "dask" / "sweep.json").read_text())
    for a, b in zip(serial["table"], on_dask["table"], strict=True):
        a.pop("seconds"), b.pop("seconds")
        assert a == b


def test_dask_scheduler_connects_to_a_running_cluster(tmp_path, capsys):
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        code = main(
            SMALL
            + [
                "--dask-scheduler",
                cluster.scheduler_address,
                "--storage",
                str(tmp_path / "s.db"),
                "--out",
                str(tmp_path / "d"),
            ]
        )
        assert code == 0
        assert f"dask: 1 workers, scheduler {cluster.scheduler_address}" in (
            capsys.readouterr().out
        )
        assert cluster.scheduler.status.name == "running"  # connecting did not close it
    assert SweepResult.list_storage(tmp_path / "s.db")[0]["done"] == 2
