"""Layers: :class:`Dense` and the activations :class:`ReLU`, :class:`Tanh`, :class:`Sigmoid`.

A layer's parameters are created by :class:`minigd.Sequential`, which places every parameter and
gradient in one flat buffer. ``_forward``/``_backward`` do the arithmetic through the active
backend's kernels and write into buffers reused from batch to batch.
"""
import numpy as np

from . import _validation as check

INITS = ("he", "xavier", "torch", "zeros")


class Parameter:
    """A trainable array ``value`` and its gradient ``grad`` (same shape), updated in place.

    Both are views into the model's flat buffers, so an optimizer can update all parameters in
    one pass. Gradients are written (not accumulated) by ``model.backward``.
    """

    def __init__(self, name, value, grad):
        self.name = name
        self.value = value
        self.grad = grad

    @property
    def shape(self):
        return self.value.shape

    @property
    def dtype(self):
        return self.value.dtype

    @property
    def size(self):
        return self.value.size

    def __repr__(self):
        return f"Parameter({self.name!r}, shape={self.shape}, dtype={self.dtype})"


class Layer:
    """Base class: stateless layers have no parameters and keep their input width."""

    def parameter_shapes(self, in_features):
        """[(name, shape), ...] of the parameters this layer needs."""
        return []

    def out_features(self, in_features):
        return in_features

    def _bind(self, params, rng):
        """Receive this layer's Parameter objects (views of the flat buffers) and initialise them."""

    def _allocate(self, capacity, in_features, dtype):
        """(Re)allocate the output and input-gradient buffers for up to ``capacity`` rows."""
        self._out = np.empty((capacity, self.out_features(in_features)), dtype=dtype)
        self._dx = np.empty((capacity, in_features), dtype=dtype)

    def clone(self):
        """A new, unbound layer with the same configuration."""
        return type(self)()

    def __repr__(self):
        return f"{type(self).__name__}()"


class Dense(Layer):
    """Fully connected layer: y = x @ weight + bias, weight of shape (in, out), bias (out,).

    Parameters
    ----------
    in_features, out_features : int
    init : {"he", "xavier", "torch", "zeros"}, default "he"
        "he": weight ~ N(0, 2 / in), bias 0.  "xavier": weight ~ U(+-sqrt(6 / (in + out))),
        bias 0.  "torch": weight and bias ~ U(+-1 / sqrt(in)) as ``torch.nn.Linear``.
        Note: torch stores the weight transposed, as (out, in).
    """
    name = "dense"

    def __init__(self, in_features, out_features, init="he"):
        self.in_features = check.positive_int("in_features", in_features)
        self.out_features_ = check.positive_int("out_features", out_features)
        self.init = check.choice("init", init, INITS)
        self.weight = None
        self.bias = None

    def parameter_shapes(self, in_features):
        return [("weight", (self.in_features, self.out_features_)),
                ("bias", (self.out_features_,))]

    def out_features(self, in_features):
        return self.out_features_

    def _bind(self, params, rng):
        self.weight, self.bias = params
        fan_in, fan_out = self.in_features, self.out_features_
        shape = self.weight.shape
        if self.init == "he":
            w = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)
            b = np.zeros(fan_out)
        elif self.init == "xavier":
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            w = rng.uniform(-limit, limit, size=shape)
            b = np.zeros(fan_out)
        elif self.init == "torch":
            limit = 1.0 / np.sqrt(fan_in)
            w = rng.uniform(-limit, limit, size=shape)
            b = rng.uniform(-limit, limit, size=fan_out)
        else:
            w, b = np.zeros(shape), np.zeros(fan_out)
        self.weight.value[...] = w
        self.bias.value[...] = b

    def _forward(self, x, kernels):
        self._x = x
        out = self._out[:x.shape[0]]
        kernels.dense_forward(x, self.weight.value, self.bias.value, out)
        return out

    def _backward(self, dy, kernels, need_dx):
        dx = self._dx[:dy.shape[0]] if need_dx else None
        kernels.dense_backward(self._x, dy, self.weight.value, self.weight.grad, self.bias.grad, dx)
        return dx

    def clone(self):
        return Dense(self.in_features, self.out_features_, init=self.init)

    def __repr__(self):
        return f"Dense({self.in_features}, {self.out_features_}, init={self.init!r})"


class _Activation(Layer):
    """Elementwise activation y = f(z); backward uses the saved output y."""
    kernel = None

    def _forward(self, z, kernels):
        out = self._out[:z.shape[0]]
        getattr(kernels, self.kernel + "_forward")(z, out)
        self._y = out
        return out

    def _backward(self, dy, kernels, need_dx):
        dx = self._dx[:dy.shape[0]]
        getattr(kernels, self.kernel + "_backward")(dy, self._y, dx)
        return dx


class ReLU(_Activation):
    """y = max(z, 0);  dz = dy * [y > 0]."""
    name = "relu"
    kernel = "relu"


class Tanh(_Activation):
    """y = tanh(z);  dz = dy * (1 - y^2)."""
    name = "tanh"
    kernel = "tanh"


class Sigmoid(_Activation):
    """y = 1 / (1 + exp(-z));  dz = dy * y * (1 - y)."""
    name = "sigmoid"
    kernel = "sigmoid"
