"""Which matrix product the Numba backend's training runs, chosen by measuring this machine.

Implementations compete for each product of a dense layer in training (the forward
``x @ W``, the weight gradient ``d.T @ a`` and the input gradient ``d @ W.T``), at the run's
shape, dtype and thread count:

- ``own``: minigd's register-blocked loops (:mod:`minigd.kernels.jit_gemm`), compiled by LLVM
  for the host CPU;
- ``blas``: a BLAS called from the compiled kernel (``jit_gemm.blas_matmul``): the OpenBLAS NumPy
  bundles, else SciPy's (``jit_config.BLAS_LIBRARY``), one single-threaded call per Numba thread on
  that thread's range of output rows (or columns);
- ``blas_rows`` (forward and weight gradient only): the same BLAS calls, each thread on its
  share of the batch rows. For the weight gradient each thread sums its rows into its own
  buffer and the buffers are added in thread order afterwards. On a 1024-row batch of the
  784 x 128 layer the forward product ran at 147 GFLOP/s this way against 116 split by
  output, the weight gradient at 142 against 118; at 64 rows both were slower (Intel Xeon,
  model 167, AVX-512, 2 threads, benchmarks/products.py). So each shape measures all three.

BLAS runs single-threaded while minigd's kernels run
  (:func:`blas_threads_limited`, through threadpoolctl), so one thread pool, Numba's, owns the
  cores: two pools spinning on 2 cores measured slower and less stable.

Evaluation and prediction always run minigd's own forward kernel: it computes every row with
the same code whatever the batch's row count (tests/test_row_independence.py), which BLAS does
not promise. Training's forward product is a candidate like the backward ones, unless
``MINIGD_FORWARD_BLAS=0`` (see :func:`forward_blas_enabled`).

For large batches a whole epoch can instead run in the "whole" mode (:func:`whole_epoch`):
every Numba kernel on one thread, and every product, the forward one included, one BLAS call
on BLAS's threads. Which mode an epoch runs (:func:`epoch_mode`) is measured per network
shape, batch size, dtype, thread count and optimizer, and cached like the products.

The first time a shape is needed, its candidates are timed (interleaved, best of a few rounds, a
few milliseconds) and the fastest is kept; ``own`` unless a BLAS one is at least 5% faster. Choices
are cached in ``autotune.json`` beside the compiled kernels (``$MINIGD_CACHE_DIR``, default
``~/.cache/minigd``), per machine (CPU model, LLVM CPU name, vector ISA, BLAS library) and per
product, shape, dtype and thread count; the file is written atomically, and an entry that
cannot be read back as a valid choice is measured again, never trusted. ``minigd cache info``
shows the choices.

Determinism: with a given choice, results are bit-identical run to run on one machine and
thread count (the choice is looked up, not re-measured, so it does not change between runs;
``minigd cache clear`` or a new machine measures again). Where BLAS runs, the thread count is
part of that: each thread's call multiplies its own columns, which BLAS may block differently.
The fused epoch and the per-iteration path use the same choice, so they stay bit-identical.
Different machines (or BLAS builds) may choose differently, and so may differ in the last bits.
``MINIGD_PRODUCTS=own`` (or ``blas``) overrides the choice.
"""

import contextlib
import functools
import json
import math
import os
import platform
import sys
import threading
import time

import numpy as np

from .. import _io
from . import codes, jit_config, jit_gemm

CANDIDATES = ("own", "blas", "blas_rows")  # index = jit_gemm.OWN / BLAS / BLAS_ROWS
PRODUCTS = ("weight_grad", "input_grad", "forward")
# the input gradient already splits the batch rows between the threads: no "blas_rows"
_PRODUCT_CANDIDATES = {"input_grad": CANDIDATES[:2]}
FILE_NAME = "autotune.json"
ENV = "MINIGD_PRODUCTS"
# 2: training's forward product is autotuned by default, so the epoch modes of a version-1 file
# were measured against another "split" mode; such a file is measured again, not trusted
# 3: narrow layers (jit_gemm.narrow) split between the threads, which changed the timings of
# their products and of the "split" mode
# 4: the "blas_rows" candidate of the forward product and the weight gradient; the "split"
# mode's timings of version 3 were measured without it
VERSION = 4
BLAS_MARGIN = 0.95  # BLAS must take <= 95% of own's time to be chosen
_ROUNDS = 5  # interleaved timing rounds per candidate
_MIN_SECONDS = 2e-4  # each timing covers at least this long

