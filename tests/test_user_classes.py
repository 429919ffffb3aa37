"""A user-written Layer, Loss and Optimizer (a few lines each) train end to end with mg.fit
exactly like a hand-written NumPy loop, predict, pass gradcheck, save and load in checkpoints,
resume exactly, and fit says once that they have no fused kernel (issue 10, item 3)."""

import numpy as np
import pytest

import minigd as mg

# ---- what a user writes -----------------------------------------------------------------------


class Scale(mg.Layer):
    """y = x * gamma, one gamma per feature."""

    def __init__(self, n):
        super().__init__()
        self.gamma = self.parameter(
            "gamma", (n,), init=lambda rng, shape: rng.uniform(0.5, 1.5, shape)
        )

    def forward(self, x):
        self.x = x
        return x * self.gamma.value

    def backward(self, dy):
        self.gamma.grad[...] = (dy * self.x).sum(axis=0)
        return dy * self.gamma.value


class HalfSquaredError(mg.Loss):
    """Mean over rows of 0.5 * ||outputs - targets||^2."""

    target_kind = "values"

    def value_and_grad(self, outputs, targets):
        diff = outputs - targets
        n = outputs.shape[0]
        return 0.5 * float(np.sum(diff * diff)) / n, diff / n


class MultiMargin(mg.Loss):
    """A classification loss: mean over rows of sum_j max(0, 1 + z_j - z_y) for j != y."""

    target_kind = "classes"

    def value_and_grad(self, outputs, targets):
        n = outputs.shape[0]
        rows = np.arange(n)
        margins = np.maximum(0.0, 1.0 + outputs - outputs[rows, targets][:, None])
        margins[rows, targets] = 0.0
        grad = (margins > 0).astype(outputs.dtype)
        grad[rows, targets] = -grad.sum(axis=1)
        return float(margins.sum()) / n, grad / n


class HeavyBall(mg.Optimizer):
    """v <- beta v + grad;  p <- p - lr * v / (1 - beta^t)   (t = step count from 1)."""

    state_names = ("velocity",)

    def __init__(self, params, lr, beta=0.9):
        super().__init__(params, lr)
        self.beta = beta

    def update(self, value, grad, state, lr):
        v = state["velocity"]
        v *= self.beta
        v += grad
        value -= lr * v / (1 - self.beta**self.step_count)

    def hyperparameters(self):
        return {"lr": self.lr, "beta": self.beta}

    def set_hyperparameters(self, lr, beta):
        self.lr, self.beta = lr, beta


# ---- the same computation written out by hand ----------------------------------------------------


