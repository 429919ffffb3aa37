"""The Numba backend against the NumPy reference: every kernel, optimizer steps, whole runs.

Tolerances (float64): single kernels rtol 1e-12; whole runs rtol 1e-9 (atol 1e-12). Both
backends evaluate the same formulas in a different order: NumPy sums matrix products inside
OpenBLAS, the Numba kernels in their own register-blocked loops with reassociation allowed
(minigd/kernels/jit_config.py). One kernel therefore differs by a few ulps (~1e-16 relative)
and a few dozen updates grow that to ~1e-14. A wrong formula, a missed term, an update
applied once too often or a wrong lr moves results by 1e-3 or more, so these tolerances sit
about five orders of magnitude above the rounding noise and far below any real error.
Same-backend comparisons (determinism, thread count) are exact.
"""

import inspect
import os
import subprocess
import sys

import numpy as np
import pytest

import minigd as mg
from minigd import fused
from minigd.kernels import jit, jit_config, reference

KERNEL_RTOL = 1e-12
RUN_RTOL, RUN_ATOL = 1e-9, 1e-12


def public_functions(module):
    return {
        name: f
        for name, f in vars(module).items()
        if not name.startswith("_") and inspect.isfunction(f) and f.__module__ == module.__name__
    }


def both(kernel, *arrays, **scalars):
    """Run ``kernel`` of each backend on its own copies of ``arrays``; return both copies."""
    results = []
    for module in (reference, jit):
        copies = [None if a is None else a.copy() for a in arrays]
        value = getattr(module, kernel)(*copies, **scalars)
        results.append((value, copies))
    return results


def assert_same(results, rtol=KERNEL_RTOL, atol=0.0):
    (value_np, arrays_np), (value_nb, arrays_nb) = results
    if value_np is not None:
        np.testing.assert_allclose(value_nb, value_np, rtol=rtol, atol=atol)
    for a, b in zip(arrays_np, arrays_nb):
        if a is not None:
            np.testing.assert_allclose(b, a, rtol=rtol, atol=atol, equal_nan=True)


# ---- kernels -------------------------------------------------------------------------------------
def test_numba_implements_every_reference_kernel_with_the_same_signature():
    for name, f in public_functions(reference).items():
        assert hasattr(jit, name), f"minigd.kernels.jit lacks {name}"
        numba_f = getattr(jit, name)
        numba_f = getattr(numba_f, "py_func", numba_f)
        assert inspect.signature(numba_f) == inspect.signature(f), name


SHAPES = [(1, 1, 1), (1, 9, 10), (5, 7, 3), (16, 20, 12), (33, 13, 9)]


@pytest.mark.parametrize("n, n_in, n_out", SHAPES)
def test_dense_forward_and_backward_agree(n, n_in, n_out, rng):
    x, w = rng.normal(size=(n, n_in)), rng.normal(size=(n_in, n_out))
    b, dy = rng.normal(size=n_out), rng.normal(size=(n, n_out))
    assert_same(both("dense_forward", x, w, b, np.empty((n, n_out))))
    empty = [np.empty((n_in, n_out)), np.empty(n_out), np.empty((n, n_in))]
    assert_same(both("dense_backward", x, dy, w, *empty))
    assert_same(both("dense_backward", x, dy, w, *empty[:2], None))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_reference_weight_gradient_of_one_row_is_matmul_bit_for_bit(dtype, rng):
    # one row takes the outer-product branch (NumPy's matmul is slow with an inner dimension 1)
    x, dy = rng.normal(size=(1, 784)).astype(dtype), rng.normal(size=(1, 128)).astype(dtype)
    dw, db = np.full((784, 128), np.nan, dtype), np.full(128, np.nan, dtype)
    reference.dense_backward(x, dy, np.ones((784, 128), dtype), dw, db, None)
    np.testing.assert_array_equal(dw, np.matmul(x.T, dy))
    np.testing.assert_array_equal(db, dy[0])


@pytest.mark.parametrize("name", ["relu", "tanh", "sigmoid"])
def test_activations_agree_including_extremes(name, rng):
    z = rng.normal(scale=3, size=(7, 5))
    z[0, :] = [0.0, 1e3, -1e3, 40.0, -40.0]
    y = np.empty_like(z)
    getattr(reference, name + "_forward")(z, y)
    assert_same(both(name + "_forward", z, np.empty_like(z)))
    # 1 - y**2 cancels near |y| = 1, where a fused multiply-add (Numba) rounds once less than
    # NumPy: the relative difference grows there, the absolute one stays at the ulp of 1
    assert_same(both(name + "_backward", rng.normal(size=z.shape), y, np.empty_like(z)), atol=1e-15)


