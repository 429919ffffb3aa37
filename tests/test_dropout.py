"""mg.Dropout: inverted dropout, train/eval modes, reproducible masks, exact resume, gradcheck."""

import numpy as np
import pytest

import minigd as mg


def _data(n=150, d=12, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, k, n)


def _model(p=0.5, seed=0):
    return mg.Sequential(mg.Dense(12, 16), mg.ReLU(), mg.Dropout(p), mg.Dense(16, 3), seed=seed)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, float("nan"), "0.5", True, None])
def test_p_outside_0_1_is_a_value_error(p):
    with pytest.raises(ValueError, match="p"):
        mg.Dropout(p)


def test_train_mode_keeps_units_with_prob_1_minus_p_and_scales():
    layer = mg.Dropout(0.25)
    x = np.ones((400, 50))
    y = layer.forward(x)
    assert set(np.unique(y)) <= {0.0, 1 / 0.75}
    kept = np.mean(y != 0)
    assert abs(kept - 0.75) < 0.02
    dy = np.arange(20000.0).reshape(400, 50)
    np.testing.assert_allclose(layer.backward(dy), dy * (y != 0) / 0.75, rtol=1e-15)


def test_eval_mode_and_p_zero_are_the_identity():
    x = np.random.default_rng(1).normal(size=(5, 4))
    assert np.array_equal(mg.Dropout(0.9).eval().forward(x), x)
    assert np.array_equal(mg.Dropout(0.0).forward(x), x)
    model = _model(0.9)
    logits = model.predict_logits(x.repeat(3, axis=1)[:, :12])
    assert np.array_equal(logits, model.predict_logits(x.repeat(3, axis=1)[:, :12]))
    assert model.training  # predict restored the mode


def test_engine_path_matches_numpy_path():
    x = np.random.default_rng(2).normal(size=(7, 12)).astype(np.float32)
    a, b = _model(seed=4), _model(seed=4)
    a.layers[2].reseed((1, 2, 3, 2))
    b.layers[2].reseed((1, 2, 3, 2))
    fast = a.forward_batch(x).copy()
    slow = b.forward(x)
    np.testing.assert_allclose(fast, slow, rtol=1e-6)


def _fit(model, X, y, **kw):
    return mg.fit(
        model,
        X,
        y,
        optimizer=mg.SGD(model.parameters(), lr=0.05, momentum=0.9),
        epochs=3,
        batch_size=16,
        seed=7,
        verbose=0,
        **kw,
    )


def test_same_seeds_reproduce_the_run_bit_for_bit_and_seeds_matter():
    X, y = _data()
    a, b, c, d = _model(), _model(), _model(), _model(seed=1)
    ha, hb = _fit(a, X, y), _fit(b, X, y)
    assert np.array_equal(a.flat_values, b.flat_values)
    assert ha.iterations["loss"] == hb.iterations["loss"]
    mg.fit(
        c,
        X,
        y,
        optimizer=mg.SGD(c.parameters(), lr=0.05, momentum=0.9),
        epochs=3,
        batch_size=16,
        seed=8,
        verbose=0,
    )
    assert not np.array_equal(a.flat_values, c.flat_values)  # the fit seed changes masks
    d.flat_values[...] = _model().flat_values
    _fit(d, X, y)
    assert not np.array_equal(a.flat_values, d.flat_values)  # so does the model seed


def test_dropout_changes_training():
    X, y = _data()
    a, b = _model(0.5), _model(0.0)
    _fit(a, X, y), _fit(b, X, y)
    assert not np.array_equal(a.flat_values, b.flat_values)


class _Kill(mg.Callback):
    per_iteration = True

    def __init__(self, at):
        self.at = at

    def on_iteration_end(self, state):
        if state.step == self.at:
            raise KeyboardInterrupt("killed")


@pytest.mark.parametrize("batch_norm", [False, True])
def test_killed_mid_epoch_and_resumed_is_bit_identical(tmp_path, batch_norm):
    X, y = _data()  # 150 rows / 16 -> 10 updates per epoch

    def model():
        extra = [mg.BatchNorm(16)] if batch_norm else []
        return mg.Sequential(
            mg.Dense(12, 16), *extra, mg.ReLU(), mg.Dropout(0.4), mg.Dense(16, 3), seed=0
        )

    ref = model()
    ref_history = _fit(ref, X, y)
    path = tmp_path / "c.npz"
    with pytest.raises(KeyboardInterrupt):
        _fit(model(), X, y, callbacks=[_Kill(17)], checkpoint=path, checkpoint_every=5)
    saved = mg.load_checkpoint(path)
    assert saved.training["step"] == 15 and saved.training["iteration"] == 5
    resumed = model()
    history = _fit(resumed, X, y, checkpoint=path, resume=True)
    assert np.array_equal(resumed.flat_values, ref.flat_values)
    for (key, mine), (_, theirs) in zip(resumed.named_buffers(), ref.named_buffers()):
        assert np.array_equal(mine.value, theirs.value), key
    assert history.iterations["loss"] == ref_history.iterations["loss"]


def test_gradcheck_with_a_fixed_mask():
    x = np.random.default_rng(3).normal(size=(6, 5))
    assert mg.gradcheck(mg.Dropout(0.5), x).ok
    assert mg.gradcheck(_model(0.3), np.random.default_rng(4).normal(size=(5, 12))).ok


def test_clone_pickle_and_state_dict():
    import pickle

    model = _model(0.2)
    assert list(model.state_dict()) == ["0.weight", "0.bias", "3.weight", "3.bias"]
    twin = pickle.loads(pickle.dumps(model))
    assert repr(twin.layers[2]) == "Dropout(p=0.2)"
    assert model.clone().layers[2].p == 0.2
