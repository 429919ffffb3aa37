"""How minigd configures Numba, and why (each choice was measured on the 2-core target machine,
AMD Zen 5; the numbers come from benchmarks/kernels.py and docs/readme_performance.md).

Compile options (``OPTIONS`` for every kernel, ``FAST_OPTIONS`` for the matrix products):

- ``cache=True``: compiled machine code is written next to the module (or to
  ``NUMBA_CACHE_DIR``), so only the first process after an install pays the JIT compile time.
- ``error_model="numpy"``: Numba's default ("python") error model checks every division for a
  zero divisor to raise ZeroDivisionError, and that branch stops LLVM from vectorising the
  loop (an Adam update of 101,770 float32: 279 us with it, 31 us without). Our divisions
  (softmax normalisation, Adam's ``m / denom``) never divide by an exact zero in valid use,
  and with NumPy semantics a zero gives inf/nan, which the divergence check then reports,
  exactly as the NumPy backend does.
- ``fastmath={"contract", "reassoc", "nsz"}``, for the matrix products and the overflow
  check's sum of squares only: allows fused multiply-add and reordering of sums, which is
  what lets LLVM turn the product loops into AVX-512 FMA reductions. Deliberately *not*
  ``nnan``/``ninf``: with those LLVM may assume values are finite and fold
  away the ``isfinite`` tests the divergence detection relies on. Elementwise kernels
  (activations, masks, loss, optimizer updates) get no fastmath: they evaluate the reference's
  expressions in the reference's order, rounding as NumPy does. (With contraction, ``1 - y*y``
  of a saturated tanh came out ~1e-8 relative apart from NumPy, and Adam, which normalises
  gradient magnitudes, carried that into the weights.)

- One cache stamp for all kernel modules (:func:`_stamp_all_kernel_sources`). Numba marks a
  cached function stale when *its own* file changes, not when a function it calls from another
  module does: after editing jit.py, the cached whole-epoch kernel of jit_epoch.py would keep
  the old code. minigd's cache locator stamps every ``jit*.py`` kernel file with the hash of
  all of them, so any kernel edit recompiles everything. (If Numba's cache internals change
  and this cannot be installed, the default per-file stamps apply.)

Threads:

- Threading layer: OpenMP first (``THREADING_LAYER_PRIORITY = omp, tbb, workqueue``) unless
  the user chose one (``NUMBA_THREADING_LAYER``). Measured here: launching one parallel region
  costs 0.9 us with ``omp`` versus 104 us with ``workqueue`` (which sleeps its workers between
  regions). At batch 16 an epoch has 3750 iterations with 3 parallel regions each: ~10 ms
  with omp, ~1.2 s with workqueue, several times the whole epoch (0.16 s). When only
  workqueue is available, :func:`parallel_parts` returns 1 and every kernel runs on one
  thread, which is faster than paying that latency.
- No BLAS inside the kernels. ``np.dot`` inside ``@njit`` calls SciPy's bundled OpenBLAS: a
  second thread pool next to Numba's (oversubscription on 2 cores: OpenBLAS's workers keep
  spinning after each call), a SciPy dependency, and on this CPU OpenBLAS picks its Haswell
  (AVX2) kernels. Two-thread OpenBLAS was also the least stable number measured (28 to 142
  GFLOP/s on the same product across runs, by where its spinning worker landed). minigd's own
  register-blocked loops (:mod:`minigd.kernels.jit_gemm`) compile to AVX-512 for the host
  CPU: on the 784x128 layer at batch 16, 137 GFLOP/s on one thread and 238 on two, against
  88 / 142 for NumPy's OpenBLAS and 54 / 94 for ``np.dot`` inside ``@njit``. They split work
  by output rows so each core keeps the same half of the weights in its own L2 cache.
- Work is split only when a product is big enough (``MIN_PARALLEL_FLOPS``); small layers run
  on the calling thread. A split never changes results: every output element is computed by
  the same loop in the same order whatever the number of threads (see jit_gemm).
"""
import os

import numba

OPTIONS = dict(cache=True, nogil=True, error_model="numpy")
FAST_OPTIONS = dict(OPTIONS, fastmath={"contract", "reassoc", "nsz"})
MIN_PARALLEL_FLOPS = 400_000
FAST_LAYERS = ("omp", "tbb")

if "NUMBA_THREADING_LAYER" not in os.environ and numba.config.THREADING_LAYER == "default":
    numba.config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]

_KERNEL_DIR = os.path.dirname(os.path.abspath(__file__))


def _kernel_sources():
    return sorted(os.path.join(_KERNEL_DIR, name) for name in os.listdir(_KERNEL_DIR)
                  if name.startswith("jit") and name.endswith(".py"))


def _stamp_all_kernel_sources():
    """Make a change to any kernel module invalidate the cached code of all of them."""
    from numba.core import caching

    class AllKernelSources:
        @classmethod
        def from_function(cls, py_func, py_file):
            if os.path.dirname(os.path.abspath(py_file)) != _KERNEL_DIR:
                return None
            return super().from_function(py_func, py_file)

        def get_source_stamp(self):
            stamps = []
            for path in _kernel_sources():
                st = os.stat(path)
                stamps.append(caching._hash_source_file(path, st.st_mtime, st.st_size))
            return tuple(stamps)

    bases = (caching.UserProvidedCacheLocator, caching.InTreeCacheLocator,
             caching.UserWideCacheLocator)
    locators = [type("Minigd" + base.__name__, (AllKernelSources, base), {}) for base in bases]
    caching.CacheImpl._locator_classes[:0] = locators


try:
    _stamp_all_kernel_sources()
except (ImportError, AttributeError):
    pass

_layer = None


def threading_layer():
    """Name of the threading layer Numba uses (starts its thread pool on first call)."""
    global _layer
    if _layer is None:
        try:
            from numba.np.ufunc.parallel import _launch_threads
            _launch_threads()
            _layer = numba.threading_layer()
        except Exception:  # no usable layer: run single-threaded
            _layer = "none"
    return _layer


def parallel_parts():
    """How many parts a big kernel is split into: Numba's thread count with a fast layer, else 1."""
    if threading_layer() not in FAST_LAYERS:
        return 1
    return numba.get_num_threads()