def test_relu_forward_propagates_nan_and_clips_minus_inf_like_numpy():
    z = np.array([[np.nan, -np.inf, np.inf, -1.0]])
    assert_same(both("relu_forward", z, np.empty_like(z)))


@pytest.mark.parametrize("n", [1, 2, 17])
def test_softmax_cross_entropy_agrees_with_huge_logits_and_batch_one(n, rng):
    logits = rng.normal(size=(n, 10))
    logits[0, 3] = 1e4
    labels = rng.integers(0, 10, n)
    assert_same(both("softmax_cross_entropy", logits, labels, np.empty_like(logits)))


SGD_CASES = [
    dict(momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0),
    dict(momentum=0.9, dampening=0.0, nesterov=False, weight_decay=0.0),
    dict(momentum=0.9, dampening=0.0, nesterov=True, weight_decay=0.0),
    dict(momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.01),
    dict(momentum=0.8, dampening=0.3, nesterov=False, weight_decay=0.01),
]


@pytest.mark.parametrize("case", SGD_CASES)
@pytest.mark.parametrize("first_step", [True, False])
def test_sgd_update_kernel_agrees(case, first_step, rng):
    p, g, buf = rng.normal(size=(3, 1001))
    assert_same(both("sgd_update", p, g, buf, lr=0.05, first_step=first_step, **case))


@pytest.mark.parametrize("decoupled", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adam_update_kernel_agrees(decoupled, weight_decay, rng):
    p, g, m = rng.normal(size=(3, 1001))
    v = rng.uniform(0, 2, size=1001)
    assert_same(
        both(
            "adam_update",
            p,
            g,
            m,
            v,
            step=7,
            lr=1e-2,
            beta1=0.8,
            beta2=0.95,
            eps=1e-6,
            weight_decay=weight_decay,
            decoupled=decoupled,
        )
    )


# ---- optimizer steps through the classes ---------------------------------------------------------
OPTIMIZERS = {
    "sgd": lambda ps: mg.SGD(ps, lr=0.1),
    "sgd_momentum": lambda ps: mg.SGD(ps, lr=0.1, momentum=0.9),
    "sgd_nesterov": lambda ps: mg.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
    "sgd_weight_decay": lambda ps: mg.SGD(ps, lr=0.1, weight_decay=0.05),
    "sgd_dampening": lambda ps: mg.SGD(ps, lr=0.1, momentum=0.5, dampening=0.4, weight_decay=0.01),
    "adam": lambda ps: mg.Adam(ps, lr=0.01, weight_decay=0.01),
    "adamw": lambda ps: mg.AdamW(ps, lr=0.01, betas=(0.8, 0.9)),
}


def small_model(seed=0, dtype=np.float64, n_in=6):
    return mg.Sequential(mg.Dense(n_in, 8), mg.ReLU(), mg.Dense(8, 3), seed=seed, dtype=dtype)


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("whole_model", [True, False])
def test_optimizer_steps_agree_on_parameters_and_state(name, whole_model):
    finals = []
    for backend in ("numpy", "numba"):
        rng = np.random.default_rng(3)
        model = small_model()
        params = model.parameters() if whole_model else model.parameters()[:3]
        with mg.use_backend(backend):
            opt = OPTIMIZERS[name](params)
            for _ in range(3):
                for p in params:
                    p.grad[...] = rng.normal(size=p.shape)
                opt.step()
        finals.append((model.state_dict(), opt.state_dict()))
    (w_np, s_np), (w_nb, s_nb) = finals
    for key in w_np:
        np.testing.assert_allclose(w_nb[key], w_np[key], rtol=KERNEL_RTOL)
    assert s_nb["step"] == s_np["step"] == 3
    assert set(s_nb["state"]) == set(s_np["state"]) and s_np["state"]
    for key in s_np["state"]:
        np.testing.assert_allclose(s_nb["state"][key], s_np["state"][key], rtol=KERNEL_RTOL)


# ---- whole fit runs ------------------------------------------------------------------------------
def data(n=101, n_in=12, classes=4, kind="float64", tmp_path=None, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, n_in))
    if kind == "uint8":  # small counts: raw 0..255 saturates tanh at once
        X = (X * 4).astype(np.uint8)
    elif kind == "memmap":
        X = X.astype(np.float32)
        mm = np.memmap(tmp_path / "X.dat", dtype=np.float32, mode="w+", shape=X.shape)
        mm[...] = X
        mm.flush()
        X = np.memmap(tmp_path / "X.dat", dtype=np.float32, mode="r", shape=X.shape)
    return X, rng.integers(0, classes, n)


