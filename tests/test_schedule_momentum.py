"""A schedule that sets momentum (OneCycle) drives SGD's momentum / Adam's beta1 each update,
as torch's OneCycleLR(cycle_momentum=True); recorded as history.iterations["momentum"]."""

import numpy as np
import pytest

import minigd as mg
from minigd import fused


def _data(n=80, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6)), rng.integers(0, 3, size=n)


def _model(dtype=np.float64):
    return mg.Sequential([mg.Dense(6, 8), mg.Tanh(), mg.Dense(8, 3)], seed=1, dtype=dtype)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_onecycle_momentum_matches_torch(name):
    torch = pytest.importorskip("torch")
    X, y = _data()
    model = _model()
    tw = [torch.tensor(p.value.copy(), requires_grad=True) for p in model.parameters()]
    steps = 3 * 5
    schedule = mg.OneCycle(0.5, total_steps=steps)
    if name == "sgd":
        opt = mg.SGD(model.parameters(), lr=0.1, momentum=0.9)
        topt = torch.optim.SGD(tw, lr=0.1, momentum=0.9)
    else:
        opt = mg.Adam(model.parameters(), lr=0.01)
        topt = torch.optim.Adam(tw, lr=0.01)
    tsched = torch.optim.lr_scheduler.OneCycleLR(topt, max_lr=0.5, total_steps=steps)
    h = mg.fit(
        model,
        X,
        y,
        optimizer=opt,
        epochs=3,
        batch_size=16,
        shuffle=False,
        schedule=schedule,
        verbose=0,
    )
    momenta, lrs = [], []
    key = "momentum" if name == "sgd" else "betas"
    for _ in range(3):
        for i in range(0, 80, 16):
            xb, yb = torch.tensor(X[i : i + 16]), torch.tensor(y[i : i + 16])
            out = torch.tanh(xb @ tw[0] + tw[1]) @ tw[2] + tw[3]
            topt.zero_grad()
            torch.nn.functional.cross_entropy(out, yb).backward()
            m = topt.param_groups[0][key]
            momenta.append(m if name == "sgd" else m[0])
            lrs.append(topt.param_groups[0]["lr"])
            topt.step()
            tsched.step()
    np.testing.assert_allclose(h.iterations["momentum"], momenta, rtol=1e-12)
    np.testing.assert_allclose(h.iterations["lr"], lrs, rtol=1e-12)
    assert len(set(np.round(momenta, 6))) > 3  # it really cycled
    for p, t in zip(model.parameters(), tw):
        np.testing.assert_allclose(p.value, t.detach().numpy(), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("name", ["sgd", "adam", "rmsprop"])
def test_fused_and_per_iteration_bit_identical(name, monkeypatch):
    X, y = _data(n=100)
    runs = []
    for enabled in (True, False):
        monkeypatch.setattr(fused, "ENABLED", enabled)
        model = _model(np.float32)
        opt = mg.registry.build_optimizer(
            name, model.parameters(), 0.01, **({"momentum": 0.5} if name != "adam" else {})
        )
        with mg.use_backend("numba"):
            h = mg.fit(
                model,
                X,
                y,
                optimizer=opt,
                epochs=2,
                batch_size=16,
                seed=2,
                schedule=mg.OneCycle(0.1, total_steps=14),
                verbose=0,
            )
        runs.append((model.flat_values.copy(), h.iterations, opt.hyperparameters()))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1] and runs[0][2] == runs[1][2]
    assert len(runs[0][1]["momentum"]) == 14


def test_optimizer_without_momentum_is_refused():
    X, y = _data()
    model = _model()
    with pytest.raises(TypeError, match="cycle_momentum=False"):
        mg.fit(
            model,
            X,
            y,
            optimizer=mg.Adagrad(model.parameters()),
            epochs=1,
            batch_size=16,
            schedule=mg.OneCycle(0.1, total_steps=5),
            verbose=0,
        )
    with pytest.raises(ValueError, match="RMSprop"):
        mg.fit(
            model,
            X,
            y,
            optimizer=mg.RMSprop(model.parameters()),
            epochs=1,
            batch_size=16,
            schedule=mg.OneCycle(0.1, total_steps=5),
            verbose=0,
        )
    h = mg.fit(
        model,
        X,
        y,
        optimizer=mg.Adagrad(model.parameters()),
        epochs=1,
        batch_size=16,
        schedule=mg.OneCycle(0.1, total_steps=5, cycle_momentum=False),
        verbose=0,
    )
    assert "momentum" not in h.iterations
