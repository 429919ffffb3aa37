"""Numba kernels with the signatures of :mod:`minigd.kernels.reference` (the ``"numba"`` backend).

Each kernel computes what its NumPy reference computes (the docstrings there state the math),
writing into the same preallocated ``out`` arrays; the float64 agreement tests in
tests/test_backends.py hold the two together, optimizer state included. Scalars are cast to the
arrays' dtype before use, as NumPy does with Python floats, so float32 stays float32.

Fused where it pays: ``dense_forward`` adds the bias while the product is still in cache,
``softmax_cross_entropy`` computes the loss and its gradient in one pass per row, and the
optimizer updates touch each parameter once for the whole step (weight decay, momentum or
moments, and the update together). The whole-epoch kernel in :mod:`minigd.kernels.jit_epoch`
goes further (bias + activation, activation-mask backward, update over the flat buffer).

``needs_compilation()`` tells whether the on-disk cache is still empty, so the CLI can say
"compiling..." on the first run. Compile options and threading: :mod:`minigd.kernels.jit_config`.
"""
import math

import numba

from .jit_config import OPTIONS, parallel_parts
from .jit_gemm import effective_parts, matmul_nt, matmul_tn, split

RELU, TANH, SIGMOID = 1, 2, 3


# ---- dense ----------------------------------------------------------------------------------
@numba.njit(**OPTIONS)
def add_bias_rows(out, b, lo, hi):
    """out[:, lo:hi] += b[lo:hi]."""
    for i in range(out.shape[0]):
        for j in range(lo, hi):
            out[i, j] += b[j]


@numba.njit(**OPTIONS)
def _dense_forward(x, w, b, out, parts):
    matmul_tn(x.T, w, out, parts)
    add_bias_rows(out, b, 0, out.shape[1])


def dense_forward(x, w, b, out):
    """out = x @ w + b."""
    _dense_forward(x, w, b, out, parallel_parts())


@numba.njit(**OPTIONS)
def column_sums(dy, db, lo, hi):
    """db[lo:hi] = sum over rows of dy[:, lo:hi]."""
    for j in range(lo, hi):
        db[j] = dy[0, j]
    for i in range(1, dy.shape[0]):
        for j in range(lo, hi):
            db[j] += dy[i, j]


@numba.njit(**OPTIONS)
def _dense_backward(x, dy, w, dw, db, dx, parts):
    matmul_tn(x, dy, dw, parts)
    column_sums(dy, db, 0, dy.shape[1])
    if dx is not None:
        matmul_nt(dy, w, dx, parts)


def dense_backward(x, dy, w, dw, db, dx):
    """dw = x.T @ dy, db = sum over rows of dy, dx = dy @ w.T (skipped when dx is None)."""
    _dense_backward(x, dy, w, dw, db, dx, parallel_parts())


# ---- activations ------------------------------------------------------------------------------
@numba.njit(**OPTIONS)
def relu_forward(z, out):
    """out = max(z, 0)."""
    zero = out.dtype.type(0)
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            v = z[i, j]
            out[i, j] = v if v > 0 or v != v else zero


@numba.njit(**OPTIONS)
def relu_backward(dy, y, out):
    """out = dy * [y > 0], with y the ReLU output."""
    for i in range(dy.shape[0]):
        for j in range(dy.shape[1]):
            g = dy[i, j]
            out[i, j] = g if y[i, j] > 0 else g * 0


@numba.njit(**OPTIONS)
def tanh_forward(z, out):
    """out = tanh(z)."""
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            out[i, j] = math.tanh(z[i, j])


@numba.njit(**OPTIONS)
def tanh_backward(dy, y, out):
    """out = dy * (1 - y**2), with y = tanh(z)."""
    one = y.dtype.type(1)
    for i in range(dy.shape[0]):
        for j in range(dy.shape[1]):
            v = y[i, j]
            out[i, j] = (one - v * v) * dy[i, j]