MODELS = {
    "relu_tanh": lambda: mg.Sequential(
        mg.Dense(12, 16),
        mg.ReLU(),
        mg.Dense(16, 9),
        mg.Tanh(),
        mg.Dense(9, 4),
        seed=1,
        dtype=np.float64,
    ),
    "sigmoid": lambda: mg.Sequential(
        mg.Dense(12, 10), mg.Sigmoid(), mg.Dense(10, 4), seed=2, dtype=np.float64
    ),
}

RUNS = {
    "sgd_nesterov_relu_tanh": dict(model="relu_tanh", optimizer="sgd_nesterov", batch_size=16),
    "adam_cyclic_sigmoid": dict(
        model="sigmoid",
        optimizer="adam",
        batch_size=10,
        schedule=mg.schedules.CyclicLR(1e-3, 1e-2, 5),
    ),
    "adamw_drop_last_uint8": dict(
        model="relu_tanh", optimizer="adamw", batch_size=32, drop_last=True, x="uint8"
    ),
    "sgd_dampening_memmap_step_decay": dict(
        model="relu_tanh",
        optimizer="sgd_dampening",
        batch_size=7,
        x="memmap",
        schedule=mg.schedules.StepDecay(0.1, 1, 0.5),
    ),
}


def train(run, tmp_path, backend="numba", epochs=3, callbacks=(), **overrides):
    spec = {**RUNS[run], **overrides}
    X, y = data(kind=spec.get("x", "float64"), tmp_path=tmp_path)
    model = MODELS[spec["model"]]()
    opt = OPTIMIZERS[spec["optimizer"]](model.parameters())
    with mg.use_backend(backend):
        history = mg.fit(
            model,
            X,
            y,
            optimizer=opt,
            epochs=epochs,
            batch_size=spec["batch_size"],
            schedule=spec.get("schedule"),
            drop_last=spec.get("drop_last", False),
            seed=4,
            callbacks=callbacks,
            verbose=0,
        )
    return model, opt, history


def assert_runs_agree(a, b, rtol=RUN_RTOL, atol=RUN_ATOL):
    (model_a, opt_a, hist_a), (model_b, opt_b, hist_b) = a, b
    for key in ("epoch", "iteration", "step", "batch_size", "lr"):
        assert hist_a.iterations[key] == hist_b.iterations[key], key
    np.testing.assert_allclose(hist_b.iterations["loss"], hist_a.iterations["loss"], rtol=rtol)
    np.testing.assert_allclose(hist_b.epochs["train_loss"], hist_a.epochs["train_loss"], rtol=rtol)
    np.testing.assert_allclose(model_b.flat_values, model_a.flat_values, rtol=rtol, atol=atol)
    np.testing.assert_allclose(model_b.flat_grads, model_a.flat_grads, rtol=rtol, atol=atol)
    assert opt_a.step_count == opt_b.step_count == hist_a.iterations["step"][-1]
    assert opt_a.lr == opt_b.lr
    for name in opt_a.state:
        np.testing.assert_allclose(opt_b.state[name], opt_a.state[name], rtol=rtol, atol=atol)


@pytest.fixture
def fused_calls(monkeypatch):
    """Count epochs run by the fused path."""
    calls = []
    original = fused.run_epoch

    def counting(state, bar, start=0):
        calls.append(state.epoch)
        return original(state, bar, start)

    monkeypatch.setattr(fused, "run_epoch", counting)
    return calls


@pytest.mark.parametrize("run", RUNS)
def test_fused_epoch_matches_numpy_backend(run, tmp_path, fused_calls):
    numpy_run = train(run, tmp_path, backend="numpy")
    assert fused_calls == []
    fused_run = train(run, tmp_path, backend="numba")
    assert fused_calls == [1, 2, 3]
    assert_runs_agree(numpy_run, fused_run)


class EveryIteration(mg.Callback):
    def __init__(self):
        self.steps = []

    def on_iteration_end(self, state):
        self.steps.append(state.step)


def assert_bit_identical(a, b):
    (model_a, opt_a, hist_a), (model_b, opt_b, hist_b) = a, b
    assert hist_a.iterations == hist_b.iterations
    assert hist_a.epochs["train_loss"] == hist_b.epochs["train_loss"]
    assert model_a.flat_values.tobytes() == model_b.flat_values.tobytes()
    assert model_a.flat_grads.tobytes() == model_b.flat_grads.tobytes()
    assert opt_a.step_count == opt_b.step_count and opt_a.lr == opt_b.lr
    for name in opt_a.state:
        assert opt_a.state[name].tobytes() == opt_b.state[name].tobytes(), name


