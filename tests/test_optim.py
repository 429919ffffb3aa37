"""Optimizer steps against the written update rules and against torch.optim."""

import numpy as np
import pytest

import minigd as mg


def tiny_model(seed=0):
    return mg.Sequential(mg.Dense(3, 4), mg.ReLU(), mg.Dense(4, 2), seed=seed, dtype=np.float64)


def set_grads(model, rng):
    grads = [rng.normal(size=p.shape) for p in model.parameters()]
    for p, g in zip(model.parameters(), grads):
        p.grad[...] = g
    return grads


def test_sgd_momentum_step_with_injected_state(backend):
    rng = np.random.default_rng(0)
    model = tiny_model()
    opt = mg.SGD(model.parameters(), lr=0.1, momentum=0.9, dampening=0.2, weight_decay=0.01)
    before = [p.value.copy() for p in model.parameters()]
    buffers = [rng.normal(size=p.shape) for p in model.parameters()]
    state = opt.state_dict()
    state["step"] = 5
    state["state"] = {f"{i}.momentum_buffer": b for i, b in enumerate(buffers)}
    opt.load_state_dict(state)
    grads = set_grads(model, rng)
    opt.step()
    for p, w, g, b in zip(model.parameters(), before, grads, buffers):
        d = g + 0.01 * w
        new_b = 0.9 * b + (1 - 0.2) * d
        np.testing.assert_allclose(p.value, w - 0.1 * new_b, rtol=1e-14)
    np.testing.assert_allclose(
        opt.state_dict()["state"]["0.momentum_buffer"],
        0.9 * buffers[0] + 0.8 * (grads[0] + 0.01 * before[0]),
        rtol=1e-14,
    )


def test_sgd_first_step_sets_buffer_to_gradient_and_nesterov(backend):
    rng = np.random.default_rng(1)
    model = tiny_model()
    opt = mg.SGD(model.parameters(), lr=0.5, momentum=0.9, nesterov=True)
    w = model.parameters()[0].value.copy()
    g = set_grads(model, rng)[0]
    opt.step()
    np.testing.assert_allclose(model.parameters()[0].value, w - 0.5 * (g + 0.9 * g), rtol=1e-14)


def test_plain_sgd_step_worked_by_hand(backend):
    model = mg.Sequential(mg.Dense(1, 1, init="zeros"), dtype=np.float64)
    opt = mg.SGD(model.parameters(), lr=0.5)
    model.parameters()[0].value[...] = 2.0
    model.parameters()[0].grad[...] = 3.0
    opt.step()
    assert model.parameters()[0].value[0, 0] == 2.0 - 0.5 * 3.0


@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_step_with_injected_state(decoupled, backend):
    rng = np.random.default_rng(2)
    model = tiny_model()
    cls = mg.AdamW if decoupled else mg.Adam
    opt = cls(model.parameters(), lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)
    m = [rng.normal(size=p.shape) for p in model.parameters()]
    v = [rng.uniform(0.1, 1, size=p.shape) for p in model.parameters()]
    state = opt.state_dict()
    state["step"] = 3
    state["state"] = {
        **{f"{i}.exp_avg": a for i, a in enumerate(m)},
        **{f"{i}.exp_avg_sq": a for i, a in enumerate(v)},
    }
    opt.load_state_dict(state)
    before = [p.value.copy() for p in model.parameters()]
    grads = set_grads(model, rng)
    opt.step()
    t = 4
    for p, w, g, m0, v0 in zip(model.parameters(), before, grads, m, v):
        if decoupled:
            w = w * (1 - 0.01 * 0.1)
        else:
            g = g + 0.1 * w
        m1 = 0.8 * m0 + 0.2 * g
        v1 = 0.95 * v0 + 0.05 * g * g
        expected = w - 0.01 / (1 - 0.8**t) * m1 / (np.sqrt(v1) / np.sqrt(1 - 0.95**t) + 1e-6)
        np.testing.assert_allclose(p.value, expected, rtol=1e-13)


