"""Optimizer updates of the Numba backend, and the dispatch the whole-epoch kernel calls.

One home per optimizer: its element kernel, its whole-buffer step (``<name>_step``, njit, also
called by :func:`fused_step`), its per-iteration wrapper (``<name>_update``, what the optimizer
class calls on the Numba backend) and its code in :data:`CODES`. An optimizer class declares
the name in :meth:`minigd.Optimizer.fused_update`; :mod:`minigd.fused` looks the code up here.
Adding an optimizer touches this module and the class only.
"""

import math

import numba

from .jit import adam_step, flushed, sgd_step, smallest_normal
from .jit_config import OPTIONS, parallel_parts
from .jit_gemm import effective_parts

SGD, ADAM = 0, 1
CODES = {"sgd": SGD, "adam": ADAM}


@numba.njit(**OPTIONS)
def fused_step(code, hyper, state1, state2, state3, step, lr, values, grads, parts):
    """One update of the whole flat buffer by the optimizer ``code`` (see :data:`CODES`):
    ``hyper`` is its float64 hyperparameters in the order its class declares them, ``state1``..
    ``state3`` its state buffers in that order (empty when unused), ``step`` counts from 1.

    sgd: hyper = (momentum, dampening, nesterov, weight_decay); adam: hyper = (beta1, beta2,
    eps, weight_decay, decoupled); rmsprop: hyper = (alpha, eps, weight_decay, momentum,
    centered); adagrad: hyper = (lr_decay, weight_decay, eps).
    """
    if code == SGD:
        sgd_step(
            values, grads, state1, lr, hyper[0], hyper[1], hyper[2] != 0, hyper[3], step == 1, parts
        )
    elif code == ADAM:
        adam_step(
            values,
            grads,
            state1,
            state2,
            step,
            lr,
            hyper[0],
            hyper[1],
            hyper[2],
            hyper[3],
            hyper[4] != 0,
            parts,
        )
    elif code == RMSPROP:
        rmsprop_step(
            values,
            grads,
            state1,
            state2,
            state3,
            lr,
            hyper[0],
            hyper[1],
            hyper[2],
            hyper[3],
            hyper[4] != 0,
            parts,
        )
    elif code == ADAGRAD:
        adagrad_step(values, grads, state1, step, lr, hyper[0], hyper[1], hyper[2], parts)


# ---- RMSprop (minigd.RMSprop) ---------------------------------------------------------------
RMSPROP = 2
CODES["rmsprop"] = RMSPROP


@numba.njit(inline="always", **OPTIONS)
def _rmsprop_element(
    p, g, v, b, a, lr, alpha, one_alpha, w, eps, wd, tiny, weight_decay, mu, momentum, centered
):
    """(new p, v, b, a) of one element: minigd.RMSprop.update_flat (NumPy), term by term."""
    if weight_decay != 0:
        g = g + wd * p
    v = flushed(v * alpha + one_alpha * g * g, tiny)
    if centered:
        a = flushed(a + w * (g - a) if w < 0.5 else g - (g - a) * (1 - w), tiny)
        d = math.sqrt(v - a * a) + eps
    else:
        d = math.sqrt(v) + eps
    if momentum > 0:
        b = flushed(b * mu + g / d, tiny)
        return p - lr * b, v, b, a
    return p - lr * (g / d), v, b, a


@numba.njit(parallel=True, **OPTIONS)
def rmsprop_step(
    param, grad, square_avg, buf, grad_avg, lr, alpha, eps, weight_decay, momentum, centered, parts
):
    """torch.optim.RMSprop over whole 1-D buffers, in place; ``buf`` (momentum > 0) and
    ``grad_avg`` (centered) may be empty when unused."""
    dt = param.dtype.type
    lr_, alpha_, one_alpha, w = dt(lr), dt(alpha), dt(1 - alpha), dt(1 - alpha)
    eps_, wd, mu = dt(eps), dt(weight_decay), dt(momentum)
    zero, tiny = dt(0), smallest_normal(param)
    if effective_parts(parts, 8 * param.shape[0]) == 1:
        for i in range(param.shape[0]):
            p, v, b, a = _rmsprop_element(
                param[i],
                grad[i],
                square_avg[i],
                buf[i] if momentum > 0 else zero,
                grad_avg[i] if centered else zero,
                lr_,
                alpha_,
                one_alpha,
                w,
                eps_,
                wd,
                tiny,
                weight_decay,
                mu,
                momentum,
                centered,
            )
            param[i], square_avg[i] = p, v
            if momentum > 0:
                buf[i] = b
            if centered:
                grad_avg[i] = a
        return
    for i in numba.prange(param.shape[0]):
        p, v, b, a = _rmsprop_element(
            param[i],
            grad[i],
            square_avg[i],
            buf[i] if momentum > 0 else zero,
            grad_avg[i] if centered else zero,
            lr_,
            alpha_,
            one_alpha,
            w,
            eps_,
            wd,
            tiny,
            weight_decay,
            mu,
            momentum,
            centered,
        )
        param[i], square_avg[i] = p, v
        if momentum > 0:
            buf[i] = b
        if centered:
            grad_avg[i] = a


def rmsprop_update(
    param, grad, square_avg, buf, grad_avg, lr, alpha, eps, weight_decay, momentum, centered
):
    """One torch.optim.RMSprop step on 1-D views, in place (``buf``/``grad_avg`` None when
    unused)."""
    empty = param[:0]
    rmsprop_step(
        param,
        grad,
        square_avg,
        empty if buf is None else buf,
        empty if grad_avg is None else grad_avg,
        float(lr),
        float(alpha),
        float(eps),
        float(weight_decay),
        float(momentum),
        bool(centered),
        parallel_parts(),
    )


# ---- Adagrad (minigd.Adagrad) ---------------------------------------------------------------
ADAGRAD = 3
CODES["adagrad"] = ADAGRAD


@numba.njit(inline="always", **OPTIONS)
def _adagrad_element(p, g, s, clr, eps, wd, weight_decay):
    """(new p, s) of one element: minigd.Adagrad.update_flat (NumPy), term by term."""
    if weight_decay != 0:
        g = g + wd * p
    s = s + g * g
    return p - clr * (g / (math.sqrt(s) + eps)), s


@numba.njit(parallel=True, **OPTIONS)
def adagrad_step(param, grad, state_sum, step, lr, lr_decay, weight_decay, eps, parts):
    """torch.optim.Adagrad over whole 1-D buffers, in place (``step`` counts from 1)."""
    dt = param.dtype.type
    clr, eps_, wd = dt(lr / (1 + (step - 1) * lr_decay)), dt(eps), dt(weight_decay)
    if effective_parts(parts, 6 * param.shape[0]) == 1:
        for i in range(param.shape[0]):
            param[i], state_sum[i] = _adagrad_element(
                param[i], grad[i], state_sum[i], clr, eps_, wd, weight_decay
            )
        return
    for i in numba.prange(param.shape[0]):
        param[i], state_sum[i] = _adagrad_element(
            param[i], grad[i], state_sum[i], clr, eps_, wd, weight_decay
        )


def adagrad_update(param, grad, state_sum, step, lr, lr_decay, weight_decay, eps):
    """One torch.optim.Adagrad step on 1-D views, in place."""
    adagrad_step(
        param,
        grad,
        state_sum,
        int(step),
        float(lr),
        float(lr_decay),
        float(weight_decay),
        float(eps),
        parallel_parts(),
    )