@pytest.mark.parametrize("run", RUNS)
def test_fused_epoch_is_bit_identical_to_the_numba_per_iteration_path(
    run, tmp_path, fused_calls, monkeypatch
):
    """Adding a per-iteration callback (which turns the fused path off) changes no bit."""
    fused_run = train(run, tmp_path)
    assert fused_calls == [1, 2, 3]
    callback = EveryIteration()
    per_iteration = train(run, tmp_path, callbacks=[callback])
    assert fused_calls == [1, 2, 3], "a per-iteration callback must turn the fused path off"
    assert callback.steps == list(range(1, len(callback.steps) + 1))
    assert callback.steps == per_iteration[2].iterations["step"]
    assert_bit_identical(per_iteration, fused_run)
    monkeypatch.setattr(fused, "ENABLED", False)
    assert_bit_identical(train(run, tmp_path), fused_run)


def test_float32_fused_epoch_stays_close_to_numpy(tmp_path):
    runs = []
    for backend in ("numpy", "numba"):
        X, y = data(n=200, n_in=30, classes=10)
        model = mg.Sequential(mg.Dense(30, 32), mg.ReLU(), mg.Dense(32, 10), seed=0)
        opt = mg.SGD(model.parameters(), lr=0.1, momentum=0.9)
        with mg.use_backend(backend):
            history = mg.fit(model, X, y, optimizer=opt, epochs=2, batch_size=16, seed=0, verbose=0)
        runs.append((model, history))
    assert runs[1][0].flat_values.dtype == np.float32
    np.testing.assert_allclose(runs[1][0].flat_values, runs[0][0].flat_values, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        runs[1][1].iterations["loss"], runs[0][1].iterations["loss"], rtol=1e-4
    )


def test_same_seed_same_backend_is_bit_identical(tmp_path, monkeypatch):
    for enabled in (True, False):
        monkeypatch.setattr(fused, "ENABLED", enabled)
        a, b = (train("sgd_nesterov_relu_tanh", tmp_path) for _ in range(2))
        assert np.array_equal(a[0].flat_values, b[0].flat_values)
        assert np.array_equal(a[1].state["momentum_buffer"], b[1].state["momentum_buffer"])
        assert a[2].to_dict() | {"epochs": None} == b[2].to_dict() | {"epochs": None}
        assert a[2].epochs["train_loss"] == b[2].epochs["train_loss"]


def test_thread_count_does_not_change_the_fused_result(monkeypatch):
    """minigd's own products give the same bits on any thread count. (BLAS, where the
    autotuner chooses it, is deterministic for a given machine, choice and thread count only:
    each thread's call multiplies its own columns, and BLAS may block them differently.)"""
    monkeypatch.setenv("MINIGD_PRODUCTS", "own")
    X, y = data(n=150, n_in=200, classes=10)
    results = []
    for parts in (1, 2, 3):
        monkeypatch.setattr(jit_config, "parallel_parts", lambda parts=parts: parts)
        model = mg.Sequential(
            mg.Dense(200, 64), mg.ReLU(), mg.Dense(64, 10), seed=0, dtype=np.float64
        )
        opt = mg.Adam(model.parameters(), lr=1e-2)
        history = mg.fit(model, X, y, optimizer=opt, epochs=1, batch_size=64, seed=0, verbose=0)
        results.append((model.flat_values.copy(), history.iterations["loss"]))
    for values, losses in results[1:]:
        assert np.array_equal(values, results[0][0]) and losses == results[0][1]


