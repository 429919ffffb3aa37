"""SoftmaxCrossEntropy with class probabilities (N, C), as torch's cross_entropy."""

import numpy as np
import pytest

import minigd as mg


def _logits_and_soft(n=6, k=4, seed=0):
    rng = np.random.default_rng(seed)
    t = rng.random((n, k))
    return rng.normal(size=(n, k)), t / t.sum(axis=1, keepdims=True)


def test_value_and_gradient_match_torch_float64():
    torch = pytest.importorskip("torch")
    z, t = _logits_and_soft()
    loss = mg.SoftmaxCrossEntropy()
    value, grad = loss.value_and_grad(z, t)
    zt = torch.tensor(z, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(zt, torch.tensor(t))
    ref.backward()
    assert value == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(grad, zt.grad.numpy(), rtol=1e-10, atol=1e-14)
    assert loss(z, t) == pytest.approx(ref.item(), rel=1e-12)
    assert mg.gradcheck(loss, z, t).ok


def test_one_hot_equals_class_ids_and_trains_the_same():
    z, _ = _logits_and_soft()
    ids = np.array([0, 3, 1, 2, 2, 0])
    loss = mg.SoftmaxCrossEntropy()
    v1, g1 = loss.value_and_grad(z, ids)
    v2, g2 = loss.value_and_grad(z, np.eye(4)[ids])
    assert v1 == pytest.approx(v2, rel=1e-12)
    np.testing.assert_allclose(g1, g2, atol=1e-15)
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(90, 5)).astype(np.float32), rng.integers(0, 3, 90)
    a, b = (mg.Sequential(mg.Dense(5, 3), seed=0, dtype=np.float64) for _ in range(2))
    for model, targets in ((a, y), (b, np.eye(3)[y])):
        history = mg.fit(
            model,
            X,
            targets,
            optimizer=mg.SGD(model.parameters(), lr=0.1),
            epochs=2,
            batch_size=16,
            seed=0,
            verbose=0,
            validation_data=(X, targets),
        )
    np.testing.assert_allclose(a.flat_values, b.flat_values, rtol=1e-12)
    assert history.epochs["val_accuracy"][-1] == mg.evaluate(a, X, y)["accuracy"]
    assert mg.evaluate(b, X, np.eye(3)[y])["loss"] == pytest.approx(mg.evaluate(a, X, y)["loss"])


@pytest.mark.parametrize(
    "targets, match",
    [
        (np.full((6, 4), 0.3), "sums to 1.2"),
        (np.tile([1.5, -0.5, 0, 0], (6, 1)), "negative probability"),
        (np.full((6, 3), 1 / 3), "3 target column"),
        (np.full((5, 4), 0.25), "5 targets"),
    ],
)
def test_bad_probability_rows_are_a_value_error(targets, match):
    z, _ = _logits_and_soft()
    with pytest.raises(ValueError, match=match):
        mg.SoftmaxCrossEntropy().check_targets(targets, 6, 4)
    with pytest.raises(ValueError, match="class probabilities"):
        mg.SoftmaxCrossEntropy()(z, targets)


def test_predict_proba_is_softmax_in_eval_mode():
    model = mg.Sequential(mg.Dense(5, 4), mg.Dropout(0.5), seed=0, dtype=np.float64)
    X = np.random.default_rng(2).normal(size=(9, 5))
    p = model.predict_proba(X)
    z = X @ model.layers[0].weight.value + model.layers[0].bias.value
    np.testing.assert_allclose(p, np.exp(z) / np.exp(z).sum(axis=1, keepdims=True), rtol=1e-12)
    assert model.training
