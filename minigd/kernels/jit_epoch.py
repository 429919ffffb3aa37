"""One whole training epoch in one Numba call: gather, forward, loss, backward, update.

Per iteration t (batch rows ``order[t*B:(t+1)*B]``):

    gather the batch from X into a reused buffer, converting X's dtype (X is never copied)
    a_0 = x;  a_l = f_l(a_{l-1} @ W_l + b_l)           bias + activation fused per column range
    loss_t, d = softmax_cross_entropy(a_L, y)           loss and dloss/dlogits in one pass
    stop here, before any update, when loss_t is not finite (returns t + 1, LOSS_DIVERGED)
    dW_l = a_{l-1}.T @ d,  db_l = sum(d);  d = (d @ W_l.T) * f'_{l-1}    mask fused
    grad_norm_t = sqrt(sum(grad**2)) (the sum in the model dtype, see :func:`grad_squares`)
    stop, before the update, when that sum is not finite (GRADIENT_DIVERGED)
    clip: grads *= max_norm / (grad_norm_t + 1e-6) when that is < 1 (torch's clip_grad_norm_)
    optimizer update over the whole flat parameter buffer with lr = lrs[t]

Weights are held transposed, (out, in), inside the kernel ("kernel layout", see
:func:`to_kernel_layout`) so that the forward product reads both operands along the summed
dimension; minigd.fused converts the flat buffers at the start and end of every epoch, which
keeps ``model`` in its public layout between epochs. The update is elementwise, so the layout
does not change its result.
"""

import math
from collections import namedtuple
from operator import itemgetter

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from .codes import COMPLETED, GRADIENT_DIVERGED, LOSS_DIVERGED  # noqa: F401
from .codes import PRODUCT_BLAS as BLAS
from .codes import PRODUCT_BLAS_ROWS as BLAS_ROWS
from .jit import column_sums, softmax_cross_entropy
from .jit_config import FAST_OPTIONS, MIN_PARALLEL_GATHER, OPTIONS
from .jit_gemm import (
    activation_mask,
    dense_act_forward,
    effective_parts,
    input_grad,
    narrow,
    split,
    tn_product,
    transpose_into,
    weight_grad_t,
)
from .jit_optim import fused_step

Data = namedtuple("Data", "X y order batch_size")
Data.__doc__ = """X (N, features) any real dtype; y (N,) int64; order (N,) int64: the epoch's
permutation; batch_size: rows per full batch."""
Network = namedtuple("Network", "values grads dims w_offsets b_offsets acts")
Network.__doc__ = """values, grads: flat buffers in kernel layout; dims (L, 2) int64: in/out of
each dense layer; w_offsets, b_offsets (L,): where its weight and bias start in the flat buffers;
acts (L,): the activation code after dense l (minigd.kernels.codes)."""
Update = namedtuple(
    "Update", "code hyper state1 state2 state3 step0 lrs max_norm momenta momentum_index"
)
Update.__doc__ = """code: the optimizer's update (jit_optim.CODES of the name Optimizer.fused_update
declares); hyper: its float64 hyperparameters in the order the class declares; state1..state3:
flat state buffers in kernel layout (empty when unused); max_norm: clip the gradient's global
norm to it (<= 0: no clipping); momenta (n,) float64 or empty: hyper[momentum_index] of each
update (a schedule's momentum); step0: updates so far; lrs (n,) float64."""
Workspace = namedtuple("Workspace", "xbuf ybuf abuf a_offsets dbuf losses norms partial")
Workspace.__doc__ = """xbuf (B, features), ybuf (B,) int64: the gathered batch; abuf with
a_offsets: each layer's activations; dbuf: two back-propagated deltas; losses, norms (n,)
float64: each iteration's loss and gradient norm before clipping; partial: the weight
gradients' per-thread partial sums where the products are BLAS_ROWS (:func:`partial_size`
elements, 0 when none is)."""


def partial_size(dims, products, parts):
    """Elements of :class:`Workspace`'s ``partial`` for ``products`` (train_epoch's array):
    (parts - 1) times the biggest weight whose gradient is BLAS_ROWS, else 0."""
    sizes = [
        int(n_in) * int(n_out)
        for l, (n_in, n_out) in enumerate(np.asarray(dims))
        if (np.asarray(products)[:, l, 0] == BLAS_ROWS).any()
    ]
    return max(parts - 1, 0) * max(sizes, default=0)