@numba.njit(**OPTIONS)
def sigmoid_value(v, one):
    """1 / (1 + exp(-v)) without overflow: exp(-|v|) is at most 1."""
    e = math.exp(-abs(v))
    return one / (one + e) if v >= 0 else e / (one + e)


@numba.njit(**OPTIONS)
def sigmoid_forward(z, out):
    """out = 1 / (1 + exp(-z)), computed without overflow for large |z|."""
    one = out.dtype.type(1)
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            out[i, j] = sigmoid_value(z[i, j], one)


@numba.njit(**OPTIONS)
def sigmoid_backward(dy, y, out):
    """out = dy * y * (1 - y), with y = sigmoid(z)."""
    one = y.dtype.type(1)
    for i in range(dy.shape[0]):
        for j in range(dy.shape[1]):
            v = y[i, j]
            out[i, j] = (one - v) * v * dy[i, j]


@numba.njit(**OPTIONS)
def activate(out, act, lo, hi):
    """Apply activation code ``act`` (0 none, RELU, TANH, SIGMOID) to out[:, lo:hi] in place."""
    if act == 0:
        return
    zero, one = out.dtype.type(0), out.dtype.type(1)
    for i in range(out.shape[0]):
        for j in range(lo, hi):
            v = out[i, j]
            if act == RELU:
                out[i, j] = v if v > 0 or v != v else zero
            elif act == TANH:
                out[i, j] = math.tanh(v)
            else:
                out[i, j] = sigmoid_value(v, one)


@numba.njit(**OPTIONS)
def activation_mask(d, y, act, lo, hi):
    """d[lo:hi] *= f'(z) written through the activation's output y (rows lo..hi)."""
    if act == 0:
        return
    one = y.dtype.type(1)
    for i in range(lo, hi):
        for j in range(d.shape[1]):
            v = y[i, j]
            if act == RELU:
                g = d[i, j]
                d[i, j] = g if v > 0 else g * 0
            elif act == TANH:
                d[i, j] = (one - v * v) * d[i, j]
            else:
                d[i, j] = (one - v) * v * d[i, j]


# ---- loss ---------------------------------------------------------------------------------------
@numba.njit(**OPTIONS)
def softmax_cross_entropy(logits, labels, grad):
    """Mean cross-entropy of softmax(logits) against integer labels; grad = (p - onehot) / n.

    loss = mean_i [ logsumexp(z_i) - z_i[y_i] ], rows shifted by their max for stability.
    One pass per row: max, exponentials and their sum, the row's loss, then the gradient.
    The loss is summed in the logits' dtype, as NumPy's mean is: in float32 a batch whose
    mean loss overflows float32 gives inf on both backends (and so the same divergence).
    """
    n, k = logits.shape
    count = grad.dtype.type(n)
    zero, one = grad.dtype.type(0), grad.dtype.type(1)
    total_loss = zero
    for i in range(n):
        m = logits[i, 0]
        for j in range(1, k):
            if logits[i, j] > m:
                m = logits[i, j]
        total = zero
        for j in range(k):
            e = math.exp(logits[i, j] - m)
            grad[i, j] = e
            total += e
        label = labels[i]
        total_loss += math.log(total) - (logits[i, label] - m)
        for j in range(k):
            grad[i, j] = grad[i, j] / total
        grad[i, label] -= one
        for j in range(k):
            grad[i, j] = grad[i, j] / count
    return total_loss / count


# ---- optimizers ---------------------------------------------------------------------------------
@numba.njit(**OPTIONS)
def sgd_range(param, grad, buf, lo, hi, lr, momentum, dampening, nesterov, weight_decay,
              first_step):
    """torch.optim.SGD on param[lo:hi] (see reference.sgd_update), one pass per element."""
    dt = param.dtype.type
    lr, mu, wd = dt(lr), dt(momentum), dt(weight_decay)
    keep = dt(1 - dampening)
    for i in range(lo, hi):
        g = grad[i]
        if weight_decay != 0:
            g = g + wd * param[i]
        if momentum != 0:
            b = g if first_step else buf[i] * mu + keep * g
            buf[i] = b
            g = g + mu * b if nesterov else b
        param[i] -= lr * g


