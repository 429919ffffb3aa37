"""Layers: the :class:`Layer` base, :class:`Dense`, the activations :class:`ReLU`,
:class:`Tanh`, :class:`Sigmoid`, and :class:`Dropout`, :class:`BatchNorm`, :class:`Flatten`.

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

from __future__ import annotations

import copy
import numbers
from typing import Any

import numpy as np

from . import _validation as check
from .kernels import reference
from .kernels.codes import ACT_RELU, ACT_SIGMOID, ACT_TANH

INITS = ("he", "xavier", "torch", "zeros")


def _check_init(name, init):
    if callable(init):
        return init
    if isinstance(init, bool) or not isinstance(init, numbers.Real):
        raise TypeError(
            f"init of {name!r} must be a float or a callable init(rng, shape), "
            f"got {type(init).__name__}"
        )
    return float(init)


def _check_shape(name, shape):
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        shape = tuple(int(check.positive_int(f"shape of {name!r}", s)) for s in shape)
    except TypeError:
        raise TypeError(
            f"shape of {name!r} must be a tuple of positive ints, got {shape!r}"
        ) from None
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
        self.value = values[offset : offset + size].reshape(self.shape)
        self.grad = grads[offset : offset + size].reshape(self.shape)
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

    name: str | None = None
    training = True

    def __init__(self) -> None:
        self.training = True
        self._parameters: dict[str, Parameter] = {}
        self._buffers: dict[str, Buffer] = {}

    # ---- declaring state ---------------------------------------------------------------------
    def _declared(self, attribute):
        if attribute not in self.__dict__:  # a subclass that skipped super().__init__()
            self.__dict__[attribute] = {}
        return self.__dict__[attribute]

    def parameter(self, name: str, shape: tuple[int, ...], init: Any = 0.0) -> Parameter:
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

    def buffer(self, name: str, shape: tuple[int, ...], init: Any = 0.0) -> Buffer:
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

    def parameters(self) -> list[Parameter]:
        """The declared Parameter objects, in declaration order."""
        return list(self._declared("_parameters").values())

    def named_parameters(self) -> list[tuple[str, Parameter]]:
        """[(name, Parameter), ...] in declaration order."""
        return list(self._declared("_parameters").items())

    def buffers(self) -> list[Buffer]:
        """The declared Buffer objects, in declaration order."""
        return list(self._declared("_buffers").values())

    def named_buffers(self) -> list[tuple[str, Buffer]]:
        """[(name, Buffer), ...] in declaration order."""
        return list(self._declared("_buffers").items())

    def parameter_shapes(self, in_features=None):
        """[(name, shape), ...] of the declared parameters."""
        return [(name, p.shape) for name, p in self.named_parameters()]

    def reset_parameters(self, rng: np.random.Generator) -> None:
        """Initialise every parameter from its ``init`` with the numpy Generator ``rng``."""
        for p in self.parameters():
            if callable(p.init):
                p.value[...] = p.init(rng, p.shape)
            else:
                p.value[...] = p.init

    # ---- mode ----------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Layer:
        """Set training mode (``mode=False``: evaluation mode); returns the layer."""
        self.training = check.boolean("mode", mode)
        return self

    def eval(self) -> Layer:
        """Set evaluation mode; returns the layer."""
        return self.train(False)

    # ---- math ----------------------------------------------------------------------------
    def out_features(self, in_features: int) -> int:
        """Width of the output for ``in_features`` inputs (default: unchanged)."""
        return in_features

    def forward(self, x: np.ndarray) -> np.ndarray:
        """y for inputs x of shape (n, in): the layer's NumPy math (what a subclass writes)."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward(x)")

    def backward(self, dy: np.ndarray) -> np.ndarray:
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

    def reseed(self, key):
        """Seed this layer's randomness for the next update (default: nothing to seed).

        ``fit`` calls it before every update with ``key``, a tuple of non-negative ints
        ``(model seed, fit seed, update step, layer index)``, so a layer that draws random
        numbers in train mode (:class:`Dropout`) draws a pure function of the run and the step:
        a run is reproducible and resumes bit for bit mid-epoch.
        """

    def fused_role(self):
        """How this layer joins the fused whole-epoch kernel: None (it does not: the default,
        so a user-written layer trains one Python iteration per update), "dense", or an
        activation code of :mod:`minigd.kernels.codes`."""
        return None

    # ---- copies --------------------------------------------------------------------------
    def clone(self) -> Layer:
        """A new layer with the same configuration and its own parameters and buffers
        (a deep copy; built-ins rebuild from their configuration instead)."""
        return copy.deepcopy(self)

    def __repr__(self):
        return f"{type(self).__name__}()"