PREFETCH_ROWS = 4  # how far ahead _gather_rows asks for rows (2, 4 and 8 measured alike)


@intrinsic
def _prefetch(typingctx, arr, row, col):
    """Ask the CPU to bring the cache line holding ``arr[row, col]`` into its L2 cache
    (``llvm.prefetch``: read, locality 2, data). A hint only: it never faults (an address not
    mapped, a memmap page not read yet, is dropped) and changes no result."""
    sig = types.void(arr, row, col)

    def codegen(context, builder, signature, args):
        arr_type = signature.args[0]
        array = context.make_array(arr_type)(context, builder, args[0])
        index = [
            context.cast(builder, value, kind, types.intp)
            for value, kind in zip(args[1:], signature.args[1:])
        ]
        pointer = cgutils.get_item_pointer(context, builder, arr_type, array, index)
        byte_pointer = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        function = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32]),
            "llvm.prefetch.p0i8",
        )
        builder.call(function, [builder.bitcast(pointer, byte_pointer), i32(0), i32(2), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(**OPTIONS)
def _prefetch_row(X, row, width, line):
    for k in range(0, width, line):
        _prefetch(X, row, k)


@numba.njit(**OPTIONS)
def _gather_rows(X, order, start, xb, lo, hi):
    """xb[lo:hi] = X[order[start + lo : start + hi]], asking for the row ``PREFETCH_ROWS``
    ahead while copying one (when X's rows are contiguous). The rows are random, so each one
    starts a cache miss the hardware prefetcher cannot foresee: gathering an epoch of 60,000
    MNIST-sized float32 rows took 30 ms on one thread without the hints and 22 ms with them."""
    width = xb.shape[1]
    line = max(1, 64 // X.itemsize)
    ahead = PREFETCH_ROWS if X.strides[1] == X.itemsize else 0
    if ahead > 0:
        for r in range(lo, min(lo + ahead, hi)):
            _prefetch_row(X, order[start + r], width, line)
    for r in range(lo, hi):
        if ahead > 0 and r + ahead < hi:
            _prefetch_row(X, order[start + r + ahead], width, line)
        src = order[start + r]
        for k in range(width):
            xb[r, k] = X[src, k]


@numba.njit(parallel=True, **OPTIONS)
def gather(X, y, order, start, xb, yb, parts):
    """xb[r] = X[order[start + r]] (converted to xb's dtype), yb[r] likewise, r < len(xb);
    split between ``parts`` threads from ``MIN_PARALLEL_GATHER`` elements."""
    n, width = xb.shape
    for r in range(n):
        yb[r] = y[order[start + r]]
    if parts <= 1 or n * width < MIN_PARALLEL_GATHER:
        _gather_rows(X, order, start, xb, 0, n)
        return
    for part in numba.prange(parts):
        lo, hi = split(n, parts, part)
        _gather_rows(X, order, start, xb, lo, hi)


@numba.njit(parallel=True, **OPTIONS)
def weight_grad(d, a, dw_t, db, squares, parts, impl, partial):
    """dw_t = d.T @ a (the transposed weight gradient), db = sum over rows of d; adds the sum
    of squares of each part's gradient rows to squares[part] while they are in cache (for the
    overflow check: one thread summing rows the other wrote measured ~10 us per iteration).
    ``impl``: the product's implementation (jit_gemm.tn_product, jit_gemm.weight_grad_t);
    ``partial``: BLAS_ROWS's scratch (see jit_gemm.weight_grad_t)."""
    n_out = d.shape[1]
    parts = effective_parts(parts, 2 * d.shape[0] * n_out * a.shape[1])
    if parts == 1:
        tn_product(d, a, dw_t, 0, n_out, impl)  # any BLAS code: one call
        column_sums(d, db, 0, n_out)
        squares[0] += _squares(dw_t, db, 0, n_out)
        return
    if impl == BLAS_ROWS or (impl == BLAS and narrow(n_out)):
        # BLAS_ROWS: the threads split the batch, not the output rows. A narrow BLAS product:
        # one block of output rows (the classifier's 10) would run on one thread, so the BLAS
        # calls split the input columns instead. Either way the sums of squares are then added
        # part by part in the order of the row split, as grad_squares adds them
        weight_grad_t(d, a, dw_t, parts, impl, partial)
        column_sums(d, db, 0, n_out)
        for part in range(parts):
            lo, hi = split(n_out, parts, part)
            squares[part] += _squares(dw_t, db, lo, hi)
        return
    for part in numba.prange(parts):
        lo, hi = split(n_out, parts, part)
        tn_product(d, a, dw_t, lo, hi, impl)
        column_sums(d, db, lo, hi)
        squares[part] += _squares(dw_t, db, lo, hi)


@numba.njit(**FAST_OPTIONS)
def _squares(dw_t, db, lo, hi):
    """sum of squares of rows lo..hi of dw_t and of db[lo:hi], in their dtype."""
    total = dw_t.dtype.type(0)
    for r in range(lo, hi):
        total += db[r] * db[r]
        for k in range(dw_t.shape[1]):
            total += dw_t[r, k] * dw_t[r, k]
    return total


@numba.njit(**OPTIONS)
def grad_squares(grads, scratch, dims, w_offsets, b_offsets, n, parts):
    """sum(grads**2) of a flat gradient in the public layout (weights (in, out)), in its dtype,
    summed in exactly the order :func:`train_epoch` sums it for a batch of ``n`` rows (through
    :func:`weight_grad`), so both paths of fit record the same bits. ``scratch`` holds the
    largest weight (one transposed copy at a time)."""
    squares = np.zeros(max(parts, 1), dtype=grads.dtype)
    for l in range(dims.shape[0] - 1, -1, -1):
        n_in, n_out = dims[l, 0], dims[l, 1]
        dw = _matrix(grads, w_offsets[l], n_in, n_out)
        dw_t = _matrix(scratch, 0, n_out, n_in)
        for k in range(n_in):
            for r in range(n_out):
                dw_t[r, k] = dw[k, r]
        db = grads[b_offsets[l] : b_offsets[l] + n_out]
        used = effective_parts(parts, 2 * n * n_out * n_in)
        if used == 1:
            squares[0] += _squares(dw_t, db, 0, n_out)
        else:
            for part in range(used):
                lo, hi = split(n_out, used, part)
                squares[part] += _squares(dw_t, db, lo, hi)
    return squares.sum()


@numba.njit(**OPTIONS)
def clip_grads(grads, norm, max_norm):
    """torch.nn.utils.clip_grad_norm_: grads *= max_norm / (norm + 1e-6) when that is < 1."""
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0:
        c = grads.dtype.type(coef)
        for i in range(grads.shape[0]):
            grads[i] *= c


@numba.njit(**OPTIONS)
def _matrix(flat, offset, rows, cols):
    return flat[offset : offset + rows * cols].reshape((rows, cols))


@numba.njit(**OPTIONS)
def train_epoch(data, net, update, work, first, n_iterations, parts, products):
    """Run up to ``n_iterations`` updates, the epoch's iterations ``first``, ``first + 1``, ...;
    return (iterations recorded in ``work.losses``, status).

    status is COMPLETED, or LOSS_DIVERGED / GRADIENT_DIVERGED when the last recorded
    iteration stopped the epoch before its update. ``data``, ``net``, ``update`` and ``work``
    are the named tuples :class:`Data`, :class:`Network`, :class:`Update` and
    :class:`Workspace`. The update is :func:`minigd.kernels.jit_optim.fused_step`.
    ``products`` (2, L, 3) int64: the products' implementations (codes.PRODUCT_OWN /
    PRODUCT_BLAS / PRODUCT_BLAS_ROWS) of layer l, [0] for full batches and [1] for a shorter
    last one, [..., 0] the weight gradient, [..., 1] the input gradient and [..., 2] the
    forward product (minigd.kernels.autotune.epoch_products).
    """
    X, y, order, batch_size = data
    values, grads, dims, w_offsets, b_offsets, acts = net
    kind, hyper, state1, state2, state3, step0, lrs, max_norm, momenta, momentum_index = update
    xbuf, ybuf, abuf, a_offsets, dbuf, losses, norms, partial = work
    n_layers = dims.shape[0]
    N = order.shape[0]
    squares = np.zeros(max(parts, 1), dtype=values.dtype)
    # row padding of the forward product (jit_gemm.nt_columns), for batches of M % 4 != 0 rows
    pad_a = np.zeros(4 * dims[:, 0].max(), dtype=values.dtype)
    pad_out = np.zeros(4 * dims[:, 1].max(), dtype=values.dtype)
    for t in range(n_iterations):
        start = (first + t) * batch_size
        n = min(batch_size, N - start)
        xb, yb = xbuf[:n], ybuf[:n]
        gather(X, y, order, start, xb, yb, parts)
        short = 0 if n == batch_size else 1

        a = xb
        for l in range(n_layers):
            n_in, n_out = dims[l, 0], dims[l, 1]
            out = _matrix(abuf, a_offsets[l], n, n_out)
            dense_act_forward(
                a,
                _matrix(values, w_offsets[l], n_out, n_in),
                values[b_offsets[l] : b_offsets[l] + n_out],
                acts[l],
                out,
                parts,
                _matrix(pad_a, 0, 4, n_in),
                _matrix(pad_out, 0, 4, n_out),
                products[short, l, 2],
            )
            a = out

        n_classes = dims[n_layers - 1, 1]
        d = _matrix(dbuf, 0, n, n_classes)
        loss = softmax_cross_entropy(a, yb, d)
        losses[t] = loss
        if not np.isfinite(loss):
            return t + 1, LOSS_DIVERGED
        activation_mask(d, a, acts[n_layers - 1], 0, n)

        half = dbuf.shape[0] // 2
        squares[:] = 0
        for l in range(n_layers - 1, -1, -1):
            n_in, n_out = dims[l, 0], dims[l, 1]
            a_prev = xb if l == 0 else _matrix(abuf, a_offsets[l - 1], n, n_in)
            weight_grad(
                d,
                a_prev,
                _matrix(grads, w_offsets[l], n_out, n_in),
                grads[b_offsets[l] : b_offsets[l] + n_out],
                squares,
                parts,
                products[short, l, 0],
                partial,
            )
            if l > 0:
                below = _matrix(dbuf, half if (n_layers - 1 - l) % 2 == 0 else 0, n, n_in)
                input_grad(
                    d,
                    _matrix(values, w_offsets[l], n_out, n_in),
                    a_prev,
                    acts[l - 1],
                    below,
                    parts,
                    products[short, l, 1],
                )
                d = below
        total = squares.sum()
        norms[t] = math.sqrt(np.float64(total))
        if not np.isfinite(total):
            return t + 1, GRADIENT_DIVERGED
        if max_norm > 0:
            clip_grads(grads, norms[t], max_norm)

        step = step0 + t + 1
        if momenta.shape[0] > 0:
            hyper[momentum_index] = momenta[t]
        fused_step(kind, hyper, state1, state2, state3, step, lrs[t], values, grads, parts)
    return n_iterations, COMPLETED


def to_kernel_layout(flat, out, dims, w_offsets):
    """Copy a flat buffer into kernel layout: each weight (in, out) stored as (out, in)."""
    _relayout(flat, out, dims, w_offsets, to_kernel=True)


def from_kernel_layout(flat, out, dims, w_offsets):
    """Inverse of :func:`to_kernel_layout`."""
    _relayout(flat, out, dims, w_offsets, to_kernel=False)


def _relayout(flat, out, dims, w_offsets, to_kernel):
    """``out`` = ``flat`` with each weight block transposed (in register tiles, 2x faster than
    NumPy's strided copy of a 784 x 128 weight); everything between the weights (biases,
    other parameters) copied as it is. Each element is written once."""
    start = 0
    blocks = sorted(zip(np.asarray(dims).tolist(), w_offsets), key=itemgetter(1))
    for (n_in, n_out), offset in blocks:
        offset = int(offset)
        out[start:offset] = flat[start:offset]
        end = offset + n_in * n_out
        shape = (n_in, n_out) if to_kernel else (n_out, n_in)
        transpose_into(flat[offset:end].reshape(shape), out[offset:end].reshape(shape[::-1]))
        start = end
    out[start:] = flat[start:]
