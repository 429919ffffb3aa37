"""mg.sweep's builders (build_model() and build_model(seed)) and its SQLite storage: resume
after an interruption or a SIGKILL, separation of sweeps in one file, reading back, and
foreign or corrupt files."""

import functools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

import minigd as mg
from minigd.experiments.sweep import SweepResult

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import sweep_kill_helper  # noqa: E402


@pytest.fixture(scope="module")
def data():
    X, y = sweep_kill_helper.data()
    return X, y


def small_model(seed=0):
    return mg.Sequential(mg.Dense(6, 8), mg.ReLU(), mg.Dense(8, 3), seed=seed)


def grid(**extra):
    args = dict(batch_sizes=[8, 32], lrs=[0.05, 0.2], epochs=2)
    args.update(extra)
    return args


def untimed(history):
    """A History as a dict without its timings (seconds, samples_per_second)."""
    data = history if isinstance(history, dict) else history.to_dict()
    data = dict(data, epochs=dict(data["epochs"]))
    data["epochs"].pop("seconds"), data["epochs"].pop("samples_per_second")
    return data


def table(result):
    """The table, timings aside, comparable with == (NaN as None)."""
    return [
        {
            k: (None if isinstance(v, float) and v != v else v)
            for k, v in row.items()
            if k != "seconds"
        }
        for row in result.table
    ]


@pytest.fixture(autouse=True)
def numpy_kernels():
    with mg.use_backend("numpy"):
        yield


class Counting:
    """A seed builder that counts its calls and can fail at call number ``fail_at``."""

    def __init__(self, fail_at=None):
        self.calls, self.fail_at = 0, fail_at

    def __call__(self, seed):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt("interrupted")
        return small_model(seed)


# ---- builders --------------------------------------------------------------------------------


def test_zero_argument_builder_gets_independent_cells(data):
    X, y = data
    model = small_model(3)
    before = model.state_dict()
    shared = mg.sweep(lambda: model, X, y, **grid(seeds=(0, 1)))
    alone = mg.sweep(lambda: model, X, y, **grid(batch_sizes=[32], lrs=[0.2], seeds=(1,)))
    # the last cell of the first sweep starts from model's weights, not from a trained model
    assert table(shared)[-1] == table(alone)[0]
    for name, value in model.state_dict().items():  # model itself is never trained
        np.testing.assert_array_equal(value, before[name])
    fresh = model.clone()
    history = mg.fit(
        fresh,
        X,
        y,
        optimizer=mg.SGD(fresh.parameters(), lr=0.2),
        epochs=2,
        batch_size=32,
        seed=1,
        verbose=0,
    )
    assert alone.table[0]["train_loss"] == history.epochs["train_loss"][-1]


def test_builder_signatures_that_are_accepted(data):
    X, y = data
    seen = []

    def keyword(seed=7):
        seen.append(seed)
        return small_model(seed)

    def only_options(width=8):  # no seed parameter: called with nothing
        seen.append(("options", width))
        return small_model()

    class ZeroCall:
        def __call__(self):
            seen.append("zero")
            return small_model()

    def two(width, seed):
        seen.append((width, seed))
        return small_model(seed)

    one = dict(batch_sizes=[16], lrs=[0.1], epochs=1, seeds=(4,))
    for builder in (
        keyword,
        only_options,
        ZeroCall(),
        functools.partial(two, 8),
        lambda *args: small_model(*args),
        small_model,
    ):
        result = mg.sweep(builder, X, y, **one)
        assert len(result) == 1 and not result.table[0]["diverged"]
    assert seen == [4, ("options", 8), "zero", (8, 4)]
    by_seed = mg.sweep(small_model, X, y, **one)
    by_lambda = mg.sweep(lambda seed: small_model(seed), X, y, **one)
    assert table(by_seed) == table(by_lambda)


@pytest.mark.parametrize(
    "builder",
    [
        lambda a, b: small_model(),
        functools.partial(lambda a, b, c: small_model(), 1),
        lambda *, width: small_model(),
        lambda seed, *, width: small_model(seed),
    ],
)
def test_other_signatures_fail_before_any_cell(data, builder):
    X, y = data
    with pytest.raises(TypeError, match=r"build_model\(seed\) or build_model\(\)"):
        mg.sweep(builder, X, y, batch_sizes=[16], lrs=[0.1], epochs=1)


def test_builder_returning_something_else_is_a_type_error(data):
    X, y = data
    with pytest.raises(TypeError, match="must return a minigd Sequential"):
        mg.sweep(lambda: "model", X, y, batch_sizes=[16], lrs=[0.1], epochs=1)