def _overrides(layer, base, names):
    """True when type(layer) replaces any of ``names`` defined by ``base``."""
    return any(getattr(type(layer), n) is not getattr(base, n) for n in names)


_ENGINE_HOOKS = ("forward_batch", "backward_batch", "allocate")
_MATH = ("forward", "backward")


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

    def __init__(self, in_features: int, out_features: int, init: str = "he") -> None:
        super().__init__()
        self.in_features = check.positive_int("in_features", in_features)
        self.out_features_ = check.positive_int("out_features", out_features)
        self.init = check.choice("init", init, INITS)
        self.weight = self.parameter("weight", (self.in_features, self.out_features_))
        self.bias = self.parameter("bias", (self.out_features_,))

    def out_features(self, in_features: int) -> int:
        return self.out_features_

    def reset_parameters(self, rng: np.random.Generator) -> None:
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

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x @ weight + bias (NumPy)."""
        self._x = x
        out = np.empty((x.shape[0], self.out_features_), dtype=np.result_type(x, self.weight.value))
        reference.dense_forward(x, self.weight.value, self.bias.value, out)
        return out

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """weight.grad = x.T @ dy, bias.grad = sum of dy's rows; returns dy @ weight.T."""
        dx = np.empty((dy.shape[0], self.in_features), dtype=dy.dtype)
        reference.dense_backward(
            self._x, dy, self.weight.value, self.weight.grad, self.bias.grad, dx
        )
        return dx

    def allocate(self, capacity, in_features, dtype):
        self._out = np.empty((capacity, self.out_features_), dtype=dtype)
        self._dx = np.empty((capacity, in_features), dtype=dtype)

    def forward_batch(self, x, kernels):
        self._x = x
        out = self._out[: x.shape[0]]
        kernels.dense_forward(x, self.weight.value, self.bias.value, out)
        return out

    def backward_batch(self, dy, kernels, need_dx):
        dx = self._dx[: dy.shape[0]] if need_dx else None
        kernels.dense_backward(self._x, dy, self.weight.value, self.weight.grad, self.bias.grad, dx)
        return dx

    def fused_role(self):
        """ "dense" (the fused kernel runs x @ W + b), unless a subclass replaces the kernels."""
        return None if _overrides(self, Dense, _ENGINE_HOOKS + _MATH) else "dense"

    def clone(self) -> Layer:
        return Dense(self.in_features, self.out_features_, init=self.init)

    def __repr__(self):
        return f"Dense({self.in_features}, {self.out_features_}, init={self.init!r})"


class Activation(Layer):
    """Elementwise activation y = f(z); backward uses the saved output y.

    A subclass names its kernels with ``kernel`` (``kernels.<kernel>_forward(z, out)`` and
    ``kernels.<kernel>_backward(dy, y, out)`` in both backends) and its fused code with
    ``code`` (:mod:`minigd.kernels.codes`).
    """

    kernel: str | None = None
    code: int | None = None

    def forward(self, z: np.ndarray) -> np.ndarray:
        """f(z) (NumPy reference kernel)."""
        out = np.empty_like(z)
        getattr(reference, f"{self.kernel}_forward")(z, out)
        self._y = out
        return out

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dy * f'(z), from the saved output."""
        out = np.empty_like(dy)
        getattr(reference, f"{self.kernel}_backward")(dy, self._y, out)
        return out

    def allocate(self, capacity, in_features, dtype):
        self._out = np.empty((capacity, in_features), dtype=dtype)
        self._dx = np.empty((capacity, in_features), dtype=dtype)

    def forward_batch(self, z, kernels):
        out = self._out[: z.shape[0]]
        getattr(kernels, self.kernel + "_forward")(z, out)
        self._y = out
        return out

    def backward_batch(self, dy, kernels, need_dx):
        dx = self._dx[: dy.shape[0]]
        getattr(kernels, self.kernel + "_backward")(dy, self._y, dx)
        return dx

    def fused_role(self):
        """The activation code, unless a subclass replaces the kernels."""
        return None if _overrides(self, Activation, _ENGINE_HOOKS + _MATH) else self.code

    def clone(self) -> Layer:
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


