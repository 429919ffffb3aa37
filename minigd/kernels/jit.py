"""Numba kernels with the signatures of :mod:`minigd.kernels.reference` (the ``"numba"`` backend).

Each kernel computes what its NumPy reference computes (the docstrings there state the math),
writing into the same preallocated ``out`` arrays; the float64 agreement tests in
tests/test_backends.py hold the two together, optimizer state included. Scalars are cast to the
arrays' dtype before use, as NumPy does with Python floats, so float32 stays float32.

The dense kernels use the whole-epoch kernel's loops (on a transposed copy of the weight), so
the per-iteration path and the fused epoch give bit-identical results. Fused where it pays:
``dense_forward`` adds the bias as each product element is stored, ``softmax_cross_entropy``
computes the loss and its gradient in one pass per row, and the optimizer updates touch each
parameter once for the whole step (weight decay, momentum or moments, and the update
together). The whole-epoch kernel in :mod:`minigd.kernels.jit_epoch` goes further (bias +
activation, activation-mask backward, update over the flat buffer).

``needs_compilation()`` tells whether the on-disk cache is still empty, so the CLI can say
"compiling..." on the first run. Compile options and threading: :mod:`minigd.kernels.jit_config`.
"""

import math
import threading

import numba

from . import autotune
from .jit_config import OPTIONS, cache_info, parallel_parts
from .jit_gemm import (
    BLAS_ROWS,
    NONE,
    OWN,
    RELU,
    SIGMOID,
    TANH,
    activation,
    aligned_empty,
    dense_act_forward,
    effective_parts,
    input_grad,
    matmul_tn,
    transpose_into,
    weight_grad_t,
)

# ---- dense ----------------------------------------------------------------------------------
# The products run through the same loops as the whole-epoch kernel (minigd.kernels.jit_epoch),
# on the transposed weight, so that both paths give bit-identical results: a run with a
# per-iteration callback equals the same run without one.
_scratch = threading.local()


def _buffer(role, shape, dtype):
    """A reused, per-thread, 64-byte aligned buffer, one per role, shape and dtype (the role
    keeps a transposed weight of shape (4, n) apart from a row padding of that shape)."""
    buffers = _scratch.__dict__.setdefault("buffers", {})
    key = (role, shape, dtype.str)
    if key not in buffers:
        buffers[key] = aligned_empty(shape, dtype)
    return buffers[key]


def _transposed_buffer(w):
    """A reused, per-thread buffer for w.T."""
    return _buffer("w_t", w.shape[::-1], w.dtype)


@numba.njit(**OPTIONS)
def _dense_forward(x, w, b, out, w_t, pad_a, pad_out, parts, impl):
    transpose_into(w, w_t)
    dense_act_forward(x, w_t, b, NONE, out, parts, pad_a, pad_out, impl)


def _forward(x, w, b, out, impl):
    n_in, n_out = w.shape
    _dense_forward(
        x,
        w,
        b,
        out,
        _transposed_buffer(w),
        _buffer("pad_in", (4, n_in), w.dtype),
        _buffer("pad_out", (4, n_out), w.dtype),
        parallel_parts(),
        impl,
    )


def dense_forward(x, w, b, out):
    """out = x @ w + b. Each row of out is computed the same way whatever the number of rows
    (see jit_gemm.nt_columns): a sample's output does not depend on its batch-mates."""
    _forward(x, w, b, out, OWN)


def dense_forward_train(x, w, b, out):
    """out = x @ w + b in training: the product :mod:`minigd.kernels.autotune` chose for this
    shape (minigd's own loops or BLAS), the same as the whole-epoch kernel's, so both paths of
    fit give the same bits. A row's last bits may depend on its batch-mates when BLAS runs."""
    rows, (n_in, n_out) = x.shape[0], w.shape
    impl = autotune.choice("forward", rows, n_in, n_out, w.dtype, parallel_parts())
    with autotune.blas_threads_limited((impl,)):
        _forward(x, w, b, out, impl)


