import numpy as np
import pytest

import minigd as mg


def mlp(seed=0, dtype=np.float32):
    return mg.Sequential(mg.Dense(6, 5), mg.ReLU(), mg.Dense(5, 3), seed=seed, dtype=dtype)


def test_shapes_dtypes_and_parameter_views():
    model = mlp()
    params = model.parameters()
    assert [p.shape for p in params] == [(6, 5), (5,), (5, 3), (3,)]
    assert all(p.dtype == np.float32 for p in params)
    assert model.num_parameters() == 6 * 5 + 5 + 5 * 3 + 3
    params[0].value[0, 0] = 42.0
    assert model.flat_values[0] == 42.0
    out = model(np.ones((4, 6)))
    assert out.shape == (4, 3) and out.dtype == np.float32
    assert mlp(dtype=np.float64)(np.ones((2, 6))).dtype == np.float64


def test_forward_is_the_written_formula():
    model = mlp(dtype=np.float64)
    x = np.random.default_rng(0).normal(size=(4, 6))
    w0, b0, w1, b1 = (p.value for p in model.parameters())
    np.testing.assert_allclose(model(x), np.maximum(x @ w0 + b0, 0) @ w1 + b1, rtol=1e-12)


def test_forward_returns_a_new_array():
    model = mlp()
    a = model(np.ones((2, 6)))
    model(np.zeros((2, 6)))
    assert not np.shares_memory(a, model(np.ones((2, 6))))
    np.testing.assert_array_equal(a, model(np.ones((2, 6))))


def test_same_seed_same_weights_other_seed_differs():
    np.testing.assert_array_equal(mlp(3).flat_values, mlp(3).flat_values)
    assert not np.array_equal(mlp(3).flat_values, mlp(4).flat_values)
    np.testing.assert_allclose(mlp(3, np.float64).flat_values, mlp(3).flat_values, rtol=1e-6)


def test_he_init_statistics():
    model = mg.Sequential(mg.Dense(400, 300), seed=0, dtype=np.float64)
    w = model.parameters()[0].value
    assert w.std() == pytest.approx(np.sqrt(2 / 400), rel=0.02)
    assert np.all(model.parameters()[1].value == 0)


def test_state_dict_round_trip_and_copies():
    a, b = mlp(1), mlp(2)
    state = a.state_dict()
    assert list(state) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    state["0.weight"][...] = 0
    assert not np.all(a.parameters()[0].value == 0)
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a.flat_values, b.flat_values)


@pytest.mark.parametrize(
    "mutate,exc,match",
    [
        (lambda s: s.pop("0.bias"), ValueError, "missing"),
        (lambda s: s.update({"9.weight": np.zeros(1)}), ValueError, "unexpected"),
        (lambda s: s.update({"0.weight": np.zeros((5, 6), np.float32)}), ValueError, "shape"),
        (lambda s: s.update({"0.weight": s["0.weight"].astype(np.float64)}), TypeError, "dtype"),
        (lambda s: s.update({"2.bias": np.full(3, np.nan, np.float32)}), ValueError, "NaN"),
    ],
)
def test_load_state_dict_rejects_and_changes_nothing(mutate, exc, match):
    model = mlp()
    before = model.flat_values.copy()
    state = mlp(9).state_dict()
    mutate(state)
    with pytest.raises(exc, match=match):
        model.load_state_dict(state)
    np.testing.assert_array_equal(model.flat_values, before)


def test_load_state_dict_reads_an_npz_and_any_mapping(tmp_path):
    import types

    a, b = mlp(1), mlp(2)
    path = tmp_path / "model.npz"
    np.savez(path, **a.state_dict())  # as `minigd train` writes model.npz
    with np.load(path, allow_pickle=False) as archive:
        b.load_state_dict(archive)
    np.testing.assert_array_equal(a.flat_values, b.flat_values)
    c = mlp(3)
    c.load_state_dict(types.MappingProxyType(a.state_dict()))
    np.testing.assert_array_equal(a.flat_values, c.flat_values)
    np.savez(path, **{**a.state_dict(), "extra": np.zeros(1)})
    before = c.flat_values.copy()
    with np.load(path) as archive, pytest.raises(ValueError, match="unexpected"):
        mlp(3).load_state_dict(archive)
    np.testing.assert_array_equal(c.flat_values, before)
    with pytest.raises(TypeError, match="mapping"):
        c.load_state_dict(list(a.state_dict().items()))


def test_predict_and_accuracy():
    model = mlp(dtype=np.float64)
    X = np.random.default_rng(0).normal(size=(5000, 6))
    pred = model.predict(X)
    assert pred.dtype == np.int64
    np.testing.assert_array_equal(pred, model(X).argmax(axis=1))
    assert mg.accuracy(model, X, pred) == 1.0
    assert mg.accuracy(model, X, (pred + 1) % 3) == 0.0


def test_clone_is_independent():
    model = mlp()
    copy = model.clone()
    np.testing.assert_array_equal(copy.flat_values, model.flat_values)
    copy.parameters()[0].value[...] = 0
    assert not np.all(model.parameters()[0].value == 0)


def test_construction_errors():
    with pytest.raises(ValueError, match="expects 4 inputs"):
        mg.Sequential(mg.Dense(3, 5), mg.ReLU(), mg.Dense(4, 2))
    with pytest.raises(TypeError, match="dtype"):
        mg.Sequential(mg.Dense(3, 5), dtype=np.int32)
    with pytest.raises(TypeError, match="layer 1"):
        mg.Sequential(mg.Dense(3, 5), "relu")
    with pytest.raises(ValueError, match="init"):
        mg.Dense(3, 5, init="glorot_magic")
    relu = mg.ReLU()
    with pytest.raises(ValueError, match="twice"):
        mg.Sequential(mg.Dense(3, 3), relu, mg.Dense(3, 3), relu)


def test_forward_rejects_bad_input():
    model = mlp()
    with pytest.raises(ValueError, match="6"):
        model(np.ones((2, 5)))
    with pytest.raises(ValueError, match="NaN"):
        model(np.full((2, 6), np.nan))
    with pytest.raises(ValueError, match="2-D"):
        model(np.ones(6))
    with pytest.raises(RuntimeError, match="forward"):
        model.backward(np.ones((2, 3)))
    model(np.ones((2, 6)))
    with pytest.raises(ValueError, match="dlogits"):
        model.backward(np.ones((3, 3)))


def test_repr_lists_layers():
    text = repr(mlp())
    assert "(0): Dense(6, 5, init='he')" in text and "(1): ReLU()" in text
    assert "53 parameters" in text
