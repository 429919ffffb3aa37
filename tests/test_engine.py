"""The open engine: user-written layers and optimizers, train/eval mode, buffers, fused roles."""

import copy
import pickle

import numpy as np
import pytest

import minigd as mg
from minigd import fused
from minigd.kernels import codes
from minigd.layers import Layer
from minigd.training import TrainingState


class Scale(Layer):
    """y = x * gamma, one gamma per feature (the example of docs/extending.md)."""

    def __init__(self, n):
        super().__init__()
        self.gamma = self.parameter("gamma", (n,), init=1.0)

    def forward(self, x):
        self.x = x
        return x * self.gamma.value

    def backward(self, dy):
        self.gamma.grad[...] = (dy * self.x).sum(axis=0)
        return dy * self.gamma.value


class RowCounter(Layer):
    """Identity that counts the rows it saw in training mode (a buffer) and logs each mode."""

    def __init__(self):
        super().__init__()
        self.seen = self.buffer("seen", (1,))
        self.modes = []

    def forward(self, x):
        self.modes.append(self.training)
        if self.training:
            self.seen.value += x.shape[0]
        return x

    def backward(self, dy):
        return dy


class SignSGD(mg.Optimizer):
    """p <- p - lr * sign(grad)."""

    def update(self, value, grad, state, lr):
        value -= lr * np.sign(grad)


def data(n=48, features=4, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, features)).astype(np.float32)
    return X, (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 1).astype(np.int64)


def scale_model(seed=0):
    return mg.Sequential(Scale(4), mg.Dense(4, 5), mg.ReLU(), mg.Dense(5, 3), seed=seed)


def test_a_user_layer_declares_its_parameter_and_joins_the_flat_buffer():
    model = scale_model()
    keys = [key for key, _ in model.named_parameters()]
    assert keys == ["0.gamma", "1.weight", "1.bias", "3.weight", "3.bias"]
    gamma = model.layers[0].gamma
    assert gamma.offset == 0 and gamma.value.dtype == np.float32
    assert np.shares_memory(gamma.value, model.flat_values)
    np.testing.assert_array_equal(gamma.value, np.ones(4, dtype=np.float32))
    assert model.layers[1].weight.offset == 4
    # the Dense weights are drawn exactly as in a model without the user layer (one seed per layer)
    plain = mg.Sequential(mg.ReLU(), mg.Dense(4, 5), mg.ReLU(), mg.Dense(5, 3), seed=0)
    np.testing.assert_array_equal(model.flat_values[4:], plain.flat_values)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_a_user_layer_trains_predicts_and_says_once_it_is_not_fused(backend, capsys, tmp_path):
    X, y = data()
    model = scale_model()
    with mg.use_backend(backend):
        history = mg.fit(
            model,
            X,
            y,
            optimizer=mg.SGD(model.parameters(), lr=0.2, momentum=0.9),
            epochs=4,
            batch_size=8,
            seed=0,
            verbose=2,
        )
    out = capsys.readouterr().out
    says = "layer Scale has no fused kernel: training runs one Python iteration per update"
    assert out.count(says) == (1 if backend == "numba" else 0)
    losses = history.epochs["train_loss"]
    assert losses[-1] < losses[0]
    assert not np.array_equal(model.layers[0].gamma.value, np.ones(4))
    assert model.predict(X).shape == (48,)

    path = tmp_path / "run.npz"
    opt = mg.SGD(model.parameters(), lr=0.2, momentum=0.9)
    mg.save_checkpoint(path, model, opt, history=history)
    twin = scale_model(seed=1)
    twin_opt = mg.SGD(twin.parameters(), lr=0.2, momentum=0.9)
    mg.load_checkpoint(path).restore(twin, twin_opt)
    assert twin.flat_values.tobytes() == model.flat_values.tobytes()
    np.testing.assert_array_equal(twin.predict_logits(X), model.predict_logits(X))


def test_a_user_layer_backward_matches_finite_differences():
    rng = np.random.default_rng(0)
    model = mg.Sequential(Scale(3), mg.Dense(3, 2), seed=0, dtype=np.float64)
    model.layers[0].gamma.value[...] = rng.normal(size=3)
    x = rng.normal(size=(5, 3))
    dlogits = rng.normal(size=(5, 2))
    model.forward(x)
    model.backward(dlogits)
    gamma = model.layers[0].gamma
    numeric = np.empty(3)
    for i in range(3):
        old = gamma.value[i]
        gamma.value[i] = old + 1e-6
        plus = np.sum(model.forward(x) * dlogits)
        gamma.value[i] = old - 1e-6
        minus = np.sum(model.forward(x) * dlogits)
        gamma.value[i] = old
        numeric[i] = (plus - minus) / 2e-6
    np.testing.assert_allclose(gamma.grad, numeric, rtol=1e-6, atol=1e-9)


