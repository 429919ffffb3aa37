"""mg.sweep: cells, scaling rules, divergence, determinism across n_jobs and a Dask cluster,
the table's exports and the two plots."""

import csv
import json
import math
import re

import matplotlib
import numpy as np
import pytest

import minigd as mg
from minigd.experiments.sweep import COLUMNS, SweepResult, run_cell
from minigd.schedules import linear_scaling, sqrt_scaling

matplotlib.use("Agg")

BUILD = mg.MLPBuilder((784, 16, 10))


@pytest.fixture(scope="module")
def data():
    X, y, X_val, y_val = mg.datasets.load_mnist_sample()
    return X[:400], y[:400], X_val[:200], y_val[:200]


def without_seconds(result):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in result.table]


def assert_same_tables(a, b):
    """Equal row by row (NaN == NaN), timings aside."""
    rows_a, rows_b = without_seconds(a), without_seconds(b)
    assert len(rows_a) == len(rows_b)
    for ra, rb in zip(rows_a, rows_b):
        assert ra.keys() == rb.keys()
        for key in ra:
            same = ra[key] == rb[key] or (
                isinstance(ra[key], float) and math.isnan(ra[key]) and math.isnan(rb[key])
            )
            assert same, (key, ra, rb)


@pytest.fixture(scope="module")
def serial(data):
    X, y, X_val, y_val = data
    return mg.sweep(
        BUILD,
        X,
        y,
        batch_sizes=[16, 100],
        lrs=[0.05, 0.5, 1e20],
        epochs=2,
        seeds=(0, 1),
        validation_data=(X_val, y_val),
    )


# ---- the table -----------------------------------------------------------------------------


def test_one_row_per_cell_in_grid_order(serial):
    assert len(serial) == 2 * 3 * 2
    assert [(r["batch_size"], r["lr"], r["seed"]) for r in serial.table] == [
        (b, lr, s) for b in (16, 100) for lr in (0.05, 0.5, 1e20) for s in (0, 1)
    ]
    assert all(tuple(row) == COLUMNS for row in serial.table)
    assert set(serial.histories) == {(r["batch_size"], r["lr"], r["seed"]) for r in serial.table}
    assert serial.config["epochs"] == 2 and serial.config["lrs"] == [0.05, 0.5, 1e20]


def test_a_row_is_what_fit_gives_for_that_cell(serial, data):
    """fit under the cell's conditions (one Numba thread, one BLAS thread: the results are
    bit-identical for a given thread count; with 2 threads the Numba backend may choose to run
    the products whole on BLAS's threads, minigd.kernels.autotune.epoch_mode)."""
    import numba
    from threadpoolctl import threadpool_limits

    X, y, X_val, y_val = data
    model = BUILD(1)
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            history = mg.fit(
                model,
                X,
                y,
                optimizer=mg.SGD(model.parameters(), lr=0.5),
                epochs=2,
                batch_size=16,
                seed=1,
                validation_data=(X_val, y_val),
                verbose=0,
            )
    finally:
        numba.set_num_threads(threads)
    row = serial.rows(batch_size=16, lr=0.5, seed=1)[0]
    assert row["train_loss"] == history.epochs["train_loss"][-1]
    assert row["val_loss"] == history.epochs["val_loss"][-1]
    assert row["val_accuracy"] == history.epochs["val_accuracy"][-1]
    assert row["train_accuracy"] == mg.accuracy(model, X, y)
    assert row["updates"] == 2 * 25 and row["epochs"] == 2 and not row["diverged"]
    assert serial.histories[(16, 0.5, 1)].iterations == history.iterations
    assert serial.rows(batch_size=100, lr=0.5, seed=1)[0]["updates"] == 2 * 4
    assert row["seconds"] > 0


def test_diverged_cells_are_recorded_not_fatal(serial):
    exploded = serial.rows(lr=1e20)
    assert exploded and all(r["diverged"] for r in exploded)
    for r in exploded:
        assert math.isnan(r["train_loss"]) and math.isnan(r["val_accuracy"])
        history = serial.histories[(r["batch_size"], r["lr"], r["seed"])]
        assert history.diverged
        assert r["updates"] == history.n_iterations - 1  # the diverging update is not applied
    assert not any(r["diverged"] for r in serial.rows(lr=0.05))
    best = serial.best("val_accuracy")
    assert best["lr"] != 1e20
    assert best["val_accuracy"] == max(r["val_accuracy"] for r in serial.table if not r["diverged"])
    assert serial.best("train_loss")["train_loss"] == min(
        r["train_loss"] for r in serial.table if not r["diverged"]
    )