@pytest.mark.parametrize("scale, lr, cause", [(10.0, 1e4, "loss"), (1e20, 1e-3, "gradient")])
def test_divergence_stops_at_the_same_update_on_both_paths(scale, lr, cause):
    """lr 1e4 makes the loss inf at update 5; inputs of 1e20 overflow sum(grad**2) in float32
    at the first update while the loss is still finite."""
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(64, 12)) * scale).astype(np.float32)
    y = rng.integers(0, 4, 64)
    outcomes = []
    for backend in ("numpy", "numba"):
        model = mg.Sequential(mg.Dense(12, 16), mg.ReLU(), mg.Dense(16, 4), seed=0)
        opt = mg.SGD(model.parameters(), lr=lr)
        with mg.use_backend(backend), pytest.warns(RuntimeWarning, match="diverged"):
            history = mg.fit(model, X, y, optimizer=opt, epochs=3, batch_size=8, seed=0, verbose=0)
        outcomes.append((history, model.flat_values.copy(), opt.step_count))
    (h_np, w_np, steps_np), (h_nb, w_nb, steps_nb) = outcomes
    assert h_np.diverged and h_nb.diverged
    assert h_nb.divergence["cause"] == h_np.divergence["cause"] == cause
    for key in ("epoch", "iteration", "step", "lr"):
        assert h_nb.divergence[key] == h_np.divergence[key], key
    assert steps_nb == steps_np == h_np.divergence["step"] - 1
    assert h_nb.iterations["step"] == h_np.iterations["step"]
    assert np.all(np.isfinite(w_nb))
    np.testing.assert_allclose(w_nb, w_np, rtol=1e-4, atol=1e-5 * np.abs(w_np).max())


def test_divergence_can_raise_from_the_fused_path(fused_calls):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 12)) * 10, rng.integers(0, 4, 64)
    model = mg.Sequential(mg.Dense(12, 16), mg.ReLU(), mg.Dense(16, 4), seed=0)
    with mg.use_backend("numba"), pytest.raises(mg.DivergenceError) as error:
        mg.fit(
            model,
            X,
            y,
            optimizer=mg.SGD(model.parameters(), lr=1e4),
            epochs=2,
            batch_size=8,
            seed=0,
            verbose=0,
            on_divergence="raise",
        )
    assert fused_calls == [1]
    history = error.value.history
    assert history.diverged and error.value.step == history.iterations["step"][-1] == 5
    assert f"iteration {error.value.iteration}" in str(error.value)


# ---- when the fused path is used -----------------------------------------------------------------
def state_for(model, optimizer, X):
    history = mg.History()
    iterator = mg.BatchIterator(X, np.zeros(len(X), int), 4)
    return mg.TrainingState(model, optimizer, history, iterator, 1, None, optimizer.lr)


def test_fused_path_is_used_only_when_it_applies(tmp_path):
    X = np.zeros((8, 6))
    model = small_model()
    ok = state_for(model, mg.SGD(model.parameters(), lr=0.1), X)
    loss = mg.SoftmaxCrossEntropy()
    with mg.use_backend("numba"):
        assert fused.supports(ok, loss, [])
        assert fused.supports(ok, loss, [mg.EarlyStopping()])
        assert not fused.supports(ok, loss, [EveryIteration()])
        subset = state_for(model, mg.SGD(model.parameters()[:2], lr=0.1), X)
        assert not fused.supports(subset, loss, [])
        relu_first = mg.Sequential(mg.ReLU(), mg.Dense(6, 3), dtype=np.float64)
        assert not fused.supports(
            state_for(relu_first, mg.SGD(relu_first.parameters(), lr=0.1), X), loss, []
        )
        two_activations = mg.Sequential(mg.Dense(6, 3), mg.ReLU(), mg.Tanh(), dtype=np.float64)
        assert not fused.supports(
            state_for(two_activations, mg.SGD(two_activations.parameters(), lr=0.1), X), loss, []
        )
        assert not fused.supports(
            state_for(model, mg.SGD(model.parameters(), lr=0.1), X.astype(np.float16)), loss, []
        )
    with mg.use_backend("numpy"):
        assert not fused.supports(ok, loss, [])


def test_needs_compilation_is_false_once_the_cache_is_written(capsys):
    X, y = data(n=20)
    model = MODELS["sigmoid"]()
    with mg.use_backend("numba"):
        mg.fit(
            model,
            X,
            y,
            optimizer=mg.SGD(model.parameters(), lr=0.1),
            epochs=1,
            batch_size=8,
            verbose=0,
        )
        assert isinstance(jit.needs_compilation(), bool)
        if not jit.needs_compilation():
            mg.backend.announce_compilation(print)
            assert capsys.readouterr().out == ""


def test_the_numpy_backend_never_imports_numba():
    """`import minigd` and training on the NumPy backend stay Numba-free (memory, start-up)."""
    code = (
        "import sys, numpy as np, minigd as mg\n"
        "m = mg.Sequential(mg.Dense(3, 2), mg.ReLU(), mg.Dense(2, 2), seed=0)\n"
        "mg.fit(m, np.ones((4, 3)), np.zeros(4, int), optimizer=mg.SGD(m.parameters(), "
        "lr=0.1), epochs=1, batch_size=2, verbose=0)\n"
        "print('numba' in sys.modules)"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(
        os.environ,
        MINIGD_BACKEND="numpy",
        PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