class Dropout(Layer):
    """Inverted dropout (torch ``nn.Dropout``): in train mode each unit is kept with
    probability ``1 - p`` and scaled by ``1 / (1 - p)``; in eval mode the identity.

    Masks come from ``self.rng`` (a numpy Generator). ``fit`` reseeds it before every update
    from (model seed, fit seed, update step, layer index) (:meth:`Layer.reseed`), so the masks
    of a run are a pure function of its seeds and the step: the same seeds give the same run
    and a checkpoint resumed mid-epoch continues bit for bit. Outside ``fit`` the generator is
    seeded from the model's seed when the model is built.

    Cost: Dropout has no fused kernel, so ``fit`` runs one Python iteration per update for a
    model holding it. ``benchmarks/blocks.py`` (784-128-10, batch 64, MNIST sample, numba, a
    loaded 2-core machine): 0.34 s/epoch fused, 0.82 s per-iteration without Dropout, 0.74 s
    with Dropout(0.2): about 2x the fused epoch, almost all of it the per-iteration path.

    Parameters
    ----------
    p : float in [0, 1), default 0.5
        Probability of zeroing a unit.
    """

    name = "dropout"
    p: float
    rng: np.random.Generator

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= float(p) < 1.0:
            raise ValueError(f"p (the dropout probability) must be a float in [0, 1), got {p!r}")
        self.p = float(p)
        self.rng = np.random.default_rng(0)
        self._mask = None

    def reset_parameters(self, rng: np.random.Generator) -> None:
        """Seed ``self.rng`` from ``rng`` (the model's per-layer stream)."""
        self.rng = np.random.default_rng(rng.integers(0, 2**63))

    def reseed(self, key):
        """``self.rng`` = a new Generator seeded by ``key`` (see :meth:`Layer.reseed`)."""
        self.rng = np.random.default_rng([int(k) for k in key])

    def _draw_mask(self, shape, dtype):
        mask = self._mask
        if (
            mask is None
            or mask.shape[0] < shape[0]
            or mask.shape[1:] != shape[1:]
            or mask.dtype != dtype
        ):
            self._mask = np.empty(shape, dtype=dtype)
            self._uniform = np.empty(shape, dtype=np.float64)
        mask, uniform = self._mask[: shape[0]], self._uniform[: shape[0]]
        self.rng.random(out=uniform)
        np.greater_equal(uniform, self.p, out=mask, casting="unsafe")
        mask *= 1.0 / (1.0 - self.p)
        return mask

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x * mask / (1 - p) in train mode (p > 0), else x."""
        if not self.training or self.p == 0.0:
            self._active = None
            return x
        self._active = self._draw_mask(x.shape, np.result_type(x.dtype, np.float32))
        return x * self._active

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dy * the mask of the last forward (dy in eval mode)."""
        return dy if self._active is None else dy * self._active

    def allocate(self, capacity, in_features, dtype):
        self._mask = np.empty((capacity, in_features), dtype=dtype)
        self._uniform = np.empty((capacity, in_features), dtype=np.float64)
        self._out = np.empty((capacity, in_features), dtype=dtype)
        self._dx = np.empty((capacity, in_features), dtype=dtype)

    def forward_batch(self, x, kernels):
        if not self.training or self.p == 0.0:
            self._active = None
            return x
        self._active = self._draw_mask(x.shape, x.dtype)
        out = self._out[: x.shape[0]]
        np.multiply(x, self._active, out=out)
        return out

    def backward_batch(self, dy, kernels, need_dx):
        if self._active is None:
            return dy
        dx = self._dx[: dy.shape[0]]
        np.multiply(dy, self._active, out=dx)
        return dx

    def clone(self) -> Layer:
        return Dropout(self.p)

    def __repr__(self):
        return f"Dropout(p={self.p})"