@numba.njit(parallel=True, **OPTIONS)
def sgd_step(param, grad, buf, lr, momentum, dampening, nesterov, weight_decay, first_step,
             parts):
    n = param.shape[0]
    parts = effective_parts(parts, 4 * n)
    if parts == 1:
        sgd_range(param, grad, buf, 0, n, lr, momentum, dampening, nesterov, weight_decay,
                  first_step)
        return
    for part in numba.prange(parts):
        lo, hi = split(n, parts, part)
        sgd_range(param, grad, buf, lo, hi, lr, momentum, dampening, nesterov, weight_decay,
                  first_step)


def sgd_update(param, grad, momentum_buffer, lr, momentum, dampening, nesterov, weight_decay,
               first_step):
    """One torch.optim.SGD step on 1-D views, in place (formula: reference.sgd_update)."""
    sgd_step(param, grad, momentum_buffer, float(lr), float(momentum), float(dampening),
             bool(nesterov), float(weight_decay), bool(first_step), parallel_parts())


@numba.njit(**OPTIONS)
def adam_range(param, grad, exp_avg, exp_avg_sq, lo, hi, step, lr, beta1, beta2, eps,
               weight_decay, decoupled):
    """torch.optim.Adam/AdamW on param[lo:hi] (see reference.adam_update), one pass."""
    dt = param.dtype.type
    b1, b2, one_b1, one_b2 = dt(beta1), dt(beta2), dt(1 - beta1), dt(1 - beta2)
    step_size = dt(lr / (1 - beta1 ** step))
    bias_correction2_sqrt = dt(math.sqrt(1 - beta2 ** step))
    epsilon, wd, decay = dt(eps), dt(weight_decay), dt(1 - lr * weight_decay)
    for i in range(lo, hi):
        g = grad[i]
        if weight_decay != 0:
            if decoupled:
                param[i] *= decay
            else:
                g = g + wd * param[i]
        m = exp_avg[i] * b1 + one_b1 * g
        v = exp_avg_sq[i] * b2 + one_b2 * g * g
        exp_avg[i] = m
        exp_avg_sq[i] = v
        param[i] -= step_size * m / (math.sqrt(v) / bias_correction2_sqrt + epsilon)


@numba.njit(parallel=True, **OPTIONS)
def adam_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay,
              decoupled, parts):
    n = param.shape[0]
    parts = effective_parts(parts, 12 * n)
    if parts == 1:
        adam_range(param, grad, exp_avg, exp_avg_sq, 0, n, step, lr, beta1, beta2, eps,
                   weight_decay, decoupled)
        return
    for part in numba.prange(parts):
        lo, hi = split(n, parts, part)
        adam_range(param, grad, exp_avg, exp_avg_sq, lo, hi, step, lr, beta1, beta2, eps,
                   weight_decay, decoupled)


def adam_update(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay,
                decoupled):
    """One torch.optim.Adam / AdamW step on 1-D views, in place (formula: reference.adam_update)."""
    adam_step(param, grad, exp_avg, exp_avg_sq, int(step), float(lr), float(beta1), float(beta2),
              float(eps), float(weight_decay), bool(decoupled), parallel_parts())


# ---- first run ------------------------------------------------------------------------------------
def _dispatchers():
    from . import jit_epoch
    return (jit_epoch.train_epoch, _dense_forward, _dense_backward, softmax_cross_entropy,
            sgd_step, adam_step)


def _has_cached_code(dispatcher):
    cache = getattr(dispatcher, "_cache", None)
    cache_file = getattr(cache, "_cache_file", None)
    if cache_file is None:          # caching disabled: every process compiles
        return False
    return bool(cache_file._load_index())


def needs_compilation():
    """True when the on-disk cache holds no compiled code for the main kernels yet (first run)."""
    try:
        return not all(_has_cached_code(d) for d in _dispatchers())
    except Exception:               # Numba's cache internals changed: do not claim either way
        return False