def data(n=90, outputs=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    Y = np.sin(X @ rng.normal(size=(3, outputs)))
    return X, Y


def build(outputs, dtype=np.float64, seed=7):
    return mg.Sequential(
        mg.Dense(3, 6), Scale(6), mg.Tanh(), mg.Dense(6, outputs), seed=seed, dtype=dtype
    )


def hand_loop(start, X, Y, loss_grad, epochs, batch, seed, lr, beta):
    """Dense-Scale-Tanh-Dense trained with HeavyBall, in plain float64 NumPy."""
    keys = ("0.weight", "0.bias", "1.gamma", "3.weight", "3.bias")
    params = [start[k].astype(np.float64) for k in keys]
    velocity = [np.zeros_like(p) for p in params]
    losses, t = [], 0
    for epoch in range(epochs):
        order = np.random.default_rng([seed, epoch]).permutation(len(X))
        for i in range(0, len(X), batch):
            W1, b1, gamma, W2, b2 = params
            index = order[i : i + batch]
            x, target = X[index], Y[index]
            h = x @ W1 + b1
            a = np.tanh(h * gamma)
            out = a @ W2 + b2
            value, g = loss_grad(out, target)
            losses.append(value)
            da = g @ W2.T
            ds = da * (1 - a * a)
            dh = ds * gamma
            grads = [x.T @ dh, dh.sum(axis=0), (ds * h).sum(axis=0), a.T @ g, g.sum(axis=0)]
            t += 1
            for p, v, gr in zip(params, velocity, grads):
                v *= beta
                v += gr
                p -= lr * v / (1 - beta**t)
    return dict(zip(keys, params)), losses


# ---- the tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["values", "classes"])
def test_user_layer_loss_and_optimizer_train_like_a_hand_written_loop(backend, kind):
    if kind == "values":
        X, Y = data(outputs=2)
        y, loss = Y, HalfSquaredError()
    else:
        X, Y = data(outputs=3)
        y = Y.argmax(axis=1)
        Y, loss = y, MultiMargin()
    model = build(outputs=2 if kind == "values" else 3)
    start = model.state_dict()
    optimizer = HeavyBall(model.parameters(), lr=0.05, beta=0.8)
    history = mg.fit(
        model, X, y, optimizer=optimizer, loss=loss, epochs=3, batch_size=16, seed=11, verbose=0
    )
    expected, losses = hand_loop(start, X, Y, loss.value_and_grad, 3, 16, 11, 0.05, 0.8)

    assert history.n_iterations == 3 * 6 and optimizer.step_count == 18
    np.testing.assert_allclose(history.iterations["loss"], losses, rtol=1e-12)
    for key, value in model.state_dict().items():
        np.testing.assert_allclose(value, expected[key], rtol=1e-11, atol=1e-13, err_msg=key)
    assert not np.allclose(start["1.gamma"], model.state_dict()["1.gamma"])  # gamma trained
    assert losses[-1] < losses[0]

    # predict: the hand-written forward with the trained weights, in eval mode
    W1, b1, gamma, W2, b2 = (
        expected[k] for k in ("0.weight", "0.bias", "1.gamma", "3.weight", "3.bias")
    )
    outputs = np.tanh((X @ W1 + b1) * gamma) @ W2 + b2
    np.testing.assert_allclose(model.predict_logits(X), outputs, rtol=1e-10, atol=1e-12)
    if kind == "classes":
        np.testing.assert_array_equal(model.predict(X), outputs.argmax(axis=1))
    assert model.training  # predict ran in eval mode and restored train mode


def test_user_classes_train_in_float32_too():
    X, Y = data(outputs=2)
    model = build(outputs=2, dtype=np.float32)
    start = model.state_dict()
    history = mg.fit(
        model,
        X,
        Y,
        optimizer=HeavyBall(model.parameters(), lr=0.05),
        loss=HalfSquaredError(),
        epochs=2,
        batch_size=16,
        seed=1,
        verbose=0,
    )
    expected, losses = hand_loop(
        start, X, Y, HalfSquaredError().value_and_grad, 2, 16, 1, 0.05, 0.9
    )
    assert all(v.dtype == np.float32 for v in model.state_dict().values())
    np.testing.assert_allclose(history.iterations["loss"], losses, rtol=1e-4)
    for key, value in model.state_dict().items():
        np.testing.assert_allclose(value, expected[key], rtol=1e-3, atol=1e-5, err_msg=key)


def test_same_seed_gives_bit_identical_runs():
    X, Y = data()
    runs = []
    for _ in range(2):
        model = build(outputs=2)
        mg.fit(
            model,
            X,
            Y,
            optimizer=HeavyBall(model.parameters(), lr=0.05),
            loss=HalfSquaredError(),
            epochs=2,
            batch_size=16,
            seed=3,
            verbose=0,
        )
        runs.append(model.state_dict())
    for key in runs[0]:
        np.testing.assert_array_equal(runs[0][key], runs[1][key])


def test_user_layer_and_loss_pass_gradcheck():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3))
    assert mg.gradcheck(Scale(3), x).ok
    assert mg.gradcheck(build(outputs=2, dtype=np.float32), x).ok
    assert mg.gradcheck(HalfSquaredError(), rng.normal(size=(4, 2)), rng.normal(size=(4, 2))).ok
    # margins kept away from their kinks (0) by more than eps
    z = np.array([[2.0, 0.3, -1.0], [0.1, 0.4, 3.0]])
    assert mg.gradcheck(MultiMargin(), z, np.array([0, 2])).ok