class BatchNorm(Layer):
    """Batch normalisation over the features of (N, num_features) inputs (torch ``BatchNorm1d``).

    Train mode: y = (x - mean) / sqrt(var + eps) * weight + bias with the batch mean and the
    biased batch variance; ``running_mean`` and ``running_var`` (the unbiased variance) move by
    ``momentum``: ``running = (1 - momentum) * running + momentum * batch``. Eval mode uses the
    running statistics. ``state_dict`` keys: ``"{i}.weight"``, ``"{i}.bias"`` (when ``affine``),
    ``"{i}.running_mean"``, ``"{i}.running_var"`` (buffers). A batch of one row in train mode is
    a ValueError, as in torch.

    Cost: BatchNorm has no fused kernel, so ``fit`` runs one Python iteration per update for a
    model holding it. ``benchmarks/blocks.py`` (784-128-10, batch 64, MNIST sample, numba, a
    loaded 2-core machine): 0.34 s/epoch fused, 0.65 s with BatchNorm, 0.88 s with BatchNorm
    and Dropout: about 2-2.5x the fused epoch, almost all of it the per-iteration path.

    Parameters
    ----------
    num_features : int
    momentum : float in [0, 1], default 0.1
    eps : float > 0, default 1e-5
    affine : bool, default True
        Learn a per-feature scale ``weight`` (init 1) and shift ``bias`` (init 0).
    """

    name = "batch_norm"
    momentum: float
    eps: float
    affine: bool
    weight: Parameter
    bias: Parameter
    running_mean: Buffer
    running_var: Buffer

    def __init__(
        self, num_features: int, momentum: float = 0.1, eps: float = 1e-5, affine: bool = True
    ) -> None:
        super().__init__()
        self.num_features = check.positive_int("num_features", num_features)
        self.in_features = self.num_features
        if (
            isinstance(momentum, bool)
            or not isinstance(momentum, numbers.Real)
            or not 0.0 <= momentum <= 1.0
        ):
            raise ValueError(f"momentum must be a float in [0, 1], got {momentum!r}")
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps > 0:
            raise ValueError(f"eps must be a float > 0, got {eps!r}")
        self.momentum, self.eps = float(momentum), float(eps)
        self.affine = check.boolean("affine", affine)
        if self.affine:
            self.weight = self.parameter("weight", (self.num_features,), init=1.0)
            self.bias = self.parameter("bias", (self.num_features,), init=0.0)
        self.running_mean = self.buffer("running_mean", (self.num_features,), init=0.0)
        self.running_var = self.buffer("running_var", (self.num_features,), init=1.0)

    def _check(self, x):
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise ValueError(
                f"BatchNorm({self.num_features}) expects inputs of shape "
                f"(n, {self.num_features}), got {tuple(x.shape)}"
            )
        if self.training and x.shape[0] < 2:
            raise ValueError(
                f"BatchNorm needs more than 1 value per feature in train mode, got "
                f"a batch of {x.shape[0]} row: use a batch size >= 2 (or "
                f"drop_last=True), or call model.eval()"
            )

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Normalise x (NumPy); in train mode also update the running statistics."""
        self._check(x)
        if self.training:
            n = x.shape[0]
            mean = x.mean(axis=0)
            var = x.var(axis=0)
            m = self.momentum
            rm, rv = self.running_mean.value, self.running_var.value
            rm[...] = (1.0 - m) * rm + m * mean
            rv[...] = (1.0 - m) * rv + m * var * (n / (n - 1))
        else:
            mean, var = self.running_mean.value, self.running_var.value
        self._invstd = 1.0 / np.sqrt(var + self.eps)
        self._xhat = (x - mean) * self._invstd
        if not self.affine:
            return self._xhat.copy()
        return self._xhat * self.weight.value + self.bias.value

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """Gradients of weight and bias; dx through the batch statistics in train mode."""
        if self.affine:
            self.weight.grad[...] = (dy * self._xhat).sum(axis=0)
            self.bias.grad[...] = dy.sum(axis=0)
            dxhat = dy * self.weight.value
        else:
            dxhat = dy
        if not self.training:
            return dxhat * self._invstd
        n = dy.shape[0]
        return (self._invstd / n) * (
            n * dxhat - dxhat.sum(axis=0) - self._xhat * (dxhat * self._xhat).sum(axis=0)
        )

    def allocate(self, capacity, in_features, dtype):
        rows = lambda: np.empty((capacity, self.num_features), dtype=dtype)
        self._out, self._dx, self._xhat_buf, self._tmp = rows(), rows(), rows(), rows()
        vector = lambda: np.empty(self.num_features, dtype=dtype)
        self._mean, self._var, self._inv, self._s1, self._s2 = (vector() for _ in range(5))

    def forward_batch(self, x, kernels):
        """As :meth:`forward`, into buffers reused from batch to batch (no allocation)."""
        self._check(x)
        n = x.shape[0]
        xhat, tmp, inv = self._xhat_buf[:n], self._tmp[:n], self._inv
        rm, rv = self.running_mean.value, self.running_var.value
        if self.training:
            mean, var, m = self._mean, self._var, self.momentum
            np.mean(x, axis=0, out=mean)
            np.subtract(x, mean, out=xhat)
            np.multiply(xhat, xhat, out=tmp)
            np.sum(tmp, axis=0, out=var)
            var /= n
            np.multiply(mean, m, out=self._s1)
            rm *= 1.0 - m
            rm += self._s1
            np.multiply(var, m * n / (n - 1), out=self._s1)
            rv *= 1.0 - m
            rv += self._s1
        else:
            np.subtract(x, rm, out=xhat)
            var = rv
        np.add(var, self.eps, out=inv)
        np.sqrt(inv, out=inv)
        np.divide(1.0, inv, out=inv)
        xhat *= inv
        self._xhat, self._invstd = xhat, inv
        out = self._out[:n]
        if self.affine:
            np.multiply(xhat, self.weight.value, out=out)
            out += self.bias.value
        else:
            out[...] = xhat
        return out

    def backward_batch(self, dy, kernels, need_dx):
        """As :meth:`backward`, into reused buffers."""
        n = dy.shape[0]
        xhat, tmp, dx = self._xhat, self._tmp[:n], self._dx[:n]
        if self.affine:
            np.multiply(dy, xhat, out=tmp)
            np.sum(tmp, axis=0, out=self.weight.grad)
            np.sum(dy, axis=0, out=self.bias.grad)
            np.multiply(dy, self.weight.value, out=dx)
        else:
            dx[...] = dy
        if not self.training:
            dx *= self._invstd
            return dx
        s1, s2 = self._s1, self._s2
        np.sum(dx, axis=0, out=s1)
        np.multiply(dx, xhat, out=tmp)
        np.sum(tmp, axis=0, out=s2)
        dx *= n
        dx -= s1
        np.multiply(xhat, s2, out=tmp)
        dx -= tmp
        np.multiply(self._invstd, 1.0 / n, out=s1)
        dx *= s1
        return dx

    def clone(self) -> Layer:
        return BatchNorm(
            self.num_features, momentum=self.momentum, eps=self.eps, affine=self.affine
        )

    def __repr__(self):
        return (
            f"BatchNorm({self.num_features}, momentum={self.momentum}, eps={self.eps}, "
            f"affine={self.affine})"
        )


class Flatten(Layer):
    """Flatten every dimension after the first (torch ``nn.Flatten``, Keras ``Flatten``).

    As the first layer of a :class:`minigd.Sequential`, it lets ``fit``, ``predict`` and
    ``evaluate`` take image-shaped X, such as (N, 28, 28) float or uint8 pixels: the model
    views X as (N, 28 * 28) (a reshape: no copy for a C-contiguous array or memmap) and the
    next layer (a Dense) gives the input width. Inside the model it is the identity, and it
    runs on the fused path.
    """

    name = "flatten"

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x reshaped to (n, -1)."""
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dy reshaped to the last forward's input shape."""
        return dy.reshape(self._shape)

    def forward_batch(self, x, kernels):
        return x.reshape(x.shape[0], -1)

    def backward_batch(self, dy, kernels, need_dx):
        return dy

    def fused_role(self):
        """ "identity": the fused kernel skips it (its input is already 2-D there)."""
        return "identity" if type(self) is Flatten else None

    def clone(self) -> Layer:
        return Flatten()
