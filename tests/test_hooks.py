"""A subclass of a built-in that rewrites only the math gets the math it wrote (minigd.hooks)."""

import numpy as np

import minigd as mg
from minigd.hooks import hooks_apply


class DoubleDense(mg.Dense):
    """Dense with twice the output: rewrites forward/backward only."""

    def forward(self, x):
        self.x = x
        return 2 * (x @ self.weight.value + self.bias.value)

    def backward(self, dy):
        self.weight.grad[...] = 2 * self.x.T @ dy
        self.bias.grad[...] = 2 * dy.sum(axis=0)
        return 2 * dy @ self.weight.value.T


class HundredfoldSGD(mg.SGD):
    def update(self, value, grad, state, lr):
        value -= 100 * lr * grad


class HalfCrossEntropy(mg.SoftmaxCrossEntropy):
    def value_and_grad(self, outputs, targets):
        z = outputs - outputs.max(axis=1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        n = len(targets)
        value = -np.log(p[np.arange(n), targets]).mean() / 2
        p[np.arange(n), targets] -= 1
        return value, p / n / 2


def test_rule_on_classes():
    assert hooks_apply(mg.Dense, ("forward_batch",), ("forward",))
    assert not hooks_apply(DoubleDense, ("forward_batch",), ("forward",))
    assert hooks_apply(mg.SGD, ("update_flat",), ("update",))
    assert not hooks_apply(HundredfoldSGD, ("update_flat",), ("update",))
    assert not hooks_apply(HalfCrossEntropy, ("value_and_grad_into",), ("value_and_grad",))


def test_subclass_math_is_used_in_forward_and_training():
    x = np.random.default_rng(0).normal(size=(5, 3))
    model = mg.Sequential(DoubleDense(3, 2), seed=0, dtype=np.float64)
    layer = model.layers[0]
    expected = 2 * (x @ layer.weight.value + layer.bias.value)
    np.testing.assert_allclose(model.forward(x), expected, rtol=1e-12)
    assert layer.fused_role() is None


def test_optimizer_subclass_update_is_used():
    model = mg.Sequential(mg.Dense(3, 2), seed=0, dtype=np.float64)
    opt = HundredfoldSGD(model.parameters(), lr=0.01)
    before = model.flat_values.copy()
    model.flat_grads[...] = 1.0
    opt.step()
    np.testing.assert_allclose(model.flat_values, before - 1.0, rtol=1e-12)
    assert opt.fused_update() is None


def test_loss_subclass_value_is_used_by_fit_and_evaluate():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    model = mg.Sequential(mg.Dense(3, 2), seed=0, dtype=np.float64)
    full = mg.evaluate(model, X, y)["loss"]
    half = mg.evaluate(model, X, y, loss=HalfCrossEntropy())["loss"]
    np.testing.assert_allclose(half, full / 2, rtol=1e-12)
    h = mg.fit(
        model,
        X,
        y,
        optimizer=mg.SGD(model.parameters(), lr=0.1),
        loss=HalfCrossEntropy(),
        epochs=1,
        batch_size=40,
        verbose=0,
    )
    np.testing.assert_allclose(h.iterations["loss"][0], full / 2, rtol=1e-12)
