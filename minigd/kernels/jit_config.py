"""How minigd configures Numba, and why (each choice was measured on the 2-core target machine,
AMD Zen 5; the numbers come from benchmarks/kernels.py and the README's Performance section).

Compile options (``OPTIONS`` for every kernel, ``FAST_OPTIONS`` for the matrix products):

- ``cache=True``: compiled machine code is written to a per-user cache directory, so only the
  first process after an install pays the JIT compile time. Never inside the installed package:
  Numba's default (``__pycache__`` next to the module) breaks read-only installs, and a
  ``site-packages/minigd/kernels/__pycache__`` that pip leaves behind when an editable install
  replaces a regular one turns ``minigd`` into a namespace package that shadows the editable
  install. See :func:`cache_directory`; if that directory cannot be written, minigd warns once
  and compiles in every process (``cache=False``). Only minigd's own kernels are affected: Numba's
  global settings (``NUMBA_CACHE_DIR`` and the rest) stay as the user left them.
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
  and this locator cannot be installed, the kernels are not cached at all rather than cached
  inside the package.)

Threads:

- Threading layer: OpenMP first (``THREADING_LAYER_PRIORITY = omp, tbb, workqueue``) unless
  the user chose one (``NUMBA_THREADING_LAYER``). Measured here: launching one parallel region
  costs 0.9 us with ``omp`` versus 104 us with ``workqueue`` (which sleeps its workers between
  regions). At batch 16 an epoch has 3750 iterations with 3 parallel regions each: ~10 ms
  with omp, ~1.2 s with workqueue, several times the whole epoch (0.16 s). When only
  workqueue is available, :func:`parallel_parts` returns 1 and every kernel runs on one
  thread, which is faster than paying that latency.
- BLAS inside the kernels only where it was measured faster, and single-threaded. The backward
  products (weight and input gradients) run minigd's own loops or a BLAS called from the compiled
  code (NumPy's own, else SciPy's: :data:`BLAS_LIBRARY`), whichever :mod:`minigd.kernels.autotune`
  measured faster on this machine for the layer's shape (cached in ``autotune.json``). Each Numba
  thread calls BLAS on its own range of output rows with BLAS limited to one thread, so only Numba's
  thread pool runs: OpenBLAS's own workers keep spinning after each call and fought Numba's threads
  on 2 cores (28 to 142 GFLOP/s on the same product across runs). On an AMD Zen 5 the own loops
  (AVX-512) beat OpenBLAS's Haswell kernels (137 vs 88 GFLOP/s on one thread); on a Zen 3 (AVX2)
  OpenBLAS was 5x faster than them: hence measuring instead of assuming. Training's forward product
  is chosen the same way; evaluation and prediction run the own loops, which keep a row's result
  independent of its batch-mates.
- Which BLAS: the OpenBLAS that NumPy's wheels bundle, called through its ILP64 CBLAS entry
  point (:func:`find_numpy_blas`), is always there (NumPy is a dependency, SciPy is not), and on
  the Xeon of stop 19 it multiplied the weight gradient's shape (64 x 1024 by 1024 x 784, one
  thread) 1.6x faster than SciPy's (60 against 38 GFLOP/s, interleaved; forward products
  alike). SciPy's BLAS, through Numba's own binding, is the fallback, and ``MINIGD_BLAS``
  (numpy, scipy, none) chooses.
- Work is split only when a product is big enough (``MIN_PARALLEL_FLOPS``); small layers run
  on the calling thread. A split never changes results: every output element is computed by
  the same loop in the same order whatever the number of threads (see jit_gemm).
"""

import contextlib
import functools
import hashlib
import os
import pickle
import sys
import tempfile
import threading
import warnings
from typing import Any

import numba

MIN_PARALLEL_FLOPS = 400_000
# A batch's gather (jit_epoch.gather) is memory-bound, not FLOP-bound: it splits between the
# threads from this many elements. Gathering 60,000 random MNIST-sized rows per epoch on the
# Xeon of stop 18 took 30 ms on one thread at batch 64 and 256 and 16 ms on two; at batch 16
# (12,544 elements) two threads were slower (32 against 24 ms, prefetching both).
MIN_PARALLEL_GATHER = 32_768
FAST_LAYERS = ("omp", "tbb")
CACHE_ENV = "MINIGD_CACHE_DIR"
NUMBA_SUFFIXES = (".nbi", ".nbc")

_numba_config: Any = numba.config  # numba's stubs do not list the threading settings
if "NUMBA_THREADING_LAYER" not in os.environ and _numba_config.THREADING_LAYER == "default":
    _numba_config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]

_KERNEL_DIR = os.path.dirname(os.path.abspath(__file__))


