"""RMSprop and Adagrad: torch float64 cross-checks, backends agree, fused == per-iteration,
checkpoint state round trip, registry names."""

import numpy as np
import pytest

import minigd as mg
from minigd import fused, registry

RMSPROP_CASES = [
    {},
    {"momentum": 0.9},
    {"centered": True},
    {"centered": True, "momentum": 0.5, "weight_decay": 0.1},
    {"alpha": 0.3, "weight_decay": 0.05, "eps": 1e-3, "centered": True},  # lerp's other form
]
ADAGRAD_CASES = [
    {},
    {"lr_decay": 0.1},
    {"weight_decay": 0.1, "initial_accumulator_value": 0.5},
    {"lr_decay": 0.05, "weight_decay": 0.01, "eps": 1e-3},
]


def _model(seed=0, dtype=np.float64):
    return mg.Sequential([mg.Dense(5, 7), mg.Tanh(), mg.Dense(7, 3)], seed=seed, dtype=dtype)


def _grads(steps, model, seed=1):
    rng = np.random.default_rng(seed)
    return [[rng.normal(size=p.shape) for p in model.parameters()] for _ in range(steps)]


def _run_minigd(cls, kwargs, lr, grads, model):
    opt = cls(model.parameters(), lr=lr, **kwargs)
    for step in grads:
        for p, g in zip(model.parameters(), step):
            p.grad[...] = g
        opt.step()
    return [p.value.copy() for p in model.parameters()], opt


def _run_torch(torch_cls, kwargs, lr, grads, model0):
    import torch

    params = [
        torch.tensor(p.value.copy(), dtype=torch.float64, requires_grad=True)
        for p in model0.parameters()
    ]
    opt = torch_cls(params, lr=lr, **kwargs)
    for step in grads:
        for p, g in zip(params, step):
            p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    return [p.detach().numpy() for p in params], opt


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize(
    "name,kwargs", [("rmsprop", k) for k in RMSPROP_CASES] + [("adagrad", k) for k in ADAGRAD_CASES]
)
def test_matches_torch_float64(backend, name, kwargs):
    torch = pytest.importorskip("torch")
    torch_cls = {"rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad}[name]
    cls = registry.get("optimizer", name)
    grads = _grads(8, _model())
    with mg.use_backend(backend):
        ours, opt = _run_minigd(cls, kwargs, 0.05, grads, _model())
    theirs, topt = _run_torch(torch_cls, kwargs, 0.05, grads, _model())
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)
    # state names and values as torch's
    tstate = topt.state[topt.param_groups[0]["params"][0]]
    for key, value in tstate.items():
        if key == "step":
            assert opt.step_count == int(value)
            continue
        np.testing.assert_allclose(
            opt.state_dict()["state"][f"0.{key}"], value.numpy(), rtol=1e-13, atol=1e-15
        )
    assert {f"0.{k}" for k in tstate if k != "step"} == {
        k for k in opt.state_dict()["state"] if k.startswith("0.")
    }


@pytest.mark.parametrize(
    "name,kwargs", [("rmsprop", k) for k in RMSPROP_CASES] + [("adagrad", k) for k in ADAGRAD_CASES]
)
def test_backends_agree(name, kwargs):
    cls = registry.get("optimizer", name)
    grads = _grads(6, _model())
    results = []
    for backend in ("numpy", "numba"):
        with mg.use_backend(backend):
            results.append(_run_minigd(cls, kwargs, 0.05, grads, _model())[0])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=0)


def _data(n=90, seed=3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5)).astype(np.float32)
    y = rng.integers(0, 3, size=n)
    return X, y


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("rmsprop", {}),
        ("rmsprop", {"momentum": 0.9, "centered": True, "weight_decay": 0.01}),
        ("rmsprop", {"centered": True}),
        ("adagrad", {"lr_decay": 0.01, "weight_decay": 0.01}),
    ],
)
def test_fused_equals_per_iteration(name, kwargs, monkeypatch):
    X, y = _data()
    out = []
    for enabled in (True, False):
        monkeypatch.setattr(fused, "ENABLED", enabled)
        model = _model(dtype=np.float32)
        opt = registry.build_optimizer(name, model.parameters(), 0.01, **kwargs)
        with mg.use_backend("numba"):
            h = mg.fit(model, X, y, optimizer=opt, epochs=2, batch_size=16, seed=4, verbose=0)
        out.append(
            (
                model.flat_values.copy(),
                {k: v.copy() for k, v in opt.state.items()},
                h.iterations["loss"],
            )
        )
    np.testing.assert_array_equal(out[0][0], out[1][0])
    assert out[0][2] == out[1][2]
    for k in out[0][1]:
        np.testing.assert_array_equal(out[0][1][k], out[1][1][k])