def test_same_call_twice_gives_the_same_table(serial, data):
    X, y, X_val, y_val = data
    again = mg.sweep(
        BUILD,
        X,
        y,
        batch_sizes=[16, 100],
        lrs=[0.05, 0.5, 1e20],
        epochs=2,
        seeds=(0, 1),
        validation_data=(X_val, y_val),
    )
    assert_same_tables(serial, again)


def test_memmap_input_gives_the_same_table(data, tmp_path):
    X, y, _, _ = data
    np.save(tmp_path / "X.npy", X)
    X_map = np.load(tmp_path / "X.npy", mmap_mode="r")
    in_memory = mg.sweep(BUILD, X, y, batch_sizes=[64], lrs=[0.1], epochs=1)
    mapped = mg.sweep(BUILD, X_map, y, batch_sizes=[64], lrs=[0.1], epochs=1)
    assert_same_tables(in_memory, mapped)


def test_scaling_rules_set_the_lr_per_batch_size(data):
    X, y, _, _ = data
    linear = mg.sweep(
        BUILD, X, y, batch_sizes=[20, 40, 80], scaling="linear", base_lr=0.05, epochs=1
    )
    assert [r["lr"] for r in linear.table] == [linear_scaling(0.05, b, 20) for b in (20, 40, 80)]
    assert [r["lr"] for r in linear.table] == pytest.approx([0.05, 0.1, 0.2], rel=1e-15)
    root = mg.sweep(
        BUILD,
        X,
        y,
        batch_sizes=[25, 100],
        scaling="sqrt",
        base_lr=0.2,
        base_batch_size=100,
        epochs=1,
    )
    assert [r["lr"] for r in root.table] == [sqrt_scaling(0.2, b, 100) for b in (25, 100)]
    assert root.table[0]["lr"] == pytest.approx(0.1, rel=1e-15)
    assert root.config["scaling"] == "sqrt" and root.config["base_batch_size"] == 100


def test_optimizer_factory_and_names(data):
    X, y, _, _ = data
    plain = mg.sweep(BUILD, X, y, batch_sizes=[50], lrs=[0.05], epochs=1)
    heavy = mg.sweep(
        BUILD,
        X,
        y,
        batch_sizes=[50],
        lrs=[0.05],
        epochs=1,
        optimizer=lambda params, lr: mg.SGD(params, lr, momentum=0.9),
    )
    adam = mg.sweep(BUILD, X, y, batch_sizes=[50], lrs=[0.001], epochs=1, optimizer="adam")
    assert plain.table[0]["train_loss"] != heavy.table[0]["train_loss"]
    assert math.isfinite(adam.table[0]["train_loss"])


def test_cells_run_with_one_blas_thread(data):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    X, y, _, _ = data
    seen = []

    def build(seed):
        seen.append({pool["num_threads"] for pool in threadpoolctl.threadpool_info()})
        return BUILD(seed)

    mg.sweep(build, X, y, batch_sizes=[50], lrs=[0.05], epochs=1)
    assert seen == [{1}]


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        (dict(lrs=[0.1], scaling="linear", base_lr=0.1), ValueError, "exactly one of lrs"),
        (dict(), ValueError, "exactly one of lrs"),
        (dict(scaling="linear"), ValueError, "base_lr"),
        (dict(scaling="cubic", base_lr=0.1), ValueError, "scaling"),
        (dict(lrs=[0.1, -1.0]), ValueError, r"lrs\[1\]"),
        (dict(lrs=[0.1, 0.1]), ValueError, "repeats"),
        (dict(lrs=0.1), TypeError, "lrs"),
        (dict(lrs=[0.1], batch_sizes=[0]), ValueError, r"batch_sizes\[0\]"),
        (dict(lrs=[0.1], batch_sizes=[]), ValueError, "batch_sizes"),
        (dict(lrs=[0.1], seeds=[-1]), ValueError, r"seeds\[0\]"),
        (dict(lrs=[0.1], optimizer="lbfgs"), ValueError, "optimizer"),
        (dict(lrs=[0.1], n_jobs=0), ValueError, "n_jobs"),
        (dict(lrs=[0.1], epochs=0), ValueError, "epochs"),
        (dict(lrs=[0.1], verbose=2), ValueError, "verbose"),
    ],
)
def test_bad_arguments_fail_before_training(data, kwargs, error, words):
    X, y, _, _ = data
    args = dict(batch_sizes=[16], epochs=1)
    args.update(kwargs)
    with pytest.raises(error, match=words):
        mg.sweep(BUILD, X, y, **args)