def user_cache_root():
    """minigd's cache folder: ``$MINIGD_CACHE_DIR``, else the platform's user cache directory.

    ``$XDG_CACHE_HOME/minigd`` or ``~/.cache/minigd`` on Linux, ``~/Library/Caches/minigd`` on
    macOS, ``%LOCALAPPDATA%\\minigd\\Cache`` on Windows. Returns None when no home directory can
    be found. The compiled kernels live in its ``kernels`` subfolder (:func:`kernels_root`).
    """
    chosen = os.environ.get(CACHE_ENV)
    if chosen:
        return os.path.abspath(os.path.expanduser(chosen))
    home = os.path.expanduser("~")
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.join(home, "AppData", "Local")
        path = os.path.join(base, "minigd", "Cache")
    elif sys.platform == "darwin":
        path = os.path.join(home, "Library", "Caches", "minigd")
    else:
        base = os.environ.get("XDG_CACHE_HOME")
        if not base or not os.path.isabs(base):
            base = os.path.join(home, ".cache")
        path = os.path.join(base, "minigd")
    return path if os.path.isabs(path) else None


def kernels_root():
    """The folder holding the compiled kernels of every minigd install of this user (or None)."""
    root = user_cache_root()
    return None if root is None else os.path.join(root, "kernels")


def _scipy_installed():
    """True when SciPy is installed (without importing scipy.linalg: 0.5 s at startup)."""
    import importlib.util

    try:
        return importlib.util.find_spec("scipy") is not None
    except (ImportError, ValueError):
        return False


BLAS_ENV = "MINIGD_BLAS"
BLAS_LIBRARIES = ("numpy", "scipy")
# The symbols minigd gives NumPy's BLAS entry points in LLVM's process-wide symbol table
# (jit_gemm's compiled code calls them by these names, so cached code links in any process).
NUMPY_GEMM_SYMBOLS = {
    "float32": "minigd_numpy_cblas_sgemm64",
    "float64": "minigd_numpy_cblas_dgemm64",
}
# ILP64 CBLAS entry points of the OpenBLAS that NumPy's wheels bundle: scipy-openblas64 (NumPy
# >= 2.0) and openblas64_ (NumPy 1.22 to 1.26), both with 64-bit integer arguments.
_NUMPY_CBLAS_PREFIXES = ("scipy_cblas_", "cblas_")


def _numpy_blas_files():
    """The BLAS library files NumPy's wheels bundle beside the package (Linux: ``numpy.libs``,
    macOS: ``numpy/.dylibs``, Windows: ``numpy.libs``); [] for a NumPy built against a system
    BLAS (conda's MKL or OpenBLAS, Apple's Accelerate), whose symbols are not looked for."""
    import glob

    import numpy

    package = os.path.dirname(os.path.abspath(numpy.__file__))
    found = []
    for folder in (
        os.path.join(os.path.dirname(package), "numpy.libs"),
        os.path.join(package, ".dylibs"),
    ):
        found.extend(glob.glob(os.path.join(folder, "*openblas64*")))
    return sorted(set(found))


def find_numpy_blas():
    """(path, {dtype name: address}) of the single- and double-precision ILP64 CBLAS gemm of
    the BLAS NumPy itself calls, or None when it cannot be found. Loading it is cheap: NumPy
    has already loaded the library, so ``dlopen`` only returns its handle."""
    import ctypes

    for path in _numpy_blas_files():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in _NUMPY_CBLAS_PREFIXES:
            try:
                sgemm = getattr(lib, prefix + "sgemm64_")
                dgemm = getattr(lib, prefix + "dgemm64_")
            except AttributeError:
                continue
            address = ctypes.cast(sgemm, ctypes.c_void_p).value
            address64 = ctypes.cast(dgemm, ctypes.c_void_p).value
            if address and address64:
                return path, {"float32": address, "float64": address64}
    return None


def _blas_library():
    """Which BLAS the compiled kernels call, and where it lives: ("numpy", path) when NumPy's
    bundled OpenBLAS is found (the library ``np.dot`` itself uses, always installed with
    minigd), else ("scipy", None) when SciPy is installed (Numba's own binding to SciPy's
    BLAS), else (None, None). ``MINIGD_BLAS`` (numpy, scipy or none) chooses; a library it names
    that is not there gives (None, None), with a warning."""
    import llvmlite.binding as llvm

    wanted = os.environ.get(BLAS_ENV, "auto").strip().lower() or "auto"
    if wanted not in (*BLAS_LIBRARIES, "none", "auto"):
        raise ValueError(f"{BLAS_ENV}={wanted!r}: expected 'numpy', 'scipy', 'none' or 'auto'")
    if wanted in ("numpy", "auto"):
        numpy_blas = find_numpy_blas()
        if numpy_blas is not None:
            path, addresses = numpy_blas
            for dtype, address in addresses.items():
                llvm.add_symbol(NUMPY_GEMM_SYMBOLS[dtype], address)
            return "numpy", path
    if wanted in ("scipy", "auto") and _scipy_installed():
        return "scipy", None
    if wanted in BLAS_LIBRARIES:
        warnings.warn(
            f"{BLAS_ENV}={wanted}: that BLAS was not found; minigd's kernels run their own "
            "matrix products only",
            RuntimeWarning,
            stacklevel=2,
        )
    return None, None


