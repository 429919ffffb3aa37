"""Check a layer's, a model's or a loss's gradients against central differences, in float64.

``gradcheck(obj, x, y)`` works on a float64 copy of ``obj`` (the object you pass is never
changed), computes the analytic gradient once with ``backward`` (or ``value_and_grad`` for a
loss), and compares every entry of it with the central difference
``(f(v + eps) - f(v - eps)) / (2 eps)``, for the input and for every parameter.

For a layer or a model the scalar checked is ``f = sum(g * forward(x))`` with a fixed random
``g`` (the upstream gradient, drawn from ``seed``), so ``backward(g)`` is its exact gradient.
For a loss it is the loss value itself.

The error of an entry is ``|analytic - numeric| / max(1, max |numeric| of that array)``: relative
to the array's largest gradient, absolute for arrays whose gradients are all below 1 (so that
entries near zero do not blow up). The result keeps the worst one and where it occurred.
"""

from __future__ import annotations

import copy

import numpy as np
import numpy.typing as npt

from . import _validation as check
from .layers import Layer
from .losses import Loss
from .model import Sequential


class GradcheckResult:
    """What :func:`gradcheck` found: the worst error, where, and whether it is within ``tol``.

    Attributes
    ----------
    max_error : float
        The worst error over the input and every parameter (``inf`` for a non-finite gradient).
    where : str
        Its location, such as ``"input[2, 0]"``, ``"weight[3, 1]"`` (a layer's parameter) or
        ``"0.weight[3, 1]"`` (a model's parameter, keyed as in ``state_dict``).
    analytic, numeric : float
        The two gradient values at ``where``.
    errors : dict
        The worst error of each array checked, ``{"input": ..., "0.weight": ..., ...}``.
    tol : float
        The tolerance ``ok`` compares with.
    checked : str
        The class name of the object checked.
    ok : bool
        ``max_error <= tol``; ``bool(result)`` is the same.
    """

    def __init__(self, max_error, where, analytic, numeric, errors, tol, checked):
        self.max_error = float(max_error)
        self.where = where
        self.analytic = float(analytic)
        self.numeric = float(numeric)
        self.errors = dict(errors)
        self.tol = float(tol)
        self.checked = checked
        self.ok = bool(self.max_error <= self.tol)

    def __bool__(self):
        return self.ok

    def assert_ok(self) -> GradcheckResult:
        """Raise AssertionError with the details unless ``ok``; return the result otherwise."""
        if not self.ok:
            raise AssertionError(self._message())
        return self

    def _message(self):
        lines = [
            f"gradcheck of {self.checked} failed: max error {self.max_error:.3g} at "
            f"{self.where} > tol {self.tol:g} (analytic gradient {self.analytic!r}, central "
            f"differences {self.numeric!r})"
        ]
        if not np.isfinite(self.analytic):
            lines.append(
                "the analytic gradient is not finite there: backward must write (not "
                "add to) every parameter's grad, and return dx for every input entry"
            )
        lines.append(
            "worst error per array: "
            + ", ".join(f"{name} {err:.3g}" for name, err in self.errors.items())
        )
        return "\n".join(lines)

    def __repr__(self):
        return (
            f"GradcheckResult(ok={self.ok}, max_error={self.max_error:.3g}, "
            f"where={self.where!r}, tol={self.tol:g})"
        )


def _index(shape, flat_index):
    if not shape:
        return ""
    return "[" + ", ".join(str(int(i)) for i in np.unravel_index(flat_index, shape)) + "]"


def _numeric(f, array, eps):
    """Central differences of the scalar ``f()`` with respect to every entry of ``array``
    (perturbed in place and restored)."""
    out = np.zeros(array.shape, dtype=np.float64)
    flat_out = out.reshape(-1)
    for i in range(array.size):
        saved = array.flat[i]
        array.flat[i] = saved + eps
        plus = f()
        array.flat[i] = saved - eps
        minus = f()
        array.flat[i] = saved
        flat_out[i] = (plus - minus) / (2 * eps)
    return out


