"""Layers: the :class:`Layer` base, :class:`Dense` and the activations :class:`ReLU`,
:class:`Tanh`, :class:`Sigmoid`.

A layer is one class carrying its own math:

- ``forward(x)`` / ``backward(dy)``: its NumPy reference, what a user-written layer provides;
- the engine hooks ``allocate``, ``forward_batch`` and ``backward_batch``, which the built-ins
  implement with the active backend's kernels into buffers reused from batch to batch (the
  defaults call ``forward`` / ``backward``);
- ``fused_role()``: how it takes part in the fused whole-epoch kernel (None: it does not, and
  ``fit`` then runs one Python iteration per update).

Parameters are declared with ``self.parameter(...)`` and non-trainable state (running
statistics) with ``self.buffer(...)``. :class:`minigd.Sequential` adopts every parameter into
one flat value buffer and one flat gradient buffer and rebinds ``param.value`` / ``param.grad``
to views of them, so always read ``self.weight.value`` at use time.

Example: a layer written by a user (y = x * gamma, one gamma per feature)::

    class Scale(mg.Layer):
        def __init__(self, n):
            super().__init__()
            self.gamma = self.parameter("gamma", (n,), init=1.0)

        def forward(self, x):
            self.x = x
            return x * self.gamma.value

        def backward(self, dy):
            self.gamma.grad[...] = (dy * self.x).sum(axis=0)
            return dy * self.gamma.value
"""
import copy
import numbers

import numpy as np

from . import _validation as check
from .kernels import reference
from .kernels.codes import ACT_RELU, ACT_SIGMOID, ACT_TANH

INITS = ("he", "xavier", "torch", "zeros")


def _check_init(name, init):
    if callable(init):
        return init
    if isinstance(init, bool) or not isinstance(init, numbers.Real):
        raise TypeError(f"init of {name!r} must be a float or a callable init(rng, shape), "
                        f"got {type(init).__name__}")
    return float(init)


def _check_shape(name, shape):
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        shape = tuple(int(check.positive_int(f"shape of {name!r}", s)) for s in shape)
    except TypeError:
        raise TypeError(f"shape of {name!r} must be a tuple of positive ints, got "
                        f"{shape!r}") from None
    return shape


class Parameter:
    """A trainable array ``value`` and its gradient ``grad`` (same shape), updated in place.

    Inside a model both are views into the model's flat buffers (``offset`` is where they
    start there; None outside a model), so an optimizer can update all parameters in one
    pass. Gradients are written (not accumulated) by ``model.backward``.

    Parameters
    ----------
    name : str
    value, grad : ndarray of one shape and dtype, or None (made at first use from ``shape``)
    init : float or callable init(rng, shape) -> array, default 0.0
        What :meth:`Layer.reset_parameters` fills ``value`` with.
    shape : tuple, default ``value.shape``
    """

    def __init__(self, name, value, grad, init=0.0, shape=None):
        self.name = name
        self.shape = tuple(value.shape) if shape is None else tuple(shape)
        self._value, self._grad = value, grad
        self.init = init
        self.offset = None

    @property
    def value(self):
        """The parameter array (a view of the model's flat buffer once a model adopted it).
        A declared parameter outside a model gets a float64 array at first use."""
        if self._value is None:
            fill = 0.0 if callable(self.init) else self.init
            self._value = np.full(self.shape, fill, dtype=np.float64)
        return self._value

    @value.setter
    def value(self, array):
        self._value = array

    @property
    def grad(self):
        """The gradient array, of ``value``'s shape and dtype (written by backward)."""
        if self._grad is None:
            self._grad = np.zeros(self.shape, dtype=self.value.dtype)
        return self._grad

    @grad.setter
    def grad(self, array):
        self._grad = array

    def adopt(self, values, grads, offset):
        """Rebind ``value`` and ``grad`` to views of the flat buffers ``values`` and ``grads``
        starting at ``offset`` (called by :class:`minigd.Sequential`; copies nothing)."""
        size = self.size
        self.value = values[offset:offset + size].reshape(self.shape)
        self.grad = grads[offset:offset + size].reshape(self.shape)
        self.offset = offset

    def release(self):
        """Drop ``value`` and ``grad`` (keeping name, shape and init) until a model adopts the
        parameter again: what a pickled model's layers hold, the weights being saved apart."""
        self._value = self._grad = self.offset = None

    @property
    def dtype(self):
        return self.value.dtype

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=np.int64))

    def __repr__(self):
        return f"Parameter({self.name!r}, shape={self.shape}, dtype={self.dtype})"


class Buffer:
    """Non-trainable layer state (running statistics, counters): an array ``value``.

    Not seen by optimizers; carried by ``state_dict``, ``load_state_dict``, ``clone``,
    copy/pickle and checkpoints under the key ``"{layer index}.{name}"``, as parameters are.
    Inside a model ``value`` is an array of the model dtype: read it at use time.
    """

    def __init__(self, name, value):
        self.name = name
        self.value = value
        self.shape = tuple(value.shape)

    def release(self):
        """Drop ``value`` (keeping name and shape) until a model gives the buffer an array."""
        self.value = None

    @property
    def dtype(self):
        return self.value.dtype

    def __repr__(self):
        return f"Buffer({self.name!r}, shape={self.shape}, dtype={self.dtype})"