def test_build_model_must_return_a_sequential(data):
    X, y, _, _ = data
    with pytest.raises(TypeError, match="build_model"):
        mg.sweep(lambda seed: "model", X, y, batch_sizes=[16], lrs=[0.1], epochs=1)
    with pytest.raises(TypeError, match="build_model"):
        mg.sweep("model", X, y, batch_sizes=[16], lrs=[0.1], epochs=1)


# ---- parallel runs give the serial table -----------------------------------------------------


def test_two_processes_give_the_serial_table(serial, data):
    pytest.importorskip("joblib")
    X, y, X_val, y_val = data
    parallel = mg.sweep(
        BUILD,
        X,
        y,
        batch_sizes=[16, 100],
        lrs=[0.05, 0.5, 1e20],
        epochs=2,
        seeds=(0, 1),
        validation_data=(X_val, y_val),
        n_jobs=2,
        backend="loky",
    )
    assert_same_tables(serial, parallel)
    for key, history in serial.histories.items():  # to_dict: NaN as "nan", comparable
        assert parallel.histories[key].to_dict()["iterations"] == history.to_dict()["iterations"]


def test_a_local_dask_cluster_gives_the_serial_table(serial, data):
    distributed = pytest.importorskip("dask.distributed")
    joblib = pytest.importorskip("joblib")
    X, y, X_val, y_val = data
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
        joblib.parallel_config(backend="dask"),
        distributed.get_task_stream() as tasks,
    ):
        on_dask = mg.sweep(
            BUILD,
            X,
            y,
            batch_sizes=[16, 100],
            lrs=[0.05, 0.5, 1e20],
            epochs=2,
            seeds=(0, 1),
            validation_data=(X_val, y_val),
            n_jobs=2,
        )
    ran = [str(task["key"]) for task in tasks.data if "run_cell" in str(task["key"])]
    batched = [re.match(r"batch_of_run_cell_(\d+)_calls", key) for key in ran]
    assert sum(int(m.group(1)) if m else 1 for m in batched) == len(serial)  # all on the cluster
    assert_same_tables(serial, on_dask)


# ---- exports -------------------------------------------------------------------------------


def test_csv_and_json_round_trip(serial, tmp_path):
    serial.to_csv(tmp_path / "sweep.csv")
    with open(tmp_path / "sweep.csv") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == list(COLUMNS) and len(rows) == 1 + len(serial)
    assert rows[1][:3] == ["16", "0.05", "0"]

    serial.to_json(tmp_path / "sweep.json")
    raw = json.loads((tmp_path / "sweep.json").read_text())  # strict JSON: NaN is null
    assert raw["table"][-1]["train_loss"] is None and raw["table"][-1]["diverged"] is True
    back = SweepResult.from_json(tmp_path / "sweep.json")
    assert_same_tables(serial, back)
    assert [r["seconds"] for r in back.table] == [r["seconds"] for r in serial.table]
    for key, history in serial.histories.items():
        assert back.histories[key].iterations["loss"] == pytest.approx(
            history.iterations["loss"], nan_ok=True
        )
    assert back.config == json.loads(json.dumps(serial.config))


def test_rows_filter_and_column(serial):
    assert len(serial.rows(batch_size=16)) == 6
    assert len(serial.rows(batch_size=16, seed=0)) == 3
    assert serial.column("lr")[:2] == [0.05, 0.05]
    with pytest.raises(ValueError, match="unknown column"):
        serial.rows(learning_rate=0.1)


def test_run_cell_is_the_unit_of_work(data):
    X, y, _, _ = data
    row, history = run_cell(
        (100, 0.1, 3),
        build_model=BUILD,
        X=X,
        y=y,
        epochs=1,
        optimizer="sgd",
        validation_data=None,
        kernels=mg.get_backend(),
    )
    assert (row["batch_size"], row["lr"], row["seed"]) == (100, 0.1, 3)
    assert row["updates"] == 4 and history.n_iterations == 4
    assert math.isnan(row["val_loss"])


# ---- plots ---------------------------------------------------------------------------------


