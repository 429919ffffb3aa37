"""Decaying optimizer state is flushed to zero below the smallest normal float, on both
backends, and the parameters still follow torch.optim.

A parameter whose gradient stays 0 (a dead ReLU unit) has its momentum / Adam moments decay
geometrically into subnormal numbers, and subnormal arithmetic is ~100x slower on Intel CPUs
(the Adam epoch at batch 16 measured 5x slower on a Xeon). minigd stores such state as 0.
"""

import numpy as np
import pytest

import minigd as mg
from minigd.kernels import jit, reference

CASES = [
    ("SGD", dict(lr=0.1, momentum=0.9), ("momentum_buffer",)),
    ("Adam", dict(lr=0.01), ("exp_avg", "exp_avg_sq")),
    ("AdamW", dict(lr=0.01, weight_decay=0.0), ("exp_avg", "exp_avg_sq")),
    ("RMSprop", dict(lr=0.01, momentum=0.9, centered=True), ("momentum_buffer", "square_avg")),
]


def subnormal(a):
    a = np.abs(np.asarray(a))
    return (a > 0) & (a < np.finfo(a.dtype).tiny)


@pytest.mark.parametrize("kernels", [reference, jit], ids=["numpy", "numba"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_flush_subnormal_zeroes_only_subnormals_and_keeps_nan_inf_and_sign(kernels, dtype):
    tiny = np.finfo(dtype).tiny
    state = np.array(
        [tiny / 2, -tiny / 4, tiny, -tiny, 1.0, -2.5, 0.0, np.nan, np.inf, -np.inf], dtype=dtype
    )
    kernels.flush_subnormal(state)
    expected = np.array([0, -0.0, tiny, -tiny, 1, -2.5, 0, np.nan, np.inf, -np.inf], dtype)
    np.testing.assert_array_equal(state, expected)
    assert np.signbit(state[1]), "a flushed negative subnormal keeps its sign (-0.0)"


@pytest.mark.parametrize("name,kwargs,names", CASES)
def test_state_of_a_parameter_without_gradient_decays_to_zero_not_subnormal(
    name, kwargs, names, backend
):
    """Steps of gradient g, then zero gradients for long enough that torch's state is
    subnormal: minigd's state is exactly 0 there, nothing is subnormal, and the parameters
    equal torch's."""
    torch = pytest.importorskip("torch")
    p = mg.Sequential(mg.Dense(8, 8), seed=0).parameters()[0]  # float32, 8 x 8
    opt = getattr(mg, name)([p], **kwargs)
    t = torch.tensor(p.value.copy(), requires_grad=True)
    t_opt = getattr(torch.optim, name)([t], **kwargs)
    g = np.random.default_rng(0).normal(size=(8, 8)).astype(np.float32) * 1e-3
    steps = 1200 if name.startswith("Adam") and "exp_avg_sq" in names else 900
    saw_torch_subnormal = False
    for k in range(steps):
        grad = g if k < 3 else np.zeros_like(g)
        p.grad[...] = grad
        t.grad = torch.from_numpy(grad.copy())
        opt.step()
        t_opt.step()
        torch_state = t_opt.state[t][names[0]].numpy()
        saw_torch_subnormal |= bool(subnormal(torch_state).any())
    assert saw_torch_subnormal, "the test must reach torch's subnormal range"
    state = opt.state_dict()["state"]
    for n in names:
        assert not subnormal(state[f"0.{n}"]).any(), n
    assert (state[f"0.{names[0]}"] == 0).all()
    np.testing.assert_allclose(p.value, t.detach().numpy(), rtol=2e-6, atol=1e-7)


def test_dead_units_leave_no_subnormal_adam_state_after_a_fused_epoch():
    """The fused epoch (one Numba call per epoch) flushes too: a network whose hidden units
    die (all-positive inputs, a large lr) has exp_avg exactly 0 for the dead units' weights."""
    rng = np.random.default_rng(0)
    X = rng.random((6000, 20), dtype=np.float32) + 1
    y = rng.integers(0, 3, 6000)
    model = mg.Sequential(mg.Dense(20, 16), mg.ReLU(), mg.Dense(16, 3), seed=0)
    opt = mg.Adam(model.parameters(), lr=0.05)
    with mg.use_backend("numba"):
        mg.fit(model, X, y, optimizer=opt, epochs=1, batch_size=4, seed=0, verbose=0)
    hidden = np.maximum(X @ model.parameters()[0].value + model.parameters()[1].value, 0)
    dead = hidden.max(axis=0) == 0
    assert dead.any(), "the setup must kill some units"
    exp_avg = opt.state_dict()["state"]["0.exp_avg"]
    assert not subnormal(exp_avg).any()
    assert (exp_avg[:, dead] == 0).all()