def test_fused_path_is_taken():
    model = _model(dtype=np.float32)
    for opt in (
        mg.RMSprop(model.parameters(), momentum=0.9, centered=True),
        mg.Adagrad(model.parameters()),
    ):
        assert opt.fused_update() is not None


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("rmsprop", {"momentum": 0.9, "centered": True}),
        ("adagrad", {"initial_accumulator_value": 0.1}),
    ],
)
def test_checkpoint_round_trip(name, kwargs, tmp_path):
    X, y = _data()
    model = _model(dtype=np.float32)
    opt = registry.build_optimizer(name, model.parameters(), 0.01, **kwargs)
    mg.fit(model, X, y, optimizer=opt, epochs=1, batch_size=16, seed=4, verbose=0)
    path = tmp_path / "ck.npz"
    mg.save_checkpoint(path, model, opt)
    model2 = _model(seed=9, dtype=np.float32)
    opt2 = registry.build_optimizer(name, model2.parameters(), 0.5)
    if name == "rmsprop":
        opt2 = registry.build_optimizer(name, model2.parameters(), 0.5, **kwargs)
    mg.load_checkpoint(path).restore(model2, opt2)
    assert opt2.hyperparameters() == opt.hyperparameters()
    assert opt2.step_count == opt.step_count
    for k in opt.state:
        np.testing.assert_array_equal(opt.state[k], opt2.state[k])
    # both continue identically
    for m, o in ((model, opt), (model2, opt2)):
        mg.fit(m, X, y, optimizer=o, epochs=1, batch_size=16, seed=5, verbose=0)
    np.testing.assert_array_equal(model.flat_values, model2.flat_values)


def test_registry_and_validation():
    assert {"rmsprop", "adagrad"} <= set(registry.names("optimizer"))
    assert registry.get("optimizer", "rmsprop") is mg.RMSprop
    assert registry.get("optimizer", "adagrad") is mg.Adagrad
    model = _model()
    with pytest.raises(ValueError, match="alpha"):
        mg.RMSprop(model.parameters(), alpha=1.5)
    with pytest.raises(ValueError, match="momentum"):
        mg.RMSprop(model.parameters(), momentum=-0.1)
    with pytest.raises(ValueError, match="eps"):
        mg.RMSprop(model.parameters(), eps=0)
    with pytest.raises(ValueError, match="lr_decay"):
        mg.Adagrad(model.parameters(), lr_decay=-1)
    with pytest.raises(ValueError, match="initial_accumulator_value"):
        mg.Adagrad(model.parameters(), initial_accumulator_value=-1)
    opt = mg.RMSprop(model.parameters())
    assert opt.state_names == ("square_avg",)
    with pytest.raises(ValueError, match="new RMSprop"):
        opt.set_hyperparameters(
            lr=0.1, alpha=0.9, eps=1e-8, weight_decay=0, momentum=0.9, centered=False
        )


@pytest.mark.parametrize("name", ["rmsprop", "adagrad"])
def test_by_name_in_estimator_lr_range_test_and_sweep(name):
    X, y = _data(n=120)
    clf = (
        mg.MLPClassifier(
            hidden=(8,), optimizer=name, lr=0.01, batch_size=16, epochs=2, random_state=0
        )
        if "random_state" in mg.MLPClassifier().get_params()
        else mg.MLPClassifier(hidden=(8,), optimizer=name, lr=0.01, batch_size=16, epochs=2)
    )
    clf.fit(X, y)
    assert 0 <= clf.score(X, y) <= 1
    result = mg.lr_range_test(
        _model(dtype=np.float32), X, y, optimizer=name, num_iter=10, batch_size=16, seed=0
    )
    assert len(result.lr) == len(result.loss) > 0
    table = mg.sweep(
        lambda: _model(dtype=np.float32),
        X,
        y,
        batch_sizes=[16],
        lrs=[0.01],
        epochs=1,
        optimizer=name,
    )
    assert len(table.table) == 1 and table.table[0]["updates"] == 8