def test_heatmap_shows_the_seed_mean_of_each_cell(serial):
    ax = mg.plot.sweep_heatmap(serial, value="val_accuracy")
    grid = ax.images[0].get_array()
    # rows: lrs from largest to smallest; columns: batch sizes ascending
    for i, lr in enumerate([1e20, 0.5, 0.05]):
        for j, b in enumerate([16, 100]):
            rows = serial.rows(batch_size=b, lr=lr)
            if lr == 1e20:
                assert grid.mask[i, j]  # every seed diverged: no colour
            else:
                assert grid[i, j] == pytest.approx(np.mean([r["val_accuracy"] for r in rows]))
    texts = [t.get_text() for t in ax.texts]
    assert texts.count("div") == 2
    assert [t.get_text() for t in ax.get_yticklabels()] == ["1e+20", "0.5", "0.05"]
    with pytest.raises(ValueError, match="value"):
        mg.plot.sweep_heatmap(serial, value="batch_size")
    with pytest.raises(TypeError, match="SweepResult"):
        mg.plot.sweep_heatmap(serial.table)


def test_curves_against_epochs_and_updates(serial):
    by_epoch = mg.plot.sweep_curves(serial, x="epoch")
    lines = [l for l in by_epoch.get_lines() if l.get_label().startswith("B=")]
    assert len(lines) == 6  # one per (batch, lr)
    assert list(lines[0].get_xdata()) == [1, 2]
    by_update = mg.plot.sweep_curves(serial, x="update", value="val_loss")
    lines = {l.get_label(): l for l in by_update.get_lines()}
    assert list(lines["B=16, lr=0.05"].get_xdata()) == [25, 50]
    assert list(lines["B=100, lr=0.05"].get_xdata()) == [4, 8]
    expected = np.mean(
        [[serial.histories[(100, 0.05, s)].epochs["val_loss"][e] for s in (0, 1)] for e in (0, 1)],
        axis=1,
    )
    np.testing.assert_allclose(lines["B=100, lr=0.05"].get_ydata(), expected)
    with pytest.raises(ValueError, match="x"):
        mg.plot.sweep_curves(serial, x="time")


def test_heatmap_of_a_scaling_sweep_is_one_row(data):
    X, y, _, _ = data
    result = mg.sweep(BUILD, X, y, batch_sizes=[20, 40], scaling="linear", base_lr=0.05, epochs=1)
    ax = mg.plot.sweep_heatmap(result, value="train_loss")
    assert ax.images[0].get_array().shape == (1, 2)
    assert any("lr 0.1" in t.get_text() for t in ax.texts)
    with pytest.raises(ValueError, match="validation_data"):
        mg.plot.sweep_curves(result, value="val_loss")


# ---- minigd sweep ----------------------------------------------------------------------------


def test_cli_sweep_writes_table_json_and_plots(tmp_path, capsys):
    from minigd.cli import main

    out = tmp_path / "run"
    code = main(
        [
            "sweep",
            "--subset",
            "300",
            "--batch-sizes",
            "50,100",
            "--lrs",
            "0.1,0.3",
            "--epochs",
            "1",
            "--hidden",
            "8",
            "--out",
            str(out),
        ]
    )
    text = capsys.readouterr().out
    assert code == 0
    assert "sweep: 4 cells (2 batch sizes x 2 lrs x 1 seeds), 1 epochs each, 270 training" in text
    assert "best val_accuracy:" in text
    with open(out / "sweep.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["batch_size"], r["lr"]) for r in rows] == [
        ("50", "0.1"),
        ("50", "0.3"),
        ("100", "0.1"),
        ("100", "0.3"),
    ]
    assert [r["updates"] for r in rows] == ["6", "6", "3", "3"]  # ceil(270 / B)
    result = SweepResult.from_json(out / "sweep.json")
    assert len(result) == 4 and result.config["n_samples"] == 270
    for name in ("heatmap.png", "curves.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_sweep_scaling_and_errors(tmp_path, capsys):
    from minigd.cli import main

    code = main(
        [
            "sweep",
            "--subset",
            "200",
            "--batch-sizes",
            "20,40",
            "--scaling",
            "linear",
            "--base-lr",
            "0.05",
            "--epochs",
            "1",
            "--hidden",
            "8",
            "--quiet",
            "--value",
            "train_loss",
            "--out",
            str(tmp_path / "s"),
        ]
    )
    assert code == 0
    result = SweepResult.from_json(tmp_path / "s" / "sweep.json")
    assert [r["lr"] for r in result.table] == pytest.approx([0.05, 0.1], rel=1e-15)
    assert capsys.readouterr().out.startswith("best train_loss:")
    code = main(["sweep", "--lrs", "0.1", "--scaling", "sqrt", "--out", str(tmp_path / "x")])
    assert code == 2 and "--lrs or --scaling, not both" in capsys.readouterr().err
    code = main(["sweep", "--validation-split", "0", "--out", str(tmp_path / "y")])
    assert code == 2 and "needs --validation-split" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sweep", "--batch-sizes", "a,b"])
