"""mg.BatchNorm: torch BatchNorm1d semantics, buffers in state_dict, gradcheck, torch check."""

import pickle

import numpy as np
import pytest

import minigd as mg


def test_train_mode_normalises_with_batch_stats_and_updates_running_stats():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(10, 4))
    bn = mg.BatchNorm(4, momentum=0.2)
    y = bn.forward(x)
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=0), x.var(axis=0) / (x.var(axis=0) + 1e-5), rtol=1e-12)
    np.testing.assert_allclose(bn.running_mean.value, 0.2 * x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var.value, 0.8 + 0.2 * x.var(axis=0, ddof=1), rtol=1e-12)
    bn.eval()
    y_eval = bn.forward(x)
    expected = (x - bn.running_mean.value) / np.sqrt(bn.running_var.value + 1e-5)
    np.testing.assert_allclose(y_eval, expected, rtol=1e-12)
    np.testing.assert_allclose(bn.running_mean.value, 0.2 * x.mean(axis=0), rtol=1e-12)


def test_batch_of_one_in_train_mode_is_a_value_error_and_fine_in_eval():
    bn = mg.BatchNorm(3)
    with pytest.raises(ValueError, match="more than 1 value per feature"):
        bn.forward(np.ones((1, 3)))
    assert bn.eval().forward(np.ones((1, 3))).shape == (1, 3)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(num_features=0), "num_features"),
        (dict(num_features=3, momentum=1.5), "momentum"),
        (dict(num_features=3, eps=0), "eps"),
        (dict(num_features=3, affine="yes"), "affine"),
    ],
)
def test_bad_arguments(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        mg.BatchNorm(**kw)


def test_state_dict_keys_follow_torch_and_travel_with_copies():
    model = mg.Sequential(mg.Dense(5, 4), mg.BatchNorm(4), mg.ReLU(), mg.Dense(4, 2), seed=0)
    assert sorted(model.state_dict()) == sorted(
        [
            "0.weight",
            "0.bias",
            "1.weight",
            "1.bias",
            "1.running_mean",
            "1.running_var",
            "3.weight",
            "3.bias",
        ]
    )
    model.forward(np.random.default_rng(1).normal(size=(8, 5)))
    for twin in (model.clone(), pickle.loads(pickle.dumps(model))):
        for key, value in model.state_dict().items():
            assert np.array_equal(twin.state_dict()[key], value), key
    assert set(mg.Sequential(mg.BatchNorm(3, affine=False), seed=0).state_dict()) == {
        "0.running_mean",
        "0.running_var",
    }


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_gradcheck(affine, training):
    bn = mg.BatchNorm(4, affine=affine)
    bn.running_mean.value[...] = 0.3
    bn.running_var.value[...] = 2.0
    bn.train(training)
    assert mg.gradcheck(bn, np.random.default_rng(2).normal(size=(7, 4))).ok
    model = mg.Sequential(mg.Dense(5, 4), mg.BatchNorm(4), mg.Tanh(), mg.Dense(4, 3), seed=0)
    assert mg.gradcheck(model.train(training), np.random.default_rng(3).normal(size=(6, 5))).ok


def test_gradcheck_can_fail_on_a_wrong_backward():
    class Wrong(mg.BatchNorm):
        def backward(self, dy):
            return super().backward(dy) * 1.01

    assert not mg.gradcheck(Wrong(3), np.random.default_rng(4).normal(size=(5, 3))).ok


def test_torch_batchnorm_network_30_sgd_steps_float64():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    X = rng.normal(1.0, 2.0, size=(240, 6))
    y = rng.integers(0, 3, 240)
    model = mg.Sequential(
        mg.Dense(6, 8, init="torch"),
        mg.BatchNorm(8, momentum=0.15),
        mg.ReLU(),
        mg.Dense(8, 3, init="torch"),
        seed=0,
        dtype=np.float64,
    )
    net = torch.nn.Sequential(
        torch.nn.Linear(6, 8),
        torch.nn.BatchNorm1d(8, momentum=0.15),
        torch.nn.ReLU(),
        torch.nn.Linear(8, 3),
    ).double()
    with torch.no_grad():
        for i in (0, 3):
            net[i].weight.copy_(torch.from_numpy(model.layers[i].weight.value.T.copy()))
            net[i].bias.copy_(torch.from_numpy(model.layers[i].bias.value.copy()))
    history = mg.fit(
        model,
        X,
        y,
        optimizer=mg.SGD(model.parameters(), lr=0.1, momentum=0.9),
        epochs=3,
        batch_size=24,
        shuffle=False,
        verbose=0,
    )
    assert history.n_iterations == 30
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    for _ in range(3):
        for start in range(0, 240, 24):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(
                net(Xt[start : start + 24]), yt[start : start + 24]
            )
            loss.backward()
            opt.step()
    state = model.state_dict()
    tol = dict(rtol=1e-9, atol=1e-11)
    for i in (0, 3):
        np.testing.assert_allclose(state[f"{i}.weight"], net[i].weight.detach().numpy().T, **tol)
        np.testing.assert_allclose(state[f"{i}.bias"], net[i].bias.detach().numpy(), **tol)
    for name in ("weight", "bias", "running_mean", "running_var"):
        np.testing.assert_allclose(
            state[f"1.{name}"], getattr(net[1], name).detach().numpy(), **tol
        )
    net.eval()
    np.testing.assert_allclose(model.predict_logits(X), net(Xt).detach().numpy(), **tol)
    assert abs(state["1.running_var"] - 1).max() > 0.1  # the stats did move


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_engine_path_matches_the_numpy_path(affine, training):
    rng = np.random.default_rng(5)
    x = rng.normal(2.0, 3.0, size=(9, 4))
    dy = rng.normal(size=(9, 4))
    a, b = (
        mg.Sequential(mg.BatchNorm(4, affine=affine), seed=0, dtype=np.float64) for _ in range(2)
    )
    for model in (a, b):
        model.buffers()[1].value[...] = 1.5
        model.train(training)
    fast = a.forward_batch(x).copy()
    dx_fast = a.backward_batch(dy, need_dx=True).copy()
    slow = b.layers[0].forward(x)
    dx_slow = b.layers[0].backward(dy)
    np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx_fast, dx_slow, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(a.flat_grads, b.flat_grads, rtol=1e-12, atol=1e-12)
    for (_, p), (_, q) in zip(a.named_buffers(), b.named_buffers()):
        np.testing.assert_allclose(p.value, q.value, rtol=1e-12)
