import numpy as np
import pytest

import minigd as mg


def test_loss_worked_by_hand():
    logits = np.array([[0.0, np.log(3.0)]])
    loss = mg.SoftmaxCrossEntropy()
    assert loss.forward(logits, [1]) == pytest.approx(np.log(4 / 3), rel=1e-12)
    np.testing.assert_allclose(loss.backward(), [[0.25, -0.25]], rtol=1e-12)


def test_loss_is_mean_over_batch():
    rng = np.random.default_rng(0)
    logits, y = rng.normal(size=(6, 4)), rng.integers(0, 4, 6)
    loss = mg.SoftmaxCrossEntropy()
    per_row = [mg.SoftmaxCrossEntropy().forward(logits[i : i + 1], y[i : i + 1]) for i in range(6)]
    assert loss.forward(logits, y) == pytest.approx(np.mean(per_row), rel=1e-12)
    np.testing.assert_allclose(loss.backward().sum(axis=1), 0, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_loss_is_stable_for_huge_logits(dtype, backend):
    logits = np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 1e4]], dtype=dtype)
    loss = mg.SoftmaxCrossEntropy()
    value = loss.forward(logits, [0, 0])
    assert np.isfinite(value)
    assert value == pytest.approx((0 + (1e4 + np.log(2))) / 2, rel=1e-6)
    grad = loss.backward()
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, [[0, 0, 0], [-0.5, 0.25, 0.25]], atol=1e-6)


def test_loss_rejects_bad_labels():
    loss = mg.SoftmaxCrossEntropy()
    with pytest.raises(ValueError, match="y"):
        loss.forward(np.zeros((2, 3)), [0, 3])
    with pytest.raises(ValueError, match="y"):
        loss.forward(np.zeros((2, 3)), [0])
    with pytest.raises(RuntimeError):
        mg.SoftmaxCrossEntropy().backward()


def test_loss_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    logits, y = rng.normal(size=(9, 7)) * 3, rng.integers(0, 7, 9)
    t_logits = torch.tensor(logits, requires_grad=True)
    t_loss = torch.nn.functional.cross_entropy(t_logits, torch.tensor(y))
    t_loss.backward()
    loss = mg.SoftmaxCrossEntropy()
    assert loss.forward(logits, y) == pytest.approx(t_loss.item(), rel=1e-12)
    np.testing.assert_allclose(loss.backward(), t_logits.grad.numpy(), rtol=1e-10, atol=1e-15)
