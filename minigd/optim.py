"""Optimizers with torch.optim semantics: SGD (momentum, Nesterov, weight decay), Adam, AdamW.

Each class gathers parameters, gradients and state and calls one functional update kernel of the
active backend. State uses torch's names (``momentum_buffer``, ``exp_avg``, ``exp_avg_sq``,
``step``) and lives in flat arrays; when the parameters are a whole model's flat buffer (the
usual ``model.parameters()``) the update is one pass over one vector.
"""

from __future__ import annotations

import numbers
from collections import namedtuple
from typing import Any, Iterable

import numpy as np

from . import _validation as check
from .backend import kernels as _active_kernels
from .hooks import hooks_apply
from .kernels import reference
from .layers import Parameter
from .schedules import BatchSizeSchedule, Schedule


def _owner(array):
    """The array that owns ``array``'s memory (itself when it is not a view)."""
    while array.base is not None and isinstance(array.base, np.ndarray):
        array = array.base
    return array


FusedUpdate = namedtuple("FusedUpdate", "code hyperparameters state_names")


class Optimizer:
    """Base class: parameter bookkeeping, ``lr``, ``step``, ``zero_grad``, ``state_dict``.

    A user-written optimizer sets ``state_names`` and writes :meth:`update` for one parameter
    in NumPy; it trains with ``fit`` on the per-iteration path and saves in checkpoints. With
    hyperparameters beyond lr, it overrides :meth:`hyperparameters` and
    :meth:`set_hyperparameters` too. Built-ins update the whole flat buffer through the backend
    kernels (:meth:`update_flat`) and declare :meth:`fused_update`. ``name`` (str or None) is
    the registry name of the class.

    Example: sign-SGD, p <- p - lr * sign(grad)::

        class SignSGD(mg.Optimizer):
            def update(self, value, grad, state, lr):
                value -= lr * np.sign(grad)
    """

    name: str | None = None
    state_names: tuple[str, ...] = ()
    #: where the momentum a schedule sets (:meth:`set_momentum`) sits in ``fused_update()``'s
    #: hyperparameters; None: the optimizer has none
    momentum_index: int | None = None

    def __init__(self, params: Iterable[Parameter], lr: float) -> None:
        if callable(getattr(params, "parameters", None)):
            raise TypeError(
                f"params got the {type(params).__name__} itself: pass "
                f"model.parameters(), e.g. {type(self).__name__}(model.parameters(), "
                f"lr=0.1)"
            )
        try:
            params = list(params)
        except TypeError:
            raise TypeError(
                f"params must be an iterable of Parameter: pass model.parameters(), "
                f"got {type(params).__name__}"
            ) from None
        if not params:
            raise ValueError("params is empty: pass model.parameters()")
        for i, p in enumerate(params):
            if not isinstance(p, Parameter):
                raise TypeError(
                    f"params[{i}] must be a minigd Parameter, got {type(p).__name__}: "
                    f"pass model.parameters()"
                )
        if len({p.dtype for p in params}) != 1:
            raise TypeError("all params must share one dtype")
        if len({id(p) for p in params}) != len(params):
            raise ValueError("params contains the same parameter twice")
        self.params = params
        self.dtype = params[0].dtype
        self._lr_max = float(np.finfo(self.dtype).max)
        self.lr = lr
        self.step_count = 0
        self._flat = self._flat_view(params)
        sizes = [p.size for p in params]
        self._offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        total = int(self._offsets[-1])
        self.state = {name: np.zeros(total, dtype=self.dtype) for name in self.state_names}

    @staticmethod
    def _flat_view(params):
        """(values, grads) of the model buffer when params cover it exactly, in order; else None."""
        if any(p.offset is None for p in params):
            return None
        values, grads = _owner(params[0].value), _owner(params[0].grad)
        offset = 0
        for p in params:
            if p.offset != offset or _owner(p.value) is not values or _owner(p.grad) is not grads:
                return None
            offset += p.size
        if values.ndim != 1 or grads.ndim != 1 or offset != values.size:
            return None
        return values, grads

    @property
    def flat(self):
        """(flat values, flat grads) when the params are a whole model's flat buffers in order
        (the usual ``model.parameters()``): every update is then one pass; else None."""
        return self._flat

    @property
    def lr(self):
        """Learning rate used by the next ``step()``."""
        return self._lr

    @lr.setter
    def lr(self, value):
        if isinstance(value, (Schedule, BatchSizeSchedule)) or (
            callable(value) and not isinstance(value, numbers.Number)
        ):
            raise TypeError(
                f"lr must be a number, got the schedule {value!r}: pass a number as "
                f"lr and the schedule as fit(schedule=...), e.g. "
                f"fit(..., optimizer=SGD(model.parameters(), lr=0.1), "
                f"schedule=schedule)"
            )
        self._lr = check.real("lr", value, low=0.0, high=getattr(self, "_lr_max", None))

    def zero_grad(self) -> None:
        """Set every gradient to zero."""
        if self._flat is not None:
            self._flat[1].fill(0)
        else:
            for p in self.params:
                p.grad.fill(0)

    def _slices(self):
        """(param 1-D, grad 1-D, {state name: 1-D}) per flat update call."""
        if self._flat is not None:
            yield self._flat[0], self._flat[1], self.state
            return
        for i, p in enumerate(self.params):
            lo, hi = self._offsets[i], self._offsets[i + 1]
            state = {k: v[lo:hi] for k, v in self.state.items()}
            yield p.value.reshape(-1), p.grad.reshape(-1), state

    def step(self) -> None:
        """Apply one update to every parameter from its current gradient.

        Built-ins update whole flat buffers through the backend kernels (:meth:`update_flat`);
        a user subclass that writes only :meth:`update` (of the base class or of a built-in)
        is called once per parameter (see :mod:`minigd.hooks`).
        """
        self.step_count += 1
        mine: Any = type(self)  # a class is hashable; mypy does not see it through lru_cache
        if not hooks_apply(mine, ("update_flat",), ("update",)):
            for i, p in enumerate(self.params):
                lo, hi = self._offsets[i], self._offsets[i + 1]
                state = {k: v[lo:hi].reshape(p.shape) for k, v in self.state.items()}
                self.update(p.value, p.grad, state, self.lr)
            return
        kernels = _active_kernels()
        for value, grad, state in self._slices():
            self.update_flat(value, grad, state, self.lr, kernels)

    def update(
        self, value: np.ndarray, grad: np.ndarray, state: dict[str, np.ndarray], lr: float
    ) -> None:
        """Update one parameter in place (NumPy): what a user-written optimizer provides.

        ``value``, ``grad`` and each ``state[name]`` (one per name in ``state_names``, zeros
        before the first step) are arrays of the parameter's shape, updated in place;
        ``self.step_count`` is the 1-based number of this step.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must implement update(value, grad, state, lr)"
        )

    def update_flat(self, value, grad, state, lr, kernels):
        """Engine hook: update 1-D arrays (a whole flat buffer, or one parameter's) in place
        with the backend ``kernels``. Built-ins implement it; the base class has none."""
        raise NotImplementedError

    def fused_update(self):
        """How the fused whole-epoch kernel runs this update: None (it does not: the default,
        so a user-written optimizer trains one Python iteration per update), or
        ``FusedUpdate(code, hyperparameters, state_names)``: the update's name in
        :data:`minigd.kernels.jit_optim.CODES`, its hyperparameters as a float64 array in the
        order the kernel reads them, and the names of the state arrays it updates, in order
        (at most 3; None for a slot the update leaves unused)."""
        return None

    def set_momentum(self, value: float) -> None:
        """Set the momentum a schedule cycles (``schedule.momentum(t)``, e.g. OneCycle): SGD's
        momentum, Adam's beta1, RMSprop's momentum. The base class has none: TypeError."""
        raise TypeError(
            f"{type(self).__name__} has no momentum a schedule can set: use SGD, "
            f"Adam, AdamW or RMSprop(momentum > 0), or a schedule that leaves the "
            f"momentum alone (e.g. OneCycle(..., cycle_momentum=False))"
        )

    def _replaces_update(self, base):
        """True when a subclass of ``base`` replaces its math (then it does not run fused)."""
        return any(
            getattr(type(self), n) is not getattr(base, n) for n in ("update", "update_flat")
        )

    def hyperparameters(self) -> dict[str, Any]:
        """{name: value} of the hyperparameters (saved by state_dict); the base has lr only."""
        return {"lr": self.lr}

    def set_hyperparameters(self, lr):
        """Check and set the hyperparameters as :meth:`hyperparameters` gives them (used by
        load_state_dict). A subclass with more hyperparameters overrides both."""
        self.lr = lr

    def state_dict(self) -> dict[str, Any]:
        """{"type", "hyperparameters", "step", "state": {"<param index>.<name>": array}}, copied."""
        state = {}
        for i, p in enumerate(self.params):
            lo, hi = self._offsets[i], self._offsets[i + 1]
            for name, flat in self.state.items():
                state[f"{i}.{name}"] = flat[lo:hi].reshape(p.shape).copy()
        return {
            "type": type(self).__name__,
            "hyperparameters": self.hyperparameters(),
            "step": self.step_count,
            "state": state,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore hyperparameters, step count and state after checking them (all or nothing)."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        for key in ("type", "hyperparameters", "step", "state"):
            if key not in state_dict:
                raise ValueError(f"optimizer state_dict is missing {key!r}")
        if state_dict["type"] != type(self).__name__:
            raise ValueError(
                f"optimizer state_dict is for {state_dict['type']}, not {type(self).__name__}"
            )
        step = state_dict["step"]
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"optimizer state_dict step must be an int >= 0, got {step!r}")
        if not isinstance(state_dict["hyperparameters"], dict):
            raise TypeError("optimizer state_dict['hyperparameters'] must be a dict")
        if not isinstance(state_dict["state"], dict):
            raise TypeError("optimizer state_dict['state'] must be a dict of arrays")
        hyper = dict(state_dict["hyperparameters"])
        if set(hyper) != set(self.hyperparameters()):
            raise ValueError(
                f"optimizer hyperparameters {sorted(hyper)} do not match "
                f"{sorted(self.hyperparameters())}"
            )
        expected = {f"{i}.{name}": p for i, p in enumerate(self.params) for name in self.state}
        state = state_dict["state"]
        if set(state) != set(expected):
            raise ValueError(
                f"optimizer state keys do not match: missing "
                f"{sorted(set(expected) - set(state))}, unexpected "
                f"{sorted(set(state) - set(expected))}"
            )
        for key, p in expected.items():
            value = state[key]
            if not isinstance(value, np.ndarray) or value.shape != p.shape:
                raise ValueError(f"optimizer state[{key!r}] must be an array of shape {p.shape}")
            if value.dtype != self.dtype:
                raise TypeError(
                    f"optimizer state[{key!r}] has dtype {value.dtype}, expected {self.dtype}"
                )
            if not np.all(np.isfinite(value)):
                raise ValueError(f"optimizer state[{key!r}] contains NaN or inf")
            if key.endswith("exp_avg_sq") and np.any(value < 0):
                raise ValueError(f"optimizer state[{key!r}] must be >= 0 (a mean of squares)")
        probe = type(self).__new__(type(self))
        probe.set_hyperparameters(**hyper)
        self.set_hyperparameters(**hyper)
        self.step_count = int(step)
        for i in range(len(self.params)):
            lo, hi = self._offsets[i], self._offsets[i + 1]
            for name, flat in self.state.items():
                flat[lo:hi] = state[f"{i}.{name}"].reshape(-1)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args})"


class BuiltinOptimizer(Optimizer):
    """Base of the built-in optimizers: their math is :meth:`update_flat` on a backend's kernels,
    and :meth:`update` (one parameter, NumPy) runs it on the reference kernels."""

    def update(
        self, value: np.ndarray, grad: np.ndarray, state: dict[str, np.ndarray], lr: float
    ) -> None:
        """One step on one parameter (NumPy reference kernels)."""
        self.update_flat(
            value.reshape(-1),
            grad.reshape(-1),
            {k: v.reshape(-1) for k, v in state.items()},
            lr,
            reference,
        )


class SGD(BuiltinOptimizer):
    """Stochastic gradient descent with torch.optim.SGD's momentum and weight decay.

    g = grad + weight_decay * p
    b = g (first step), else momentum * b + (1 - dampening) * g
    p <- p - lr * (g + momentum * b if nesterov else b)         (b = g when momentum = 0)

    Parameters
    ----------
    params : iterable of Parameter
    lr : float >= 0
    momentum : float in [0, 1), default 0
    dampening : float in [0, 1], default 0
    nesterov : bool, default False (needs momentum > 0 and dampening = 0)
    weight_decay : float >= 0, default 0 (L2 penalty added to the gradient)

    Note: this is torch's momentum form (lr multiplies the buffer), not Sutskever's
    (where the buffer holds lr * g).
    """

    name = "sgd"
    state_names = ("momentum_buffer",)
    momentum_index = 0

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        self.set_hyperparameters(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            nesterov=nesterov,
            weight_decay=weight_decay,
        )
        super().__init__(params, lr)

    def set_hyperparameters(self, lr, momentum, dampening, nesterov, weight_decay):
        self.lr = lr
        self.momentum = check.real("momentum", momentum, low=0.0, high=1.0, high_open=True)
        self.dampening = check.real("dampening", dampening, low=0.0, high=1.0)
        self.nesterov = check.boolean("nesterov", nesterov)
        self.weight_decay = check.non_negative("weight_decay", weight_decay)
        if self.nesterov and (self.momentum == 0 or self.dampening != 0):
            raise ValueError(
                "nesterov=True needs momentum > 0 and dampening = 0 "
                f"(got momentum={self.momentum}, dampening={self.dampening})"
            )

    def set_momentum(self, value: float) -> None:
        """Set ``momentum`` (what a schedule with ``sets_momentum`` cycles)."""
        momentum = check.real("momentum", value, low=0.0, high=1.0, high_open=True)
        if self.nesterov and momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0, got momentum=0")
        self.momentum = momentum

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "momentum": self.momentum,
            "dampening": self.dampening,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
        }

    def update_flat(self, value, grad, state, lr, kernels):
        kernels.sgd_update(
            value,
            grad,
            state["momentum_buffer"],
            lr,
            self.momentum,
            self.dampening,
            self.nesterov,
            self.weight_decay,
            self.step_count == 1,
        )

    def fused_update(self):
        if self._replaces_update(SGD):
            return None
        hyper = [self.momentum, self.dampening, float(self.nesterov), self.weight_decay]
        return FusedUpdate("sgd", np.array(hyper, dtype=np.float64), self.state_names)


class Adam(BuiltinOptimizer):
    """Adam (Kingma & Ba) with torch.optim.Adam's conventions.

    g = grad + weight_decay * p          (AdamW instead decays p directly: p <- p (1 - lr wd))
    m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2;   t = step count from 1
    p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

    Note: eps is added after the bias correction of v, as torch does (not to sqrt(v_hat) of the
    paper's Algorithm 1 written with corrected m).

    Parameters
    ----------
    params : iterable of Parameter
    lr : float >= 0, default 1e-3
    betas : (float, float) each in [0, 1), default (0.9, 0.999)
    eps : float > 0, default 1e-8
    weight_decay : float >= 0, default 0
    """

    name = "adam"
    state_names = ("exp_avg", "exp_avg_sq")
    decoupled = False
    momentum_index = 0

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        self.set_hyperparameters(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        super().__init__(params, lr)

    def set_hyperparameters(self, lr, betas, eps, weight_decay):
        self.lr = lr
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = (
            check.real("betas[0]", betas[0], low=0.0, high=1.0, high_open=True),
            check.real("betas[1]", betas[1], low=0.0, high=1.0, high_open=True),
        )
        self.eps = check.real("eps", eps, low=0.0, low_open=True)
        self.weight_decay = check.non_negative("weight_decay", weight_decay)

    def set_momentum(self, value: float) -> None:
        """Set beta1 (what a schedule with ``sets_momentum`` cycles, as torch's OneCycleLR)."""
        self.betas = (
            check.real("momentum", value, low=0.0, high=1.0, high_open=True),
            self.betas[1],
        )

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "betas": list(self.betas),
            "eps": self.eps,
            "weight_decay": self.weight_decay,
        }

    def update_flat(self, value, grad, state, lr, kernels):
        kernels.adam_update(
            value,
            grad,
            state["exp_avg"],
            state["exp_avg_sq"],
            self.step_count,
            lr,
            self.betas[0],
            self.betas[1],
            self.eps,
            self.weight_decay,
            self.decoupled,
        )

    def fused_update(self):
        if self._replaces_update(Adam):
            return None
        hyper = [self.betas[0], self.betas[1], self.eps, self.weight_decay, float(self.decoupled)]
        return FusedUpdate("adam", np.array(hyper, dtype=np.float64), self.state_names)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as torch.optim.AdamW.

    p <- p (1 - lr * weight_decay), then the Adam step without weight decay in the gradient.
    Default weight_decay 1e-2, as torch.
    """

    name = "adamw"
    decoupled = True

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


class RMSprop(BuiltinOptimizer):
    """RMSprop with torch.optim.RMSprop's conventions (Hinton's lecture 6e; Graves' centered form).

    g = grad + weight_decay * p
    v <- alpha v + (1 - alpha) g^2                                   (state "square_avg")
    centered: a <- lerp(a, g, 1 - alpha) (state "grad_avg");  d = sqrt(v - a^2) + eps
    else:     d = sqrt(v) + eps
    momentum > 0: b <- momentum b + g / d;  p <- p - lr b          (state "momentum_buffer")
    else:         p <- p - lr g / d

    State, as torch: ``square_avg`` always, ``momentum_buffer`` when momentum > 0, ``grad_avg``
    when centered; all start at zero.

    Parameters
    ----------
    params : iterable of Parameter
    lr : float >= 0, default 1e-2
    alpha : float in [0, 1], default 0.99 (smoothing of the squared gradient)
    eps : float > 0, default 1e-8
    weight_decay : float >= 0, default 0 (L2 penalty added to the gradient)
    momentum : float in [0, 1), default 0
    centered : bool, default False (normalise by the gradient's estimated variance)
    """

    name = "rmsprop"
    momentum_index = 3

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
    ) -> None:
        self.set_hyperparameters(
            lr=lr,
            alpha=alpha,
            eps=eps,
            weight_decay=weight_decay,
            momentum=momentum,
            centered=centered,
        )
        self.state_names = tuple(n for n in self._slots() if n is not None)
        super().__init__(params, lr)

    def _slots(self):
        return (
            "square_avg",
            "momentum_buffer" if self.momentum > 0 else None,
            "grad_avg" if self.centered else None,
        )

    def set_hyperparameters(self, lr, alpha, eps, weight_decay, momentum, centered):
        self.lr = lr
        alpha = check.real("alpha", alpha, low=0.0, high=1.0)
        eps = check.real("eps", eps, low=0.0, low_open=True)
        weight_decay = check.non_negative("weight_decay", weight_decay)
        momentum = check.real("momentum", momentum, low=0.0, high=1.0, high_open=True)
        centered = check.boolean("centered", centered)
        if "state_names" in self.__dict__ and (
            (momentum > 0) != (self.momentum > 0) or centered != self.centered
        ):
            raise ValueError(
                f"momentum={momentum}, centered={centered} needs other state than "
                f"this RMSprop holds (momentum={self.momentum}, centered="
                f"{self.centered}): create a new RMSprop"
            )
        self.alpha, self.eps, self.weight_decay = alpha, eps, weight_decay
        self.momentum, self.centered = momentum, centered

    def set_momentum(self, value: float) -> None:
        """Set ``momentum`` (what a schedule with ``sets_momentum`` cycles); needs an RMSprop
        built with momentum > 0 (it holds the momentum buffer)."""
        momentum = check.real("momentum", value, low=0.0, high=1.0, high_open=True)
        if not self.momentum > 0 or not momentum > 0:
            raise ValueError(
                f"a schedule that sets the momentum needs RMSprop(momentum > 0) "
                f"and momenta > 0 (got {self.momentum} and {momentum})"
            )
        self.momentum = momentum

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "alpha": self.alpha,
            "eps": self.eps,
            "weight_decay": self.weight_decay,
            "momentum": self.momentum,
            "centered": self.centered,
        }

    def update_flat(self, value, grad, state, lr, kernels):
        square_avg = state["square_avg"]
        buf, grad_avg = state.get("momentum_buffer"), state.get("grad_avg")
        if kernels is not reference:
            from .kernels import jit_optim  # here: `import minigd` stays Numba-free

            jit_optim.rmsprop_update(
                value,
                grad,
                square_avg,
                buf,
                grad_avg,
                lr,
                self.alpha,
                self.eps,
                self.weight_decay,
                self.momentum,
                self.centered,
            )
            return
        g = grad + self.weight_decay * value if self.weight_decay != 0 else grad
        square_avg *= self.alpha
        square_avg += (1 - self.alpha) * g * g
        reference.flush_subnormal(square_avg)
        if self.centered:
            w = 1 - self.alpha  # torch.lerp's two forms
            if w < 0.5:
                grad_avg += w * (g - grad_avg)
            else:
                grad_avg[:] = g - (g - grad_avg) * (1 - w)
            reference.flush_subnormal(grad_avg)
            avg = np.sqrt(square_avg - grad_avg * grad_avg)
        else:
            avg = np.sqrt(square_avg)
        avg += self.eps
        if self.momentum > 0:
            buf *= self.momentum
            buf += g / avg
            reference.flush_subnormal(buf)
            value -= lr * buf
        else:
            value -= lr * (g / avg)

    def fused_update(self):
        if self._replaces_update(RMSprop):
            return None
        hyper = [self.alpha, self.eps, self.weight_decay, self.momentum, float(self.centered)]
        return FusedUpdate("rmsprop", np.array(hyper, dtype=np.float64), self._slots())


class Adagrad(BuiltinOptimizer):
    """Adagrad (Duchi et al.) with torch.optim.Adagrad's conventions.

    g = grad + weight_decay * p;   t = step count from 1
    clr = lr / (1 + (t - 1) * lr_decay)
    s <- s + g^2                                  (state "sum", starting at
    p <- p - clr * g / (sqrt(s) + eps)             initial_accumulator_value)

    Parameters
    ----------
    params : iterable of Parameter
    lr : float >= 0, default 1e-2
    lr_decay : float >= 0, default 0
    weight_decay : float >= 0, default 0 (L2 penalty added to the gradient)
    initial_accumulator_value : float >= 0, default 0 (the starting value of "sum")
    eps : float > 0, default 1e-10
    """

    name = "adagrad"
    state_names = ("sum",)

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
    ) -> None:
        self.set_hyperparameters(
            lr=lr,
            lr_decay=lr_decay,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            eps=eps,
        )
        super().__init__(params, lr)
        self.state["sum"].fill(self.initial_accumulator_value)

    def set_hyperparameters(self, lr, lr_decay, weight_decay, initial_accumulator_value, eps):
        self.lr = lr
        self.lr_decay = check.non_negative("lr_decay", lr_decay)
        self.weight_decay = check.non_negative("weight_decay", weight_decay)
        self.initial_accumulator_value = check.non_negative(
            "initial_accumulator_value", initial_accumulator_value
        )
        self.eps = check.real("eps", eps, low=0.0, low_open=True)

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "lr_decay": self.lr_decay,
            "weight_decay": self.weight_decay,
            "initial_accumulator_value": self.initial_accumulator_value,
            "eps": self.eps,
        }

    def update_flat(self, value, grad, state, lr, kernels):
        total = state["sum"]
        if kernels is not reference:
            from .kernels import jit_optim  # here: `import minigd` stays Numba-free

            jit_optim.adagrad_update(
                value, grad, total, self.step_count, lr, self.lr_decay, self.weight_decay, self.eps
            )
            return
        g = grad + self.weight_decay * value if self.weight_decay != 0 else grad
        clr = lr / (1 + (self.step_count - 1) * self.lr_decay)
        total += g * g
        std = np.sqrt(total)
        std += self.eps
        value -= clr * (g / std)

    def fused_update(self):
        if self._replaces_update(Adagrad):
            return None
        hyper = [self.lr_decay, self.weight_decay, self.eps]
        return FusedUpdate("adagrad", np.array(hyper, dtype=np.float64), self.state_names)