# Which BLAS the compiled kernels can call as the "blas" product candidate: NumPy's own (found
# by its CBLAS symbols), else SciPy's, else none (jit_gemm then defines nt_product and
# tn_product without the BLAS branch). Part of the cache folder's name: a caller's cached code
# embeds the variant its callees had when it was compiled, and Numba keys that code by the
# source stamp only. A process without SciPy (minigd installed before SciPy) once cached
# dense_act_forward with the variant that ignores the product choice; processes with SciPy
# loaded it, and a forward product asked to run on BLAS ran minigd's loops without their row
# padding: garbage in the rows past the last multiple of 4 of a short batch.
BLAS_LIBRARY, BLAS_PATH = _blas_library()
BLAS_AVAILABLE = BLAS_LIBRARY is not None


def cache_directory():
    """Where this copy of minigd caches its compiled kernels (or None without a home directory).

    One subfolder of :func:`kernels_root` per Numba version and minigd source location, so two
    checkouts, or an editable and a regular install, never overwrite each other's code; ending
    in ``-blas-numpy``, ``-blas-scipy`` or ``-noblas``, the BLAS the kernels were compiled to
    call (see :data:`BLAS_LIBRARY`).
    """
    root = kernels_root()
    if root is None:
        return None
    where = hashlib.sha256(_KERNEL_DIR.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    suffix = f"-blas-{BLAS_LIBRARY}" if BLAS_AVAILABLE else "-noblas"
    return os.path.join(root, f"numba-{numba.__version__}-{where}{suffix}")


def _kernel_sources():
    return sorted(
        os.path.join(_KERNEL_DIR, name)
        for name in os.listdir(_KERNEL_DIR)
        if name.startswith("jit") and name.endswith(".py")
    )


@functools.lru_cache(maxsize=None)
def _hash_file(path, mtime, size):  # keyed by mtime and size: an edit is hashed again
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).digest()


def source_stamp():
    """The stamp of every cached kernel: the content hashes of all ``jit*.py`` kernel files."""
    stamps = []
    for path in _kernel_sources():
        st = os.stat(path)
        stamps.append(_hash_file(path, st.st_mtime, st.st_size))
    return tuple(stamps)


def _writable_directory(path):
    """Create ``path`` if needed; return None when a file can be written in it, else the reason."""
    if path is None:
        return "no home directory to put it in"
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as error:
        return f"{type(error).__name__}: {error.strerror or error}"
    return None


def _install_locator(directory):
    """Make Numba cache the functions of minigd's kernel files in ``directory``, and only those."""
    from numba.core import caching

    class MinigdCacheLocator(caching.UserProvidedCacheLocator):
        """Numba cache locator for minigd's kernels: one directory, one stamp for all sources."""

        def __init__(self, py_func, py_file):
            self._py_file = py_file
            self._lineno = py_func.__code__.co_firstlineno
            self._cache_path = directory

        @classmethod
        def from_function(cls, py_func, py_file):
            if os.path.dirname(os.path.abspath(py_file)) != _KERNEL_DIR:
                return None  # the user's own functions: Numba's usual locators
            # Never fall through to Numba's in-tree locator (site-packages/.../__pycache__).
            # The directory was found writable at import; Numba recreates it before each save.
            return cls(py_func, py_file)

        def get_source_stamp(self):
            return source_stamp()

    caching.CacheImpl._locator_classes.insert(0, MinigdCacheLocator)


def _configure_cache():
    """Return ``(directory, reason)``: the cache directory in use, or None and why not."""
    directory = cache_directory()
    problem = _writable_directory(directory)
    if problem is None:
        try:
            _install_locator(directory)
        except (ImportError, AttributeError) as error:  # Numba's cache internals changed
            problem = f"Numba {numba.__version__} has no cache locator API ({error})"
    if problem is None:
        return directory, None
    reason = f"cannot use {directory} ({problem})" if directory else problem
    warnings.warn(
        f"minigd: the Numba kernel cache is off: {reason}. The kernels are compiled "
        f"again in every process; set {CACHE_ENV} to a writable directory to keep "
        "them.",
        RuntimeWarning,
        stacklevel=2,
    )
    return None, reason


