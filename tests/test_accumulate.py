"""fit(accumulate=k): k micro-batches make one update on the mean loss of all their samples."""

import numpy as np
import pytest

import minigd as mg


def _data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6)), rng.integers(0, 3, size=n)


def _model():
    return mg.Sequential([mg.Dense(6, 8), mg.ReLU(), mg.Dense(8, 3)], seed=1, dtype=np.float64)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("name", ["sgd", "adam", "rmsprop"])
def test_accumulate_4x8_equals_batch_32(backend, name):
    X, y = _data()
    runs = []
    for batch, k in ((32, 1), (8, 4)):
        model = _model()
        opt = mg.registry.build_optimizer(name, model.parameters(), 0.05)
        with mg.use_backend(backend):
            h = mg.fit(
                model,
                X,
                y,
                optimizer=opt,
                epochs=3,
                batch_size=batch,
                accumulate=k,
                seed=7,
                grad_clip=0.5,
                schedule=mg.CosineAnnealing(0.05, 9, unit="iteration"),
                verbose=0,
            )
        runs.append((model.flat_values.copy(), h))
    (w1, h1), (w4, h4) = runs
    np.testing.assert_allclose(w4, w1, rtol=1e-12, atol=1e-14)
    assert h4.iterations["step"] == h1.iterations["step"] == list(range(1, 10))
    assert h4.iterations["batch_size"] == [32] * 9 and h4.iterations["micro_batches"] == [4] * 9
    assert h4.iterations["lr"] == h1.iterations["lr"]  # schedules count updates
    np.testing.assert_allclose(h4.iterations["loss"], h1.iterations["loss"], rtol=1e-12)
    np.testing.assert_allclose(h4.iterations["grad_norm"], h1.iterations["grad_norm"], rtol=1e-12)
    np.testing.assert_allclose(h4.epochs["train_loss"], h1.epochs["train_loss"], rtol=1e-12)


@pytest.mark.parametrize("drop_last", [False, True])
def test_last_group_and_plan_line(drop_last, capsys):
    X, y = _data(n=100)  # 13 micro-batches of 8 (last 4 samples): 3 groups of 4 + 1
    model = _model()
    h = mg.fit(
        model,
        X,
        y,
        optimizer=mg.SGD(model.parameters(), lr=0.1),
        epochs=1,
        batch_size=8,
        accumulate=4,
        drop_last=drop_last,
        verbose=2,
    )
    out = capsys.readouterr().out
    assert "batch 8 x 4 accumulated = effective 32 -> " in out
    if drop_last:  # micro-batches: 12 full ones (the 4-sample one dropped) = 3 groups
        assert h.iterations["batch_size"] == [32, 32, 32]
        assert "3 updates per epoch" in out
    else:
        assert h.iterations["batch_size"] == [32, 32, 32, 4]
        assert h.iterations["micro_batches"] == [4, 4, 4, 1]
        assert "4 updates per epoch (last group of 1 micro-batches kept" in out


def test_accumulate_incomplete_group_matches_its_mean():
    X, y = _data(n=40)  # batch 8 x 3: groups of 24 and 16 samples
    a, b = _model(), _model()
    mg.fit(
        a,
        X,
        y,
        optimizer=mg.SGD(a.parameters(), lr=0.1),
        epochs=1,
        batch_size=8,
        accumulate=3,
        shuffle=False,
        verbose=0,
    )
    mg.fit(
        b,
        X[:24],
        y[:24],
        optimizer=mg.SGD(b.parameters(), lr=0.1),
        epochs=1,
        batch_size=24,
        shuffle=False,
        verbose=0,
    )
    opt = mg.SGD(b.parameters(), lr=0.1)
    mg.fit(b, X[24:], y[24:], optimizer=opt, epochs=1, batch_size=16, shuffle=False, verbose=0)
    np.testing.assert_allclose(a.flat_values, b.flat_values, rtol=1e-12, atol=1e-14)


def test_accumulate_validation():
    X, y = _data()
    model = _model()
    with pytest.raises(ValueError, match="accumulate"):
        mg.fit(
            model,
            X,
            y,
            optimizer=mg.SGD(model.parameters(), lr=0.1),
            epochs=1,
            batch_size=8,
            accumulate=0,
            verbose=0,
        )