_lock = threading.RLock()  # epoch_mode measures through choice()
_memo: dict = {}  # (machine, entry key) -> choice index
measurements = 0  # how many shapes were measured in this process (tests)


# ---- the machine ---------------------------------------------------------------------------------
def cpu_model():
    """The CPU's marketing name (``/proc/cpuinfo``, ``sysctl`` on macOS), else platform's."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        import subprocess

        try:
            return subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


_AVX512_NAMES = (
    "avx512",
    "skylake-avx512",
    "cascadelake",
    "cooperlake",
    "icelake",
    "tigerlake",
    "sapphirerapids",
    "graniterapids",
    "emeraldrapids",
    "rocketlake",
    "znver4",
    "znver5",
    "knl",
    "knm",
    "cannonlake",
    "diamondrapids",
)
_AVX2_NAMES = (
    "haswell",
    "broadwell",
    "skylake",
    "alderlake",
    "raptorlake",
    "meteorlake",
    "arrowlake",
    "lunarlake",
    "gracemont",
    "znver1",
    "znver2",
    "znver3",
    "x86-64-v3",
    "core-avx2",
    "bdver4",
)


def llvm_cpu():
    """(CPU name, feature string) Numba compiles for: the host, or ``NUMBA_CPU_NAME``."""
    import llvmlite.binding as llvm
    from numba.core import config

    name = config.CPU_NAME or llvm.get_host_cpu_name()
    if config.CPU_NAME and config.CPU_NAME != "host":
        return name, config.CPU_FEATURES or ""
    try:
        return name, llvm.get_host_cpu_features().flatten()
    except Exception:  # features unknown on some platforms
        return name, ""


def vector_isa():
    """The widest vector ISA the compiled kernels use: "AVX-512", "AVX2", "NEON", or "SSE/other"
    (follows ``NUMBA_CPU_NAME``: ``haswell`` on an AVX-512 machine gives "AVX2")."""
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64") or machine.startswith("armv8"):
        return "NEON"
    name, features = llvm_cpu()
    flags = set(features.split(","))
    if "+avx512f" in flags or (not features and name.startswith(_AVX512_NAMES)):
        return "AVX-512"
    if "+avx2" in flags or (not features and name.startswith(_AVX2_NAMES)):
        return "AVX2"
    return "SSE/other"


def blas_library():
    """Which BLAS ``jit_gemm.blas_matmul`` calls: NumPy's own (by NumPy version and library
    file) or SciPy's (by SciPy version); None when there is none."""
    if not jit_gemm.BLAS_AVAILABLE:
        return None
    if jit_config.BLAS_LIBRARY == "numpy":
        return f"numpy {np.__version__} BLAS ({os.path.basename(jit_config.BLAS_PATH)})"
    import scipy

    return f"scipy {scipy.__version__} BLAS"


@functools.lru_cache(maxsize=None)
def machine_key():
    """The cache's key for this machine: CPU model, LLVM CPU name, vector ISA, BLAS library."""
    return " | ".join([cpu_model(), llvm_cpu()[0], vector_isa(), str(blas_library())])


def entry_key(product, rows, n_in, n_out, dtype, parts):
    """The cache's key for one product: ``weight_grad 64x784x128 float32 2t``."""
    return f"{product} {rows}x{n_in}x{n_out} {np.dtype(dtype).name} {parts}t"


# ---- thread pools --------------------------------------------------------------------------------
_pools = None


