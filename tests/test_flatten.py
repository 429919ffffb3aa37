"""mg.Flatten: image-shaped and uint8 X in Sequential, fit, predict, evaluate (no copy)."""

import numpy as np
import pytest

import minigd as mg


def _images(n=60, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 7, 4)).astype(np.uint8), rng.integers(0, 3, n)


def test_flatten_layer_is_torch_flatten():
    x = np.arange(24.0).reshape(2, 3, 4)
    layer = mg.Flatten()
    y = layer.forward(x)
    assert y.shape == (2, 12) and np.array_equal(y, x.reshape(2, 12))
    assert layer.backward(np.ones((2, 12))).shape == (2, 3, 4)
    torch = pytest.importorskip("torch")
    assert np.array_equal(torch.nn.Flatten()(torch.from_numpy(x)).numpy(), y)


def test_image_input_fit_predict_evaluate_match_the_flat_model():
    X, y = _images()
    a = mg.Sequential(mg.Flatten(), mg.Dense(28, 8), mg.ReLU(), mg.Dense(8, 3), seed=0)
    b = mg.Sequential(mg.Dense(28, 8), mg.ReLU(), mg.Dense(8, 3), seed=0)
    assert a.n_features == 28
    b.flat_values[...] = a.flat_values
    flat = (X / 255.0).reshape(60, 28)
    for model, data in ((a, X / 255.0), (b, flat)):
        mg.fit(
            model,
            data,
            y,
            optimizer=mg.Adam(model.parameters(), lr=0.01),
            epochs=2,
            batch_size=16,
            seed=1,
            verbose=0,
        )
    assert np.array_equal(a.flat_values, b.flat_values)
    assert np.array_equal(a.predict(X / 255.0), b.predict(flat))
    assert mg.evaluate(a, X / 255.0, y) == mg.evaluate(b, flat, y)
    assert a.predict_proba(X[:5]).shape == (5, 3)


def test_uint8_memmap_images_are_not_copied(tmp_path):
    X, y = _images()
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.uint8, shape=X.shape)
    mm[...] = X
    model = mg.Sequential(mg.Flatten(), mg.Dense(28, 3), seed=0)
    view = model.check_input(mm)
    assert view.shape == (60, 28) and np.shares_memory(view, mm)
    with pytest.warns(UserWarning, match="unit scale"):
        mg.fit(
            model,
            mm,
            y,
            optimizer=mg.SGD(model.parameters(), lr=1e-5),
            epochs=1,
            batch_size=16,
            verbose=0,
        )
    assert model.predict(mm).shape == (60,)


def test_image_input_without_flatten_or_with_wrong_size_is_a_clear_error():
    X, y = _images()
    with pytest.raises(ValueError, match="2-D"):
        mg.Sequential(mg.Dense(28, 3), seed=0).predict(X)
    with pytest.raises(ValueError, match="28"):
        mg.Sequential(mg.Flatten(), mg.Dense(28, 3), seed=0).predict(X[:, :5])


def test_flatten_runs_on_the_fused_path():
    from minigd import fused

    model = mg.Sequential(mg.Flatten(), mg.Dense(28, 8), mg.ReLU(), mg.Dense(8, 3), seed=0)
    spec = fused.layer_spec(model)
    assert spec is not None and spec[0].tolist() == [[28, 8], [8, 3]]