@numba.njit(**OPTIONS)
def column_sums(dy, db, lo, hi):
    """db[lo:hi] = sum over rows of dy[:, lo:hi], each db[j] summed in row order.

    Row by row over slices, so that the inner loop runs along contiguous memory and
    vectorises: going down each column read a cache line per element (1,054 us per call on a
    (1024, 512) float32 gradient, a quarter of the 784-512-512-10 epoch at batch 1024; 43 us
    now). Each sum adds the same terms in the same order as before, so the bits are unchanged.
    """
    out, first = db[lo:hi], dy[0, lo:hi]
    for j in range(hi - lo):
        out[j] = first[j]
    for i in range(1, dy.shape[0]):
        row = dy[i, lo:hi]
        for j in range(hi - lo):
            out[j] += row[j]


@numba.njit(**OPTIONS)
def _dense_backward(x, dy, w, dw, db, dx, w_t, parts, impl_w, impl_x, partial):
    if impl_w != OWN:  # as the whole-epoch kernel: dw.T = dy.T @ x, then transposed
        weight_grad_t(dy, x, w_t, parts, impl_w, partial)
        transpose_into(w_t, dw)
    else:
        matmul_tn(x, dy, dw, parts)
    column_sums(dy, db, 0, dy.shape[1])
    if dx is not None:
        transpose_into(w, w_t)
        input_grad(dy, w_t, dx, NONE, dx, parts, impl_x)


def dense_backward(x, dy, w, dw, db, dx):
    """dw = x.T @ dy, db = sum over rows of dy, dx = dy @ w.T (skipped when dx is None).

    The products run the implementation :mod:`minigd.kernels.autotune` chose for this shape,
    the same as the whole-epoch kernel's, so both paths give the same bits."""
    parts = parallel_parts()
    rows, (n_in, n_out) = x.shape[0], w.shape
    impl_w = autotune.choice("weight_grad", rows, n_in, n_out, w.dtype, parts)
    impl_x = 0 if dx is None else autotune.choice("input_grad", rows, n_in, n_out, w.dtype, parts)
    with autotune.blas_threads_limited((impl_w, impl_x)):
        partial = _buffer("partial", ((parts - 1) * w.size if impl_w == BLAS_ROWS else 0,), w.dtype)
        _dense_backward(x, dy, w, dw, db, dx, _transposed_buffer(w), parts, impl_w, impl_x, partial)


# ---- activations ------------------------------------------------------------------------------
@numba.njit(**OPTIONS)
def _activate(z, out, act):
    one = out.dtype.type(1)
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            out[i, j] = activation(z[i, j], act, one)


@numba.njit(**OPTIONS)
def relu_forward(z, out):
    """out = max(z, 0)."""
    _activate(z, out, RELU)


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
    _activate(z, out, TANH)


@numba.njit(**OPTIONS)
def tanh_backward(dy, y, out):
    """out = dy * (1 - y**2), with y = tanh(z)."""
    one = y.dtype.type(1)
    for i in range(dy.shape[0]):
        for j in range(dy.shape[1]):
            v = y[i, j]
            out[i, j] = (one - v * v) * dy[i, j]


@numba.njit(**OPTIONS)
def sigmoid_forward(z, out):
    """out = 1 / (1 + exp(-z)), computed without overflow for large |z|."""
    _activate(z, out, SIGMOID)


@numba.njit(**OPTIONS)
def sigmoid_backward(dy, y, out):
    """out = dy * y * (1 - y), with y = sigmoid(z)."""
    one = y.dtype.type(1)
    for i in range(dy.shape[0]):
        for j in range(dy.shape[1]):
            v = y[i, j]
            out[i, j] = (one - v) * v * dy[i, j]


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