def _compare(analytic, numeric):
    """(worst error, flat index) of one array."""
    analytic = np.asarray(analytic, dtype=np.float64).reshape(numeric.shape)
    scale = max(1.0, float(np.abs(numeric).max(initial=0.0)))
    err = np.abs(analytic - numeric) / scale
    err = np.where(np.isfinite(err), err, np.inf)
    if err.size == 0:
        return 0.0, 0, analytic.reshape(-1), numeric.reshape(-1)
    i = int(np.argmax(err))
    return float(err.flat[i]), i, analytic.reshape(-1), numeric.reshape(-1)


def _rewinder(objects):
    """A function that puts every numpy Generator held as an attribute of ``objects`` back to
    its present state (so a layer that draws a random mask in train mode draws the same one at
    every evaluation)."""
    saved = []
    for obj in objects:
        for value in vars(obj).values():
            if isinstance(value, np.random.Generator):
                saved.append((value, copy.deepcopy(value.bit_generator.state)))

    def rewind():
        for generator, state in saved:
            generator.bit_generator.state = state

    return rewind


def gradcheck(
    obj: Layer | Loss | Sequential,
    x: npt.ArrayLike,
    y: npt.ArrayLike | None = None,
    *,
    eps: float = 1e-6,
    tol: float = 1e-6,
    seed: int = 0,
) -> GradcheckResult:
    """Compare ``obj``'s gradients with central differences in float64; a :class:`GradcheckResult`.

    ``obj`` is a layer (``mg.Layer``), a model (``mg.Sequential``) or a loss (``mg.Loss``), and
    is never changed: the check runs on a float64 copy, in the mode ``obj`` is in
    (``obj.training``; call ``obj.eval()`` first to check eval mode). Every entry of the input
    and of every parameter is perturbed by ``+-eps``, two forward passes each, so keep ``x``
    small (a few rows). A layer's parameters that are not yet initialised (the layer is in no
    model) are initialised with ``reset_parameters`` from ``seed``.

    For a layer or a model the scalar checked is ``sum(g * forward(x))`` for a random upstream
    gradient ``g`` (standard normal, from ``seed``), whose exact gradient is ``backward(g)``;
    for a loss it is ``value_and_grad(x, y)[0]``, against its gradient. Before ``backward``
    every parameter's ``grad`` is filled with NaN, so a backward that adds to ``p.grad`` instead
    of writing it, or forgets one, fails the check.

    Randomness: before every forward, each numpy ``Generator`` held as an attribute of the
    layer (of every layer of a model) is rewound to its state at the start, so a layer that
    draws a random mask in train mode (dropout) from its own ``Generator`` uses the same mask in
    every evaluation. A layer drawing from elsewhere must be checked in eval mode.

    Kinks: ReLU-like functions have no derivative at 0; an input within ``eps`` of a kink gives
    a wrong central difference. Random normal inputs avoid them.

    Parameters
    ----------
    obj : Layer, Sequential or Loss
    x : array of shape (n, features)
        The input: the layer's or model's input, or the loss's ``outputs`` (n, n_outputs).
    y : array or None, default None
        The targets, for a loss only (class ids or float values, as the loss expects).
    eps : float > 0, default 1e-6
        The perturbation of the central differences.
    tol : float >= 0, default 1e-6
        ``result.ok`` is ``max_error <= tol``.
    seed : int, default 0
        Seeds the upstream gradient (and uninitialised parameters of a standalone layer).

    Returns
    -------
    GradcheckResult
        ``.max_error``, ``.where`` (``"input[2, 0]"``, ``"0.weight[3, 1]"``), ``.ok``,
        ``bool(result)``, ``.assert_ok()``.

    Example
    -------
    >>> import numpy as np, minigd as mg
    >>> x = np.random.default_rng(0).normal(size=(4, 3))
    >>> mg.gradcheck(mg.Dense(3, 2), x).ok
    True
    """
    eps = check.real("eps", eps, low=0.0, low_open=True)
    tol = check.non_negative("tol", tol)
    seed = check.seed("seed", seed)
    if seed is None:
        raise TypeError("seed must be an int (gradcheck is deterministic), got None")
    x = np.array(check.features("x", x), dtype=np.float64)  # our own float64 copy
    rng = np.random.default_rng(seed)
    if isinstance(obj, Loss):
        problem = _loss_problem(obj, x, y)
    elif y is not None:
        raise ValueError(
            f"y is for a loss (its targets); a {type(obj).__name__} is checked "
            f"against a random upstream gradient: leave y out"
        )
    elif isinstance(obj, Sequential):
        problem = _model_problem(obj, x, rng)
    elif isinstance(obj, Layer):
        problem = _layer_problem(obj, x, rng)
    else:
        raise TypeError(f"obj must be a minigd Layer, Sequential or Loss, got {type(obj).__name__}")
    f, arrays = problem
    worst = (-1.0, "", np.nan, np.nan)
    errors = {}
    for name, array, analytic in arrays:
        numeric = _numeric(f, array, eps)
        err, i, a, n = _compare(analytic, numeric)
        errors[name] = err
        if err > worst[0]:
            worst = (
                err,
                name + _index(array.shape, i),
                a[i] if a.size else 0.0,
                n[i] if n.size else 0.0,
            )
    err, where, a, n = worst
    return GradcheckResult(max(err, 0.0), where, a, n, errors, tol, _describe(obj))


