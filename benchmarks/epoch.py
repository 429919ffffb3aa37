"""One training epoch, minigd against PyTorch (the yardstick), JAX and scikit-learn, here.

Workload: 784-128-10 ReLU + softmax cross-entropy (and, without --quick, 784-512-512-10 ReLU
and 784-256-10 Tanh), N x 784 float32 synthetic data (the speed does not depend on the
pixels), shuffled every epoch, last partial batch included, SGD (lr 0.01) and Adam (lr 1e-3),
at batch sizes 16, 64, 256, 1024. Every framework runs the same model and the same loop
(permute, gather a batch, forward, loss, backward, update, record the loss) on the same
number of threads:

- minigd, Numba backend (the fused one-call-per-epoch path ``fit`` takes by default),
  minigd's Numba per-iteration path (what a per-iteration callback costs), and the NumPy
  backend, all in this process, timed by ``history.epochs["seconds"]``;
- PyTorch (CPU, ``torch.set_num_threads``), JAX (``jax.jit`` over the whole epoch, the
  batches in one ``lax.scan`` plus one step for the last partial batch; XLA's own CPU thread
  pool) and scikit-learn ``MLPClassifier`` (``max_iter=1``, one epoch per ``fit``), each in
  its own subprocess so that thread pools do not meet; a peer that is not installed is
  skipped with a note.

The JSON records the CPU model, its vector ISA (AVX2, AVX-512, NEON) and, per row, the
matrix-product implementation minigd chose (minigd.kernels.autotune). ``--compare-products``
also times minigd with each implementation forced (``MINIGD_PRODUCTS=own`` / ``blas`` /
``blas_rows``).
Run once more with ``NUMBA_CPU_NAME=haswell OPENBLAS_CORETYPE=Haswell`` on an AVX-512
machine to measure the AVX2 code paths; the peers then run capped at AVX2 as well
(``ATEN_CPU_CAPABILITY``, ``MKL_ENABLE_INSTRUCTIONS``, ``ONEDNN_MAX_CPU_ISA``, XLA's
``--xla_cpu_max_isa``), so that both sides of a ratio use the same ISA.

Each number is the median of ``--repeats`` epochs after one warm-up epoch. With
``--rounds N`` the whole table is measured N times in turn and each cell is the median over
the rounds, each ratio the median of the rounds' own ratios: on a shared host a slow spell of
a few minutes then falls on minigd and on its peers alike, where one pass (minigd's columns
first, the peers minutes later) lets it fall on one side of a ratio only. Also reported:
the JIT compile time (first process with an empty Numba cache) and the cold start of a second
process (import to the first epoch done, from the on-disk cache), the sgemm peak measured
here (NumPy's BLAS on a 2048^3 product and minigd's own kernel, the best of 3, measured right
after each minigd epoch measurement, since a shared host's peak changes from minute to
minute) and each epoch's share of the FLOP floor (the epoch's FLOPs at that peak; the JSON also
has ``fraction_of_best_peak``, at the best peak of the whole run), and its share of the BLAS
products floor: the
time NumPy's BLAS, called from compiled code, takes for the epoch's matrix products alone,
on their own shapes, measured in the same run. Small products run below the 2048^3 peak, so
this floor is the higher one, and what minigd spends above it is its own code. Results go to
``benchmarks/results/epoch.json`` and ``epoch.png``.

    python benchmarks/epoch.py              # the full table (a few minutes)
    python benchmarks/epoch.py --quick      # a smoke run on tiny sizes (seconds)
"""

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
from _results import save_figure, save_results

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TARGETS = {
    "sgd": {16: 0.25, 64: 0.40, 256: 0.60, 1024: 0.75},  # minigd / PyTorch
    "adam": {16: 0.25, 64: 0.40, 256: 0.60, 1024: 0.75},
}
JAX_TARGET = 0.8  # minigd / JAX
FLOOR_TARGETS = {16: 0.35, 64: 0.55, 256: 0.70, 1024: 0.70}  # share of the FLOP floor
# the other shapes: at batch >= 64, at most this far below the main shape's share (same run)
SHAPE_FLOOR_POINTS = 0.10
OPTIMIZERS = ("sgd", "adam")
LR = {"sgd": 0.01, "adam": 1e-3}
N_IN, N_HIDDEN, N_OUT = 784, 128, 10
MAIN_SHAPE = "784-128-10:relu"
SHAPES = (MAIN_SHAPE, "784-512-512-10:relu", "784-256-10:tanh")


def parse_shape(shape):
    """ "784-128-10:relu" -> ([784, 128, 10], "relu")."""
    sizes, activation = shape.split(":")
    return [int(n) for n in sizes.split("-")], activation


