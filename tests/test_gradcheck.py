"""mg.gradcheck: passes for every built-in piece and a user layer, fails (loudly, at the right
place) for a wrong backward, never changes the object it checks."""

import numpy as np
import pytest

import minigd as mg


def inputs(n=5, d=3, seed=1):
    return np.random.default_rng(seed).normal(size=(n, d))


class Scale(mg.Layer):
    """y = x * gamma (gamma one per feature): a user layer with a parameter."""

    def __init__(self, n):
        super().__init__()
        self.gamma = self.parameter("gamma", (n,), init=1.0)

    def forward(self, x):
        self.x = x
        return x * self.gamma.value

    def backward(self, dy):
        self.gamma.grad[...] = (dy * self.x).sum(axis=0)
        return dy * self.gamma.value


class WrongScale(Scale):
    """The gamma gradient forgets the input: wrong for gamma, right for x."""

    def backward(self, dy):
        self.gamma.grad[...] = dy.sum(axis=0)
        return dy * self.gamma.value


class WrongInput(Scale):
    """dx misses one entry: wrong only at input[2, 1]."""

    def backward(self, dy):
        self.gamma.grad[...] = (dy * self.x).sum(axis=0)
        dx = dy * self.gamma.value
        dx[2, 1] += 0.5
        return dx


class Accumulates(Scale):
    """Adds to gamma.grad instead of writing it."""

    def backward(self, dy):
        self.gamma.grad[...] += (dy * self.x).sum(axis=0)
        return dy * self.gamma.value


class Square(mg.Layer):
    """y = x ** 2, no parameters."""

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, dy):
        return 2 * dy * self.x


@pytest.mark.parametrize(
    "layer",
    [
        lambda: mg.Dense(3, 4),
        lambda: mg.Dense(3, 2, init="torch"),
        mg.ReLU,
        mg.Tanh,
        mg.Sigmoid,
        lambda: Scale(3),
        Square,
    ],
)
def test_built_in_and_user_layers_pass(layer):
    result = mg.gradcheck(layer(), inputs())
    assert result.ok and bool(result), result
    assert result.max_error < 1e-8
    assert result.assert_ok() is result


def test_dense_reports_every_array():
    result = mg.gradcheck(mg.Dense(3, 4), inputs())
    assert set(result.errors) == {"input", "weight", "bias"}


def test_whole_model_passes_in_both_dtypes_and_modes():
    for dtype in (np.float32, np.float64):
        model = mg.Sequential(
            mg.Dense(3, 5),
            mg.Tanh(),
            mg.Dense(5, 4),
            mg.ReLU(),
            mg.Dense(4, 2),
            seed=0,
            dtype=dtype,
        )
        result = mg.gradcheck(model, inputs())
        assert result.ok, result
        assert set(result.errors) == {
            "input",
            "0.weight",
            "0.bias",
            "2.weight",
            "2.bias",
            "4.weight",
            "4.bias",
        }
        assert mg.gradcheck(model.eval(), inputs()).ok


def test_model_with_a_user_layer_passes():
    model = mg.Sequential(mg.Dense(3, 4), Scale(4), mg.Sigmoid(), mg.Dense(4, 2), seed=0)
    result = mg.gradcheck(model, inputs())
    assert result.ok, result
    assert "1.gamma" in result.errors


@pytest.mark.parametrize("n", [1, 4])
def test_softmax_cross_entropy_passes(n):
    rng = np.random.default_rng(n)
    logits = rng.normal(size=(n, 3)) * 2
    result = mg.gradcheck(mg.SoftmaxCrossEntropy(), logits, rng.integers(0, 3, size=n))
    assert result.ok, result
    assert set(result.errors) == {"input"}


def test_wrong_parameter_gradient_fails_at_that_parameter():
    layer = WrongScale(3)
    layer.reset_parameters(np.random.default_rng(0))
    result = mg.gradcheck(layer, inputs())
    assert not result.ok and not bool(result)
    assert result.max_error > 0.1
    assert result.where.startswith("gamma[")
    assert result.errors["input"] < 1e-8
    with pytest.raises(AssertionError, match=r"WrongScale.*gamma\["):
        result.assert_ok()