def _blas_pools():
    """threadpoolctl's controllers of the BLAS that Numba's compiled code calls
    (jit_config.BLAS_LIBRARY: NumPy's own, or SciPy's), [] without threadpoolctl; every BLAS of
    the process when that one cannot be told apart."""
    global _pools
    if _pools is None:
        library = jit_config.BLAS_LIBRARY
        try:
            if library == "scipy":
                import scipy.linalg.cython_blas  # noqa: F401  (load SciPy's BLAS so it is found)
            from threadpoolctl import ThreadpoolController

            libs = ThreadpoolController().select(user_api="blas").lib_controllers
        except Exception:  # threadpoolctl missing or failing: no BLAS candidate
            libs = []
        if library == "numpy":
            target = os.path.realpath(jit_config.BLAS_PATH)
            ours = [lib for lib in libs if os.path.realpath(lib.filepath) == target]
        else:
            ours = [
                lib
                for lib in libs
                if "scipy" in os.path.dirname(lib.filepath).lower()
                and "numpy" not in os.path.dirname(lib.filepath).lower()
            ]
        _pools = ours or libs
    return _pools


def blas_usable():
    """True when the BLAS candidate can run: a BLAS the compiled code can call is there
    (jit_config.BLAS_LIBRARY) and its threads can be set."""
    return jit_gemm.BLAS_AVAILABLE and bool(_blas_pools())


@contextlib.contextmanager
def blas_threads_limited(products):
    """Run BLAS single-threaded inside the block when ``products`` (codes) use it; else no-op.
    (Numba's threads each call BLAS on their own rows: BLAS threads would oversubscribe.)
    A no-op inside :func:`whole_epoch`, which gives BLAS the threads instead."""
    if whole_active() or not (np.asarray(products) != jit_gemm.OWN).any() or not _blas_pools():
        yield
        return
    libs = _blas_pools()
    previous = [lib.get_num_threads() for lib in libs]
    for lib in libs:
        lib.set_num_threads(1)
    try:
        yield
    finally:
        for lib, n in zip(libs, previous):
            lib.set_num_threads(n)


# ---- the cache file ------------------------------------------------------------------------------
def cache_path():
    """``autotune.json`` in minigd's cache folder, or None when there is none."""
    root = jit_config.user_cache_root()
    return None if root is None else os.path.join(root, FILE_NAME)


def _read():
    """The cache file's contents as {machine: {entry: record}}; {} when absent or unreadable."""
    path = cache_path()
    if path is None:
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    if (
        not isinstance(data, dict)
        or data.get("version") != VERSION
        or not isinstance(data.get("machines"), dict)
    ):
        return {}
    return {m: e for m, e in data["machines"].items() if isinstance(e, dict)}


def product_candidates(product):
    """The implementations (names, in code order) that compete for ``product``."""
    if product not in PRODUCTS:
        raise ValueError(f"product: expected one of {PRODUCTS}, got {product!r}")
    return _PRODUCT_CANDIDATES.get(product, CANDIDATES)


def _candidates(key):
    """The candidates an entry key chooses between: MODES for an epoch's mode, else the
    product's (its first word)."""
    if key.startswith(MODE_PREFIX):
        return MODES
    product = key.split(" ", 1)[0]
    return product_candidates(product) if product in PRODUCTS else CANDIDATES


def _valid(record, candidates=CANDIDATES):
    """The choice index of a cache record among ``candidates``, or None when the record is not
    a valid one."""
    if not isinstance(record, dict) or record.get("choice") not in candidates:
        return None
    seconds = record.get("seconds")
    if not isinstance(seconds, dict) or set(seconds) != set(candidates):
        return None
    if not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
        for v in seconds.values()
    ):
        return None
    if _decide(seconds, candidates) != record["choice"]:
        return None  # inconsistent with its own timings: not ours
    return candidates.index(record["choice"])


def _write(machine, key, record):
    """Merge one record into the cache file (read, update, atomic replace); quiet on failure."""
    path = cache_path()
    if path is None:
        return
    machines = _read()
    machines.setdefault(machine, {})[key] = record
    try:
        with _io.atomic_open(path, "w", encoding="utf-8") as f:
            json.dump({"version": VERSION, "machines": machines}, f, indent=1, sort_keys=True)
    except OSError:  # read-only cache folder: keep the choice in memory
        pass


