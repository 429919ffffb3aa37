"""Finite-difference gradient checks in float64 for every layer and the loss."""

import numpy as np
import pytest

import minigd as mg

EPS = 1e-6
RTOL = 1e-6


def numeric_gradient(f, array):
    """Central differences of scalar f() with respect to every entry of ``array`` (in place)."""
    grad = np.zeros_like(array)
    flat, gflat = array.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        saved = flat[i]
        flat[i] = saved + EPS
        plus = f()
        flat[i] = saved - EPS
        minus = f()
        flat[i] = saved
        gflat[i] = (plus - minus) / (2 * EPS)
    return grad


def assert_close(analytic, numeric):
    scale = max(1.0, np.abs(numeric).max())
    np.testing.assert_allclose(analytic, numeric, rtol=0, atol=RTOL * scale)


ACTIVATIONS = [mg.ReLU, mg.Tanh, mg.Sigmoid]


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("batch", [1, 2, 7])
def test_network_gradients_match_finite_differences(activation, batch, backend):
    rng = np.random.default_rng(batch)
    n_in, n_hidden = int(rng.integers(1, 6)), int(rng.integers(1, 7))
    n_out = int(rng.integers(2, 5))
    model = mg.Sequential(
        mg.Dense(n_in, n_hidden),
        activation(),
        mg.Dense(n_hidden, n_out),
        seed=batch,
        dtype=np.float64,
    )
    x = rng.normal(size=(batch, n_in))
    y = rng.integers(0, n_out, size=batch)
    loss = mg.SoftmaxCrossEntropy()

    def objective():
        return loss.forward(model.forward(x), y)

    objective()
    dx = model.backward(loss.backward())
    for param in model.parameters():
        assert_close(param.grad, numeric_gradient(objective, param.value))
    assert_close(dx, numeric_gradient(objective, x))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_backward_matches_finite_differences(activation, backend):
    rng = np.random.default_rng(1)
    model = mg.Sequential(mg.Dense(3, 4), activation(), seed=0, dtype=np.float64)
    x = rng.normal(size=(5, 3)) * 3
    weights = rng.normal(size=(5, 4))

    def objective():
        return float(np.sum(model.forward(x) * weights))

    objective()
    dx = model.backward(weights)
    assert_close(dx, numeric_gradient(objective, x))


@pytest.mark.parametrize("batch", [1, 3, 16])
def test_softmax_cross_entropy_gradient(batch, backend):
    rng = np.random.default_rng(batch)
    logits = rng.normal(size=(batch, 5)) * 4
    y = rng.integers(0, 5, size=batch)
    loss = mg.SoftmaxCrossEntropy()
    loss.forward(logits, y)
    analytic = loss.backward()
    numeric = numeric_gradient(lambda: mg.SoftmaxCrossEntropy().forward(logits, y), logits)
    assert_close(analytic, numeric)
