"""A sample's output does not depend on its batch-mates.

Numba backend: exact. Every row of the forward product goes through the same 4-row block code
(minigd/kernels/jit_gemm.py, ``nt_columns``), so a row gives the same bits alone, in any batch
of any row count, at any position and on any number of threads, on every vector ISA (run this
file with NUMBA_CPU_NAME=haswell to check AVX2 code on an AVX-512 machine).

NumPy backend: not exact. OpenBLAS picks its kernel and blocking by shape (one row is a
matrix-vector product), so a float32 product's last bits change with the row count. The
difference is bounded by the classic float32 error bound of a dot product of length K, whatever
the summation order, with or without fused multiply-add (Higham, Accuracy and Stability of
Numerical Algorithms, 3.1):

    |fl(x . w) - x . w| <= gamma_K * sum_k |x_k w_k|,     gamma_K = K u / (1 - K u), u = 2**-24

The bias adds one rounding (gamma_{K+1} covers it). Through layers, with a_l the exact
activations, E_l the bound on a layer's computed output and |f'| <= 1 for ReLU, tanh and sigmoid:

    E_l = E_{l-1} |W_l| + gamma_{K_l + 1} ((|a_{l-1}| + E_{l-1}) |W_l| + |b_l|),   E_0 = 0

Two computations of the logits z (one row alone, one in a batch) each lie within E_L of the
exact logits, so they differ by at most D = 2 max_j E_L,j. Softmax p_i = exp(z_i - lse(z))
moves log p_i by at most 2 D, so |p'_i - p''_i| <= p_i (exp(2 D) - 1) (predict_proba's softmax
runs in float64: its own rounding, ~1e-16, is far below). For scikit-learn's subset check
(MLPClassifier(seed=0), hidden (128,)) the bound is ~1e-5, above the check's atol of 1e-7,
so that check can fail on the NumPy backend in float32 and is marked expected-to-fail there
only (tests/test_estimator.py).
"""

import warnings

import numba
import numpy as np
import pytest

import minigd as mg
from minigd import fused
from minigd.kernels import jit, jit_gemm

ROW_COUNTS = list(range(1, 10)) + [67]
WIDTHS = [
    (1, 1),
    (3, 5),
    (4, 4),
    (6, 4),
    (13, 10),
    (17, 33),
    (64, 16),
    (300, 50),
    (100, 130),
    (784, 128),
    (3000, 10),  # a narrow output split between the threads by rows (jit_gemm.narrow)
]
DTYPES = [np.float32, np.float64]
U32 = 2.0**-24


def thread_counts():
    return sorted({1, numba.config.NUMBA_NUM_THREADS})


