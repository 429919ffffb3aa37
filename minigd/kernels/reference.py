"""Plain NumPy reference kernels.

Every kernel writes into preallocated ``out`` arrays and returns nothing (or a scalar loss), so
the same signature serves the Numba backend. Shapes: ``x`` (n, in), ``w`` (in, out), ``b`` (out,),
``z``/``y``/``dy`` (n, out). Optimizer kernels work on 1-D views of parameters and state.
"""

import math

import numpy as np


def dense_forward(x, w, b, out):
    """out = x @ w + b.

    A row's result may change in the last bits with the number of rows: BLAS picks its kernel
    and blocking by shape. Each computed element lies within the float32/float64 dot-product
    bound |fl(x . w) - x . w| <= gamma_K * sum_k |x_k w_k| (gamma_K = K u / (1 - K u), u the
    unit roundoff, one more rounding for the bias), so a row alone and in a batch differ by at
    most twice that; tests/test_row_independence.py carries the bound through the layers and
    softmax. The Numba backend gives a row the same bits whatever the batch.
    """
    np.matmul(x, w, out=out)
    out += b


def dense_forward_train(x, w, b, out):
    """out = x @ w + b in training (the Numba backend may then choose BLAS for the product,
    see minigd.kernels.autotune); here the same as :func:`dense_forward`."""
    dense_forward(x, w, b, out)


def dense_backward(x, dy, w, dw, db, dx):
    """dw = x.T @ dy, db = sum over rows of dy, dx = dy @ w.T (skipped when dx is None)."""
    if x.shape[0] == 1:
        # one row: dw is an outer product. NumPy's matmul with an inner dimension of 1 runs
        # its own loop, about 3x slower here than this broadcast multiply (784 x 128 float32:
        # 180 against 65 us), which forms the same products, rounded once
        np.multiply(x.T, dy, out=dw)
    else:
        np.matmul(x.T, dy, out=dw)
    np.sum(dy, axis=0, out=db)
    if dx is not None:
        np.matmul(dy, w.T, out=dx)


def relu_forward(z, out):
    """out = max(z, 0)."""
    np.maximum(z, 0, out=out)


def relu_backward(dy, y, out):
    """out = dy * [y > 0], with y the ReLU output."""
    np.multiply(dy, y > 0, out=out)


def tanh_forward(z, out):
    """out = tanh(z)."""
    np.tanh(z, out=out)


def tanh_backward(dy, y, out):
    """out = dy * (1 - y**2), with y = tanh(z)."""
    np.multiply(y, y, out=out)
    np.subtract(1, out, out=out)
    out *= dy


def sigmoid_forward(z, out):
    """out = 1 / (1 + exp(-z)), computed without overflow for large |z|."""
    np.negative(np.abs(z), out=out)
    np.exp(out, out=out)
    positive = z >= 0
    np.divide(np.where(positive, 1, out), 1 + out, out=out)


def sigmoid_backward(dy, y, out):
    """out = dy * y * (1 - y), with y = sigmoid(z)."""
    np.subtract(1, y, out=out)
    out *= y
    out *= dy


def softmax_cross_entropy(logits, labels, grad):
    """Mean cross-entropy of softmax(logits) against integer labels; grad = (p - onehot) / n.

    loss = mean_i [ logsumexp(z_i) - z_i[y_i] ], rows shifted by their max for stability.
    """
    n = logits.shape[0]
    np.subtract(logits, logits.max(axis=1, keepdims=True), out=grad)
    rows = np.arange(n)
    target = grad[rows, labels].copy()
    np.exp(grad, out=grad)
    total = grad.sum(axis=1, keepdims=True)
    loss = float(np.mean(np.log(total[:, 0]) - target))
    grad /= total
    grad[rows, labels] -= 1
    grad /= n
    return loss


def mse_loss(outputs, targets, grad):
    """Mean squared error over all elements (torch MSELoss); grad = 2 (outputs - targets) / size.

    loss = mean_ij (outputs_ij - targets_ij)^2, summed in the outputs' dtype.
    """
    np.subtract(outputs, targets, out=grad)
    loss = float(np.vdot(grad, grad) / grad.dtype.type(grad.size))
    grad *= grad.dtype.type(2.0 / grad.size)
    return loss


def flush_subnormal(state):
    """Set the entries of ``state`` whose magnitude is below the smallest normal number of its
    dtype to zero (of the same sign), in place; NaN and inf stay.

    The optimizers apply it to their decaying state (momentum buffers, Adam's moments,
    RMSprop's averages): a parameter whose gradient stays 0 (a dead ReLU unit) would otherwise
    carry subnormal state, which costs ~100 cycles per operation on Intel CPUs. The update is
    unchanged in practice: a flushed Adam moment moved its parameter by under lr * 1e-30.
    """
    np.multiply(state, 0, out=state, where=np.abs(state) < np.finfo(state.dtype).tiny)


def sgd_update(
    param, grad, momentum_buffer, lr, momentum, dampening, nesterov, weight_decay, first_step
):
    """One torch.optim.SGD step on 1-D views, in place.

    g = grad + weight_decay * param
    buf = g on the first step, else momentum * buf + (1 - dampening) * g   (flush_subnormal)
    param -= lr * (g + momentum * buf if nesterov else buf)      (buf = g when momentum is 0)
    """
    g = grad + weight_decay * param if weight_decay != 0 else grad
    if momentum != 0:
        if first_step:
            momentum_buffer[:] = g
        else:
            momentum_buffer *= momentum
            momentum_buffer += (1 - dampening) * g
            flush_subnormal(momentum_buffer)
        g = g + momentum * momentum_buffer if nesterov else momentum_buffer
    param -= lr * g


def adam_update(
    param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, decoupled
):
    """One torch.optim.Adam / AdamW step on 1-D views, in place (``step`` counts from 1).

    AdamW: param *= 1 - lr * wd.   Adam: g = grad + wd * param.
    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2   (both through flush_subnormal)
    param -= lr / (1 - b1^step) * m / (sqrt(v) / sqrt(1 - b2^step) + eps)
    """
    g = grad
    if weight_decay != 0:
        if decoupled:
            param *= 1 - lr * weight_decay
        else:
            g = grad + weight_decay * param
    exp_avg *= beta1
    exp_avg += (1 - beta1) * g
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * g * g
    flush_subnormal(exp_avg)
    flush_subnormal(exp_avg_sq)
    bias_correction1 = 1 - beta1**step
    bias_correction2_sqrt = math.sqrt(1 - beta2**step)
    denom = np.sqrt(exp_avg_sq) / bias_correction2_sqrt + eps
    param -= (lr / bias_correction1) * exp_avg / denom