def test_optimizer_kwargs_reach_the_optimizer(data):
    X, y = data
    named = mg.sweep(
        small_model, X, y, **grid(optimizer_kwargs={"momentum": 0.9, "weight_decay": 1e-3})
    )
    factory = mg.sweep(
        small_model,
        X,
        y,
        **grid(optimizer=lambda p, lr: mg.SGD(p, lr, momentum=0.9, weight_decay=1e-3)),
    )
    plain = mg.sweep(small_model, X, y, **grid())
    assert table(named) == table(factory) != table(plain)
    assert named.config["optimizer_kwargs"] == {"momentum": 0.9, "weight_decay": 1e-3}
    with pytest.raises(ValueError, match="momentum"):
        mg.sweep(small_model, X, y, **grid(optimizer="adam", optimizer_kwargs={"momentum": 0.9}))
    with pytest.raises(ValueError, match="momentum"):
        mg.sweep(small_model, X, y, **grid(optimizer_kwargs={"momentum": 2.0}))


# ---- storage ---------------------------------------------------------------------------------


def test_rerun_with_storage_runs_nothing_and_returns_the_same_result(data, tmp_path, capsys):
    X, y = data
    db = tmp_path / "sweep.db"
    first_builder = Counting()
    first = mg.sweep(first_builder, X, y, storage=db, **grid(validation_data=(X[:20], y[:20])))
    assert first_builder.calls == 4 and first.resumed == 0
    again_builder = Counting()
    again = mg.sweep(
        again_builder, X, y, storage=str(db), verbose=1, **grid(validation_data=(X[:20], y[:20]))
    )
    assert again_builder.calls == 0 and again.resumed == 4
    assert "resuming: 4 of 4 cells done" in capsys.readouterr().out
    assert again.table == first.table  # seconds too: they are the stored ones
    for key, history in first.histories.items():
        assert again.histories[key].to_dict() == history.to_dict()
    assert again.config == first.config


def test_interrupted_sweep_resumes_and_matches_an_uninterrupted_one(data, tmp_path):
    X, y = data
    db = tmp_path / "sweep.db"
    args = grid(batch_sizes=[8, 16, 32], lrs=[0.05, 0.2, 1e20])  # 1e20 diverges: NaNs
    with pytest.raises(KeyboardInterrupt):
        mg.sweep(Counting(fail_at=4), X, y, storage=db, **args)
    partial = SweepResult.from_storage(db)
    assert len(partial) == 3 and len(partial.missing) == 6
    assert [tuple(r[k] for k in ("batch_size", "lr", "seed")) for r in partial.table] == [
        (8, 0.05, 0),
        (8, 0.2, 0),
        (8, 1e20, 0),
    ]
    rest = Counting()
    resumed = mg.sweep(rest, X, y, storage=db, **args)
    assert rest.calls == 6 and resumed.resumed == 3
    uninterrupted = mg.sweep(Counting(), X, y, **args)
    assert table(resumed) == table(uninterrupted)
    assert any(r["diverged"] for r in resumed.table)
    stored = SweepResult.from_storage(db)
    assert stored.missing == [] and table(stored) == table(uninterrupted)
    for key, history in uninterrupted.histories.items():
        assert untimed(stored.histories[key]) == untimed(history)


def test_parallel_sweep_stores_every_cell(data, tmp_path):
    pytest.importorskip("joblib")
    X, y = data
    db = tmp_path / "sweep.db"
    parallel = mg.sweep(small_model, X, y, storage=db, n_jobs=2, backend="threading", **grid())
    assert table(parallel) == table(mg.sweep(small_model, X, y, **grid()))
    assert SweepResult.list_storage(db)[0]["done"] == 4
    assert table(SweepResult.from_storage(db)) == table(parallel)


def test_different_sweeps_in_one_file_stay_apart(data, tmp_path):
    X, y = data
    db = tmp_path / "sweep.db"
    a = mg.sweep(small_model, X, y, storage=db, **grid())
    b = mg.sweep(small_model, X, y, storage=db, **grid(epochs=1))
    X2 = X.copy()
    X2[0, 0] += 1.0  # the data fingerprint sees a row
    c_builder = Counting()
    mg.sweep(c_builder, X2, y, storage=db, **grid())
    assert c_builder.calls == 4  # new data: nothing resumed
    d_builder = Counting()
    mg.sweep(d_builder, X, y, storage=db, **grid(batch_sizes=[8]))
    assert d_builder.calls == 2
    stored = SweepResult.list_storage(db)
    assert len(stored) == 4 and len({s["key"] for s in stored}) == 4
    assert [s["done"] for s in stored] == [4, 4, 4, 2]
    with pytest.raises(ValueError, match="holds 4 sweeps, pass key=") as error:
        SweepResult.from_storage(db)
    assert stored[0]["key"] in str(error.value)
    assert table(SweepResult.from_storage(db, key=stored[0]["key"])) == table(a)
    assert table(SweepResult.from_storage(db, key=stored[1]["key"])) == table(b)
    with pytest.raises(ValueError, match="no sweep 'nope'"):
        SweepResult.from_storage(db, key="nope")


