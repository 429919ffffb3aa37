"""Batch-size schedules: values, validation, the iterator's per-epoch batch size, and Smith et
al.'s claim that multiplying the batch by k tracks dividing the lr by k."""

import numpy as np
import pytest

import minigd as mg
from minigd.data import iterations_per_epoch
from minigd.schedules import (
    ConstantBatchSize,
    FunctionBatchSize,
    StepBatchSize,
    StepDecay,
    as_batch_size_schedule,
)


def small_model(seed=0, hidden=8, n_in=5, n_out=3):
    return mg.Sequential(mg.Dense(n_in, hidden), mg.ReLU(), mg.Dense(hidden, n_out), seed=seed)


def blobs(n=100, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = (rng.normal(size=(n, 5)) + y[:, None]).astype(np.float32)
    return X, y


# ---- schedule values ---------------------------------------------------------------------------


def test_step_batch_size_values_match_the_closed_form():
    s = StepBatchSize(32, step_size=2, factor=5)
    assert s.values(6) == [32, 32, 160, 160, 800, 800]
    assert [s(e) for e in range(6)] == [32 * 5 ** (e // 2) for e in range(6)]
    assert s.unit == "epoch"


def test_step_batch_size_cap_and_real_factor():
    assert StepBatchSize(32, 2, 5, max_batch_size=1000).values(8) == [
        32,
        32,
        160,
        160,
        800,
        800,
        1000,
        1000,
    ]
    # 10 * 1.3 ** k rounded: 10, 13, 16.9 -> 17, 21.97 -> 22
    assert StepBatchSize(10, 1, 1.3).values(4) == [10, 13, 17, 22]
    assert StepBatchSize(64, 3, factor=1).values(7) == [64] * 7


def test_constant_and_function_batch_sizes():
    assert ConstantBatchSize(48).values(3) == [48, 48, 48]
    assert FunctionBatchSize(lambda e: 16 * (e + 1)).values(3) == [16, 32, 48]
    assert as_batch_size_schedule(7).values(2) == [7, 7]
    s = StepBatchSize(8, 1)
    assert as_batch_size_schedule(s) is s
    assert as_batch_size_schedule(lambda e: 3)(4) == 3
    assert repr(StepBatchSize(8, 2, 4)) == (
        "StepBatchSize(batch_size=8, step_size=2, factor=4, max_batch_size=None)"
    )


@pytest.mark.parametrize(
    "args, error, words",
    [
        ((0, 1), ValueError, "batch_size"),
        ((1.5, 1), TypeError, "batch_size"),
        ((True, 1), TypeError, "batch_size"),
        ((8, 0), ValueError, "step_size"),
        ((8, 1, 0.5), ValueError, "factor"),
        ((8, 1, float("inf")), ValueError, "factor"),
        ((8, 1, 2, 4), ValueError, "max_batch_size"),
        ((8, 1, 2, 0), ValueError, "max_batch_size"),
    ],
)
def test_step_batch_size_rejects_bad_arguments(args, error, words):
    with pytest.raises(error, match=words):
        StepBatchSize(*args)


def test_schedule_argument_errors():
    with pytest.raises(ValueError, match="t must be an integer >= 0"):
        StepBatchSize(8, 1)(-1)
    with pytest.raises(ValueError, match=r"batch_size\(1\)"):
        FunctionBatchSize(lambda e: 8 - 8 * e)(1)
    with pytest.raises(TypeError, match=r"batch_size\(0\)"):
        FunctionBatchSize(lambda e: 32.0)(0)
    with pytest.raises(ValueError, match="set max_batch_size"):
        StepBatchSize(2, 1, 1.5)(5000)
    assert StepBatchSize(2, 1, 1.5, max_batch_size=100)(5000) == 100
    with pytest.raises(TypeError, match="learning-rate schedule"):
        as_batch_size_schedule(StepDecay(0.1, 2))
    with pytest.raises(TypeError, match="batch_size must be"):
        as_batch_size_schedule("64")


# ---- the iterator ------------------------------------------------------------------------------


def test_set_batch_size_keeps_the_order_and_reuses_buffers_until_they_grow():
    X = np.arange(20, dtype=np.float32).reshape(10, 2)
    y = np.arange(10)
    it = mg.BatchIterator(X, y, 4, seed=3, reuse_buffers=True)
    seen_4 = np.concatenate([yb.copy() for yb in (b[1] for b in it.batches(1))])
    buffer = it._xbuf
    it.set_batch_size(3)
    assert len(it) == 4 and it.batch_sizes() == [3, 3, 3, 1]
    seen_3 = np.concatenate([yb.copy() for yb in (b[1] for b in it.batches(1))])
    np.testing.assert_array_equal(seen_3, seen_4)  # same permutation of epoch 1
    np.testing.assert_array_equal(seen_3, it.permutation(1))
    assert it._xbuf is buffer  # shrinking reuses the buffer
    it.set_batch_size(7)
    list(it.batches(0))
    assert it._xbuf is not buffer and it._xbuf.shape == (7, 2)
    it.set_batch_size(50)  # larger than N: one full batch
    assert it.batch_sizes() == [10]
    list(it.batches(0))
    assert it._xbuf.shape == (10, 2)  # buffers never exceed N rows
    with pytest.raises(ValueError, match="batch_size"):
        it.set_batch_size(0)


def test_set_batch_size_respects_drop_last():
    it = mg.BatchIterator(np.zeros((10, 2)), np.zeros(10, int), 4, drop_last=True, seed=0)
    with pytest.raises(ValueError, match="drop_last"):
        it.set_batch_size(11)
    assert it.batch_size == 4


# ---- fit ---------------------------------------------------------------------------------------


def test_fit_sets_the_batch_size_per_epoch_and_records_every_iteration():
    X, y = blobs(100)
    model = small_model()
    history = mg.fit(
        model,
        X,
        y,
        optimizer=mg.SGD(model.parameters(), lr=0.1),
        epochs=3,
        batch_size=lambda e: (16, 50, 100)[e],
        seed=0,
        verbose=0,
    )
    sizes = history.iterations["batch_size"]
    assert sizes == [16] * 6 + [4] + [50, 50] + [100]
    assert history.iterations["epoch"] == [1] * 7 + [2, 2] + [3]
    assert history.iterations["step"] == list(range(1, 11))


def test_fit_checks_every_epochs_batch_size_before_training():
    X, y = blobs(100)
    model = small_model()
    before = model.state_dict()
    with pytest.raises(ValueError, match=r"batch_size\(2\)"):
        mg.fit(
            model,
            X,
            y,
            optimizer=mg.SGD(model.parameters(), lr=0.1),
            epochs=3,
            batch_size=lambda e: 10 - 5 * e,
            verbose=0,
        )
    with pytest.raises(ValueError, match="drop_last"):
        mg.fit(
            model,
            X,
            y,
            optimizer=mg.SGD(model.parameters(), lr=0.1),
            epochs=3,
            batch_size=StepBatchSize(40, 1, 2),
            drop_last=True,
            verbose=0,
        )
    with pytest.raises(TypeError, match="batch-size schedule"):
        mg.fit(
            model,
            X,
            y,
            optimizer=mg.SGD(model.parameters(), lr=0.1),
            epochs=1,
            batch_size=8,
            schedule=StepBatchSize(8, 1),
            verbose=0,
        )
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def test_fit_prints_the_plan_with_the_batch_schedule(capsys):
    X, y = blobs(100)
    model = small_model()
    mg.fit(
        model,
        X,
        y,
        optimizer=mg.SGD(model.parameters(), lr=0.1),
        epochs=5,
        batch_size=StepBatchSize(10, 2, 5),
        verbose=2,
    )
    lines = capsys.readouterr().out.splitlines()
    # a first run with an empty kernel cache prints the compile line before the plan
    first = next(line for line in lines if not line.startswith("compiling"))
    assert first == (
        "plan: 100 samples, batch 10 (epochs 1-2), 50 (epochs 3-4), 250 (epoch 5); "
        "5 epochs = 25 updates"
    )


def test_an_int_batch_size_gives_the_same_run_as_a_constant_schedule():
    X, y = blobs(100)
    runs = []
    for batch_size in (16, ConstantBatchSize(16), lambda e: 16):
        model = small_model(seed=1)
        mg.fit(
            model,
            X,
            y,
            optimizer=mg.SGD(model.parameters(), lr=0.1),
            epochs=2,
            batch_size=batch_size,
            seed=4,
            verbose=0,
        )
        runs.append(model.flat_values.copy())
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(runs[0], runs[2])


# ---- Smith et al. 2017: increase the batch instead of decaying the lr ---------------------------


def _train_losses(batch_size, schedule):
    X, y, _, _ = mg.datasets.load_mnist_sample()
    model = mg.Sequential(mg.Dense(784, 128), mg.ReLU(), mg.Dense(128, 10), seed=0)
    history = mg.fit(
        model,
        X,
        y,
        optimizer=mg.SGD(model.parameters(), lr=0.1),
        epochs=4,
        batch_size=batch_size,
        schedule=schedule,
        seed=0,
        verbose=0,
    )
    return np.array(history.epochs["train_loss"]), history.n_iterations


def test_multiplying_the_batch_by_5_tracks_dividing_the_lr_by_5_with_fewer_updates():
    """A: batch 32, lr 0.1 for 2 epochs then lr 0.02.  B: lr 0.1, batch 32 then 160.

    SGD's noise scale is lr * N / B (Smith et al. 2017): 0.02 * N / 32 = 0.1 * N / 160, so the
    per-epoch train loss of B follows A's. Tolerance: 2 % relative per epoch. Measured on seeds
    0-5 the gap after the switch is at most 0.5 %, while the controls are at least 3.4 % away
    (C keeps lr 0.1 at batch 32: 4-10 %; D both multiplies the batch and divides the lr:
    3.4-4.3 % at epoch 4), so 2 % passes B and fails both controls.
    """
    loss_a, updates_a = _train_losses(32, StepDecay(0.1, step_size=2, gamma=0.2))
    loss_b, updates_b = _train_losses(StepBatchSize(32, step_size=2, factor=5), None)
    loss_c, _ = _train_losses(32, None)
    loss_d, _ = _train_losses(
        StepBatchSize(32, step_size=2, factor=5), StepDecay(0.1, step_size=2, gamma=0.2)
    )

    np.testing.assert_array_equal(loss_a[:2], loss_b[:2])  # same batches, same lr: identical
    relative = np.abs(loss_b - loss_a) / loss_a
    assert relative[2:].max() < 0.02, relative
    assert np.abs(loss_c[3] - loss_a[3]) / loss_a[3] > 0.02  # the tolerance tells runs apart
    assert np.abs(loss_d[3] - loss_a[3]) / loss_a[3] > 0.02
    assert loss_b[3] < loss_b[1]

    # 8000 samples: ceil(8000 / 32) = 250 and 8000 / 160 = 50 updates per epoch
    assert iterations_per_epoch(8000, 32) == 250 and iterations_per_epoch(8000, 160) == 50
    assert updates_a == 4 * 250 == 1000
    assert updates_b == 2 * 250 + 2 * 50 == 600