class Layer:
    """Base class of every layer: parameters, buffers, train/eval mode, forward and backward.

    A subclass calls ``super().__init__()``, declares its parameters with
    :meth:`parameter` (and state with :meth:`buffer`), and writes :meth:`forward` and
    :meth:`backward` in NumPy. That is all ``fit``, ``predict``, checkpoints and
    ``mg.gradcheck`` need; such a layer trains on the per-iteration path. Built-in layers also
    implement the engine hooks (:meth:`allocate`, :meth:`forward_batch`,
    :meth:`backward_batch`) with the backend kernels, and :meth:`fused_role`.

    Attributes: ``training`` (bool, set by :meth:`train` / :meth:`eval`); ``name`` (str or
    None): the registry name of the class.
    """
    name = None
    training = True

    def __init__(self):
        self.training = True
        self._parameters = {}
        self._buffers = {}

    # ---- declaring state ---------------------------------------------------------------------
    def _declared(self, attribute):
        if attribute not in self.__dict__:     # a subclass that skipped super().__init__()
            self.__dict__[attribute] = {}
        return self.__dict__[attribute]

    def parameter(self, name, shape, init=0.0):
        """Declare a trainable parameter and return it (store it as an attribute).

        ``shape``: int or tuple of ints. ``init``: a float, or a callable ``init(rng, shape)``
        returning an array, used by :meth:`reset_parameters`. Inside a model the value is a
        view of the model's flat buffer, in the model dtype; outside one it is a float64 array
        (filled from a float ``init``, zeros for a callable one) made at first use.
        """
        params = self._declared("_parameters")
        if name in params:
            raise ValueError(f"{type(self).__name__} declares the parameter {name!r} twice")
        shape = _check_shape(name, shape)
        init = _check_init(name, init)
        params[name] = Parameter(name, None, None, init=init, shape=shape)
        return params[name]

    def buffer(self, name, shape, init=0.0):
        """Declare non-trainable state (a :class:`Buffer` with ``.value``) and return it.

        ``init``: a float filling the buffer (default 0.0). Buffers travel with the model's
        ``state_dict``, ``clone``, pickle and checkpoints; optimizers never see them.
        """
        buffers = self._declared("_buffers")
        if name in buffers:
            raise ValueError(f"{type(self).__name__} declares the buffer {name!r} twice")
        shape = _check_shape(name, shape)
        init = _check_init(name, init)
        if callable(init):
            raise TypeError(f"init of buffer {name!r} must be a float")
        buffers[name] = Buffer(name, np.full(shape, init, dtype=np.float64))
        return buffers[name]

    def parameters(self):
        """The declared Parameter objects, in declaration order."""
        return list(self._declared("_parameters").values())

    def named_parameters(self):
        """[(name, Parameter), ...] in declaration order."""
        return list(self._declared("_parameters").items())

    def buffers(self):
        """The declared Buffer objects, in declaration order."""
        return list(self._declared("_buffers").values())

    def named_buffers(self):
        """[(name, Buffer), ...] in declaration order."""
        return list(self._declared("_buffers").items())

    def parameter_shapes(self, in_features=None):
        """[(name, shape), ...] of the declared parameters."""
        return [(name, p.shape) for name, p in self.named_parameters()]

    def reset_parameters(self, rng):
        """Initialise every parameter from its ``init`` with the numpy Generator ``rng``."""
        for p in self.parameters():
            if callable(p.init):
                p.value[...] = p.init(rng, p.shape)
            else:
                p.value[...] = p.init

    # ---- mode ----------------------------------------------------------------------------
    def train(self, mode=True):
        """Set training mode (``mode=False``: evaluation mode); returns the layer."""
        self.training = check.boolean("mode", mode)
        return self

    def eval(self):
        """Set evaluation mode; returns the layer."""
        return self.train(False)

    # ---- math ----------------------------------------------------------------------------
    def out_features(self, in_features):
        """Width of the output for ``in_features`` inputs (default: unchanged)."""
        return in_features

    def forward(self, x):
        """y for inputs x of shape (n, in): the layer's NumPy math (what a subclass writes)."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward(x)")

    def backward(self, dy):
        """dx for d(loss)/dy of the last forward; writes (not adds) each ``param.grad``."""
        raise NotImplementedError(f"{type(self).__name__} must implement backward(dy)")

    # ---- engine hooks (optional) ----------------------------------------------------------
    def allocate(self, capacity, in_features, dtype):
        """Prepare reused buffers for batches of up to ``capacity`` rows (default: none)."""

    def forward_batch(self, x, kernels):
        """y for a C-contiguous batch x of the model dtype (default: ``forward``)."""
        return np.ascontiguousarray(self.forward(x), dtype=x.dtype)

    def backward_batch(self, dy, kernels, need_dx):
        """Fill every ``param.grad``; return dx (or None when not ``need_dx``; the default
        returns it always). Default: ``backward``."""
        return np.ascontiguousarray(self.backward(dy), dtype=dy.dtype)

    def fused_role(self):
        """How this layer joins the fused whole-epoch kernel: None (it does not: the default,
        so a user-written layer trains one Python iteration per update), "dense", or an
        activation code of :mod:`minigd.kernels.codes`."""
        return None

    # ---- copies --------------------------------------------------------------------------
    def clone(self):
        """A new layer with the same configuration and its own parameters and buffers
        (a deep copy; built-ins rebuild from their configuration instead)."""
        return copy.deepcopy(self)

    def __repr__(self):
        return f"{type(self).__name__}()"


def _overrides(layer, base, names):
    """True when type(layer) replaces any of ``names`` defined by ``base``."""
    return any(getattr(type(layer), n) is not getattr(base, n) for n in names)


_ENGINE_HOOKS = ("forward_batch", "backward_batch", "allocate")


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
        super().__init__()
        self.in_features = check.positive_int("in_features", in_features)
        self.out_features_ = check.positive_int("out_features", out_features)
        self.init = check.choice("init", init, INITS)
        self.weight = self.parameter("weight", (self.in_features, self.out_features_))
        self.bias = self.parameter("bias", (self.out_features_,))

    def out_features(self, in_features):
        return self.out_features_

    def reset_parameters(self, rng):
        """Draw weight and bias from ``rng`` as ``init`` says (see the class docstring)."""
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

    def forward(self, x):
        """x @ weight + bias (NumPy)."""
        self._x = x
        out = np.empty((x.shape[0], self.out_features_), dtype=np.result_type(x, self.weight.value))
        reference.dense_forward(x, self.weight.value, self.bias.value, out)
        return out

    def backward(self, dy):
        """weight.grad = x.T @ dy, bias.grad = sum of dy's rows; returns dy @ weight.T."""
        dx = np.empty((dy.shape[0], self.in_features), dtype=dy.dtype)
        reference.dense_backward(self._x, dy, self.weight.value, self.weight.grad,
                                 self.bias.grad, dx)
        return dx

    def allocate(self, capacity, in_features, dtype):
        self._out = np.empty((capacity, self.out_features_), dtype=dtype)
        self._dx = np.empty((capacity, in_features), dtype=dtype)

    def forward_batch(self, x, kernels):
        self._x = x
        out = self._out[:x.shape[0]]
        kernels.dense_forward(x, self.weight.value, self.bias.value, out)
        return out

    def backward_batch(self, dy, kernels, need_dx):
        dx = self._dx[:dy.shape[0]] if need_dx else None
        kernels.dense_backward(self._x, dy, self.weight.value, self.weight.grad, self.bias.grad, dx)
        return dx

    def fused_role(self):
        """"dense" (the fused kernel runs x @ W + b), unless a subclass replaces the kernels."""
        return None if _overrides(self, Dense, _ENGINE_HOOKS) else "dense"

    def clone(self):
        return Dense(self.in_features, self.out_features_, init=self.init)

    def __repr__(self):
        return f"Dense({self.in_features}, {self.out_features_}, init={self.init!r})"