def test_a_user_optimizer_steps_per_parameter_and_saves_in_checkpoints(tmp_path):
    X, y = data()
    model = mg.Sequential(mg.Dense(4, 5), mg.Tanh(), mg.Dense(5, 3), seed=0)
    opt = SignSGD(model.parameters(), lr=0.01)
    rng = np.random.default_rng(1)
    model.flat_grads[...] = rng.normal(size=model.flat_grads.shape)
    before = model.flat_values.copy()
    opt.step()
    expected = before - np.float32(0.01) * np.sign(model.flat_grads)
    assert model.flat_values.tobytes() == expected.astype(np.float32).tobytes()
    assert opt.step_count == 1 and opt.fused_update() is None

    with mg.use_backend("numba"):
        support = fused.supports(_state(model, opt, X, y), mg.SoftmaxCrossEntropy(), [])
    assert not support and support.custom
    assert support.reason == (
        "optimizer SignSGD has no fused kernel: training runs one Python iteration per update"
    )
    with mg.use_backend("numpy"):
        history = mg.fit(model, X, y, optimizer=opt, epochs=3, batch_size=16, seed=0, verbose=0)
    assert history.epochs["train_loss"][-1] < history.epochs["train_loss"][0]
    mg.save_checkpoint(tmp_path / "c.npz", model, opt, history=history)
    twin = mg.Sequential(mg.Dense(4, 5), mg.Tanh(), mg.Dense(5, 3), seed=3)
    twin_opt = SignSGD(twin.parameters(), lr=0.5)
    mg.load_checkpoint(tmp_path / "c.npz").restore(twin, twin_opt)
    assert twin.flat_values.tobytes() == model.flat_values.tobytes()
    assert twin_opt.step_count == opt.step_count and twin_opt.lr == opt.lr


def _state(model, optimizer, X, y):
    iterator = mg.BatchIterator(X, y, 8, seed=0, dtype=model.dtype)
    return TrainingState(model, optimizer, mg.History(), iterator, 1, None, optimizer.lr)


def test_train_and_eval_set_every_layer_and_predict_restores_the_mode():
    model = mg.Sequential(mg.Dense(4, 5), RowCounter(), mg.ReLU(), mg.Dense(5, 3), seed=0)
    assert model.training and all(layer.training for layer in model.layers)
    assert model.eval() is model
    assert not model.training and not any(layer.training for layer in model.layers)
    assert model.train() is model and all(layer.training for layer in model.layers)
    X, _ = data(n=10)
    counter = model.layers[1]
    model.predict(X)
    model.predict_proba(X)
    assert counter.modes == [False, False] and model.training  # restored to train
    assert counter.seen.value[0] == 0
    model.eval()
    model.predict_logits(X)
    assert not model.training
    with pytest.raises(TypeError, match="mode"):
        model.train("yes")


def test_fit_trains_in_train_mode_and_validates_in_eval_mode():
    X, y = data()
    model = mg.Sequential(mg.Dense(4, 5), RowCounter(), mg.ReLU(), mg.Dense(5, 3), seed=0)
    model.eval()
    with mg.use_backend("numpy"):
        mg.fit(
            model,
            X,
            y,
            optimizer=mg.SGD(model.parameters(), lr=0.1),
            epochs=2,
            batch_size=16,
            seed=0,
            verbose=0,
            validation_data=(X[:10], y[:10]),
        )
    counter = model.layers[1]
    assert counter.modes == [True] * 3 + [False] + [True] * 3 + [False]
    assert counter.seen.value[0] == 2 * 48


