"""mg.MSELoss: torch MSELoss (mean over all elements), both backends' kernels, gradcheck, fit."""

import numpy as np
import pytest

import minigd as mg
from minigd import registry
from minigd.kernels import jit, reference


def data(n=7, k=3, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, k)).astype(dtype), rng.normal(size=(n, k)).astype(dtype)


def test_registry_name_and_kind():
    assert registry.get("loss", "mse") is mg.MSELoss
    assert mg.MSELoss().target_kind == "values"
    assert mg.MSELoss().metric_names == ("mse", "r2")


@pytest.mark.parametrize("k", [1, 3])
def test_value_and_grad_match_the_formula(k):
    out, tgt = data(k=k)
    value, grad = mg.MSELoss().value_and_grad(out, tgt)
    assert value == pytest.approx(np.mean((out - tgt) ** 2), rel=1e-14)
    np.testing.assert_allclose(grad, 2 * (out - tgt) / out.size, rtol=1e-14)


@pytest.mark.parametrize("kernels", [reference, jit], ids=["numpy", "numba"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_agree_with_the_numpy_math_into_a_reused_buffer(kernels, dtype):
    out, tgt = data(n=9, k=2, dtype=dtype)
    grad = np.full_like(out, np.nan)
    before = grad.__array_interface__["data"][0]
    value = mg.MSELoss().value_and_grad_into(out, tgt, grad, kernels)
    expected_value, expected_grad = mg.MSELoss().value_and_grad(
        out.astype(np.float64), tgt.astype(np.float64)
    )
    rtol = 1e-6 if dtype == np.float32 else 1e-13
    assert value == pytest.approx(expected_value, rel=rtol)
    np.testing.assert_allclose(grad, expected_grad, rtol=rtol)
    assert grad.dtype == dtype and grad.__array_interface__["data"][0] == before


@pytest.mark.parametrize("shape", [(6,), (6, 1), (6, 4)])
def test_torch_float64_value_and_gradient(shape):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    out = rng.normal(size=shape if len(shape) == 2 else (shape[0], 1))
    tgt = rng.normal(size=shape)
    t_out = torch.tensor(out.reshape(tgt.shape), requires_grad=True)
    t_loss = torch.nn.MSELoss()(t_out, torch.tensor(tgt))
    t_loss.backward()
    value, grad = mg.MSELoss().value_and_grad(out, tgt)
    assert value == pytest.approx(t_loss.item(), rel=1e-14)
    np.testing.assert_allclose(grad.reshape(tgt.shape), t_out.grad.numpy(), rtol=1e-14)
    for kernels in (reference, jit):
        g = np.empty_like(out)
        v = mg.MSELoss().value_and_grad_into(out, tgt.reshape(out.shape), g, kernels)
        assert v == pytest.approx(t_loss.item(), rel=1e-13)
        np.testing.assert_allclose(g.reshape(tgt.shape), t_out.grad.numpy(), rtol=1e-13)


def test_a_wrong_gradient_would_be_caught_by_the_torch_check():
    torch = pytest.importorskip("torch")
    out, tgt = data()
    t_out = torch.tensor(out, requires_grad=True)
    torch.nn.MSELoss()(t_out, torch.tensor(tgt)).backward()
    wrong = 2 * (out - tgt) / out.shape[0]  # mean over rows only: not torch's mean
    assert not np.allclose(wrong, t_out.grad.numpy())


def test_gradcheck():
    out, tgt = data(n=4, k=2)
    mg.gradcheck(mg.MSELoss(), out, tgt).assert_ok()


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="MSELoss.*shape"):
        mg.MSELoss().value_and_grad(np.zeros((4, 2)), np.zeros((4, 3)))


def test_fit_targets_are_checked_through_the_loss():
    model = mg.Sequential(mg.Dense(3, 2), seed=0)
    X = np.zeros((5, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="MSELoss takes real-valued targets of shape \\(N, 2\\)"):
        mg.fit(
            model,
            X,
            np.zeros((5, 3)),
            optimizer=mg.SGD(model.parameters(), lr=0.1),
            loss=mg.MSELoss(),
            epochs=1,
            batch_size=2,
            verbose=0,
        )


def test_fit_on_a_linear_target_drives_r2_to_one(backend):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4))
    y = X @ np.array([1.0, -2.0, 0.5, 3.0]) + 1.0
    model = mg.Sequential(mg.Dense(4, 1), seed=0, dtype=np.float64)
    history = mg.fit(
        model,
        X,
        y,
        optimizer=mg.SGD(model.parameters(), lr=0.05),
        loss=mg.MSELoss(),
        epochs=30,
        batch_size=16,
        seed=0,
        validation_data=(X, y),
        verbose=0,
    )
    assert history.epochs["val_r2"][-1] > 0.9999
    assert history.epochs["val_mse"][-1] == pytest.approx(history.epochs["val_loss"][-1])
    result = mg.evaluate(model, X, y, loss=mg.MSELoss())
    assert result["loss"] < 1e-4


def test_fit_equals_the_user_written_mse_bit_for_bit():
    class MyMSE(mg.Loss):
        target_kind = "values"

        def value_and_grad(self, outputs, targets):
            diff = outputs - targets
            return float(np.mean(diff * diff)), diff * (2.0 / diff.size)

    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(50, 3)), rng.normal(size=(50, 2))
    runs = []
    for loss in (mg.MSELoss(), MyMSE()):
        with mg.use_backend("numpy"):
            model = mg.Sequential(
                mg.Dense(3, 5), mg.Tanh(), mg.Dense(5, 2), seed=1, dtype=np.float64
            )
            h = mg.fit(
                model,
                X,
                Y,
                optimizer=mg.SGD(model.parameters(), lr=0.1),
                loss=loss,
                epochs=2,
                batch_size=8,
                seed=0,
                verbose=0,
            )
            runs.append((model.flat_values.copy(), h.iterations["loss"]))
    np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=1e-12)
    np.testing.assert_allclose(runs[0][1], runs[1][1], rtol=1e-12)
