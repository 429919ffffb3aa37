"""Every matrix-product implementation of the Numba backend agrees with NumPy in float64.

Training's products run minigd's own loops or a BLAS called from the compiled code (NumPy's
own, else SciPy's: jit_config.BLAS_LIBRARY), whichever minigd.kernels.autotune measured faster
here; both must compute the same products, on one thread or split between threads, and the
per-iteration path must give the same bits as the whole-epoch kernel whichever is chosen. The
BLAS library is fixed when the kernels compile, so the one this process does not use is tested
in a subprocess (MINIGD_BLAS).
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import minigd as mg
from minigd import fused
from minigd.kernels import autotune, jit, jit_gemm, reference

IMPLS = [jit_gemm.OWN, jit_gemm.BLAS, jit_gemm.BLAS_ROWS]
# the last two are narrow (jit_gemm.narrow: at most one ALIGN block of outputs) and big enough
# to be split between threads: by rows (forward) and by input columns (BLAS weight gradient)
SHAPES = [
    (1, 1, 1),
    (3, 5, 7),
    (16, 784, 128),
    (37, 13, 10),
    (64, 130, 33),
    (203, 300, 10),
    (1030, 48, 16),
]
needs_blas = pytest.mark.skipif(
    not autotune.blas_usable(), reason="no BLAS callable from compiled code, or no threadpoolctl"
)


def impl_param(impl):
    marks = [needs_blas] if impl != jit_gemm.OWN else []
    return pytest.param(impl, marks=marks, id=autotune.CANDIDATES[impl])


ALL_IMPLS = [impl_param(i) for i in IMPLS]
CHOICES = [pytest.param(c, marks=needs_blas) for c in autotune.CANDIDATES[1:]] + ["own"]


def operands(rows, n_in, n_out, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((rows, n_out)),
        rng.standard_normal((rows, n_in)),
        rng.standard_normal((n_out, n_in)),
    )


@needs_blas
@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (1, 7, 5), (6, 1, 4), (9, 17, 3), (64, 784, 128)])
def test_blas_matmul_matches_numpy_on_every_layout(m, k, n):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((m, k)), rng.standard_normal((k, n))
    for left in (a, np.asfortranarray(a)):
        for right in (b, np.asfortranarray(b)):
            out = np.full((m, n), np.nan)
            jit_gemm.blas_matmul(left, right, out)
            np.testing.assert_allclose(out, a @ b, rtol=1e-12, atol=1e-12)
    big = np.full((m + 3, n + 5), np.nan)  # a strided window of a bigger output
    jit_gemm.blas_matmul(a, b, big[1 : m + 1, 2 : n + 2])
    np.testing.assert_allclose(big[1 : m + 1, 2 : n + 2], a @ b, rtol=1e-12, atol=1e-12)
    assert np.isnan(big[0]).all() and np.isnan(big[:, :2]).all()


_OTHER_BLAS = textwrap.dedent(
    """
    import numpy as np
    from minigd.kernels import autotune, jit_config, jit_gemm as g

    assert jit_config.BLAS_LIBRARY == {library!r}, jit_config.BLAS_LIBRARY
    assert autotune.blas_usable() and {library!r} in autotune.blas_library().lower()
    rng = np.random.default_rng(0)
    for rows, n_in, n_out in [(1, 1, 1), (37, 13, 10), (64, 130, 33)]:
        d, a = rng.standard_normal((rows, n_out)), rng.standard_normal((rows, n_in))
        w_t, b = rng.standard_normal((n_out, n_in)), rng.standard_normal(n_out)
        for parts in (1, 2):
            with autotune.blas_threads_limited([g.BLAS]):
                dw = np.full((n_out, n_in), np.nan)
                g.weight_grad_t(d, a, dw, parts, g.BLAS, np.empty(0))
                split = np.full((n_out, n_in), np.nan)
                g.weight_grad_t(d, a, split, parts, g.BLAS_ROWS, np.empty(n_out * n_in))
                np.testing.assert_allclose(split, d.T @ a, rtol=1e-12, atol=1e-11)
                below = np.full((rows, n_in), np.nan)
                g.input_grad(d, w_t, a, g.NONE, below, parts, g.BLAS)
                out = np.full((rows, n_out), np.nan)
                pads = np.empty((4, n_in)), np.empty((4, n_out))
                g.dense_act_forward(a, w_t, b, g.TANH, out, parts, *pads, g.BLAS)
            np.testing.assert_allclose(dw, d.T @ a, rtol=1e-12, atol=1e-11)
            np.testing.assert_allclose(below, d @ w_t, rtol=1e-12, atol=1e-11)
            np.testing.assert_allclose(out, np.tanh(a @ w_t.T + b), rtol=1e-12, atol=1e-11)
    print("ok")
    """
)


@pytest.mark.parametrize("library", ["numpy", "scipy"])
def test_each_blas_library_computes_the_products(library):
    """Kernels compiled to call NumPy's BLAS (its bundled OpenBLAS, ILP64 CBLAS) or SciPy's
    (Numba's binding) give NumPy's products in float64, on one thread or split."""
    if library == "numpy" and os.environ.get("MINIGD_BLAS", "auto") not in ("auto", "numpy"):
        pytest.skip("MINIGD_BLAS chooses another BLAS")
    from minigd.kernels import jit_config

    if library == "numpy" and jit_config.find_numpy_blas() is None:
        pytest.skip("this NumPy does not bundle an OpenBLAS with ILP64 CBLAS symbols")
    if library == "scipy":
        pytest.importorskip("scipy")
    env = dict(os.environ, MINIGD_BLAS=library)
    done = subprocess.run(
        [sys.executable, "-c", _OTHER_BLAS.format(library=library)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


_NO_BLAS = textwrap.dedent(
    """
    import sys
    import numpy as np

    class Block:  # no SciPy: with MINIGD_BLAS=none nothing is left to call
        def find_spec(self, name, path=None, target=None):
            if name == "scipy" or name.startswith("scipy."):
                raise ModuleNotFoundError(name)
            return None

    sys.meta_path.insert(0, Block())
    from minigd.kernels import jit_epoch, jit_gemm as g

    assert not g.BLAS_AVAILABLE
    rng = np.random.default_rng(0)
    d, a = rng.standard_normal((100, 64)), rng.standard_normal((100, 200))
    for impl in (g.OWN, g.BLAS_ROWS):
        for parts in (1, 2):
            dw = np.full((64, 200), np.nan)
            g.weight_grad_t(d, a, dw, parts, impl, np.empty(64 * 200))
            np.testing.assert_allclose(dw, d.T @ a, rtol=1e-12, atol=1e-11)
            db, squares = np.empty(64), np.zeros(2)
            jit_epoch.weight_grad(d, a, dw, db, squares, parts, impl, np.empty(64 * 200))
            np.testing.assert_allclose(dw, d.T @ a, rtol=1e-12, atol=1e-11)
            np.testing.assert_allclose(db, d.sum(0), rtol=1e-12)
    print("ok")
    """
)


def test_kernels_compile_and_compute_without_any_blas(tmp_path):
    """With no BLAS to call (MINIGD_BLAS=none, no SciPy), nothing may reference BLAS in the
    compiled code: the batch-split weight gradient (never chosen then) compiled a BLAS call and
    failed to compile, which broke every fit, until it got a plain-loop version."""
    env = dict(os.environ, MINIGD_BLAS="none", MINIGD_CACHE_DIR=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-c", _NO_BLAS], env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


@pytest.mark.parametrize("impl", ALL_IMPLS)
@pytest.mark.parametrize("parts", [1, 2])
@pytest.mark.parametrize("rows,n_in,n_out", SHAPES)
def test_weight_gradient_matches_numpy(impl, parts, rows, n_in, n_out):
    d, a, _ = operands(rows, n_in, n_out)
    out = np.full((n_out, n_in), np.nan)
    partial = np.full((parts - 1) * n_out * n_in, np.nan)  # BLAS_ROWS's per-thread sums
    with autotune.blas_threads_limited([impl]):
        jit_gemm.weight_grad_t(d, a, out, parts, impl, partial)
    np.testing.assert_allclose(out, d.T @ a, rtol=1e-12, atol=1e-11)


@needs_blas
def test_batch_split_weight_gradient_adds_every_share_and_checks_its_scratch():
    """BLAS_ROWS: each thread's share of the batch summed apart, then added; at 16 rows the
    first of 2 shares is empty (rows split at multiples of 16) and must count as zero."""
    for rows, parts in ((16, 2), (100, 3), (1030, 2)):
        d, a, _ = operands(rows, 784, 128, seed=rows)
        out = np.full((128, 784), np.nan)
        partial = np.full((parts - 1) * 128 * 784, np.nan)
        with autotune.blas_threads_limited([jit_gemm.BLAS]):
            jit_gemm.weight_grad_t(d, a, out, parts, jit_gemm.BLAS_ROWS, partial)
        np.testing.assert_allclose(out, d.T @ a, rtol=1e-12, atol=1e-10)
    with pytest.raises(ValueError, match="partial"):
        jit_gemm.weight_grad_t(d, a, out, 2, jit_gemm.BLAS_ROWS, np.empty(128 * 784 - 1))


@pytest.mark.parametrize("impl", ALL_IMPLS)
@pytest.mark.parametrize("parts", [1, 2])
@pytest.mark.parametrize("rows,n_in,n_out", SHAPES)
def test_input_gradient_matches_numpy(impl, parts, rows, n_in, n_out):
    d, a, w_t = operands(rows, n_in, n_out)
    y = np.tanh(a)
    for act, mask in ((jit_gemm.NONE, 1.0), (jit_gemm.TANH, 1 - y * y)):
        out = np.full((rows, n_in), np.nan)
        with autotune.blas_threads_limited([impl]):
            jit_gemm.input_grad(d, w_t, y, act, out, parts, impl)
        np.testing.assert_allclose(out, (d @ w_t) * mask, rtol=1e-12, atol=1e-11)


@pytest.mark.parametrize("impl", ALL_IMPLS)
@pytest.mark.parametrize("parts", [1, 2])
@pytest.mark.parametrize("rows,n_in,n_out", SHAPES)
def test_forward_product_with_bias_and_activation_matches_numpy(impl, parts, rows, n_in, n_out):
    _, x, w_t = operands(rows, n_in, n_out, seed=4)
    b = np.random.default_rng(5).standard_normal(n_out)
    z = x @ w_t.T + b
    for act, f in (
        (jit_gemm.NONE, lambda v: v),
        (jit_gemm.RELU, lambda v: np.maximum(v, 0)),
        (jit_gemm.TANH, np.tanh),
        (jit_gemm.SIGMOID, lambda v: 1 / (1 + np.exp(-v))),
    ):
        out = np.full((rows, n_out), np.nan)
        pad_a, pad_out = np.empty((4, n_in)), np.empty((4, n_out))
        with autotune.blas_threads_limited([impl]):
            jit_gemm.dense_act_forward(x, w_t, b, act, out, parts, pad_a, pad_out, impl)
        np.testing.assert_allclose(out, f(z), rtol=1e-12, atol=1e-11)


@pytest.mark.parametrize("choice", CHOICES)
@pytest.mark.parametrize("rows,n_in,n_out", SHAPES)
def test_training_forward_matches_reference_and_prediction_stays_own(
    monkeypatch, choice, rows, n_in, n_out
):
    """dense_forward_train runs the chosen product; dense_forward (evaluation) always runs the
    row-independent own kernel, whatever MINIGD_PRODUCTS says."""
    monkeypatch.setenv(autotune.ENV, choice)
    monkeypatch.setenv(autotune.FORWARD_ENV, "1")
    _, x, w_t = operands(rows, n_in, n_out, seed=6)
    w, b = np.ascontiguousarray(w_t.T), np.linspace(-1, 1, n_out)
    want = np.empty((rows, n_out))
    reference.dense_forward(x, w, b, want)
    trained, predicted = np.full_like(want, np.nan), np.full_like(want, np.nan)
    jit.dense_forward_train(x, w, b, trained)
    jit.dense_forward(x, w, b, predicted)
    np.testing.assert_allclose(trained, want, rtol=1e-12, atol=1e-11)
    own = np.full_like(want, np.nan)
    jit_gemm.dense_act_forward(
        x, w_t, b, jit_gemm.NONE, own, 1, np.empty((4, n_in)), np.empty((4, n_out)), jit_gemm.OWN
    )
    np.testing.assert_array_equal(predicted, own)


@pytest.mark.parametrize("choice", CHOICES)
@pytest.mark.parametrize("rows,n_in,n_out", SHAPES)
def test_dense_backward_matches_reference(monkeypatch, choice, rows, n_in, n_out):
    monkeypatch.setenv(autotune.ENV, choice)
    dy, x, w_t = operands(rows, n_in, n_out, seed=2)
    w = np.ascontiguousarray(w_t.T)
    got = [np.full((n_in, n_out), np.nan), np.full(n_out, np.nan), np.full((rows, n_in), np.nan)]
    want = [np.empty((n_in, n_out)), np.empty(n_out), np.empty((rows, n_in))]
    jit.dense_backward(x, dy, w, *got)
    reference.dense_backward(x, dy, w, *want)
    for g, r in zip(got, want):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-11)


def fit_both_paths(monkeypatch, opt, build, X, y, batch_size, sgd_lr):
    """Two epochs of ``build()`` on (X, y), fused and per-iteration: [(parameter values,
    history)] for each path."""
    runs = []
    for fused_path in (True, False):
        model = build()
        optimizer = (
            mg.SGD(model.parameters(), lr=sgd_lr, momentum=0.9)
            if opt == "sgd"
            else mg.Adam(model.parameters(), lr=1e-2)
        )
        monkeypatch.setattr(fused, "ENABLED", fused_path)
        history = mg.fit(
            model, X, y, optimizer=optimizer, epochs=2, batch_size=batch_size, seed=0, verbose=0
        )
        runs.append(([np.array(p.value, copy=True) for p in model.parameters()], history))
    return runs


def train_both_paths(monkeypatch, opt, seed, activations):
    """Two epochs of a 30-24-16-5 network (203 rows, batch 16: a short last batch of 11),
    fused and per-iteration: [(parameter values, history)] for each path."""
    rng = np.random.default_rng(seed)
    X, y = rng.random((203, 30), dtype=np.float32), rng.integers(0, 5, 203)
    first, second = activations
    return fit_both_paths(
        monkeypatch,
        opt,
        lambda: mg.Sequential(
            mg.Dense(30, 24), first(), mg.Dense(24, 16), second(), mg.Dense(16, 5), seed=0
        ),
        X,
        y,
        16,
        0.05,
    )


@pytest.mark.parametrize("choice", CHOICES)
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_fused_and_per_iteration_paths_agree_bit_for_bit(monkeypatch, choice, opt):
    monkeypatch.setenv(autotune.ENV, choice)
    (fused_values, _), (loop_values, _) = train_both_paths(monkeypatch, opt, 3, (mg.Tanh, mg.ReLU))
    for a, b in zip(fused_values, loop_values):
        np.testing.assert_array_equal(a, b)


@needs_blas
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_batch_split_products_agree_bit_for_bit_between_the_paths(monkeypatch, opt):
    """MINIGD_PRODUCTS=blas_rows on a layer big enough to be split between the threads
    (96 x 200 x 64 at batch 96, a short last batch of 52): the forward products and weight
    gradients split the batch, and both paths of fit give the same values, losses and
    gradient norms (the norm sums the squares in the same order)."""
    monkeypatch.setenv(autotune.ENV, "blas_rows")
    rng = np.random.default_rng(8)
    X, y = rng.random((340, 200), dtype=np.float32), rng.integers(0, 10, 340)
    (fused_values, fused_history), (loop_values, loop_history) = fit_both_paths(
        monkeypatch,
        opt,
        lambda: mg.Sequential(mg.Dense(200, 64), mg.ReLU(), mg.Dense(64, 10), seed=2),
        X,
        y,
        96,
        0.1,
    )
    for a, b in zip(fused_values, loop_values):
        np.testing.assert_array_equal(a, b)
    assert fused_history.iterations["loss"] == loop_history.iterations["loss"]
    assert fused_history.iterations["grad_norm"] == loop_history.iterations["grad_norm"]
    products = autotune.epoch_products(
        np.array([[200, 64], [64, 10]]), 96, [96] * 3 + [52], np.float32, 2
    )
    assert products[0, 0, 0] == jit_gemm.BLAS_ROWS  # the forced choice reached the kernels


needs_threads = pytest.mark.skipif(
    __import__("minigd.kernels.jit_config", fromlist=["x"]).parallel_parts() < 2,
    reason="the whole-product mode needs 2 threads or more",
)


@needs_blas
@needs_threads
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_whole_product_mode_paths_agree_bit_for_bit(monkeypatch, opt):
    """MINIGD_EPOCH_MODE=whole: every kernel on one thread, every product one BLAS call on
    BLAS's threads, the forward product included; both paths of fit run the same calls."""
    monkeypatch.delenv(autotune.ENV, raising=False)
    monkeypatch.setenv(autotune.MODE_ENV, "whole")
    calls = []
    real = autotune.whole_epoch

    def spy(threads):
        calls.append(threads)
        return real(threads)

    monkeypatch.setattr(autotune, "whole_epoch", spy)
    (fused_values, fused_history), (loop_values, loop_history) = train_both_paths(
        monkeypatch, opt, 4, (mg.ReLU, mg.Tanh)
    )
    assert len(calls) == 4  # both epochs of both paths ran in the whole mode
    for a, b in zip(fused_values, loop_values):
        np.testing.assert_array_equal(a, b)
    assert fused_history.iterations["loss"] == loop_history.iterations["loss"]
    assert fused_history.iterations["grad_norm"] == loop_history.iterations["grad_norm"]


@needs_blas
@needs_threads
@pytest.mark.parametrize("mode", ["split", "whole"])
def test_both_modes_train_as_the_numpy_backend_in_float64(monkeypatch, mode):
    monkeypatch.delenv(autotune.ENV, raising=False)
    monkeypatch.setenv(autotune.MODE_ENV, mode)
    rng = np.random.default_rng(5)
    X, y = rng.random((150, 20)), rng.integers(0, 4, 150)

    def train(backend):
        model = mg.Sequential(
            mg.Dense(20, 32), mg.ReLU(), mg.Dense(32, 4), seed=1, dtype=np.float64
        )
        with mg.use_backend(backend):
            mg.fit(
                model,
                X,
                y,
                optimizer=mg.Adam(model.parameters(), lr=1e-2),
                epochs=3,
                batch_size=32,
                seed=0,
                verbose=0,
            )
        return model.flat_values.copy()

    np.testing.assert_allclose(train("numba"), train("numpy"), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_bias", [True, False])
def test_bias_activation_gives_the_bits_of_the_fused_epilogue(dtype, with_bias):
    # after a BLAS product, bias and activation run as separate vectorised passes; every
    # element must get exactly what the own kernels' epilogue (jit_gemm.activation of
    # value + bias) gives it, NaN, infinities and saturation included, and only in lo..hi
    rng = np.random.default_rng(6)
    values = rng.standard_normal((9, 11)) * 30
    values[0, :4] = [np.nan, np.inf, -np.inf, 0.0]
    values[1, :3] = [-0.0, 1e-30, -1e-30]
    values = values.astype(dtype)
    b = rng.standard_normal(11).astype(dtype) if with_bias else np.empty(0, dtype)
    one = dtype(1)
    lo, hi = 2, 9
    for act in (jit_gemm.NONE, jit_gemm.RELU, jit_gemm.TANH, jit_gemm.SIGMOID):
        out = values.copy()
        jit_gemm.bias_activation(out, b, act, lo, hi)
        want = values.copy()
        for i in range(want.shape[0]):
            for j in range(lo, hi):
                v = want[i, j] + b[j] if with_bias else want[i, j]
                want[i, j] = jit_gemm.activation(dtype(v), act, one)
        np.testing.assert_array_equal(out.view(np.uint8), want.view(np.uint8), err_msg=str(act))
