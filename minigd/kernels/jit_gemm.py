"""Matrix products for the Numba backend: register-blocked loops, and BLAS from compiled code.

Two loop shapes cover every product of a dense layer (forward, weight gradient, input gradient):

    matmul_nt(a, b, out):  out[i, j] = sum_k a[i, k] * b[j, k]     (out = a @ b.T)
    matmul_tn(p, q, out):  out[r, l] = sum_s p[s, r] * q[s, l]     (out = p.T @ q)

``matmul_nt`` reads both operands along k: a 4x4 block of ``out`` keeps 16 running sums that
LLVM vectorises along k into 16 AVX-512 accumulators (8 loads per 16 FMAs). ``matmul_tn``
adds 4 rows of ``q``, scaled by 16 coefficients of ``p``, to 4 rows of ``out`` in one pass
along l: the right shape when the summed dimension s is short (the batch, at batch 16).
``a @ b`` is ``matmul_tn(a.T, b, out)``. ``nt_columns`` can finish each element as it is
stored, ``out = f(sum + bias)``: the dense layer's bias and activation fused into the product.

A row's output does not depend on its batch-mates: ``nt_columns`` sends every row through the
same 4-row block code, the last ``M % 4`` rows through a zero-padded 4-row scratch block, so a
sample gives the same bits alone or in a batch of any size, on any thread count (under
``reassoc`` each loop shape is vectorised its own way, and a separate 1-row path differed in
the last bits; tests/test_row_independence.py).

Both take ``parts``: the rows of ``out`` (``matmul_tn``) or its columns (``matmul_nt``) are
cut into ``parts`` ranges at multiples of ``ALIGN`` = 16 elements (a 64-byte cache line of
float32), one per thread, so that two threads never write the same cache line of a 64-byte
aligned buffer (false sharing made the batch-16 forward 1.6x slower). A product with a
:func:`narrow` output (one ALIGN block, e.g. a classifier's 10 columns) splits its other
dimension instead: the forward product its rows, the BLAS weight gradient its input columns.
In the own loops every output element is computed by the same code in the same order whatever
``parts`` is, so their results do not depend on the number of threads. Measured on the
784x128 products (float32, AMD Zen 5, benchmarks/kernels.py): 133-165 GFLOP/s on one thread,
226-304 on two, against 88-113 and 142-213 for NumPy's OpenBLAS (AVX2 kernels on this CPU).

The backward products go through :func:`tn_product`, which runs either ``tn_rows`` (``OWN``) or one
call of a BLAS (NumPy's own, else SciPy's) on the same row range (``BLAS``, :func:`blas_matmul`), as
:mod:`minigd.kernels.autotune` chose for the shape by measuring both on this machine. BLAS results
are deterministic for a given machine, choice and thread count, and may differ from the own loops
(and between machines) in the last bits. The forward product, in training only (unless
``MINIGD_FORWARD_BLAS=0``), goes through :func:`nt_product` the same way; evaluation and prediction
always run ``nt_columns``, whose rows do not depend on their batch-mates.
"""

import math

import numba
import numpy as np
from numba import prange

from . import jit_config
from .codes import ACT_NONE as NONE
from .codes import ACT_RELU as RELU
from .codes import ACT_SIGMOID as SIGMOID
from .codes import ACT_TANH as TANH
from .codes import PRODUCT_BLAS as BLAS  # the product codes minigd.kernels.autotune chooses
from .codes import PRODUCT_BLAS_ROWS as BLAS_ROWS
from .codes import PRODUCT_OWN as OWN
from .jit_config import FAST_OPTIONS, MIN_PARALLEL_FLOPS, OPTIONS

_ROWS_PER_CHUNK = 64  # rows of the streamed operand kept hot in L2 per sweep
ALIGN = 16