@numba.njit(**OPTIONS)
def mse_loss(outputs, targets, grad):
    """Mean squared error over all elements (torch MSELoss); grad = 2 (outputs - targets) / size.

    One pass: each difference is squared into the sum (kept in the outputs' dtype, as the NumPy
    reference's dot product is) and scaled into the gradient.
    """
    n, k = outputs.shape
    size = n * k
    total = grad.dtype.type(0)
    scale = grad.dtype.type(2.0 / size)
    for i in range(n):
        for j in range(k):
            d = outputs[i, j] - targets[i, j]
            total += d * d
            grad[i, j] = d * scale
    return total / grad.dtype.type(size)


# ---- optimizers ---------------------------------------------------------------------------------
# Each update is one pass over the flat buffers. The parallel form is a plain ``prange`` over
# elements: Numba's own chunking keeps the loop vectorised, where hand-cut ranges measured
# 5-7x slower (LLVM could not prove the ranges' arrays do not alias and stayed scalar).
#
# State that decays geometrically (momentum buffers, Adam's moments, RMSprop's averages) is
# flushed to zero once it falls below the smallest normal float (reference.flush_subnormal):
# a parameter whose gradient stays 0 (a dead ReLU unit) otherwise carries subnormal state,
# and subnormal arithmetic costs ~100 cycles per element on Intel CPUs (the Adam epoch at batch
# 16 measured 5x slower). `flushed` is a product, so the loops stay vectorised.
@numba.njit(inline="always", **OPTIONS)
def flushed(x, tiny):
    """``x``, or 0 (of x's sign) when |x| is below ``tiny`` (the smallest normal number of its
    dtype); NaN stays NaN. A product, not a select: ``x if ... else x * 0`` mixes in a float64
    zero and measured 4x slower (the Adam step stopped vectorising)."""
    return x * (abs(x) >= tiny)


@numba.njit(**OPTIONS)
def smallest_normal(param):
    """The smallest normal number of ``param``'s dtype (float32 or float64), as that dtype."""
    dt = param.dtype.type
    if param.itemsize == 4:
        return dt(1.1754943508222875e-38)
    return dt(2.2250738585072014e-308)


@numba.njit(**OPTIONS)
def flush_subnormal(state):
    """reference.flush_subnormal: subnormal entries of the 1-D ``state`` become 0, in place."""
    tiny = smallest_normal(state)
    for i in range(state.shape[0]):
        state[i] = flushed(state[i], tiny)


@numba.njit(**OPTIONS)
def _sgd_constants(param, lr, momentum, dampening, weight_decay):
    dt = param.dtype.type
    return dt(lr), dt(momentum), dt(1 - dampening), dt(weight_decay), smallest_normal(param)


@numba.njit(inline="always", **OPTIONS)
def _sgd_element(p, g, b, lr, mu, keep, wd, tiny, momentum, nesterov, weight_decay, first_step):
    """(new p, new momentum buffer) of one element: reference.sgd_update, term by term."""
    if weight_decay != 0:
        g = g + wd * p
    if momentum != 0:
        b = g if first_step else flushed(b * mu + keep * g, tiny)
        g = g + mu * b if nesterov else b
    return p - lr * g, b


@numba.njit(parallel=True, **OPTIONS)
def sgd_step(param, grad, buf, lr, momentum, dampening, nesterov, weight_decay, first_step, parts):
    """torch.optim.SGD over whole 1-D buffers, in place, on ``parts`` threads (1: this one)."""
    lr_, mu, keep, wd, tiny = _sgd_constants(param, lr, momentum, dampening, weight_decay)
    if effective_parts(parts, 4 * param.shape[0]) == 1:
        for i in range(param.shape[0]):
            p, b = _sgd_element(
                param[i],
                grad[i],
                buf[i] if momentum != 0 else grad[i],
                lr_,
                mu,
                keep,
                wd,
                tiny,
                momentum,
                nesterov,
                weight_decay,
                first_step,
            )
            param[i] = p
            if momentum != 0:
                buf[i] = b
        return
    for i in numba.prange(param.shape[0]):
        p, b = _sgd_element(
            param[i],
            grad[i],
            buf[i] if momentum != 0 else grad[i],
            lr_,
            mu,
            keep,
            wd,
            tiny,
            momentum,
            nesterov,
            weight_decay,
            first_step,
        )
        param[i] = p
        if momentum != 0:
            buf[i] = b