def test_foreign_and_corrupt_files_are_refused_and_left_unchanged(data, tmp_path):
    X, y = data
    text = tmp_path / "notes.db"
    text.write_bytes(b"my thesis draft, not a database\n" * 200)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as con:
        con.execute("CREATE TABLE customers (name TEXT)")
        con.execute("INSERT INTO customers VALUES ('ada')")
    con.close()
    newer = tmp_path / "newer.db"
    mg.sweep(small_model, X, y, storage=newer, **grid(batch_sizes=[32], lrs=[0.1]))
    with sqlite3.connect(newer) as con:
        con.execute("UPDATE minigd_meta SET value = '99' WHERE name = 'version'")
    con.close()
    damaged = tmp_path / "damaged.db"
    mg.sweep(small_model, X, y, storage=damaged, **grid(batch_sizes=[32], lrs=[0.1]))
    raw = bytearray(damaged.read_bytes())
    raw[0:16] = b"x" * 16  # the SQLite header
    damaged.write_bytes(bytes(raw))
    for path, words in (
        (text, "not a readable SQLite"),
        (other, "tables"),
        (newer, "schema version '99'"),
        (damaged, "not a readable SQLite"),
    ):
        before = path.read_bytes()
        with pytest.raises(ValueError, match="is not a minigd sweep database") as error:
            mg.sweep(small_model, X, y, storage=path, **grid())
        assert str(path) in str(error.value) and words in str(error.value)
        with pytest.raises(ValueError, match="is not a minigd sweep database"):
            SweepResult.from_storage(path)
        assert path.read_bytes() == before
    with pytest.raises(FileNotFoundError, match="no sweep storage"):
        SweepResult.from_storage(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()
    with pytest.raises(TypeError, match="storage"):
        mg.sweep(small_model, X, y, storage=3, **grid())


# ---- SIGKILL and resume ----------------------------------------------------------------------


def helper(*args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return [sys.executable, os.path.join(HERE, "sweep_kill_helper.py"), *map(str, args)], env


def stored_cells(db):
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as con:
            return con.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
    except sqlite3.Error:  # not created yet
        return 0


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_sigkill_then_rerun_runs_only_the_unfinished_cells(tmp_path):
    db, marker = tmp_path / "sweep.db", tmp_path / "built.txt"
    command, env = helper(db, marker, tmp_path / "killed.json", 0.4)
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while stored_cells(db) < 3:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the sweep stored nothing in 300 s"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    done = stored_cells(db)
    assert 3 <= done < 9 and not (tmp_path / "killed.json").exists()
    built_before = len(marker.read_text().split())

    command, env = helper(db, marker, tmp_path / "resumed.json")
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming: {done} of 9 cells done" in rerun.stdout
    assert len(marker.read_text().split()) - built_before == 9 - done  # only unfinished ran

    command, env = helper("-", tmp_path / "unused.txt", tmp_path / "whole.json")
    whole = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    uninterrupted = json.loads((tmp_path / "whole.json").read_text())
    for a, b in zip(resumed["table"], uninterrupted["table"], strict=True):
        a.pop("seconds"), b.pop("seconds")
        assert a == b
    assert [untimed(h) for h in resumed["histories"]] == [
        untimed(h) for h in uninterrupted["histories"]
    ]


def test_dask_backend_by_name_stores_every_cell(data, tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    X, y = data
    db = tmp_path / "sweep.db"
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
    ):
        on_dask = mg.sweep(small_model, X, y, storage=db, n_jobs=-1, backend="dask", **grid())
    assert table(on_dask) == table(mg.sweep(small_model, X, y, **grid()))
    assert SweepResult.list_storage(db)[0]["done"] == 4
    assert table(SweepResult.from_storage(db)) == table(on_dask)


def test_lambdas_over_different_models_stay_apart(data, tmp_path):
    X, y = data
    db = tmp_path / "sweep.db"

    def builders():
        a, b = small_model(1), small_model(2)
        return (lambda: a), (lambda: b)  # same code, different models

    build_a, build_b = builders()
    first = mg.sweep(build_a, X, y, storage=db, **grid())
    second = mg.sweep(build_b, X, y, storage=db, **grid())
    assert second.resumed == 0 and table(first) != table(second)
    assert len(SweepResult.list_storage(db)) == 2
    assert mg.sweep(build_a, X, y, storage=db, **grid()).resumed == 4
    for config in (first.config, second.config):
        assert "0x" not in config["build_model"] and "Sequential[" in config["build_model"]