CACHE_DIR, CACHE_DISABLED_REASON = _configure_cache()
OPTIONS: dict[str, Any] = dict(cache=CACHE_DIR is not None, nogil=True, error_model="numpy")
FAST_OPTIONS: dict[str, Any] = dict(OPTIONS, fastmath={"contract", "reassoc", "nsz"})


def _cache_files(root):
    """Numba's files (index, data, half-written temporaries) under ``root``; symlinks skipped."""
    found = []
    if root is None or not os.path.isdir(root):
        return found
    for folder, _dirs, files in os.walk(root, followlinks=False):
        for name in files:
            path = os.path.join(folder, name)
            base = name.split(".tmp.", 1)[0]
            if base.endswith(NUMBA_SUFFIXES) and os.path.isfile(path) and not os.path.islink(path):
                found.append(path)
    return sorted(found)


def _size(path):
    try:
        return os.path.getsize(path)
    except OSError:  # removed meanwhile
        return 0


def _this_cpu():
    from numba.core.registry import cpu_target

    return cpu_target.target_context.codegen().magic_tuple()


def _fresh_kernels(directory):
    """Names of the kernels in ``directory`` whose cached code is current and built for this CPU."""
    stamp, cpu, names = source_stamp(), _this_cpu(), []
    for path in _cache_files(directory):
        if not path.endswith(".nbi") or os.path.dirname(path) != directory:
            continue
        try:
            with open(path, "rb") as f:
                if pickle.load(f) != numba.__version__:
                    continue
                saved_stamp, overloads = pickle.loads(f.read())
        except Exception:  # unreadable or foreign: not usable
            continue
        if saved_stamp == stamp and any(key[1] == cpu for key in overloads):
            names.append(os.path.basename(path).rsplit("-", 1)[0])
    return sorted(names)


def cache_info():
    """Describe the kernel cache as a dict (for ``minigd cache info``).

    Keys: ``directory`` (this install's cache, None when off), ``disabled_reason``, ``root``
    (every install's kernels), ``files``/``bytes`` (this install), ``all_files``/``all_bytes``
    and ``installs`` (every install), ``cpu`` (this CPU's name for LLVM), ``kernels`` (names
    of the kernels compiled for this CPU and current sources) and ``compiled`` (True when the
    whole-epoch training kernel is among them, i.e. the next run starts without compiling).
    """
    root = kernels_root()
    everything = _cache_files(root)
    mine = _cache_files(CACHE_DIR)
    kernels = _fresh_kernels(CACHE_DIR) if CACHE_DIR else []
    installs = {os.path.relpath(path, root).split(os.sep)[0] for path in everything}
    return dict(
        directory=CACHE_DIR,
        disabled_reason=CACHE_DISABLED_REASON,
        root=root,
        files=len(mine),
        bytes=sum(map(_size, mine)),
        all_files=len(everything),
        all_bytes=sum(map(_size, everything)),
        installs=len(installs),
        cpu=_this_cpu()[1],
        kernels=kernels,
        compiled="jit_epoch.train_epoch" in kernels,
    )


def clear_cache():
    """Delete the compiled kernels of every minigd install of this user.

    Only Numba's cache files (``*.nbi``, ``*.nbc`` and their temporaries) under
    :func:`kernels_root` are removed, then the folders left empty; nothing else is touched,
    whatever ``MINIGD_CACHE_DIR`` points at. Returns ``(files removed, bytes freed)``.
    """
    root = kernels_root()
    removed = freed = 0
    for path in _cache_files(root):
        size = _size(path)
        try:
            os.remove(path)
        except FileNotFoundError:  # another process replaced it meanwhile
            continue
        removed, freed = removed + 1, freed + size
    if root is not None and os.path.isdir(root):
        for folder, _, _ in sorted(os.walk(root, followlinks=False), reverse=True):
            if folder != root and not os.path.islink(folder):
                try:
                    os.rmdir(folder)  # only succeeds when empty
                except OSError:
                    pass
    return removed, freed


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


_serial = threading.local()


@contextlib.contextmanager
def serial_kernels():
    """Inside the block, :func:`parallel_parts` is 1 in the calling thread, so every kernel runs
    on that thread and no Numba parallel region starts (the whole-product epoch mode of
    :mod:`minigd.kernels.autotune`, where BLAS gets the cores inside each product)."""
    previous = getattr(_serial, "on", False)
    _serial.on = True
    try:
        yield
    finally:
        _serial.on = previous


def parallel_parts():
    """How many parts a big kernel is split into: Numba's thread count with a fast layer, else 1
    (also 1 inside :func:`serial_kernels`)."""
    if getattr(_serial, "on", False) or threading_layer() not in FAST_LAYERS:
        return 1
    return numba.get_num_threads()
