"""copy.copy, copy.deepcopy and pickle give an independent model that trains, predicts and saves
like the original (issue 9, item 0)."""

import copy
import pickle

import numpy as np
import pytest

import minigd as mg

COPIES = {
    "copy": copy.copy,
    "deepcopy": copy.deepcopy,
    "pickle": lambda obj: pickle.loads(pickle.dumps(obj)),
}


def blobs(n=600, features=20, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 3.0, size=(classes, features))
    y = rng.integers(0, classes, size=n)
    X = (centres[y] + rng.normal(size=(n, features))).astype(np.float32)
    return X, y


def build():
    return mg.Sequential(mg.Dense(20, 32), mg.ReLU(), mg.Dense(32, 4), seed=3)


def train(model, X, y):
    mg.fit(
        model,
        X,
        y,
        optimizer=mg.SGD(model.parameters(), lr=0.05, momentum=0.9),
        epochs=2,
        batch_size=32,
        seed=7,
    )


def is_consistent(model):
    """Every parameter, layer weight and optimizer view points into the model's flat buffers."""
    views = {id(p) for p in model.parameters()}
    for layer in model.layers:
        if isinstance(layer, mg.Dense):
            assert id(layer.weight) in views and id(layer.bias) in views
    for p in model.parameters():
        assert np.shares_memory(p.value, model.flat_values)
        assert np.shares_memory(p.grad, model.flat_grads)
    return True


@pytest.mark.parametrize("kind", COPIES)
def test_copy_trains_predicts_and_saves_like_the_original(kind, tmp_path):
    X, y = blobs()
    original = build()
    twin = COPIES[kind](original)
    assert twin is not original and is_consistent(twin)
    np.testing.assert_array_equal(twin.flat_values, original.flat_values)
    train(original, X, y)
    train(twin, X, y)
    np.testing.assert_array_equal(twin.flat_values, original.flat_values)
    for (k1, a), (k2, b) in zip(original.state_dict().items(), twin.state_dict().items()):
        assert k1 == k2
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(twin.predict_logits(X), original.predict_logits(X))
    # predict reads the weights that fit trained (the bug: it read stale copies, 5% accuracy)
    assert mg.accuracy(twin, X, y) > 0.9
    assert mg.accuracy(build(), X, y) < 0.6
    # state_dict / save / load of the copy
    mg.save_checkpoint(tmp_path / "twin.npz", twin)
    fresh = build()
    mg.load_checkpoint(tmp_path / "twin.npz").restore(fresh)
    np.testing.assert_array_equal(fresh.predict_logits(X), original.predict_logits(X))


@pytest.mark.parametrize("kind", COPIES)
def test_copy_and_original_are_independent(kind):
    X, y = blobs()
    original = build()
    original.predict(X)  # allocates the batch buffers
    before = original.flat_values.copy()
    twin = COPIES[kind](original)
    assert not np.shares_memory(twin.flat_values, original.flat_values)
    train(twin, X, y)
    np.testing.assert_array_equal(original.flat_values, before)
    twin_after = twin.flat_values.copy()
    train(original, X, y)
    np.testing.assert_array_equal(twin.flat_values, twin_after)


@pytest.mark.parametrize("kind", COPIES)
def test_copy_of_a_trained_model_keeps_its_weights_and_dtype(kind):
    X, y = blobs()
    model = mg.Sequential(
        mg.Dense(20, 16, init="torch"), mg.Tanh(), mg.Dense(16, 4), seed=1, dtype=np.float64
    )
    train(model, X, y)
    twin = COPIES[kind](model)
    assert twin.dtype == np.float64 and twin.seed == model.seed
    assert repr(twin) == repr(model)
    np.testing.assert_array_equal(twin.predict_logits(X), model.predict_logits(X))


def test_pickle_holds_the_weights_only_not_the_batch_buffers():
    model = mg.Sequential(mg.Dense(784, 128), mg.ReLU(), mg.Dense(128, 10), seed=0)
    weights = model.num_parameters() * 4  # 407,080 bytes of float32
    size = len(pickle.dumps(model))
    assert weights < size < weights + 8_000
    model.predict(np.zeros((2000, 784), np.float32))  # fills ~9 MB of batch buffers
    assert len(pickle.dumps(model)) == size
    twin = pickle.loads(pickle.dumps(model))
    assert not hasattr(twin.layers[0], "_out") and twin._capacity == 0


def test_deepcopy_of_a_list_keeps_shared_references():
    model = build()
    a, b = copy.deepcopy([model, model])
    assert a is b and a is not model


def test_deepcopy_of_model_and_optimizer_together_keeps_them_linked():
    X, y = blobs()
    model = build()
    opt = mg.SGD(model.parameters(), lr=0.05, momentum=0.9)
    mg.fit(model, X, y, optimizer=opt, epochs=1, batch_size=32, seed=7)
    model2, opt2 = copy.deepcopy((model, opt))
    assert [id(p) for p in opt2.params] == [id(p) for p in model2.parameters()]
    mg.fit(model, X, y, optimizer=opt, epochs=1, batch_size=32, seed=8)
    mg.fit(model2, X, y, optimizer=opt2, epochs=1, batch_size=32, seed=8)
    np.testing.assert_array_equal(model2.flat_values, model.flat_values)


def test_old_style_pickle_state_still_loads():
    """A state dict as pickle stored it before Sequential had __getstate__."""
    model = build()
    old = dict(model.__dict__)
    twin = mg.Sequential.__new__(mg.Sequential)
    twin.__setstate__(old)
    assert is_consistent(twin) and not np.shares_memory(twin.flat_values, model.flat_values)
    np.testing.assert_array_equal(twin.flat_values, model.flat_values)


@pytest.mark.parametrize("kind", ["deepcopy", "pickle"])
@pytest.mark.parametrize("fitted", [False, True])
def test_estimator_copies_train_and_predict_like_the_original(kind, fitted):
    X, y = blobs(n=300)
    clf = mg.MLPClassifier(hidden=(16,), lr=0.05, momentum=0.9, epochs=1, batch_size=32, seed=0)
    if fitted:
        clf.fit(X, y)
    twin = COPIES[kind](clf)
    if fitted:
        assert is_consistent(twin.model_)
        assert {id(p) for p in twin.optimizer_.params} == {id(p) for p in twin.model_.parameters()}
        np.testing.assert_array_equal(twin.predict_proba(X), clf.predict_proba(X))
        np.testing.assert_array_equal(
            twin.optimizer_.state["momentum_buffer"], clf.optimizer_.state["momentum_buffer"]
        )
        clf.partial_fit(X, y)
        twin.partial_fit(X, y)
    else:
        assert not hasattr(twin, "model_")
        clf.fit(X, y)
        twin.fit(X, y)
    np.testing.assert_array_equal(twin.model_.flat_values, clf.model_.flat_values)
    np.testing.assert_array_equal(twin.predict(X), clf.predict(X))
    assert twin.score(X, y) > 0.9


def test_estimator_pickle_stores_the_weights_once():
    """Weights once, plus SGD's momentum buffer (same size); the optimizer's views of the
    weights and the batch buffers are not stored."""
    X, y = blobs(n=300, features=784)
    clf = mg.MLPClassifier(hidden=(128,), epochs=1, seed=0).fit(X, y)
    clf.predict(X)
    weights = clf.model_.num_parameters() * 4
    assert 2 * weights < len(pickle.dumps(clf)) < 2 * weights + 20_000
