"""fit(grad_clip=...): torch's clip_grad_norm_; history.iterations["grad_norm"] always."""

import numpy as np
import pytest

import minigd as mg
from minigd import fused


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6)), rng.integers(0, 3, size=n)


def _model(dtype=np.float64):
    return mg.Sequential([mg.Dense(6, 8), mg.ReLU(), mg.Dense(8, 3)], seed=1, dtype=dtype)


@pytest.mark.parametrize("max_norm", [None, 0.05, 100.0])
def test_clipping_matches_torch(max_norm):
    torch = pytest.importorskip("torch")
    X, y = _data()
    model = _model()
    tw = [torch.tensor(p.value.copy(), requires_grad=True) for p in model.parameters()]
    h = mg.fit(
        model,
        X,
        y,
        optimizer=mg.SGD(model.parameters(), lr=0.5, momentum=0.9),
        epochs=2,
        batch_size=16,
        shuffle=False,
        grad_clip=max_norm,
        verbose=0,
    )
    opt = torch.optim.SGD(tw, lr=0.5, momentum=0.9)
    norms = []
    for _ in range(2):
        for i in range(0, 64, 16):
            xb, yb = torch.tensor(X[i : i + 16]), torch.tensor(y[i : i + 16])
            out = torch.relu(xb @ tw[0] + tw[1]) @ tw[2] + tw[3]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(out, yb).backward()
            norm = torch.nn.utils.clip_grad_norm_(
                tw, float("inf") if max_norm is None else max_norm
            )
            norms.append(float(norm))
            opt.step()
    np.testing.assert_allclose(h.iterations["grad_norm"], norms, rtol=1e-12)
    for p, t in zip(model.parameters(), tw):
        np.testing.assert_allclose(p.value, t.detach().numpy(), rtol=1e-10, atol=1e-13)
    if max_norm == 0.05:  # clipping really happened and changed the result
        assert min(norms) > 0.05


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("clip", [None, 0.1])
def test_fused_and_per_iteration_bit_identical(dtype, clip, monkeypatch):
    X, y = _data(n=203)
    runs = []
    for enabled in (True, False):
        monkeypatch.setattr(fused, "ENABLED", enabled)
        model = _model(dtype)
        opt = mg.Adam(model.parameters(), lr=0.01)
        with mg.use_backend("numba"):
            h = mg.fit(
                model,
                X,
                y,
                optimizer=opt,
                epochs=2,
                batch_size=32,
                seed=3,
                grad_clip=clip,
                verbose=0,
            )
        runs.append((model.flat_values.copy(), h.iterations))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]
    assert len(runs[0][1]["grad_norm"]) == 14 and all(v > 0 for v in runs[0][1]["grad_norm"])


def test_grad_norm_numpy_backend_and_validation():
    X, y = _data()
    model = _model()
    with mg.use_backend("numpy"):
        h = mg.fit(
            model,
            X,
            y,
            optimizer=mg.SGD(model.parameters(), lr=0.1),
            epochs=1,
            batch_size=16,
            verbose=0,
        )
    assert len(h.iterations["grad_norm"]) == 4
    with pytest.raises(ValueError, match="grad_clip"):
        mg.fit(
            model,
            X,
            y,
            optimizer=mg.SGD(model.parameters(), lr=0.1),
            epochs=1,
            batch_size=16,
            verbose=0,
            grad_clip=0,
        )


def test_old_history_without_grad_norm_loads():
    X, y = _data()
    model = _model()
    h = mg.fit(
        model,
        X,
        y,
        optimizer=mg.SGD(model.parameters(), lr=0.1),
        epochs=1,
        batch_size=16,
        verbose=0,
    )
    d = h.to_dict()
    del d["iterations"]["grad_norm"]
    back = mg.History.from_dict(d)
    assert back.iterations["grad_norm"] == [None] * 4


def test_plot_shows_grad_norm():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    X, y = _data()
    model = _model()
    h = mg.fit(
        model,
        X,
        y,
        optimizer=mg.SGD(model.parameters(), lr=0.1),
        epochs=1,
        batch_size=16,
        verbose=0,
    )
    fig = mg.plot.history(h, grad_norm=True)
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert "grad norm" in labels
    assert "grad norm" not in [ax.get_ylabel() for ax in mg.plot.history(h).axes]