def _describe(obj):
    return type(obj).__name__


def _loss_problem(loss, x, y):
    if y is None:
        raise ValueError(
            f"y is required to check the loss {type(loss).__name__}: pass its "
            f"targets, e.g. gradcheck(loss, outputs, y)"
        )
    loss = copy.deepcopy(loss)
    targets = loss.check_targets(y, x.shape[0], x.shape[1])
    if isinstance(targets, np.ndarray) and targets.dtype.kind == "f":
        targets = targets.astype(np.float64)
    value, grad = loss.value_and_grad(x, targets)
    analytic = _checked_gradient(loss, "value_and_grad's gradient", grad, x.shape)

    def f():
        return float(loss.value_and_grad(x, targets)[0])

    return f, [("input", x, analytic)]


def _checked_gradient(obj, what, grad, shape):
    grad = np.asarray(grad) if grad is not None else None
    if grad is None or grad.shape != shape:
        got = None if grad is None else grad.shape
        raise ValueError(
            f"{type(obj).__name__}: {what} has shape {got}, expected {shape} (the shape of x)"
        )
    return np.array(grad, dtype=np.float64)


def _float64_layer(layer, rng):
    """A float64 copy of ``layer``, standing alone: parameters and buffers in arrays of its own.

    A layer inside a model keeps its present values; a layer in no model (its parameters have
    no ``offset``) is initialised by ``reset_parameters(rng)``, as a model would do.
    """
    standalone = all(p.offset is None for p in layer.parameters())
    twin = copy.deepcopy(layer)
    for p in twin.parameters():
        p.value = np.array(p.value, dtype=np.float64)
        p.grad = np.zeros(p.shape, dtype=np.float64)
        p.offset = None
    for b in twin.buffers():
        b.value = np.array(b.value, dtype=np.float64)
    if standalone and twin.parameters():
        twin.reset_parameters(rng)
    return twin


def _layer_problem(layer, x, rng):
    twin = _float64_layer(layer, rng)
    rewind = _rewinder([twin])

    def forward():
        rewind()
        return np.asarray(twin.forward(x), dtype=np.float64)

    out = forward()
    g = rng.standard_normal(out.shape)
    for p in twin.parameters():
        p.grad[...] = np.nan
    dx = _checked_gradient(twin, "backward's dx", twin.backward(g.copy()), x.shape)
    arrays = [("input", x, dx)]
    arrays += [(name, p.value, p.grad.copy()) for name, p in twin.named_parameters()]

    def f():
        return float(np.sum(g * forward()))

    return f, arrays


def _model_problem(model, x, rng):
    twin = Sequential(*[layer.clone() for layer in model.layers], seed=model.seed, dtype=np.float64)
    twin.load_state_dict(
        {key: value.astype(np.float64) for key, value in model.state_dict().items()}
    )
    twin.train(model.training)
    rewind = _rewinder(twin.layers)
    x = check.features("x", x, twin.n_features)

    def forward():
        rewind()
        return twin.forward(x)

    out = forward()
    g = rng.standard_normal(out.shape)
    twin.flat_grads[...] = np.nan
    dx = _checked_gradient(twin, "backward's dx", twin.backward(g), x.shape)
    arrays = [("input", x, dx)]
    arrays += [(name, p.value, p.grad.copy()) for name, p in twin.named_parameters()]

    def f():
        return float(np.sum(g * forward()))

    return f, arrays