class Activation(Layer):
    """Elementwise activation y = f(z); backward uses the saved output y.

    A subclass names its kernels with ``kernel`` (``kernels.<kernel>_forward(z, out)`` and
    ``kernels.<kernel>_backward(dy, y, out)`` in both backends) and its fused code with
    ``code`` (:mod:`minigd.kernels.codes`).
    """
    kernel = None
    code = None

    def forward(self, z):
        """f(z) (NumPy reference kernel)."""
        out = np.empty_like(z)
        getattr(reference, self.kernel + "_forward")(z, out)
        self._y = out
        return out

    def backward(self, dy):
        """dy * f'(z), from the saved output."""
        out = np.empty_like(dy)
        getattr(reference, self.kernel + "_backward")(dy, self._y, out)
        return out

    def allocate(self, capacity, in_features, dtype):
        self._out = np.empty((capacity, in_features), dtype=dtype)
        self._dx = np.empty((capacity, in_features), dtype=dtype)

    def forward_batch(self, z, kernels):
        out = self._out[:z.shape[0]]
        getattr(kernels, self.kernel + "_forward")(z, out)
        self._y = out
        return out

    def backward_batch(self, dy, kernels, need_dx):
        dx = self._dx[:dy.shape[0]]
        getattr(kernels, self.kernel + "_backward")(dy, self._y, dx)
        return dx

    def fused_role(self):
        """The activation code, unless a subclass replaces the kernels."""
        return None if _overrides(self, Activation, _ENGINE_HOOKS) else self.code

    def clone(self):
        return type(self)()


class ReLU(Activation):
    """y = max(z, 0);  dz = dy * [y > 0]."""
    name = "relu"
    kernel = "relu"
    code = ACT_RELU


class Tanh(Activation):
    """y = tanh(z);  dz = dy * (1 - y^2)."""
    name = "tanh"
    kernel = "tanh"
    code = ACT_TANH


class Sigmoid(Activation):
    """y = 1 / (1 + exp(-z));  dz = dy * y * (1 - y)."""
    name = "sigmoid"
    kernel = "sigmoid"
    code = ACT_SIGMOID