def cached_choices():
    """{entry key: choice name} cached for this machine (for ``minigd cache info``)."""
    entries = _read().get(machine_key(), {})
    return {
        k: v["choice"] for k, v in sorted(entries.items()) if _valid(v, _candidates(k)) is not None
    }


def clear_choices():
    """Delete the cache file of measured choices (all machines) and forget this process's;
    returns how many valid choices the file held for this machine."""
    count = len(cached_choices())
    path = cache_path()
    with _lock:
        _memo.clear()
        if path is not None:
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
    return count


# ---- measuring -----------------------------------------------------------------------------------
def _decide(seconds, candidates=CANDIDATES):
    """The first candidate (the default), unless the fastest other one takes <= BLAS_MARGIN of
    its time (ties between the others go to the earlier one)."""
    first, others = candidates[0], candidates[1:]
    best = min(others, key=lambda name: (seconds[name], others.index(name)))
    return best if seconds[best] <= BLAS_MARGIN * seconds[first] else first


def _operands(product, rows, n_in, n_out, dtype, parts=1):
    rng = np.random.default_rng(0)
    d = jit_gemm.aligned_empty((rows, n_out), dtype)
    d[...] = rng.standard_normal(d.shape)
    if product == "weight_grad":
        a = jit_gemm.aligned_empty((rows, n_in), dtype)
        a[...] = rng.random(a.shape)
        out = jit_gemm.aligned_empty((n_out, n_in), dtype)
        partial = jit_gemm.aligned_empty((max(parts - 1, 0) * n_out * n_in,), dtype)
        return lambda impl, parts: jit_gemm.weight_grad_t(d, a, out, parts, impl, partial)
    w_t = jit_gemm.aligned_empty((n_out, n_in), dtype)
    w_t[...] = rng.standard_normal(w_t.shape)
    below = jit_gemm.aligned_empty((rows, n_in), dtype)
    if product == "forward":
        below[...] = rng.random(below.shape)
        bias = np.zeros(n_out, dtype)
        pad_a = jit_gemm.aligned_empty((4, n_in), dtype)
        pad_out = jit_gemm.aligned_empty((4, n_out), dtype)
        return lambda impl, parts: jit_gemm.dense_act_forward(
            below, w_t, bias, jit_gemm.RELU, d, parts, pad_a, pad_out, impl
        )
    return lambda impl, parts: jit_gemm.input_grad(d, w_t, below, jit_gemm.NONE, below, parts, impl)


def measure(product, rows, n_in, n_out, dtype, parts):
    """Best seconds per call of each of the product's candidates (:func:`product_candidates`):
    {"own": s, "blas": s, ...}."""
    global measurements
    _settle()
    names = product_candidates(product)
    run = _operands(product, rows, n_in, n_out, dtype, parts)
    with blas_threads_limited([jit_gemm.BLAS]):
        for impl in range(len(names)):
            run(impl, parts)  # compile / load, warm the caches
        started = time.perf_counter()
        run(jit_gemm.OWN, parts)
        once = max(time.perf_counter() - started, 1e-7)
        reps = max(1, min(1000, int(_MIN_SECONDS / once)))
        best = [math.inf] * len(names)
        for _ in range(_ROUNDS):
            for impl in range(len(names)):
                started = time.perf_counter()
                for _ in range(reps):
                    run(impl, parts)
                best[impl] = min(best[impl], (time.perf_counter() - started) / reps)
    measurements += 1
    return dict(zip(names, best))


def compile_candidates(dtype):
    """Compile (or load) the kernels :func:`measure` times, for ``dtype``, without measuring
    (the warm start's background process: its timings would suffer from its own compile)."""
    for product in PRODUCTS:
        run = _operands(product, 8, 8, 8, dtype)
        for impl in (jit_gemm.OWN, jit_gemm.BLAS) if blas_usable() else (jit_gemm.OWN,):
            with blas_threads_limited([impl]):
                run(impl, 1)