def test_wrong_input_gradient_fails_at_the_exact_entry():
    result = mg.gradcheck(WrongInput(3), inputs())
    assert not result.ok
    assert result.where == "input[2, 1]"
    assert result.max_error > 0.1
    assert result.analytic - result.numeric == pytest.approx(0.5, rel=1e-6)


def test_wrong_backward_in_a_model_names_the_layer_index():
    model = mg.Sequential(mg.Dense(3, 4), WrongScale(4), mg.Dense(4, 2), seed=0)
    result = mg.gradcheck(model, inputs())
    assert not result.ok
    assert result.where.startswith("1.gamma[")


def test_backward_that_adds_to_grad_fails():
    result = mg.gradcheck(Accumulates(3), inputs())
    assert not result.ok
    assert result.where.startswith("gamma[")
    with pytest.raises(AssertionError, match="write"):
        result.assert_ok()


def test_the_checked_object_is_not_changed():
    model = mg.Sequential(mg.Dense(3, 4), mg.ReLU(), mg.Dense(4, 2), seed=0)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    x = inputs().astype(np.float32)
    x_before = x.copy()
    mg.gradcheck(model, x)
    assert model.dtype == np.float32 and model.training
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])
        assert value.dtype == np.float32
    np.testing.assert_array_equal(x, x_before)

    dense = model.layers[0]
    mg.gradcheck(dense, inputs())
    np.testing.assert_array_equal(dense.weight.value, before["0.weight"])
    assert dense.weight.value.dtype == np.float32


def test_upstream_gradient_follows_the_seed():
    a = mg.gradcheck(WrongScale(3), inputs(), seed=0)
    b = mg.gradcheck(WrongScale(3), inputs(), seed=0)
    c = mg.gradcheck(WrongScale(3), inputs(), seed=1)
    assert a.max_error == b.max_error and a.where == b.where
    assert c.max_error != a.max_error


def test_tolerance_and_bad_arguments():
    assert not mg.gradcheck(WrongScale(3), inputs(), tol=1e-3).ok
    assert mg.gradcheck(WrongScale(3), inputs(), tol=1e6).ok
    with pytest.raises(TypeError, match="obj"):
        mg.gradcheck(object(), inputs())
    with pytest.raises(ValueError, match="eps"):
        mg.gradcheck(mg.ReLU(), inputs(), eps=0.0)
    with pytest.raises(ValueError, match="tol"):
        mg.gradcheck(mg.ReLU(), inputs(), tol=-1.0)
    with pytest.raises(ValueError, match="y is for a loss"):
        mg.gradcheck(mg.ReLU(), inputs(), np.zeros(5, dtype=np.int64))
    with pytest.raises(ValueError, match="y is required"):
        mg.gradcheck(mg.SoftmaxCrossEntropy(), inputs())
    with pytest.raises(ValueError, match="x"):
        mg.gradcheck(mg.ReLU(), np.zeros(3))


class BadShape(mg.Layer):
    def forward(self, x):
        return x

    def backward(self, dy):
        return dy[:, :1]


def test_backward_of_the_wrong_shape_is_named():
    with pytest.raises(ValueError, match=r"BadShape.*shape"):
        mg.gradcheck(BadShape(), inputs())


class Dropoutish(mg.Layer):
    """Train mode: multiply by a random 0/2 mask drawn from the layer's own Generator."""

    def __init__(self, seed=0):
        super().__init__()
        self.rng = np.random.default_rng(seed)

    def forward(self, x):
        if not self.training:
            self.mask = np.ones_like(x)
        else:
            self.mask = (self.rng.random(x.shape) < 0.5) * 2.0
        return x * self.mask

    def backward(self, dy):
        return dy * self.mask


def test_a_random_layer_in_train_mode_sees_the_same_mask_every_evaluation():
    layer = Dropoutish()
    state = layer.rng.bit_generator.state
    assert mg.gradcheck(layer, inputs()).ok
    assert mg.gradcheck(layer.eval(), inputs()).ok
    assert layer.rng.bit_generator.state == state  # the user's generator is untouched


def test_result_repr_and_message():
    result = mg.gradcheck(WrongScale(3), inputs())
    assert "ok=False" in repr(result) and result.where in repr(result)
    with pytest.raises(AssertionError) as info:
        result.assert_ok()
    message = str(info.value)
    assert result.where in message and "tol" in message and "input" in message