def test_checkpoint_saves_and_restores_user_classes(tmp_path):
    X, Y = data()
    model = build(outputs=2)
    optimizer = HeavyBall(model.parameters(), lr=0.05, beta=0.7)
    history = mg.fit(
        model,
        X,
        Y,
        optimizer=optimizer,
        loss=HalfSquaredError(),
        epochs=2,
        batch_size=16,
        seed=0,
        verbose=0,
    )
    path = tmp_path / "user.npz"
    mg.save_checkpoint(path, model, optimizer, history=history)

    other = build(outputs=2, seed=99)
    other_opt = HeavyBall(other.parameters(), lr=1.0, beta=0.1)
    checkpoint = mg.load_checkpoint(path)
    checkpoint.restore(other, other_opt)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[key], value)
    assert other_opt.beta == 0.7 and other_opt.lr == 0.05 and other_opt.step_count == 12
    for key, value in optimizer.state_dict()["state"].items():
        np.testing.assert_array_equal(other_opt.state_dict()["state"][key], value)
    assert checkpoint.history.iterations["loss"] == history.iterations["loss"]
    np.testing.assert_array_equal(other.predict_logits(X), model.predict_logits(X))

    # another optimizer type is refused
    third = build(outputs=2)
    with pytest.raises(ValueError, match="HeavyBall"):
        checkpoint.restore(third, mg.SGD(third.parameters(), lr=0.1))


def test_resume_with_user_classes_is_exact(tmp_path):
    X, Y = data()
    full = build(outputs=2)
    mg.fit(
        full,
        X,
        Y,
        optimizer=HeavyBall(full.parameters(), lr=0.05),
        loss=HalfSquaredError(),
        epochs=3,
        batch_size=16,
        seed=2,
        verbose=0,
    )
    path = tmp_path / "run.npz"
    part = build(outputs=2)
    mg.fit(
        part,
        X,
        Y,
        optimizer=HeavyBall(part.parameters(), lr=0.05),
        loss=HalfSquaredError(),
        epochs=1,
        batch_size=16,
        seed=2,
        verbose=0,
        checkpoint=path,
    )
    resumed = build(outputs=2, seed=5)
    history = mg.fit(
        resumed,
        X,
        Y,
        optimizer=HeavyBall(resumed.parameters(), lr=0.05),
        loss=HalfSquaredError(),
        epochs=3,
        batch_size=16,
        seed=2,
        verbose=0,
        checkpoint=path,
        resume=True,
    )
    assert history.n_iterations == 18
    for key, value in full.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[key], value)


def note_count(text):
    return text.count("has no fused kernel: training runs one Python iteration per update")


@pytest.mark.parametrize("custom", ["layer", "loss", "optimizer"])
def test_fit_says_once_that_a_user_class_has_no_fused_kernel(capsys, custom):
    X, Y = data(outputs=3)
    y = Y.argmax(axis=1)
    layers = [mg.Dense(3, 6), mg.Tanh(), mg.Dense(6, 3)]
    if custom == "layer":
        layers.insert(1, Scale(6))
    model = mg.Sequential(*layers, seed=0)
    optimizer = (
        HeavyBall(model.parameters(), lr=0.05)
        if custom == "optimizer"
        else mg.SGD(model.parameters(), lr=0.05)
    )
    loss = MultiMargin() if custom == "loss" else mg.SoftmaxCrossEntropy()
    with mg.use_backend("numba"):
        mg.fit(
            model, X, y, optimizer=optimizer, loss=loss, epochs=3, batch_size=16, seed=0, verbose=2
        )
    out = capsys.readouterr().out
    name = {"layer": "layer Scale", "loss": "loss MultiMargin", "optimizer": "optimizer HeavyBall"}[
        custom
    ]
    assert note_count(out) == 1, out
    assert f"{name} has no fused kernel" in out
    assert out.count("\n") >= 4  # the plan line and one line per epoch were printed too


def test_built_in_pieces_print_no_such_note(capsys):
    X, Y = data(outputs=3)
    model = mg.Sequential(mg.Dense(3, 6), mg.Tanh(), mg.Dense(6, 3), seed=0)
    with mg.use_backend("numba"):
        mg.fit(
            model,
            X,
            Y.argmax(axis=1),
            optimizer=mg.SGD(model.parameters(), lr=0.05),
            epochs=1,
            batch_size=16,
            seed=0,
            verbose=2,
        )
    assert note_count(capsys.readouterr().out) == 0