def _lookup(key, candidates, measure_now):
    """The choice index for an entry ``key``: this process's memo, else the cache file, else
    ``measure_now()`` ({candidate: seconds}), whose record is cached."""
    machine = machine_key()
    with _lock:
        if (machine, key) in _memo:
            return _memo[machine, key]
        found = _valid(_read().get(machine, {}).get(key), candidates)
        # blas_usable() loads threadpoolctl (and SciPy's BLAS, 0.5 s, when that is the one):
        # asked only when BLAS may run
        if found is not None and found > 0 and not blas_usable():
            found = 0
        elif found is None and not blas_usable():
            found = 0
        elif found is None:
            seconds = measure_now()
            record = {
                "choice": _decide(seconds, candidates),
                "seconds": seconds,
                "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            _write(machine, key, record)
            found = candidates.index(record["choice"])
        _memo[machine, key] = found
        return found


def _forced_products():
    """``MINIGD_PRODUCTS``: "own", "blas", "blas_rows" or "auto" (checked)."""
    forced = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if forced not in (*CANDIDATES, "auto"):
        raise ValueError(f"{ENV}={forced!r}: expected 'own', 'blas', 'blas_rows' or 'auto'")
    return forced


def choice(product, rows, n_in, n_out, dtype, parts):
    """The implementation code (jit_gemm.OWN, BLAS or BLAS_ROWS) of one product: BLAS inside
    :func:`whole_epoch`; else from ``MINIGD_PRODUCTS`` (``blas_rows`` gives BLAS to the input
    gradient, whose BLAS calls split the rows already; own without a BLAS to call), this
    process's memo, the cache file, or measured now."""
    if whole_active():
        return jit_gemm.BLAS
    if product == "forward" and not forward_blas_enabled():
        return jit_gemm.OWN
    forced = _forced_products()
    if forced in CANDIDATES:
        if forced == "own" or not blas_usable():
            return jit_gemm.OWN
        names = product_candidates(product)
        return names.index(forced) if forced in names else jit_gemm.BLAS
    return _lookup(
        entry_key(product, rows, n_in, n_out, dtype, parts),
        product_candidates(product),
        lambda: measure(product, rows, n_in, n_out, dtype, parts),
    )


FORWARD_ENV = "MINIGD_FORWARD_BLAS"


def forward_blas_enabled():
    """Whether training's forward product is autotuned like the backward ones (own loops or
    BLAS): yes unless ``MINIGD_FORWARD_BLAS=0``. It was opt-in while the fused epoch and the
    per-iteration path were seen to differ in the last bits with it, on a short last batch, with
    kernels from a cache a whole test-suite run had filled. The cause was kernels cached by a
    process without SciPy (see jit_config.BLAS_AVAILABLE), fixed. Measured again on the Xeon of
    stop 18 (benchmarks/epoch_modes.py, "split" mode, 784-128-10), the autotuned forward
    product took 0.92 to 0.99 of the own loops' epoch time at batches 64 to 1024, both
    optimizers, AVX-512 and AVX2. Off, the forward product of the "split" mode is always
    minigd's own loops (the "whole" mode runs every product on BLAS). Evaluation and prediction
    keep the own loops either way. Any other value than 0/1 (or false/true, no/yes, off/on)
    raises a ValueError naming the variable."""
    value = os.environ.get(FORWARD_ENV, "1").strip().lower()
    if value in ("1", "true", "yes", "on", ""):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(
        f"{FORWARD_ENV}={os.environ[FORWARD_ENV]!r}: expected 1 (autotune training's forward "
        "product, the default) or 0 (always minigd's own loops)"
    )


def epoch_products(dims, batch_size, sizes, dtype, parts):
    """The (2, L, 3) int64 ``products`` array of jit_epoch.train_epoch for an epoch of batches
    of ``sizes`` rows: per layer, the weight-gradient, input-gradient and forward
    implementations for batches of ``batch_size`` rows ([0]) and for a shorter last batch
    ([1])."""
    dims = np.asarray(dims)
    products = np.zeros((2, len(dims), 3), dtype=np.int64)
    short = {int(n) for n in sizes if int(n) != batch_size}
    for which, rows in ((0, batch_size), (1, max(short, default=0))):
        if rows == 0 or (which == 0 and batch_size not in set(map(int, sizes))):
            continue
        for l, (n_in, n_out) in enumerate(dims):
            products[which, l, 0] = choice("weight_grad", rows, int(n_in), int(n_out), dtype, parts)
            products[which, l, 2] = choice("forward", rows, int(n_in), int(n_out), dtype, parts)
            if l > 0:
                products[which, l, 1] = choice(
                    "input_grad", rows, int(n_in), int(n_out), dtype, parts
                )
    return products


def describe(products):
    """A readable name for a products array: "own", "blas", or "mixed (own, blas)"."""
    used = sorted({CANDIDATES[int(c)] for c in np.asarray(products).ravel()})
    return used[0] if len(used) == 1 else f"mixed ({', '.join(used)})"


# ---- the epoch's mode: products split between Numba's threads, or whole on BLAS's ------------
MODES = ("split", "whole")  # index 0 is the default
MODE_PREFIX = "epoch "
MODE_ENV = "MINIGD_EPOCH_MODE"
_MODE_MIN_SECONDS = 5e-3  # each timing of a mode covers at least this long
_MODE_ROUNDS = 7  # timings per mode (best kept); a 784-512-512-10 iteration at batch 1024 is ~20 ms
_MODE_CONFIRMATIONS = 3  # measurements at most while "whole" leads (_confirmed)
_scope = threading.local()


def whole_active():
    """True inside :func:`whole_epoch` (in the calling thread)."""
    return getattr(_scope, "threads", 0) > 0


@contextlib.contextmanager
def whole_epoch(threads):
    """The "whole" mode for the block: every Numba kernel runs on the calling thread
    (:func:`jit_config.serial_kernels`), and every product of training (forward, weight and
    input gradient) is one BLAS call on ``threads`` BLAS threads (:func:`choice` returns BLAS).

    Why a mode and not a per-product choice: OpenMP's threads keep spinning for a while after a
    Numba parallel region, and take the core that BLAS's second thread needs. A whole
    1024x784x512 product measured 340 GFLOP/s on BLAS's 2 threads, but 112 with a Numba
    parallel region just before it (and two single-threaded calls on half the columns each,
    what the split mode does, 134-166). So BLAS gets the cores only where nothing else runs
    in parallel: the whole epoch, both paths of fit alike (same calls, same thread count,
    same bits)."""
    libs = _blas_pools()
    previous = [lib.get_num_threads() for lib in libs]
    outer = getattr(_scope, "threads", 0)
    for lib in libs:
        lib.set_num_threads(threads)
    _scope.threads = max(1, int(threads))
    try:
        with jit_config.serial_kernels():
            yield
    finally:
        _scope.threads = outer
        for lib, n in zip(libs, previous):
            lib.set_num_threads(n)
        global _whole_ended
        _whole_ended = time.perf_counter()


_whole_ended = -math.inf
SETTLE_SECONDS = 0.2


def _settle():
    """Wait until SETTLE_SECONDS after the last :func:`whole_epoch` ended: OpenBLAS's workers
    keep spinning for a while after their last call (about 2**28 cycles by default), and a
    measurement in that time sees one core fewer (a 64x784x128 weight gradient measured 2.0
    ms instead of ~0.1)."""
    wait = _whole_ended + SETTLE_SECONDS - time.perf_counter()
    if wait > 0:
        time.sleep(wait)


ACT_NAMES = {
    codes.ACT_NONE: "none",
    codes.ACT_RELU: "relu",
    codes.ACT_TANH: "tanh",
    codes.ACT_SIGMOID: "sigmoid",
}


def _activations(dims, acts):
    """The activation code after each dense layer: ``acts``, or ReLU after every hidden layer
    and none after the last."""
    if acts is None:
        return [codes.ACT_RELU] * (len(dims) - 1) + [codes.ACT_NONE]
    acts = [int(a) for a in acts]
    if len(acts) != len(dims) or any(a not in ACT_NAMES for a in acts):
        raise ValueError(f"acts: expected one activation code per layer, got {acts}")
    return acts


def mode_key(dims, batch_size, dtype, parts, update_name=None, acts=None):
    """The cache's key for an epoch's mode:
    ``epoch 784-128-10 relu,none b1024 float32 2t adam``."""
    sizes = [int(dims[0][0])] + [int(n_out) for _, n_out in dims]
    names = ",".join(ACT_NAMES[a] for a in _activations(dims, acts))
    return (
        f"{MODE_PREFIX}{'-'.join(map(str, sizes))} {names} b{int(batch_size)} "
        f"{np.dtype(dtype).name} {int(parts)}t {update_name or 'no-update'}"
    )


def _network_operands(dims, rows, dtype, update=None, acts=None):
    """A function step() giving (run, implementation codes): run() runs one training
    iteration's products of a dense network with ``dims`` and activations ``acts`` at
    ``rows`` rows (forward with bias and activation, weight gradients, input gradients with
    the activation's mask) through the kernels training runs, with the implementations
    :func:`choice` gives, then ``update(parts)`` when given (the optimizer's update, whose
    speed also depends on the mode: it runs on one thread in "whole", as do the activations)."""
    rng = np.random.default_rng(0)
    act_codes = _activations(dims, acts)
    dims = [(int(n_in), int(n_out)) for n_in, n_out in dims]
    acts = [jit_gemm.aligned_empty((rows, dims[0][0]), dtype)]
    acts[0][...] = rng.random(acts[0].shape)
    layers = []
    for n_in, n_out in dims:
        w_t = jit_gemm.aligned_empty((n_out, n_in), dtype)
        w_t[...] = rng.standard_normal(w_t.shape) / math.sqrt(n_in)
        out = jit_gemm.aligned_empty((rows, n_out), dtype)
        d = jit_gemm.aligned_empty((rows, n_out), dtype)
        d[...] = rng.standard_normal(d.shape)
        dw_t = jit_gemm.aligned_empty((n_out, n_in), dtype)
        pads = (jit_gemm.aligned_empty((4, n_in), dtype), jit_gemm.aligned_empty((4, n_out), dtype))
        layers.append((w_t, np.zeros(n_out, dtype), out, d, dw_t, pads))
        acts.append(out)

    def step():
        parts = jit_config.parallel_parts()
        partials = [
            jit_gemm.aligned_empty((max(parts - 1, 0) * n_in * n_out,), dtype)
            for n_in, n_out in dims
        ]
        impls = [
            (
                choice("forward", rows, n_in, n_out, dtype, parts),
                choice("weight_grad", rows, n_in, n_out, dtype, parts),
                choice("input_grad", rows, n_in, n_out, dtype, parts) if l else jit_gemm.OWN,
            )
            for l, (n_in, n_out) in enumerate(dims)
        ]

        def run():
            for l, (w_t, b, out, _, _, (pad_a, pad_out)) in enumerate(layers):
                jit_gemm.dense_act_forward(
                    acts[l], w_t, b, act_codes[l], out, parts, pad_a, pad_out, impls[l][0]
                )
            for l in range(len(layers) - 1, -1, -1):
                w_t, _, _, d, dw_t, _ = layers[l]
                jit_gemm.weight_grad_t(d, acts[l], dw_t, parts, impls[l][1], partials[l])
                if l:
                    below = layers[l - 1][3]
                    jit_gemm.input_grad(
                        d, w_t, acts[l], act_codes[l - 1], below, parts, impls[l][2]
                    )
            if update is not None:
                update(parts)

        return run, [c for layer in impls for c in layer]

    return step


def measure_mode(dims, batch_size, dtype, parts, update=None, acts=None):
    """Best seconds per training iteration's products (and ``update(parts)``, when given) in
    each mode: {"split": s, "whole": s}. The split mode runs the products :func:`choice`
    measured for ``parts`` Numba threads."""
    global measurements
    step = _network_operands(dims, batch_size, dtype, update, acts)
    # one mode at a time, split first: whole's BLAS workers spin on after its calls (_settle)
    _settle()
    best = dict.fromkeys(MODES, math.inf)
    for mode in MODES:
        with whole_epoch(parts) if mode == "whole" else contextlib.nullcontext():
            run, impls = step()  # the implementations as this mode chooses them
            with blas_threads_limited(impls):  # a no-op in whole
                run()  # compile / load, warm the caches, size the repeats
                started = time.perf_counter()
                run()
                once = max(time.perf_counter() - started, 1e-7)
                reps = max(1, min(200, int(_MODE_MIN_SECONDS / once)))
                for _ in range(_MODE_ROUNDS):
                    started = time.perf_counter()
                    for _ in range(reps):
                        run()
                    best[mode] = min(best[mode], (time.perf_counter() - started) / reps)
    measurements += 1
    return best


def epoch_mode(dims, batch_size, dtype, parts, update=None, acts=None):
    """How fit runs an epoch of a dense network with ``dims`` ((in, out) per layer) at
    ``batch_size`` on ``parts`` Numba threads: "split" (each product's work split between
    Numba's threads, BLAS single-threaded where it was chosen) or "whole" (:func:`whole_epoch`).
    ``update``: None, or (name, function(parts)) running the optimizer's update once over the
    model's flat parameters (in "whole" it runs on one thread, so its cost differs between the
    modes); ``name`` is part of the key.
    ``acts``: the activation code after each layer (minigd.kernels.codes; default ReLU after
    the hidden layers), also measured (in "whole" they run on one thread, and tanh costs more
    than the ReLU that stood in for every activation before) and part of the key.

    ``MINIGD_EPOCH_MODE`` (split, whole, auto: the default) overrides it; with one thread,
    without BLAS, or with ``MINIGD_PRODUCTS=own``, it is "split". Otherwise both are measured
    on this machine the first time (one training iteration's products, activations and
    update, each mode timed in a few rounds, the best kept) and cached in ``autotune.json``
    like the products (``epoch ...`` entries); "whole" must take <= 95% of "split"'s time."""
    forced = os.environ.get(MODE_ENV, "auto").strip().lower() or "auto"
    if forced not in (*MODES, "auto"):
        raise ValueError(f"{MODE_ENV}={forced!r}: expected 'split', 'whole' or 'auto'")
    if forced == "split" or parts < 2 or _forced_products() == "own":
        return "split"
    if forced == "whole":
        return "whole" if blas_usable() else "split"
    name, run = (None, None) if update is None else update
    key = mode_key(dims, batch_size, dtype, parts, name, acts)
    return MODES[_lookup(key, MODES, lambda: _confirmed(dims, batch_size, dtype, parts, run, acts))]


def _confirmed(dims, batch_size, dtype, parts, update, acts, most=_MODE_CONFIRMATIONS):
    """:func:`measure_mode`, repeated while "whole" leads, up to ``most`` times; each mode's
    seconds are its best over the measurements, and that is what is decided and recorded. A
    busy machine only ever makes a timing longer, and a delay can outlast one mode's rounds (a
    few tens of milliseconds): one disturbed measurement chose "whole" for 784-128-10 Adam at
    batch 64 (AVX2 code, stop 18), and two in a row for batch 1024 (stop 22: "split" 6.9 ms
    per iteration, 4.7-5.0 ms in each of three later measurements, "whole" 5.1-5.6), which ran
    the benchmark's epoch in 0.48 s where "split" takes about 0.28. Taking each mode's best
    over up to three measurements keeps "split", the default, unless "whole" is faster in the
    best timings of both."""
    seconds = measure_mode(dims, batch_size, dtype, parts, update, acts)
    for _ in range(most - 1):
        if _decide(seconds, MODES) != "whole":
            break
        again = measure_mode(dims, batch_size, dtype, parts, update, acts)
        seconds = {mode: min(seconds[mode], again[mode]) for mode in MODES}
    return seconds