def synthetic(rows, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((rows, N_IN), dtype=np.float32), rng.integers(0, N_OUT, rows)


def flops_per_epoch(rows, shape=MAIN_SHAPE):
    """Multiply-adds x 2 of forward, weight gradients and the hidden layers' input gradients."""
    sizes, _ = parse_shape(shape)
    pairs = list(zip(sizes[:-1], sizes[1:]))
    per_sample = 2 * sum(i * o for i, o in pairs)  # forward
    per_sample += 2 * sum(i * o for i, o in pairs)  # weight gradients
    per_sample += 2 * sum(i * o for i, o in pairs[1:])  # gradients into hidden layers
    return per_sample * rows


# ---- peers, each run as `python epoch.py --peer NAME ...` in its own process ----------------
def torch_epochs(rows, batch, optimizer, threads, repeats, shape=MAIN_SHAPE):
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    X, y = synthetic(rows)
    X, y = torch.from_numpy(X), torch.from_numpy(y)
    sizes, activation = parse_shape(shape)
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [
            torch.nn.Linear(n_in, n_out),
            torch.nn.ReLU() if activation == "relu" else torch.nn.Tanh(),
        ]
    model = torch.nn.Sequential(*layers[:-1])
    loss_fn = torch.nn.CrossEntropyLoss()
    opt = (
        torch.optim.SGD(model.parameters(), lr=LR["sgd"])
        if optimizer == "sgd"
        else torch.optim.Adam(model.parameters(), lr=LR["adam"])
    )
    generator = torch.Generator().manual_seed(0)
    seconds = []
    for _ in range(repeats + 1):
        losses = []
        started = time.perf_counter()
        order = torch.randperm(rows, generator=generator)
        for start in range(0, rows, batch):
            index = order[start : start + batch]
            opt.zero_grad()
            loss = loss_fn(model(X[index]), y[index])
            loss.backward()
            opt.step()
            losses.append(loss.item())
        seconds.append(time.perf_counter() - started)
    return seconds[1:]


def jax_epochs(rows, batch, optimizer, threads, repeats, shape=MAIN_SHAPE):
    """jax.jit over the whole epoch: lax.scan over the full batches, then the last one."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    X, y = synthetic(rows)
    X, y = jnp.asarray(X), jnp.asarray(y, dtype=jnp.int32)
    sizes, activation = parse_shape(shape)
    act = jax.nn.relu if activation == "relu" else jnp.tanh
    keys = jax.random.split(jax.random.PRNGKey(0), len(sizes))
    params = [
        (jax.random.normal(k, (i, o), jnp.float32) * (2 / i) ** 0.5, jnp.zeros(o, jnp.float32))
        for k, i, o in zip(keys, sizes[:-1], sizes[1:])
    ]
    lr = LR[optimizer]

    def loss_fn(params, xb, yb):
        h = xb
        for l, (w, b) in enumerate(params):
            h = h @ w + b
            if l < len(params) - 1:
                h = act(h)
        logp = jax.nn.log_softmax(h)
        return -jnp.mean(jnp.take_along_axis(logp, yb[:, None], axis=1))

    def step(carry, batch_xy):
        params, m, v, t = carry
        loss, g = jax.value_and_grad(loss_fn)(params, *batch_xy)
        if optimizer == "sgd":
            params = jax.tree_util.tree_map(lambda p, d: p - lr * d, params, g)
        else:
            t = t + 1
            m = jax.tree_util.tree_map(lambda a, d: 0.9 * a + 0.1 * d, m, g)
            v = jax.tree_util.tree_map(lambda a, d: 0.999 * a + 0.001 * d * d, v, g)
            c1, c2 = 1 - 0.9**t, 1 - 0.999**t
            params = jax.tree_util.tree_map(
                lambda p, a, s: p - lr * (a / c1) / (jnp.sqrt(s / c2) + 1e-8), params, m, v
            )
        return (params, m, v, t), loss

    full, last = rows // batch, rows % batch

    @jax.jit
    def epoch(carry, key):
        order = jax.random.permutation(key, rows)
        xs = X[order[: full * batch]].reshape(full, batch, -1)
        ys = y[order[: full * batch]].reshape(full, batch)
        carry, losses = lax.scan(step, carry, (xs, ys))
        if last:
            carry, tail = step(carry, (X[order[full * batch :]], y[order[full * batch :]]))
            losses = jnp.concatenate([losses, tail[None]])
        return carry, losses

    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    carry = (params, zeros, zeros, jnp.float32(0))
    seconds, key = [], jax.random.PRNGKey(1)
    for _ in range(repeats + 1):
        key, sub = jax.random.split(key)
        started = time.perf_counter()
        carry, losses = epoch(carry, sub)
        losses.block_until_ready()
        seconds.append(time.perf_counter() - started)
    return seconds[1:]


def sklearn_epochs(rows, batch, optimizer, threads, repeats, shape=MAIN_SHAPE):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    X, y = synthetic(rows)
    sizes, activation = parse_shape(shape)
    seconds = []
    for _ in range(repeats):
        clf = MLPClassifier(
            hidden_layer_sizes=tuple(sizes[1:-1]),
            activation=activation,
            solver=optimizer,
            alpha=0.0,
            batch_size=batch,
            learning_rate_init=LR[optimizer],
            max_iter=1,
            shuffle=True,
            momentum=0.0,
            nesterovs_momentum=False,
            random_state=0,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            started = time.perf_counter()
            clf.fit(X, y)
            seconds.append(time.perf_counter() - started)
    return seconds


PEERS = {
    "torch": ("torch", torch_epochs),
    "jax": ("jax", jax_epochs),
    "sklearn": ("sklearn", sklearn_epochs),
}


def peer_isa_env():
    """Environment that holds the peers to the vector ISA minigd's kernels are compiled for.
    Under ``NUMBA_CPU_NAME=haswell OPENBLAS_CORETYPE=Haswell`` on an AVX-512 machine, minigd
    and NumPy's OpenBLAS run AVX2 code, but PyTorch (MKL, oneDNN, ATen) and JAX (XLA) would
    still pick AVX-512: the AVX2 table would compare two ISAs. These variables cap them at AVX2
    too; on a machine whose best ISA is AVX2 they change nothing. Empty otherwise."""
    from minigd.kernels import autotune

    if autotune.vector_isa() != "AVX2":
        return {}
    return {
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_max_isa=AVX2").strip(),
    }


def start_peer(name, args, configs):
    """Start peer ``name`` on all ``configs`` in a subprocess; (process, None) or (None, reason)."""
    module = PEERS[name][0]
    if importlib.util.find_spec(module) is None:
        return None, f"{module} is not installed"
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(args.threads),
        OPENBLAS_NUM_THREADS=str(args.threads),
        MKL_NUM_THREADS=str(args.threads),
        JAX_PLATFORMS="cpu",
        **peer_isa_env(),
    )
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--peer",
        name,
        "--rows",
        str(args.rows),
        "--configs",
        json.dumps(configs),
        "--threads",
        str(args.threads),
        "--repeats",
        str(args.repeats),
    ]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ), None


def finish_peer(name, process):
    """{(shape, optimizer, batch): median seconds per epoch} from a started peer, or
    ({}, reason)."""
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        return {}, f"{name} failed: {stderr.strip().splitlines()[-1:]}"
    seconds = json.loads(stdout.strip().splitlines()[-1])
    return {tuple(config): statistics.median(s) for config, s in seconds}, None


def run_peers(args, configs):
    """Every peer's results; one after the other, or all at once with --quick (no timing)."""
    results, notes, started = {}, [], {}
    for name in PEERS:
        if name not in args.peers.split(","):
            results[name] = {}
            notes.append(f"{name} not requested (--peers)")
            continue
        process, why = start_peer(name, args, configs)
        if process is None:
            results[name] = {}
            notes.append(why)
        elif args.quick:
            started[name] = process
        else:
            results[name], why = finish_peer(name, process)
            notes += [why] if why else []
    for name, process in started.items():
        results[name], why = finish_peer(name, process)
        notes += [why] if why else []
    return results, notes


# ---- minigd, in this process ------------------------------------------------------------------
def minigd_model(shape):
    import minigd as mg

    sizes, activation = parse_shape(shape)
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [mg.Dense(n_in, n_out), mg.ReLU() if activation == "relu" else mg.Tanh()]
    return mg.Sequential(*layers[:-1], seed=0)


def make_optimizer(model, optimizer):
    import minigd as mg

    if optimizer == "sgd":
        return mg.SGD(model.parameters(), lr=LR["sgd"])
    return mg.Adam(model.parameters(), lr=LR["adam"])


def chosen_products(shape, rows, batch, optimizer):
    """How minigd runs the products for this shape, batch and optimizer: the epoch's mode
    ("split" between Numba's threads, or "whole" products on BLAS's threads) and the
    implementations, e.g. "whole: blas" or "split: mixed (blas, own)"."""
    from minigd import fused
    from minigd.kernels import autotune, jit_config

    model = minigd_model(shape)
    mode = fused.epoch_mode(model, batch, make_optimizer(model, optimizer))
    sizes, _ = parse_shape(shape)
    dims = list(zip(sizes[:-1], sizes[1:]))
    n_full, last = divmod(rows, batch)
    batch_sizes = [batch] * n_full + ([last] if last else [])
    if mode == "whole":
        return "whole: blas"  # every product one BLAS call (autotune.whole_epoch)
    products = autotune.epoch_products(
        dims, batch, batch_sizes, np.float32, jit_config.parallel_parts()
    )
    return f"{mode}: {autotune.describe(products)}"


def minigd_epochs(
    X, y, batch, optimizer, backend, repeats, fused_path=True, shape=MAIN_SHAPE, products=None
):
    import minigd as mg
    from minigd import fused
    from minigd.kernels import autotune

    model = minigd_model(shape)
    opt = make_optimizer(model, optimizer)
    previous, forced = fused.ENABLED, os.environ.get(autotune.ENV)
    fused.ENABLED = fused_path
    if products:
        os.environ[autotune.ENV] = products
    try:
        with mg.use_backend(backend):
            history = mg.fit(
                model, X, y, optimizer=opt, epochs=repeats + 1, batch_size=batch, seed=0, verbose=0
            )
    finally:
        fused.ENABLED = previous
        if forced is None:
            os.environ.pop(autotune.ENV, None)
        else:
            os.environ[autotune.ENV] = forced
    return history.epochs["seconds"][1:]


COLD_START = """
import time; t0 = time.perf_counter()
import numpy as np, minigd as mg
t1 = time.perf_counter()
X = np.random.default_rng(0).random((1024, 784), dtype=np.float32)
y = np.random.default_rng(1).integers(0, 10, 1024)
for opt in ("sgd", "adam"):
    model = mg.Sequential(mg.Dense(784, 128), mg.ReLU(), mg.Dense(128, 10), seed=0)
    optimizer = mg.SGD(model.parameters(), lr=0.01) if opt == "sgd" else mg.Adam(model.parameters())
    mg.fit(model, X, y, optimizer=optimizer, epochs=1, batch_size=64, verbose=0)
    if opt == "sgd":
        t2 = time.perf_counter()
print(t1 - t0, t2 - t1, time.perf_counter() - t0)
"""


def cold_start(threads):
    """Seconds of (import, import -> first epoch done, whole script) with an empty Numba cache
    and again from the cache it wrote, each in a fresh process."""
    results = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(
            os.environ,
            MINIGD_CACHE_DIR=cache,
            NUMBA_NUM_THREADS=str(threads),
            PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        )
        for label in ("empty cache (compiles)", "cached"):
            out = subprocess.run(
                [sys.executable, "-c", COLD_START],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()
            results[label] = dict(
                zip(("import_s", "import_to_first_epoch_s", "total_s"), map(float, out))
            )
    return results


def sgemm_peak(threads, size=2048, repeats=5):
    """GFLOP/s of the fastest float32 product measured here, the best of ``repeats``: NumPy's
    BLAS on size^3 and minigd's own kernel on the epoch's biggest product (1024 x 784 x 128)."""
    from minigd.kernels import jit_gemm
    from minigd.kernels.jit_gemm import aligned_empty

    sys.path.insert(0, HERE)
    from kernels import blas_threads

    def best(f, flops):
        f()
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            f()
            times.append(time.perf_counter() - started)
        return flops / min(times) / 1e9

    rng = np.random.default_rng(0)
    a, b = rng.random((size, size), dtype=np.float32), rng.random((size, size), dtype=np.float32)
    out = np.empty_like(a)
    x = rng.random((1024, N_IN), dtype=np.float32)
    w_t = rng.random((N_HIDDEN, N_IN), dtype=np.float32)
    z = aligned_empty((1024, N_HIDDEN), np.float32)
    own = best(lambda: jit_gemm.matmul_nt(x, w_t, z, threads), 2 * 1024 * N_IN * N_HIDDEN)
    with blas_threads(threads):
        blas = best(lambda: np.matmul(a, b, out=out), 2 * size**3)
    return {"numpy_blas_gflops": blas, "minigd_kernel_gflops": own, "peak_gflops": max(blas, own)}


def products_floor(shape, batch, rows, threads, repeats=7):
    """Seconds per epoch of the epoch's matrix products alone, on NumPy's BLAS called from
    compiled code (no Python between calls): for every iteration, each layer's forward product
    and weight gradient, and the input gradient of every layer after the first, into
    preallocated outputs. This is the floor BLAS itself sets on these shapes (small products
    run below the big-square sgemm peak); what minigd spends above it is its own code
    (activations, loss, optimizer, gathers, threads) or its own product kernels doing better
    or worse than BLAS. None when the compiled code cannot call BLAS."""
    import numba

    from minigd.kernels import jit_gemm

    if not jit_gemm.BLAS_AVAILABLE:
        return None
    sys.path.insert(0, HERE)
    from kernels import blas_threads

    rng = np.random.default_rng(0)
    sizes, _ = parse_shape(shape)
    arrays = {name: numba.typed.List() for name in ("x", "w", "dz", "z", "gw", "dx")}
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        arrays["x"].append(rng.random((batch, n_in), dtype=np.float32))
        arrays["w"].append(rng.random((n_out, n_in), dtype=np.float32))
        arrays["dz"].append(rng.random((batch, n_out), dtype=np.float32))
        arrays["z"].append(np.empty((batch, n_out), np.float32))
        arrays["gw"].append(np.empty((n_out, n_in), np.float32))
        arrays["dx"].append(np.empty((batch, n_in), np.float32))
    per_round = max(1, int(0.05 * rows / batch))  # about 5% of an epoch's iterations
    times = []
    with blas_threads(threads):
        _blas_products(*arrays.values(), 1)  # compiles
        for _ in range(repeats):
            started = time.perf_counter()
            _blas_products(*arrays.values(), per_round)
            times.append((time.perf_counter() - started) / per_round)
    return statistics.median(times) * rows / batch


def _blas_products(x, w, dz, z, gw, dx, iterations):
    from minigd.kernels import jit_gemm

    global _blas_products_jit
    if _blas_products_jit is None:
        import numba

        blas_matmul = jit_gemm.blas_matmul

        @numba.njit(cache=False)
        def run(x, w, dz, z, gw, dx, iterations):
            for _ in range(iterations):
                for k in range(len(x)):
                    blas_matmul(x[k], w[k].T, z[k])  # forward
                    blas_matmul(dz[k].T, x[k], gw[k])  # weight gradient
                    if k:
                        blas_matmul(dz[k], w[k], dx[k])  # gradient into the layer below

        _blas_products_jit = run
    _blas_products_jit(x, w, dz, z, gw, dx, iterations)


_blas_products_jit = None


def machine():
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),  # a load above 0 means other work shared the cores
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        info["lscpu"] = "\n".join(lscpu.splitlines()[:10])
        for line in lscpu.splitlines():
            if line.startswith("Model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
    except OSError:
        pass
    import numba

    from minigd.kernels import autotune

    info["numpy"], info["numba"] = np.__version__, numba.__version__
    info["cpu_model"], info["vector_isa"] = autotune.cpu_model(), autotune.vector_isa()
    info["llvm_cpu"], info["blas"] = autotune.llvm_cpu()[0], autotune.blas_library()
    info["numba_cpu_name"] = os.environ.get("NUMBA_CPU_NAME")
    info["openblas_coretype"] = os.environ.get("OPENBLAS_CORETYPE")
    info["peer_isa_env"] = peer_isa_env()
    for module in ("torch", "sklearn", "jax"):
        try:
            from importlib.metadata import version

            info[module] = version("scikit-learn" if module == "sklearn" else module)
        except Exception:
            info[module] = None
    return info


# ---- report -------------------------------------------------------------------------------------
def fmt(value, digits=3):
    return "-" if value is None else f"{value:.{digits}f}"


def share(fraction):
    return "-" if fraction is None else f"{100 * fraction:.0f}%"


def table(results):
    lines = []
    quick = results["config"]["quick"]
    main_rows = {
        (r["optimizer"], r["batch"]): r for r in results["rows"] if r["shape"] == MAIN_SHAPE
    }
    for shape in results["config"]["shapes"]:
        for opt in OPTIMIZERS:
            lines.append(f"\n{shape} {opt.upper()}: seconds per epoch (median) and ratios")
            lines.append(
                "| batch | minigd | PyTorch | JAX | minigd / PyTorch | minigd / JAX | "
                "share of FLOP floor | share of BLAS products floor | "
                "BLAS products: share of FLOP floor | sklearn | "
                "minigd per-iteration | NumPy backend | products |"
            )
            lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
            for row in results["rows"]:
                if row["optimizer"] != opt or row["shape"] != shape:
                    continue
                ratio, jratio = row["ratio_to_torch"], row["ratio_to_jax"]
                target = TARGETS[opt].get(row["batch"])
                floor = FLOOR_TARGETS.get(row["batch"])
                met = (
                    ""
                    if quick or ratio is None or target is None
                    else " ok"
                    if ratio <= target
                    else " MISSED"
                )
                jmet = (
                    "" if quick or jratio is None else " ok" if jratio <= JAX_TARGET else " MISSED"
                )
                if shape != MAIN_SHAPE:  # within 10 points of the main shape's share
                    main = main_rows.get((opt, row["batch"]))
                    floor = (
                        None
                        if main is None or row["batch"] < 64
                        else main["fraction_of_peak"] - SHAPE_FLOOR_POINTS
                    )
                fmet = (
                    ""
                    if quick or floor is None
                    else " ok"
                    if row["fraction_of_peak"] >= floor
                    else " MISSED"
                )
                lines.append(
                    f"| {row['batch']} | {fmt(row['minigd'])} | {fmt(row['torch'])} | "
                    f"{fmt(row['jax'])} | {fmt(ratio, 2)}{met} | {fmt(jratio, 2)}{jmet} | "
                    f"{fmt(100 * row['fraction_of_peak'], 0)}%{fmet} | "
                    f"{share(row['share_of_blas_products'])} "
                    f"({fmt(row['blas_products_s'])} s) | "
                    f"{share(row.get('blas_fraction_of_peak'))} | {fmt(row['sklearn'])} | "
                    f"{fmt(row['minigd_per_iteration'])} | {fmt(row['numpy_backend'])} | "
                    f"{row['products']} |"
                )
    compared = [r for r in results["rows"] if r.get("minigd_own") is not None]
    if compared:
        lines.append("\nA/B, products forced (MINIGD_PRODUCTS), seconds per epoch (median)")
        lines.append("| shape | optimizer | batch | own | blas | blas_rows | auto (chosen) |")
        lines.append("|---|---|---|---|---|---|---|")
        for r in compared:
            lines.append(
                f"| {r['shape']} | {r['optimizer']} | {r['batch']} | "
                f"{fmt(r['minigd_own'])} | {fmt(r['minigd_blas'])} | "
                f"{fmt(r.get('minigd_blas_rows'))} | {fmt(r['minigd'])} ({r['products']}) |"
            )
    return "\n".join(lines)


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [
        ("minigd", "minigd (Numba)"),
        ("minigd_per_iteration", "minigd per-iteration"),
        ("numpy_backend", "minigd NumPy backend"),
        ("torch", "PyTorch"),
        ("jax", "JAX"),
        ("sklearn", "scikit-learn"),
    ]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, opt in zip(axes, OPTIMIZERS):
        rows = [r for r in results["rows"] if r["optimizer"] == opt and r["shape"] == MAIN_SHAPE]
        width = 0.8 / len(series)
        for k, (key, label) in enumerate(series):
            xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(rows))]
            ax.bar(xs, [r[key] or 0 for r in rows], width, label=label)
        ax.set_xticks(range(len(rows)), [str(r["batch"]) for r in rows])
        ax.set_xlabel("batch size")
        ax.set_title(
            f"{opt.upper()} {MAIN_SHAPE}: {results['config']['rows']:,} rows, "
            f"{results['config']['threads']} threads"
        )
        ax.set_yscale("log")
    axes[0].set_ylabel("seconds per epoch (log scale)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


# ---- one round of the table, and the rounds combined ----------------------------------------
ROUND_KEYS = (
    "minigd",
    "minigd_per_iteration",
    "minigd_own",
    "minigd_blas",
    "minigd_blas_rows",
    "numpy_backend",
    "blas_products_s",
    "peak_gflops",
) + tuple(PEERS)


def measure_round(args, X, y, configs, products):
    """Every cell of the table once: ({config: {column: seconds or None}}, sgemm peak, notes).

    Order: minigd's Numba runs first, each fused epoch measurement followed by an sgemm peak
    and a pause; then the round's sgemm peak, the NumPy backend and the BLAS products floor
    (NumPy's BLAS in this process last: OpenBLAS's worker threads keep spinning for a while
    after each call and would slow the Numba threads that run next; two thread pools, two
    cores), then the peers in their subprocesses, so a next round's Numba runs start after
    them, not after BLAS."""
    cells = {}
    size = 512 if args.quick else 2048
    for shape, opt, batch in configs:
        cell = dict.fromkeys(ROUND_KEYS)
        cell["minigd"] = statistics.median(
            minigd_epochs(X, y, batch, opt, "numba", args.repeats, shape=shape)
        )
        # the machine's peak right after this epoch, for its share of the FLOP floor: on a
        # shared host the peak of another minute can be 2x higher or lower. Then a pause, so
        # that OpenBLAS's spinning threads are idle before the next Numba epoch
        cell["peak_gflops"] = sgemm_peak(args.threads, size, repeats=3)["peak_gflops"]
        time.sleep(0.5)
        if not args.no_per_iteration:
            cell["minigd_per_iteration"] = statistics.median(
                minigd_epochs(
                    X, y, batch, opt, "numba", args.repeats, fused_path=False, shape=shape
                )
            )
        if args.compare_products:
            for impl in ("own", "blas", "blas_rows"):
                cell[f"minigd_{impl}"] = statistics.median(
                    minigd_epochs(
                        X, y, batch, opt, "numba", args.repeats, shape=shape, products=impl
                    )
                )
        cells[shape, opt, batch] = cell
        print(
            f"  minigd {shape} {opt} batch {batch}: {cell['minigd']:.3f} s (per-iteration "
            f"path {fmt(cell['minigd_per_iteration'])} s; products {products[shape, opt, batch]})",
            flush=True,
        )
    peak = sgemm_peak(args.threads, size)
    if not args.no_numpy_backend:
        for (shape, opt, batch), cell in cells.items():
            cell["numpy_backend"] = statistics.median(
                minigd_epochs(X, y, batch, opt, "numpy", args.repeats, shape=shape)
            )
    floors = {}  # (shape, batch) -> seconds of the epoch's products on NumPy's BLAS
    for (shape, _opt, batch), cell in cells.items():
        if (shape, batch) not in floors:
            floors[shape, batch] = products_floor(shape, batch, args.rows, args.threads)
        cell["blas_products_s"] = floors[shape, batch]
    peers, notes = run_peers(args, configs)
    for key, cell in cells.items():
        for name in PEERS:
            cell[name] = peers[name].get(key)
    return cells, peak, notes


def _median_of(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def combine_rounds(args, config, products, rounds, peak):
    """The table's row for ``config``: each column the median over the rounds; each ratio the
    median of the rounds' own ratios (both sides measured in the same round); the share of
    the FLOP floor the median of the rounds' shares, each at the sgemm peak measured right
    after that round's epoch, and (``fraction_of_best_peak``) at the best peak of the run."""
    shape, opt, batch = config
    cells = [cells[config] for cells, _ in rounds]
    row = {"shape": shape, "optimizer": opt, "batch": batch, "products": products}
    for key in ROUND_KEYS:
        row[key] = _median_of(c[key] for c in cells)

    def ratio(top, bottom):
        return _median_of(
            c[top] / c[bottom] if c[top] is not None and c[bottom] is not None else None
            for c in cells
        )

    row["ratio_to_torch"] = ratio("minigd", "torch")
    row["ratio_to_jax"] = ratio("minigd", "jax")
    row["numpy_over_numba"] = ratio("numpy_backend", "minigd")
    row["flops"] = flops_per_epoch(args.rows, shape)
    row["fraction_of_peak"] = _median_of(
        row["flops"] / (c["peak_gflops"] * 1e9) / c["minigd"] if c["peak_gflops"] else None
        for c in cells
    )
    row["fraction_of_best_peak"] = row["flops"] / (peak["best_gflops"] * 1e9) / row["minigd"]
    row["share_of_blas_products"] = ratio("blas_products_s", "minigd")
    # the share of the floor NumPy's BLAS reaches on the epoch's products alone (each product
    # one call on BLAS's own threads, nothing else), at the peak measured in the same round just
    # before them: where BLAS itself stands on these shapes. Not a bound on minigd: at small
    # batches its products split between its threads run faster than these whole calls
    row["blas_fraction_of_peak"] = _median_of(
        row["flops"] / (p["peak_gflops"] * 1e9) / c["blas_products_s"]
        if c["blas_products_s"]
        else None
        for c, (_, p) in zip(cells, rounds)
    )
    if len(rounds) > 1:
        row["rounds"] = {key: [c[key] for c in cells] for key in ROUND_KEYS}
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes, one repeat, the 784-128-10 shape only (smoke test)",
    )
    p.add_argument("--rows", type=int, default=60000)
    p.add_argument("--batches", default="16,64,256,1024")
    p.add_argument(
        "--shapes",
        default=",".join(SHAPES),
        help="comma-separated layer sizes:activation (relu or tanh)",
    )
    p.add_argument("--repeats", type=int, default=3, help="timed epochs per measurement")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure the whole table this many times in turn and report each cell's median "
        "over the rounds (a shared host's slow spells then fall on every column alike)",
    )
    p.add_argument("--threads", type=int, default=None, help="default: Numba's thread count")
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    p.add_argument("--no-numpy-backend", action="store_true")
    p.add_argument(
        "--no-per-iteration",
        action="store_true",
        help="skip minigd's per-iteration path (the slowest column on the big shapes)",
    )
    p.add_argument("--no-cold-start", action="store_true", help="skip the compile-time runs")
    p.add_argument(
        "--compare-products",
        action="store_true",
        help="also time minigd with each product implementation forced",
    )
    p.add_argument("--peers", default=",".join(PEERS), help="peers to run (default: all)")
    p.add_argument("--peer", choices=sorted(PEERS), help=argparse.SUPPRESS)
    p.add_argument("--configs", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rounds < 1 or args.repeats < 1:
        p.error("--rounds and --repeats take a whole number of at least 1")
    if args.threads is None:
        import numba

        args.threads = numba.get_num_threads()
    if args.peer:
        run = PEERS[args.peer][1]
        print(
            json.dumps(
                [
                    (
                        (shape, opt, batch),
                        run(args.rows, batch, opt, args.threads, args.repeats, shape),
                    )
                    for shape, opt, batch in json.loads(args.configs)
                ]
            )
        )
        return 0
    if args.quick:
        args.rows, args.batches, args.repeats, args.shapes = 2000, "16,256", 1, MAIN_SHAPE

    sys.path.insert(0, ROOT)
    import numba

    numba.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    shapes = args.shapes.split(",")
    X, y = synthetic(args.rows)
    notes = []
    started = time.perf_counter()
    print(
        f"minigd epoch benchmark: {args.rows:,} x {N_IN} float32, {', '.join(shapes)}, "
        f"{args.threads} threads, median of {args.repeats} epochs after a warm-up"
    )
    compile_info = None if args.quick or args.no_cold_start else cold_start(args.threads)
    minigd_epochs(X[:2048], y[:2048], 64, "sgd", "numba", 1)  # load the kernels before timing
    minigd_epochs(X[:2048], y[:2048], 64, "adam", "numba", 1)
    configs = [(shape, opt, batch) for shape in shapes for opt in OPTIMIZERS for batch in batches]
    products = {c: chosen_products(c[0], args.rows, c[2], c[1]) for c in configs}
    rounds = []
    for number in range(args.rounds):
        if args.rounds > 1:
            print(f"round {number + 1} of {args.rounds}", flush=True)
        cells, peak, round_notes = measure_round(args, X, y, configs, products)
        rounds.append((cells, peak))
        notes += [n for n in round_notes if n not in notes]
    peak = max((p for _, p in rounds), key=lambda p: p["peak_gflops"])
    beside = [c["peak_gflops"] for cells, _ in rounds for c in cells.values()]
    peak = dict(
        peak,
        rounds=[p["peak_gflops"] for _, p in rounds],
        beside_epochs=[min(beside), max(beside)],  # the peaks measured next to each epoch
        best_gflops=max([peak["peak_gflops"], *beside]),
    )
    rows = [combine_rounds(args, c, products[c], rounds, peak) for c in configs]
    results = {
        "config": {
            "rows": args.rows,
            "batches": batches,
            "shapes": shapes,
            "repeats": args.repeats,
            "rounds": args.rounds,
            "threads": args.threads,
            "quick": args.quick,
            "threading_layer": numba.threading_layer(),
        },
        "machine": machine(),
        "sgemm": peak,
        "flops_per_epoch": flops_per_epoch(args.rows),
        "cold_start": compile_info,
        "notes": notes,
        "rows": rows,
        "benchmark_seconds": time.perf_counter() - started,
    }
    print(table(results))
    print(
        f"\nmachine: {results['machine'].get('cpu_model')}, {results['machine']['vector_isa']}"
        f" (LLVM CPU {results['machine']['llvm_cpu']})"
    )
    if results["machine"]["peer_isa_env"]:
        capped = " ".join(f"{k}={v}" for k, v in results["machine"]["peer_isa_env"].items())
        print(f"peers capped at the same ISA: {capped}")
    print(
        f"sgemm peak measured here: NumPy BLAS {peak['numpy_blas_gflops']:.0f} GFLOP/s, "
        f"minigd kernel {peak['minigd_kernel_gflops']:.0f} GFLOP/s; one {MAIN_SHAPE} epoch is "
        f"{flops_per_epoch(args.rows) / 1e9:.1f} GFLOP, so the FLOP floor is "
        f"{flops_per_epoch(args.rows) / (peak['peak_gflops'] * 1e9):.3f} s; next to each "
        f"epoch {peak['beside_epochs'][0]:.0f} to {peak['beside_epochs'][1]:.0f} GFLOP/s (each "
        "epoch's share of the FLOP floor is at the peak measured next to it)"
    )
    if compile_info:
        first, cached = compile_info["empty cache (compiles)"], compile_info["cached"]
        print(
            f"JIT compile (first process, empty cache): {first['import_to_first_epoch_s']:.1f} s "
            f"from import to the first epoch done; second process (cached): import "
            f"{cached['import_s']:.2f} s, then {cached['import_to_first_epoch_s']:.2f} s to the "
            f"first epoch done"
        )
    for note in notes:
        print(f"note: skipped a peer: {note}")
    save_results(results, args.out, "epoch", plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