def test_optimizer_on_a_subset_of_parameters_updates_only_those(backend):
    model = tiny_model()
    params = model.parameters()
    opt = mg.SGD(params[2:], lr=1.0)
    frozen = [p.value.copy() for p in params[:2]]
    for p in params:
        p.grad[...] = 1.0
    opt.step()
    for p, w in zip(params[:2], frozen):
        np.testing.assert_array_equal(p.value, w)
    np.testing.assert_allclose(params[3].value, -1.0)


def test_zero_grad_and_lr_setter():
    model = tiny_model()
    opt = mg.SGD(model.parameters(), lr=0.1)
    for p in model.parameters():
        p.grad[...] = 1
    opt.zero_grad()
    assert all(np.all(p.grad == 0) for p in model.parameters())
    opt.lr = 0.5
    assert opt.lr == 0.5
    with pytest.raises(ValueError, match="lr"):
        opt.lr = -1
    with pytest.raises(ValueError, match="lr"):
        opt.lr = float("nan")


def test_optimizer_state_dict_round_trip_continues_identically(backend):
    rng = np.random.default_rng(4)
    model_a, model_b = tiny_model(), tiny_model()
    opt_a = mg.Adam(model_a.parameters(), lr=0.01)
    for _ in range(3):
        set_grads(model_a, rng)
        opt_a.step()
    model_b.load_state_dict(model_a.state_dict())
    opt_b = mg.Adam(model_b.parameters(), lr=0.5)
    opt_b.load_state_dict(opt_a.state_dict())
    assert opt_b.lr == 0.01 and opt_b.step_count == 3
    g = rng.normal(size=model_a.flat_values.shape)
    model_a.flat_grads[...] = g
    model_b.flat_grads[...] = g
    opt_a.step()
    opt_b.step()
    np.testing.assert_array_equal(model_a.flat_values, model_b.flat_values)


def test_optimizer_load_state_dict_rejects_mismatch():
    model = tiny_model()
    sgd = mg.SGD(model.parameters(), lr=0.1, momentum=0.9)
    adam = mg.Adam(model.parameters())
    with pytest.raises(ValueError, match="Adam"):
        sgd.load_state_dict(adam.state_dict())
    state = sgd.state_dict()
    state["state"]["0.momentum_buffer"] = np.zeros((9, 9))
    with pytest.raises(ValueError, match="shape"):
        sgd.load_state_dict(state)
    state = sgd.state_dict()
    state["state"]["0.momentum_buffer"] = state["state"]["0.momentum_buffer"].astype(np.float32)
    with pytest.raises(TypeError, match="dtype"):
        sgd.load_state_dict(state)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(lr=-0.1), "lr"),
        (dict(lr=0.1, momentum=1.0), "momentum"),
        (dict(lr=0.1, momentum=-0.1), "momentum"),
        (dict(lr=0.1, nesterov=True), "nesterov"),
        (dict(lr=0.1, weight_decay=-1), "weight_decay"),
        (dict(lr=True), "lr"),
    ],
)
def test_sgd_rejects_bad_hyperparameters(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        mg.SGD(tiny_model().parameters(), **kwargs)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(betas=(1.0, 0.9)), "betas"),
        (dict(betas=(0.9,)), "betas"),
        (dict(eps=0.0), "eps"),
        (dict(weight_decay=-0.1), "weight_decay"),
    ],
)
def test_adam_rejects_bad_hyperparameters(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        mg.Adam(tiny_model().parameters(), **kwargs)


TORCH_CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.001)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.02, weight_decay=0.1)),
]


@pytest.mark.parametrize("name,kwargs", TORCH_CASES)
def test_optimizers_match_torch_over_several_steps(name, kwargs, backend):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    model = tiny_model()
    opt = getattr(mg, name)(model.parameters(), **kwargs)
    tensors = [torch.tensor(p.value.copy(), requires_grad=True) for p in model.parameters()]
    t_opt = getattr(torch.optim, name)(tensors, **kwargs)
    for _ in range(5):
        grads = set_grads(model, rng)
        for t, g in zip(tensors, grads):
            t.grad = torch.tensor(g)
        opt.step()
        t_opt.step()
    for p, t in zip(model.parameters(), tensors):
        np.testing.assert_allclose(p.value, t.detach().numpy(), rtol=1e-12, atol=1e-14)