def test_buffers_travel_with_state_dict_clone_copy_pickle_and_checkpoints(tmp_path):
    model = mg.Sequential(mg.Dense(4, 5), RowCounter(), mg.Dense(5, 3), seed=0, dtype=np.float64)
    assert [key for key, _ in model.named_buffers()] == ["1.seen"]
    assert model.buffers()[0].value.dtype == np.float64
    model.forward(np.ones((7, 4)))
    state = model.state_dict()
    assert list(state) == ["0.weight", "0.bias", "2.weight", "2.bias", "1.seen"]
    assert state["1.seen"][0] == 7
    for twin in (
        model.clone(),
        copy.copy(model),
        copy.deepcopy(model),
        pickle.loads(pickle.dumps(model)),
    ):
        assert twin.state_dict()["1.seen"][0] == 7
        assert not np.shares_memory(twin.buffers()[0].value, model.buffers()[0].value)
        assert twin.flat_values.tobytes() == model.flat_values.tobytes()
    other = mg.Sequential(mg.Dense(4, 5), RowCounter(), mg.Dense(5, 3), seed=1, dtype=np.float64)
    other.load_state_dict(state)
    assert other.layers[1].seen.value[0] == 7
    with pytest.raises(ValueError, match="missing"):
        other.load_state_dict({k: v for k, v in state.items() if k != "1.seen"})
    mg.save_checkpoint(tmp_path / "b.npz", model)
    fresh = mg.Sequential(mg.Dense(4, 5), RowCounter(), mg.Dense(5, 3), seed=2, dtype=np.float64)
    mg.load_checkpoint(tmp_path / "b.npz").restore(fresh)
    assert fresh.layers[1].seen.value[0] == 7


def test_the_fused_path_accepts_every_built_in_and_names_the_custom_class():
    X, y = data()
    optimizers = [
        lambda p: mg.SGD(p, lr=0.1),
        lambda p: mg.SGD(p, lr=0.1, momentum=0.9),
        lambda p: mg.Adam(p),
        lambda p: mg.AdamW(p),
    ]
    assert {mg.ReLU().fused_role(), mg.Tanh().fused_role(), mg.Sigmoid().fused_role()} == {
        codes.ACT_RELU,
        codes.ACT_TANH,
        codes.ACT_SIGMOID,
    }
    assert mg.Dense(2, 3).fused_role() == "dense"
    loss = mg.SoftmaxCrossEntropy()
    with mg.use_backend("numba"):
        for activation in (mg.ReLU, mg.Tanh, mg.Sigmoid):
            for make in optimizers:
                model = mg.Sequential(mg.Dense(4, 5), activation(), mg.Dense(5, 3), seed=0)
                support = fused.supports(_state(model, make(model.parameters()), X, y), loss, [])
                assert support and support.reason is None, support

        model = scale_model()
        support = fused.supports(_state(model, mg.SGD(model.parameters(), lr=0.1), X, y), loss, [])
        ok, reason = support
        assert not ok and support.custom
        assert reason == (
            "layer Scale has no fused kernel: training runs one Python iteration per update"
        )

        class MyDense(mg.Dense):  # replaces the engine hook: not fused
            def forward_batch(self, x, kernels):
                return super().forward_batch(x, kernels)

        model = mg.Sequential(MyDense(4, 3), seed=0)
        support = fused.supports(_state(model, mg.SGD(model.parameters(), lr=0.1), X, y), loss, [])
        assert not support and "MyDense" in support.reason

    with mg.use_backend("numpy"):
        support = fused.supports(_state(model, mg.SGD(model.parameters(), lr=0.1), X, y), loss, [])
        assert not support and not support.custom


def test_optimizer_flat_is_the_model_buffer_only_for_all_parameters_in_order():
    model = mg.Sequential(mg.Dense(4, 5), mg.ReLU(), mg.Dense(5, 3), seed=0)
    values, grads = mg.SGD(model.parameters(), lr=0.1).flat
    assert values is model.flat_values and grads is model.flat_grads
    assert mg.SGD(model.parameters()[:2], lr=0.1).flat is None
    assert mg.SGD(model.parameters()[::-1], lr=0.1).flat is None
    assert [p.offset for p in model.parameters()] == [0, 20, 25, 40]


def test_layer_declarations_are_checked():
    layer = Layer()
    layer.parameter("w", (2, 3))
    with pytest.raises(ValueError, match="twice"):
        layer.parameter("w", 3)
    with pytest.raises(ValueError, match="positive"):
        layer.parameter("v", (0, 3))
    with pytest.raises(TypeError, match="init"):
        layer.parameter("u", 3, init="ones")
    with pytest.raises(NotImplementedError, match="forward"):
        layer.forward(np.ones((1, 3)))
    with pytest.raises(ValueError, match="in_features"):
        mg.Sequential(mg.ReLU(), Scale(3))