class threads:
    """Context: Numba runs (and minigd splits products) on ``n`` threads."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self.previous = numba.get_num_threads()
        numba.set_num_threads(self.n)

    def __exit__(self, *exc):
        numba.set_num_threads(self.previous)


def one_row_at_a_time(f, X):
    return np.vstack([f(X[i : i + 1]) for i in range(len(X))])


def assert_rows_bit_identical(f, X):
    """f(X[:m]) equals f of each row alone, bit for bit, for every m in ROW_COUNTS and on
    every thread count."""
    alone = one_row_at_a_time(f, X)
    for n_threads in thread_counts():
        with threads(n_threads):
            for m in ROW_COUNTS:
                batch = f(X[:m])
                rows = np.flatnonzero((batch != alone[:m]).any(axis=1))
                assert rows.size == 0, (
                    f"{m} rows, {n_threads} threads: rows {rows.tolist()} "
                    f"differ from the same rows alone by up to "
                    f"{np.abs(batch - alone[:m]).max():.3g}"
                )


# ---- Numba: exact -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_in, n_out", WIDTHS)
def test_numba_dense_forward_rows_do_not_depend_on_the_batch(n_in, n_out, dtype):
    rng = np.random.default_rng(n_in * 1000 + n_out)
    X = rng.standard_normal((max(ROW_COUNTS), n_in)).astype(dtype)
    w = rng.standard_normal((n_in, n_out)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)

    def forward(x):
        out = np.empty((len(x), n_out), dtype)
        jit.dense_forward(x, w, b, out)
        return out

    assert_rows_bit_identical(forward, X)
    for m in ROW_COUNTS:  # and right: scratch buffers never overlap the weight's
        np.testing.assert_allclose(
            forward(X[:m]),
            X[:m].astype(np.float64) @ w + b,
            rtol=1e-4 if dtype == np.float32 else 1e-12,
            atol=1e-3,
        )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_in, n_out", [(3, 5), (300, 50), (784, 128)])
def test_numba_matmul_nt_rows_do_not_depend_on_the_batch(n_in, n_out, dtype):
    rng = np.random.default_rng(7)
    X = rng.standard_normal((max(ROW_COUNTS), n_in)).astype(dtype)
    w_t = rng.standard_normal((n_out, n_in)).astype(dtype)

    def product(x):
        out = np.empty((len(x), n_out), dtype)
        jit_gemm.matmul_nt(x, w_t, out, numba.get_num_threads())
        return out

    assert_rows_bit_identical(product, X)
    np.testing.assert_allclose(
        product(X),
        X.astype(np.float64) @ w_t.T.astype(np.float64),
        rtol=1e-4 if dtype == np.float32 else 1e-12,
        atol=1e-3,
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "hidden, activation", [((13, 7), "relu"), ((50,), "tanh"), ((130, 33), "sigmoid"), ((), "relu")]
)
def test_numba_predict_proba_rows_do_not_depend_on_the_batch(hidden, activation, dtype):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 200)
    X = rng.normal(size=(200, 21)) + np.eye(5, 21)[y]
    with mg.use_backend("numba"):
        clf = mg.MLPClassifier(
            hidden=hidden, activation=activation, epochs=2, batch_size=9, seed=0, dtype=dtype
        ).fit(X, y)
        assert_rows_bit_identical(clf.predict_proba, X[: max(ROW_COUNTS)])
        assert_rows_bit_identical(clf.model_.forward, X[: max(ROW_COUNTS)])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sklearn_subset_invariance_holds_on_the_numba_backend(dtype):
    from sklearn.utils.estimator_checks import check_methods_subset_invariance

    with mg.use_backend("numba"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "does not inherit from BaseEstimator"
        check_methods_subset_invariance("MLPClassifier", mg.MLPClassifier(seed=0, dtype=dtype))


@pytest.mark.parametrize("batch_size", [1, 3, 6])
def test_fused_epoch_with_padded_batches_is_bit_identical_to_per_iteration(batch_size, monkeypatch):
    """Batches of M % 4 != 0 rows take the padded path in both the fused epoch and the
    per-iteration kernels: same bits either way."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 41)
    X = rng.normal(size=(41, 6)).astype(np.float32)

    class EveryIteration(mg.Callback):  # a per-iteration hook turns the fused path off
        def on_iteration_end(self, state):
            pass

    fused_epochs = []
    run_epoch = fused.run_epoch
    monkeypatch.setattr(
        fused, "run_epoch", lambda state, *args: fused_epochs.append(1) or run_epoch(state, *args)
    )
    runs = []
    for callbacks in ([], [EveryIteration()]):
        model = mg.Sequential(mg.Dense(6, 11), mg.ReLU(), mg.Dense(11, 3), seed=0)
        with mg.use_backend("numba"):
            history = mg.fit(
                model,
                X,
                y,
                optimizer=mg.SGD(model.parameters(), lr=0.1),
                epochs=2,
                batch_size=batch_size,
                seed=0,
                verbose=0,
                callbacks=callbacks,
            )
        runs.append((model.flat_values.copy(), history.iterations["loss"]))
    assert len(fused_epochs) == 2, "the first run is fused, the second per-iteration"
    assert runs[0][1] == runs[1][1]
    assert runs[0][0].tobytes() == runs[1][0].tobytes()


# ---- NumPy: within the float32 error bound ------------------------------------------------------
ACTIVATIONS = {
    "ReLU": lambda v: np.maximum(v, 0),
    "Tanh": np.tanh,
    "Sigmoid": lambda v: 1 / (1 + np.exp(-v)),
}


def gamma(k):
    return k * U32 / (1 - k * U32)


def logit_error_bound(model, X):
    """Per-row, per-class bound E_L on |computed float32 logits - exact logits| (module
    docstring), computed in float64 from the model's weights."""
    a = np.asarray(X, dtype=np.float32).astype(np.float64)
    err = np.zeros_like(a)
    for layer in model.layers:
        if isinstance(layer, mg.Dense):
            w = layer.weight.value.astype(np.float64)
            b = layer.bias.value.astype(np.float64)
            err = err @ np.abs(w) + gamma(w.shape[0] + 1) * (
                (np.abs(a) + err) @ np.abs(w) + np.abs(b)
            )
            a = a @ w + b
        else:  # ReLU, Tanh, Sigmoid: |f'| <= 1 keeps err; a follows exactly
            a = ACTIVATIONS[type(layer).__name__](a)
    return err


def proba_difference_bound(model, X, proba):
    """Bound on |predict_proba of a row alone - of the row in a batch| (module docstring)."""
    D = 2 * logit_error_bound(model, X).max(axis=1, keepdims=True)
    return proba * np.expm1(2 * D) + 1e-15


@pytest.mark.parametrize("hidden", [(128,), (13, 7)])
def test_numpy_float32_subsets_agree_within_the_error_bound(hidden):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 120)
    X = rng.normal(size=(120, 20)) + 3 * np.eye(3, 20)[y]
    with mg.use_backend("numpy"):
        clf = mg.MLPClassifier(hidden=hidden, epochs=3, seed=0).fit(X, y)
        X = X[: max(ROW_COUNTS)]
        alone = one_row_at_a_time(clf.predict_proba, X)
        bound = proba_difference_bound(clf.model_, X, alone)
        for m in ROW_COUNTS + [120]:
            m = min(m, len(X))
            batch = clf.predict_proba(X[:m])
            assert np.all(np.abs(batch - alone[:m]) <= bound[:m]), m
    # the bound is what the data allows, not a loose constant: it sits above sklearn's 1e-7
    # (hence the expected failure there) and far below a real error (~1e-2)
    assert 1e-7 < bound.max() < 1e-3
