"""Determinism: same seed, same backend, same machine -> bit-identical weights and history."""

import importlib.util

import numpy as np
import pytest

import minigd as mg

HAS_NUMBA_BACKEND = importlib.util.find_spec("minigd.kernels.jit") is not None
BACKENDS = [
    "numpy",
    pytest.param(
        "numba",
        marks=pytest.mark.skipif(
            not HAS_NUMBA_BACKEND, reason="the numba backend (minigd.kernels.jit) is not built here"
        ),
    ),
]
TIMING = ("seconds", "samples_per_second")


def _data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 12))
    y = (X @ rng.normal(size=(12, 4))).argmax(axis=1)
    return X[:400], y[:400], X[400:], y[400:]


def _run(backend, seed=5, dtype=np.float32, optimizer="adam"):
    X, y, X_val, y_val = _data()
    with mg.use_backend(backend):
        model = mg.Sequential(
            mg.Dense(12, 32),
            mg.ReLU(),
            mg.Dense(32, 16),
            mg.Tanh(),
            mg.Dense(16, 4),
            seed=seed,
            dtype=dtype,
        )
        if optimizer == "adam":
            opt = mg.AdamW(model.parameters(), lr=3e-3)
            schedule = mg.schedules.CyclicLR(1e-3, 1e-2, step_size=7)
        else:
            opt = mg.SGD(model.parameters(), lr=0.05, momentum=0.9)
            schedule = mg.schedules.ExponentialDecay(0.05, gamma=0.9)
        history = mg.fit(
            model,
            X,
            y,
            optimizer=opt,
            epochs=3,
            batch_size=24,
            seed=seed,
            schedule=schedule,
            validation_data=(X_val, y_val),
            verbose=0,
            callbacks=[mg.ReduceLROnPlateau(patience=0)],
        )
    d = history.to_dict()
    d["epochs"] = {k: v for k, v in d["epochs"].items() if k not in TIMING}
    return model.flat_values.copy(), opt.state_dict(), d


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_same_seed_twice_is_bit_identical(backend, dtype, optimizer):
    w1, s1, h1 = _run(backend, dtype=dtype, optimizer=optimizer)
    w2, s2, h2 = _run(backend, dtype=dtype, optimizer=optimizer)
    assert w1.tobytes() == w2.tobytes()
    assert h1 == h2
    assert s1["step"] == s2["step"] and s1["hyperparameters"] == s2["hyperparameters"]
    assert all(s1["state"][k].tobytes() == s2["state"][k].tobytes() for k in s1["state"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_another_seed_gives_another_run(backend):
    w1, _, h1 = _run(backend, seed=5)
    w2, _, h2 = _run(backend, seed=6)
    assert w1.tobytes() != w2.tobytes() and h1["iterations"]["loss"] != h2["iterations"]["loss"]


@pytest.mark.skipif(not HAS_NUMBA_BACKEND, reason="the numba backend is not built here")
def test_backends_agree_within_the_documented_float64_tolerance():
    w_numpy, _, h_numpy = _run("numpy", dtype=np.float64)
    w_numba, _, h_numba = _run("numba", dtype=np.float64)
    np.testing.assert_allclose(w_numba, w_numpy, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        h_numba["iterations"]["loss"], h_numpy["iterations"]["loss"], rtol=1e-9, atol=1e-12
    )
    assert h_numba["iterations"]["lr"] == h_numpy["iterations"]["lr"]


def test_the_permutation_is_a_pure_function_of_seed_and_epoch():
    X, y, _, _ = _data()
    a = mg.BatchIterator(X, y, batch_size=64, seed=3)
    b = mg.BatchIterator(X, y, batch_size=64, seed=3)
    list(b)  # consuming epochs of b must not change what a later epoch of a is
    for epoch in (0, 1, 7):
        assert np.array_equal(a.permutation(epoch), b.permutation(epoch))
    assert not np.array_equal(a.permutation(0), a.permutation(1))
    full = [(xb.copy(), yb.copy()) for xb, yb in a.batches(2)]
    for start in (0, 3, len(a) - 1, len(a)):
        rest = [(xb.copy(), yb.copy()) for xb, yb in b.batches(2, start=start)]
        assert len(rest) == len(full) - start
        assert all(
            np.array_equal(x1, x2) and np.array_equal(y1, y2)
            for (x1, y1), (x2, y2) in zip(full[start:], rest)
        )