@numba.njit(**OPTIONS)
def split(n, parts, part):
    """[lo, hi) of part ``part`` when 0..n is cut into ``parts`` ranges at multiples of ALIGN."""
    blocks = (n + ALIGN - 1) // ALIGN
    lo = min(n, (blocks * part // parts) * ALIGN)
    hi = min(n, (blocks * (part + 1) // parts) * ALIGN)
    return lo, hi


# ---- tanh ------------------------------------------------------------------------------------
# math.tanh compiles to a call of the C library per element (~9 ns, never vectorised without
# Intel's SVML), which made Tanh networks slower on the Numba backend than on NumPy's SIMD tanh.
# float32 uses a rational approximation instead (Eigen's generic_fast_tanh_float: odd degree-13
# numerator over even degree-6 denominator on [-7.905, 7.905], x itself below 4e-4): plain
# multiplies and adds that vectorise. Measured against tanh in float64 over [-12, 12]: at most
# 6 float32 ulp (NumPy's: 1.4); +-1 beyond |x| = 9.1 (where float32 tanh rounds to +-1) and for
# +-inf, NaN stays NaN. float64 keeps math.tanh.
_F32 = np.float32
_T_CLAMP, _T_SMALL, _T_BIG = _F32(7.90531110763549805), _F32(0.0004), _F32(9.1)
_ONE32 = _F32(1)
_T_A = tuple(
    _F32(c)
    for c in (
        4.89352455891786e-03,
        6.37261928875436e-04,
        1.48572235717979e-05,
        5.12229709037114e-08,
        -8.60467152213735e-11,
        2.00018790482477e-13,
        -2.76076847742355e-16,
    )
)
_T_B = tuple(
    _F32(c)
    for c in (
        4.89352518554385e-03,
        2.26843463243900e-03,
        1.18534705686654e-04,
        1.19825839466702e-06,
    )
)
_A1, _A3, _A5, _A7, _A9, _A11, _A13 = _T_A
_B0, _B2, _B4, _B6 = _T_B


def tanh(v):
    """tanh of a float32 (rational approximation) or float64 (math.tanh) scalar, in Numba."""
    return math.tanh(v)


@numba.njit(**OPTIONS)
def tanh32(v):
    """The float32 rational tanh. Its own function, compiled without fastmath, so the products'
    epilogue (compiled with ``contract``/``reassoc``) and the elementwise kernels round it the
    same way (the fused epoch and the per-iteration path stay bit-identical); LLVM still
    inlines and vectorises the call."""
    x = min(max(v, -_T_CLAMP), _T_CLAMP)
    x2 = x * x
    p = x2 * _A13 + _A11
    p = x2 * p + _A9
    p = x2 * p + _A7
    p = x2 * p + _A5
    p = x2 * p + _A3
    p = x2 * p + _A1
    q = x2 * _B6 + _B4
    q = x2 * q + _B2
    q = x2 * q + _B0
    r = (x * p) / q
    r = r if abs(v) <= _T_BIG else (_ONE32 if v > 0 else -_ONE32)  # float32 tanh rounds to +-1
    return v if abs(v) < _T_SMALL or v != v else r


@numba.extending.overload(tanh)
def _tanh_overload(v):
    if v != numba.types.float32:
        return lambda v: math.tanh(v)
    return lambda v: tanh32(v)


@numba.njit(inline="always", **OPTIONS)
def activation(v, act, one):
    """f(v) for activation code ``act`` (``one``: 1 in v's dtype), as the reference kernels:
    RELU max(v, 0) keeping NaN, TANH, SIGMOID 1 / (1 + exp(-v)) without overflow."""
    if act == RELU:
        return v if v > 0 or v != v else one - one
    if act == TANH:
        return tanh(v)
    if act == SIGMOID:
        e = math.exp(-abs(v))
        return one / (one + e) if v >= 0 else e / (one + e)
    return v


@numba.njit(inline="always", **OPTIONS)
def _finish(s, bias, j, act, one):
    if bias.shape[0] != 0:
        s = s + bias[j]
    return activation(s, act, one)


@numba.njit(**OPTIONS)
def narrow(n):
    """True when ``n`` output rows or columns are one ALIGN block, which :func:`split` would give
    to one part whole: the products then split their other dimension between the threads."""
    return n <= ALIGN


@numba.njit(**OPTIONS)
def effective_parts(parts, flops):
    """``parts`` for a product of ``flops`` floating-point operations; 1 when it is small."""
    return 1 if flops < MIN_PARALLEL_FLOPS else max(1, parts)


# ---- out = f(a @ b.T + bias) -------------------------------------------------------------------
@numba.njit(**FAST_OPTIONS)
def _nt_4x4(a, b, out, i, j, bias, act, one):
    K = a.shape[1]
    a0, a1, a2, a3 = a[i, 0], a[i + 1, 0], a[i + 2, 0], a[i + 3, 0]
    b0, b1, b2, b3 = b[j, 0], b[j + 1, 0], b[j + 2, 0], b[j + 3, 0]
    s00, s01, s02, s03 = a0 * b0, a0 * b1, a0 * b2, a0 * b3
    s10, s11, s12, s13 = a1 * b0, a1 * b1, a1 * b2, a1 * b3
    s20, s21, s22, s23 = a2 * b0, a2 * b1, a2 * b2, a2 * b3
    s30, s31, s32, s33 = a3 * b0, a3 * b1, a3 * b2, a3 * b3
    for k in range(1, K):
        a0, a1, a2, a3 = a[i, k], a[i + 1, k], a[i + 2, k], a[i + 3, k]
        b0, b1, b2, b3 = b[j, k], b[j + 1, k], b[j + 2, k], b[j + 3, k]
        s00 += a0 * b0
        s01 += a0 * b1
        s02 += a0 * b2
        s03 += a0 * b3
        s10 += a1 * b0
        s11 += a1 * b1
        s12 += a1 * b2
        s13 += a1 * b3
        s20 += a2 * b0
        s21 += a2 * b1
        s22 += a2 * b2
        s23 += a2 * b3
        s30 += a3 * b0
        s31 += a3 * b1
        s32 += a3 * b2
        s33 += a3 * b3
    out[i, j], out[i, j + 1], out[i, j + 2], out[i, j + 3] = s00, s01, s02, s03
    out[i + 1, j], out[i + 1, j + 1], out[i + 1, j + 2], out[i + 1, j + 3] = s10, s11, s12, s13
    out[i + 2, j], out[i + 2, j + 1], out[i + 2, j + 2], out[i + 2, j + 3] = s20, s21, s22, s23
    out[i + 3, j], out[i + 3, j + 1], out[i + 3, j + 2], out[i + 3, j + 3] = s30, s31, s32, s33
    # finishing from memory (the block is in L1) keeps the k loop above vectorised; finishing
    # the 16 sums in registers measured 2x slower
    for r in range(i, i + 4):
        for c in range(j, j + 4):
            out[r, c] = _finish(out[r, c], bias, c, act, one)


@numba.njit(**FAST_OPTIONS)
def _nt_4x1(a, b, out, i, j, bias, act, one):
    K = a.shape[1]
    b0 = b[j, 0]
    s0, s1, s2, s3 = a[i, 0] * b0, a[i + 1, 0] * b0, a[i + 2, 0] * b0, a[i + 3, 0] * b0
    for k in range(1, K):
        b0 = b[j, k]
        s0 += a[i, k] * b0
        s1 += a[i + 1, k] * b0
        s2 += a[i + 2, k] * b0
        s3 += a[i + 3, k] * b0
    out[i, j] = _finish(s0, bias, j, act, one)
    out[i + 1, j] = _finish(s1, bias, j, act, one)
    out[i + 2, j] = _finish(s2, bias, j, act, one)
    out[i + 3, j] = _finish(s3, bias, j, act, one)


@numba.njit(**FAST_OPTIONS)
def _nt_row_blocks(a, b, out, i0, i1, lo, hi, bias, act, one):
    """out[i0:i1, lo:hi] = f(a[i0:i1] @ b[lo:hi].T + bias[lo:hi]); i1 - i0 a multiple of 4."""
    j = lo
    while j + 4 <= hi:
        for i in range(i0, i1, 4):
            _nt_4x4(a, b, out, i, j, bias, act, one)
        j += 4
    while j < hi:
        for i in range(i0, i1, 4):
            _nt_4x1(a, b, out, i, j, bias, act, one)
        j += 1


@numba.njit(**OPTIONS)
def pad_rows(a, pad_a):
    """pad_a = the last ``len(a) % 4`` rows of a, then zero rows up to 4 (see nt_columns)."""
    M = a.shape[0]
    r = M % 4
    for i in range(4):
        for k in range(a.shape[1]):
            pad_a[i, k] = a[M - r + i, k] if i < r else a.dtype.type(0)


@numba.njit(**FAST_OPTIONS)
def nt_columns(a, b, out, lo, hi, bias, act, pad_a, pad_out):
    """out[:, lo:hi] = f(a @ b[lo:hi].T + bias[lo:hi]) for activation code ``act``.

    ``bias`` of length 0 adds nothing; lo is a multiple of 4.

    Every row goes through the same 4-row block code, so a row's result does not depend on
    how many rows ``a`` has or where the row sits (under ``reassoc`` LLVM vectorises each
    loop shape's k-sums its own way, so a separate 1-row path gave other last bits, ~1e-7 in
    float32). The last ``M % 4`` rows are computed as one block in the scratch ``pad_a``
    (4, K) (filled by :func:`pad_rows` beforehand, zero rows after the real ones) into
    ``pad_out`` (4, N), then copied to ``out``. Columns past the last multiple of 4 use a
    one-column block (``_nt_4x1``), for every row alike.
    """
    M = a.shape[0]
    M4 = M - M % 4
    one = out.dtype.type(1)
    for i0 in range(0, M4, _ROWS_PER_CHUNK):
        _nt_row_blocks(a, b, out, i0, min(M4, i0 + _ROWS_PER_CHUNK), lo, hi, bias, act, one)
    if M4 < M:
        _nt_row_blocks(pad_a, b, pad_out, 0, 4, lo, hi, bias, act, one)
        for i in range(M4, M):
            for j in range(lo, hi):
                out[i, j] = pad_out[i - M4, j]


@numba.njit(parallel=True, **FAST_OPTIONS)
def matmul_nt(a, b, out, parts):
    """out = a @ b.T for a (M, K), b (N, K), out (M, N); columns split into ``parts``.

    For benchmarks and tests: allocates the small (4, K) and (4, N) row padding of
    :func:`nt_columns` when M is not a multiple of 4 (the dense kernels reuse theirs).
    """
    N = b.shape[0]
    no_bias = out[0, :0]
    if a.shape[0] % 4:
        pad_a, pad_out = np.empty((4, a.shape[1]), a.dtype), np.empty((4, N), out.dtype)
        pad_rows(a, pad_a)
    else:
        pad_a, pad_out = a[:0], out[:0]
    parts = effective_parts(parts, 2 * a.shape[0] * N * a.shape[1])
    if parts == 1:
        nt_columns(a, b, out, 0, N, no_bias, NONE, pad_a, pad_out)
        return
    for part in prange(parts):
        lo, hi = split(N, parts, part)
        nt_columns(a, b, out, lo, hi, no_bias, NONE, pad_a, pad_out)


# ---- out = p.T @ q ---------------------------------------------------------------------------
@numba.njit(**FAST_OPTIONS)
def _tn_4x4(p, q, out, r, s):
    a00, a01, a02, a03 = p[s, r], p[s + 1, r], p[s + 2, r], p[s + 3, r]
    a10, a11, a12, a13 = p[s, r + 1], p[s + 1, r + 1], p[s + 2, r + 1], p[s + 3, r + 1]
    a20, a21, a22, a23 = p[s, r + 2], p[s + 1, r + 2], p[s + 2, r + 2], p[s + 3, r + 2]
    a30, a31, a32, a33 = p[s, r + 3], p[s + 1, r + 3], p[s + 2, r + 3], p[s + 3, r + 3]
    for l in range(q.shape[1]):
        q0, q1, q2, q3 = q[s, l], q[s + 1, l], q[s + 2, l], q[s + 3, l]
        out[r, l] += a00 * q0 + a01 * q1 + a02 * q2 + a03 * q3
        out[r + 1, l] += a10 * q0 + a11 * q1 + a12 * q2 + a13 * q3
        out[r + 2, l] += a20 * q0 + a21 * q1 + a22 * q2 + a23 * q3
        out[r + 3, l] += a30 * q0 + a31 * q1 + a32 * q2 + a33 * q3


@numba.njit(**FAST_OPTIONS)
def _tn_4x1(p, q, out, r, s):
    a0, a1, a2, a3 = p[s, r], p[s, r + 1], p[s, r + 2], p[s, r + 3]
    for l in range(q.shape[1]):
        q0 = q[s, l]
        out[r, l] += a0 * q0
        out[r + 1, l] += a1 * q0
        out[r + 2, l] += a2 * q0
        out[r + 3, l] += a3 * q0


@numba.njit(**FAST_OPTIONS)
def _tn_1x4(p, q, out, r, s):
    a0, a1, a2, a3 = p[s, r], p[s + 1, r], p[s + 2, r], p[s + 3, r]
    for l in range(q.shape[1]):
        out[r, l] += a0 * q[s, l] + a1 * q[s + 1, l] + a2 * q[s + 2, l] + a3 * q[s + 3, l]


@numba.njit(**FAST_OPTIONS)
def _tn_1x1(p, q, out, r, s):
    a0 = p[s, r]
    for l in range(q.shape[1]):
        out[r, l] += a0 * q[s, l]


@numba.njit(**FAST_OPTIONS)
def tn_rows(p, q, out, lo, hi):
    """out[lo:hi] = p[:, lo:hi].T @ q  (lo a multiple of 4)."""
    S = p.shape[0]
    for r in range(lo, hi):
        out[r, :] = 0
    for s0 in range(0, S, _ROWS_PER_CHUNK):
        s1 = min(S, s0 + _ROWS_PER_CHUNK)
        r = lo
        while r + 4 <= hi:
            s = s0
            while s + 4 <= s1:
                _tn_4x4(p, q, out, r, s)
                s += 4
            while s < s1:
                _tn_4x1(p, q, out, r, s)
                s += 1
            r += 4
        while r < hi:
            s = s0
            while s + 4 <= s1:
                _tn_1x4(p, q, out, r, s)
                s += 4
            while s < s1:
                _tn_1x1(p, q, out, r, s)
                s += 1
            r += 1


@numba.njit(parallel=True, **FAST_OPTIONS)
def matmul_tn(p, q, out, parts):
    """out = p.T @ q for p (S, R), q (S, L), out (R, L); rows split into ``parts``."""
    R = p.shape[1]
    parts = effective_parts(parts, 2 * p.shape[0] * R * q.shape[1])
    if parts == 1:
        tn_rows(p, q, out, 0, R)
        return
    for part in prange(parts):
        lo, hi = split(R, parts, part)
        tn_rows(p, q, out, lo, hi)


# ---- dense layers: a product and its epilogue, split between threads ---------------------------
@numba.njit(parallel=True, **OPTIONS)
def dense_act_forward(x, w_t, b, act, out, parts, pad_a, pad_out, impl=OWN):
    """out = f(x @ w_t.T + b), output columns split into ``parts``. ``pad_a`` (4, in) and
    ``pad_out`` (4, out): reused scratch for the rows past the last multiple of 4 (see
    :func:`nt_columns`). ``impl`` OWN (default): :func:`nt_columns`, bias and activation
    applied as each element is stored, a row's bits independent of its batch-mates; BLAS: one
    BLAS call per thread on its columns, then bias and activation (:func:`nt_product`; training
    only, where the autotuner chose it); BLAS_ROWS: the same, each thread on its share of the
    rows (always the case for a :func:`narrow` output)."""
    n_out = w_t.shape[0]
    if x.shape[0] % 4 and impl == OWN:
        pad_rows(x, pad_a)
    parts = effective_parts(parts, 2 * x.shape[0] * x.shape[1] * n_out)
    if parts == 1:
        nt_product(x, w_t, out, 0, n_out, b, act, pad_a, pad_out, impl)
        return
    if impl == BLAS_ROWS or narrow(n_out):
        # BLAS_ROWS: nt_product's BLAS call on a share of the rows each. Otherwise
        # one column block (the classifier's 10 outputs) would leave all but one thread idle:
        # split the rows instead, at multiples of ALIGN rows, so only the last part has the
        # M % 4 tail (in pad_a); each row goes through the same code either way
        for part in numba.prange(parts):
            lo, hi = split(x.shape[0], parts, part)
            nt_product(x[lo:hi], w_t, out[lo:hi], 0, n_out, b, act, pad_a, pad_out, impl)
        return
    for part in numba.prange(parts):
        lo, hi = split(n_out, parts, part)
        nt_product(x, w_t, out, lo, hi, b, act, pad_a, pad_out, impl)


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


@numba.njit(**OPTIONS)
def _transpose_rows(w, w_t, lo, hi):
    """w_t[:, lo:hi] = w[lo:hi].T in 4 x 4 register tiles (lo a multiple of 4)."""
    m = w.shape[1]
    i = lo
    while i + 4 <= hi:
        j = 0
        while j + 4 <= m:
            a0, a1, a2, a3 = w[i, j], w[i, j + 1], w[i, j + 2], w[i, j + 3]
            b0, b1, b2, b3 = w[i + 1, j], w[i + 1, j + 1], w[i + 1, j + 2], w[i + 1, j + 3]
            c0, c1, c2, c3 = w[i + 2, j], w[i + 2, j + 1], w[i + 2, j + 2], w[i + 2, j + 3]
            d0, d1, d2, d3 = w[i + 3, j], w[i + 3, j + 1], w[i + 3, j + 2], w[i + 3, j + 3]
            w_t[j, i], w_t[j, i + 1], w_t[j, i + 2], w_t[j, i + 3] = a0, b0, c0, d0
            w_t[j + 1, i], w_t[j + 1, i + 1], w_t[j + 1, i + 2], w_t[j + 1, i + 3] = a1, b1, c1, d1
            w_t[j + 2, i], w_t[j + 2, i + 1], w_t[j + 2, i + 2], w_t[j + 2, i + 3] = a2, b2, c2, d2
            w_t[j + 3, i], w_t[j + 3, i + 1], w_t[j + 3, i + 2], w_t[j + 3, i + 3] = a3, b3, c3, d3
            j += 4
        for jj in range(j, m):
            for ii in range(i, i + 4):
                w_t[jj, ii] = w[ii, jj]
        i += 4
    for ii in range(i, hi):
        for jj in range(m):
            w_t[jj, ii] = w[ii, jj]


@numba.njit(**OPTIONS)
def transpose_into(w, w_t):
    """w_t = w.T in 4 x 4 register tiles (2x faster than plain loops; one thread, as two
    measured slower on this 400 KB copy)."""
    _transpose_rows(w, w_t, 0, w.shape[0])


def aligned_empty(shape, dtype, align=64):
    """np.empty whose data starts on an ``align``-byte boundary (one cache line).

    With rows whose length is a multiple of 16 float32, the split points then fall on
    cache-line boundaries, and two threads never write to the same line.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(nbytes + align, dtype=np.uint8)
    offset = -raw.ctypes.data % align
    return raw[offset : offset + nbytes].view(dtype).reshape(shape)


# ---- BLAS from compiled code ---------------------------------------------------------------------
# ``_xgemm`` calls the BLAS of jit_config.BLAS_LIBRARY by a symbol name, resolved when the
# compiled code is linked, so functions calling it can be cached:
# - "numpy": the ILP64 ``cblas_?gemm`` of the OpenBLAS NumPy's wheels bundle (the library
#   ``np.dot`` itself uses), under the name jit_config registered for it with LLVM;
# - "scipy": ``numba_xxgemm``, the BLAS entry point of Numba's helper library, the one
#   ``np.dot`` inside ``@njit`` uses, which calls SciPy's BLAS (``scipy.linalg.cython_blas``).
# ``np.dot`` inside ``@njit`` only takes whole C- or Fortran-ordered arrays (it copies a strided
# view), which rules out one thread computing a range of rows of a product; ``_xgemm`` takes
# leading dimensions.
BLAS_AVAILABLE = jit_config.BLAS_AVAILABLE  # compiled code can call a BLAS (NumPy's or SciPy's)
BLAS_LIBRARY = jit_config.BLAS_LIBRARY


@numba.extending.intrinsic
def _xgemm(typingctx, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc):
    """Column-major BLAS gemm: c(m, n) = op(a) @ op(b), op a transpose when trans_* != 0."""
    from llvmlite import ir
    from numba.core import cgutils, types
    from numba.np.linalg import check_blas_return, ensure_blas, get_blas_kind

    if not (
        isinstance(a, types.Array)
        and a.dtype == b.dtype == c.dtype
        and a.dtype in (types.float32, types.float64)
    ):
        return None
    sig = types.void(
        types.intp,
        types.intp,
        types.intp,
        types.intp,
        types.intp,
        a,
        types.intp,
        b,
        types.intp,
        c,
        types.intp,
    )

    def codegen(context, builder, signature, args):
        if BLAS_LIBRARY == "numpy":
            return _numpy_gemm_call(context, builder, signature, args)
        ensure_blas()
        ta, tb, m_, n_, k_, a_, lda_, b_, ldb_, c_, ldc_ = args
        char, voidp = ir.IntType(8), cgutils.voidptr_t
        intp = context.get_value_type(types.intp)
        fnty = ir.FunctionType(
            ir.IntType(32),
            [
                char,
                char,
                char,
                intp,
                intp,
                intp,
                voidp,
                voidp,
                intp,
                voidp,
                intp,
                voidp,
                voidp,
                intp,
            ],
        )
        fn = cgutils.get_or_insert_function(builder.module, fnty, "numba_xxgemm")
        dtype = signature.args[5].dtype
        alpha = cgutils.alloca_once_value(builder, context.get_constant(dtype, 1.0))
        beta = cgutils.alloca_once_value(builder, context.get_constant(dtype, 0.0))
        zero = ir.Constant(intp, 0)

        def flag(t):
            return builder.select(
                builder.icmp_signed("!=", t, zero),
                ir.Constant(char, ord("t")),
                ir.Constant(char, ord("n")),
            )

        def data(ty, value):
            return _data_pointer(context, builder, ty, value)

        res = builder.call(
            fn,
            (
                ir.Constant(char, ord(get_blas_kind(dtype))),
                flag(ta),
                flag(tb),
                m_,
                n_,
                k_,
                builder.bitcast(alpha, voidp),
                data(signature.args[5], a_),
                lda_,
                data(signature.args[7], b_),
                ldb_,
                builder.bitcast(beta, voidp),
                data(signature.args[9], c_),
                ldc_,
            ),
        )
        check_blas_return(context, builder, res)
        return context.get_dummy_value()

    return sig, codegen


_CBLAS_COL_MAJOR, _CBLAS_NO_TRANS, _CBLAS_TRANS = 102, 111, 112


def _data_pointer(context, builder, array_type, value):
    """The ``void*`` to the first element of an array argument, for a BLAS call."""
    from numba.core import cgutils
    from numba.np.arrayobj import make_array

    data = make_array(array_type)(context, builder, value).data
    return builder.bitcast(data, cgutils.voidptr_t)


def _numpy_gemm_call(context, builder, signature, args):
    """Code for ``_xgemm`` through NumPy's own BLAS: its ILP64 ``cblas_?gemm`` (64-bit integer
    arguments, alpha and beta by value), called by the symbol jit_config registered for it
    (jit_config.NUMPY_GEMM_SYMBOLS), so cached code links in any process that found it."""
    from llvmlite import ir
    from numba.core import cgutils, types

    ta, tb, m_, n_, k_, a_, lda_, b_, ldb_, c_, ldc_ = args
    dtype = signature.args[5].dtype
    i32, i64, voidp = ir.IntType(32), ir.IntType(64), cgutils.voidptr_t
    scalar = context.get_value_type(dtype)
    fnty = ir.FunctionType(
        ir.VoidType(),
        [i32, i32, i32, i64, i64, i64, scalar, voidp, i64, voidp, i64, scalar, voidp, i64],
    )
    fn = cgutils.get_or_insert_function(
        builder.module, fnty, jit_config.NUMPY_GEMM_SYMBOLS[str(dtype)]
    )
    intp = context.get_value_type(types.intp)
    zero = ir.Constant(intp, 0)

    def flag(t):
        return builder.select(
            builder.icmp_signed("!=", t, zero),
            ir.Constant(i32, _CBLAS_TRANS),
            ir.Constant(i32, _CBLAS_NO_TRANS),
        )

    def data(ty, value):
        return _data_pointer(context, builder, ty, value)

    def wide(value):
        return builder.sext(value, i64) if intp.width < 64 else value

    builder.call(
        fn,
        (
            ir.Constant(i32, _CBLAS_COL_MAJOR),
            flag(ta),
            flag(tb),
            wide(m_),
            wide(n_),
            wide(k_),
            context.get_constant(dtype, 1.0),
            data(signature.args[5], a_),
            wide(lda_),
            data(signature.args[7], b_),
            wide(ldb_),
            context.get_constant(dtype, 0.0),
            data(signature.args[9], c_),
            wide(ldc_),
        ),
    )
    return context.get_dummy_value()


@numba.njit(**OPTIONS)
def _blas_operand(x):
    """(transposed, leading dimension) of 2-D ``x`` seen as a column-major matrix of x.T, or
    (-1, 0) when neither of its strides is one element."""
    rows, cols = x.shape
    s0, s1 = x.strides[0] // x.itemsize, x.strides[1] // x.itemsize
    if cols <= 1 or s1 == 1:
        return 0, max(s0, cols, 1)
    if rows <= 1 or s0 == 1:
        return 1, max(s1, rows, 1)
    return -1, 0


@numba.njit(**OPTIONS)
def blas_matmul(a, b, out):
    """out = a @ b through BLAS, for 2-D views whose rows or columns are contiguous (no copy);
    ``out``'s rows contiguous. Row-major ``out`` is column-major ``out.T = b.T @ a.T``."""
    m, k = a.shape
    n = b.shape[1]
    if m == 0 or n == 0:
        return
    if k == 0:
        out[:, :] = 0
        return
    tb, ldb = _blas_operand(b)
    ta, lda = _blas_operand(a)
    if ta < 0 or tb < 0 or (m > 1 and out.strides[1] != out.itemsize):
        raise ValueError("blas_matmul: operands need a unit stride")
    ldc = max(out.strides[0] // out.itemsize, n, 1)
    _xgemm(tb, ta, n, m, k, b, ldb, a, lda, out, ldc)


if BLAS_AVAILABLE:

    @numba.njit(**FAST_OPTIONS)
    def tn_product(p, q, out, lo, hi, impl):
        """out[lo:hi] = p[:, lo:hi].T @ q: :func:`tn_rows` (impl OWN) or one BLAS call (any
        other: the caller has split the work)."""
        if impl != OWN:
            blas_matmul(p[:, lo:hi].T, q, out[lo:hi])
        else:
            tn_rows(p, q, out, lo, hi)

    @numba.njit(**OPTIONS)
    def tn_product_columns(p, q, out, lo, hi):
        """out[:, lo:hi] = p.T @ q[:, lo:hi] in one BLAS call: a :func:`narrow` weight
        gradient's share of the input columns (the BLAS choice only)."""
        blas_matmul(p.T, q[:, lo:hi], out[:, lo:hi])
else:  # no BLAS the compiled code can call: every product is our own

    @numba.njit(**FAST_OPTIONS)
    def tn_product(p, q, out, lo, hi, impl):
        """out[lo:hi] = p[:, lo:hi].T @ q with :func:`tn_rows` (BLAS is not available)."""
        tn_rows(p, q, out, lo, hi)

    @numba.njit(**OPTIONS)
    def tn_product_columns(p, q, out, lo, hi):
        """out[:, lo:hi] = p.T @ q[:, lo:hi] in plain loops (never chosen without BLAS: the
        narrow split is for the BLAS choice only)."""
        for r in range(p.shape[1]):
            for l in range(lo, hi):
                total = out.dtype.type(0)
                for s in range(p.shape[0]):
                    total += p[s, r] * q[s, l]
                out[r, l] = total


@numba.njit(**OPTIONS)
def bias_activation(out, b, act, lo, hi):
    """out[:, lo:hi] = f(out[:, lo:hi] + b[lo:hi]) (``b`` of length 0 adds nothing).

    The bias and the activation each run as their own pass over contiguous row slices, so both
    vectorise: one loop with :func:`_finish` per element took 98 us on a (1024, 128) float32
    ReLU output, 19 us this way (0.34 ms and 53-59 us for Tanh). Each element gets the same
    operations as through :func:`_finish`, so the bits are unchanged.
    """
    one = out.dtype.type(1)
    width = hi - lo
    if b.shape[0] != 0:
        bias = b[lo:hi]
        for i in range(out.shape[0]):
            row = out[i, lo:hi]
            for j in range(width):
                row[j] = row[j] + bias[j]
    if act == NONE:
        return
    for i in range(out.shape[0]):
        row = out[i, lo:hi]
        for j in range(width):
            row[j] = activation(row[j], act, one)  # ``act`` is loop-invariant: LLVM hoists it


if BLAS_AVAILABLE:

    @numba.njit(**FAST_OPTIONS)
    def nt_product(x, w_t, out, lo, hi, b, act, pad_a, pad_out, impl):
        """out[:, lo:hi] = f(x @ w_t[lo:hi].T + b[lo:hi]): :func:`nt_columns` (impl OWN) or
        one BLAS call and :func:`bias_activation` (BLAS)."""
        if impl != OWN:
            blas_matmul(x, w_t[lo:hi].T, out[:, lo:hi])
            bias_activation(out, b, act, lo, hi)
        else:
            nt_columns(x, w_t, out, lo, hi, b, act, pad_a, pad_out)
else:

    @numba.njit(**FAST_OPTIONS)
    def nt_product(x, w_t, out, lo, hi, b, act, pad_a, pad_out, impl):
        """out[:, lo:hi] = f(x @ w_t[lo:hi].T + b[lo:hi]) with :func:`nt_columns` (no BLAS)."""
        nt_columns(x, w_t, out, lo, hi, b, act, pad_a, pad_out)


@numba.njit(parallel=True, **OPTIONS)
def input_grad(d, w_t, a_prev, act_prev, d_prev, parts, impl=OWN):
    """d_prev = (d @ w_t) * f'(a_prev): the gradient one layer down, mask fused; rows split.
    ``impl``: the product's implementation, OWN (default) or BLAS (see :func:`tn_product`)."""
    n = d.shape[0]
    parts = effective_parts(parts, 2 * n * d.shape[1] * w_t.shape[1])
    if parts == 1:
        tn_product(d.T, w_t, d_prev, 0, n, impl)
        activation_mask(d_prev, a_prev, act_prev, 0, n)
        return
    for part in numba.prange(parts):
        lo, hi = split(n, parts, part)
        tn_product(d.T, w_t, d_prev, lo, hi, impl)
        activation_mask(d_prev, a_prev, act_prev, lo, hi)


@numba.njit(parallel=True, **OPTIONS)
def weight_grad_t(d, a, dw_t, parts, impl, partial):
    """dw_t = d.T @ a (a dense layer's transposed weight gradient, (out, in)), its rows split
    into ``parts`` as the whole-epoch kernel splits them; ``impl`` OWN or BLAS. BLAS_ROWS splits
    the summed dimension (the batch rows) instead: each thread sums its rows with one BLAS call,
    the first into ``dw_t``, thread p into ``partial[(p - 1) * size:][:size]`` (``partial``: a
    flat scratch of at least (parts - 1) * out * in elements, unused by OWN and BLAS), then the
    partial sums are added to ``dw_t`` in thread order (its rows split between the threads)."""
    n_out = d.shape[1]
    parts = effective_parts(parts, 2 * d.shape[0] * n_out * a.shape[1])
    if parts == 1:
        tn_product(d, a, dw_t, 0, n_out, impl)  # any BLAS code: one call
        return
    if impl == BLAS_ROWS:
        size = n_out * a.shape[1]
        if partial.shape[0] < (parts - 1) * size:
            raise ValueError("weight_grad_t: partial holds fewer than (parts - 1) * out * in")
        for part in numba.prange(parts):
            lo, hi = split(d.shape[0], parts, part)
            if part == 0:
                sum_rows(d, a, dw_t, lo, hi)
            else:
                start = (part - 1) * size
                sum_rows(d, a, partial[start : start + size].reshape(dw_t.shape), lo, hi)
        for part in numba.prange(parts):
            lo, hi = split(n_out, parts, part)
            for p in range(1, parts):
                start = (p - 1) * size
                add_rows(dw_t, partial[start : start + size].reshape(dw_t.shape), lo, hi)
        return
    if impl == BLAS and narrow(n_out):
        for part in numba.prange(parts):  # jit_epoch.weight_grad calls this for a narrow one
            lo, hi = split(a.shape[1], parts, part)
            tn_product_columns(d, a, dw_t, lo, hi)
        return
    for part in numba.prange(parts):
        lo, hi = split(n_out, parts, part)
        tn_product(d, a, dw_t, lo, hi, impl)


if BLAS_AVAILABLE:

    @numba.njit(**OPTIONS)
    def sum_rows(d, a, out, lo, hi):
        """out = d[lo:hi].T @ a[lo:hi] (one thread's share of the batch; zero for no rows)."""
        if hi <= lo:
            out[:, :] = 0
        else:
            blas_matmul(d[lo:hi].T, a[lo:hi], out)
else:  # no BLAS to call (BLAS_ROWS is then never chosen): plain loops, and no BLAS compiled in

    @numba.njit(**OPTIONS)
    def sum_rows(d, a, out, lo, hi):
        """out = d[lo:hi].T @ a[lo:hi] in plain loops (BLAS is not available)."""
        out[:, :] = 0
        for s in range(lo, hi):
            for r in range(out.shape[0]):
                for l in range(out.shape[1]):
                    out[r, l] += d[s, r] * a[s, l]


@numba.njit(**OPTIONS)
def add_rows(out, partial, lo, hi):
    """out[lo:hi] += partial[lo:hi], row by row (contiguous: vectorised)."""
    for r in range(lo, hi):
        row, more = out[r], partial[r]
        for k in range(row.shape[0]):
            row[k] += more[k]