def sgd_update(
    param, grad, momentum_buffer, lr, momentum, dampening, nesterov, weight_decay, first_step
):
    """One torch.optim.SGD step on 1-D views, in place (formula: reference.sgd_update)."""
    sgd_step(
        param,
        grad,
        momentum_buffer,
        float(lr),
        float(momentum),
        float(dampening),
        bool(nesterov),
        float(weight_decay),
        bool(first_step),
        parallel_parts(),
    )


@numba.njit(**OPTIONS)
def _adam_constants(param, step, lr, beta1, beta2, eps, weight_decay):
    dt = param.dtype.type
    return (
        dt(beta1),
        dt(beta2),
        dt(1 - beta1),
        dt(1 - beta2),
        dt(lr / (1 - beta1**step)),
        dt(math.sqrt(1 - beta2**step)),
        dt(eps),
        dt(weight_decay),
        dt(1 - lr * weight_decay),
        smallest_normal(param),
    )


@numba.njit(inline="always", **OPTIONS)
def _adam_element(p, g, m, v, c, weight_decay, decoupled):
    """(new p, m, v) of one element: reference.adam_update, term by term."""
    b1, b2, one_b1, one_b2, step_size, bias_correction2_sqrt, eps, wd, decay, tiny = c
    if weight_decay != 0:
        if decoupled:
            p = p * decay
        else:
            g = g + wd * p
    m = flushed(m * b1 + one_b1 * g, tiny)
    v = flushed(v * b2 + one_b2 * g * g, tiny)
    return p - step_size * m / (math.sqrt(v) / bias_correction2_sqrt + eps), m, v


@numba.njit(parallel=True, **OPTIONS)
def adam_step(
    param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, decoupled, parts
):
    """torch.optim.Adam/AdamW over whole 1-D buffers, in place, on ``parts`` threads."""
    c = _adam_constants(param, step, lr, beta1, beta2, eps, weight_decay)
    if effective_parts(parts, 12 * param.shape[0]) == 1:
        for i in range(param.shape[0]):
            param[i], exp_avg[i], exp_avg_sq[i] = _adam_element(
                param[i], grad[i], exp_avg[i], exp_avg_sq[i], c, weight_decay, decoupled
            )
        return
    for i in numba.prange(param.shape[0]):
        param[i], exp_avg[i], exp_avg_sq[i] = _adam_element(
            param[i], grad[i], exp_avg[i], exp_avg_sq[i], c, weight_decay, decoupled
        )


def adam_update(
    param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, decoupled
):
    """One torch.optim.Adam / AdamW step on 1-D views, in place (formula: reference.adam_update)."""
    adam_step(
        param,
        grad,
        exp_avg,
        exp_avg_sq,
        int(step),
        float(lr),
        float(beta1),
        float(beta2),
        float(eps),
        float(weight_decay),
        bool(decoupled),
        parallel_parts(),
    )


# ---- first run ---------------------------------------------------------------------------
def _dispatchers():
    """What every training run compiles here: the forward pass and the loss, for evaluation."""
    return (_dense_forward, softmax_cross_entropy)


def _has_cached_code(dispatcher):
    cache = getattr(dispatcher, "_cache", None)
    cache_file = getattr(cache, "_cache_file", None)
    if cache_file is None:  # caching disabled: every process compiles
        return False
    return bool(cache_file._load_index())


def needs_compilation():
    """True when the on-disk cache holds no compiled code for the main kernels yet (first run)."""
    try:
        # the whole-epoch kernel (jit_epoch imports this module) is looked up by its cache files
        return not all(_has_cached_code(d) for d in _dispatchers()) or not cache_info()["compiled"]
    except Exception:  # Numba's cache internals changed: do not claim either way
        return False
