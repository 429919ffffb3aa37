"""One training epoch, minigd against PyTorch (the yardstick) and scikit-learn, on this machine.

Workload: 784-128-10 ReLU + softmax cross-entropy, N x 784 float32 synthetic data (the speed
does not depend on the pixels), shuffled every epoch, last partial batch included, SGD (lr
0.01) and Adam (lr 1e-3), at batch sizes 16, 64, 256, 1024. Every framework runs the same
model and the same loop (permute, gather a batch, forward, loss, backward, update, record
the loss) on the same number of threads:

- minigd, Numba backend (the fused one-call-per-epoch path ``fit`` takes by default),
  minigd's Numba per-iteration path (what a per-iteration callback costs), and the NumPy
  backend, all in this process, timed by ``history.epochs["seconds"]``;
- PyTorch (CPU, ``torch.set_num_threads``) and scikit-learn ``MLPClassifier``
  (``max_iter=1``, one epoch per ``fit``), each in its own subprocess so that thread pools do
  not meet; a peer that is not installed is skipped with a note.

Each number is the median of ``--repeats`` epochs after one warm-up epoch. Also reported:
the JIT compile time (first process with an empty Numba cache) and the cold start of a second
process (import to the first epoch done, from the on-disk cache), the sgemm peak measured
here and the fraction of it each minigd epoch reaches. Results go to
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
TARGETS = {"sgd": {16: 0.25, 64: 0.50, 256: 0.75, 1024: 0.90},
           "adam": {16: 0.30, 64: 0.50, 256: 0.80, 1024: 0.90}}
OPTIMIZERS = ("sgd", "adam")
LR = {"sgd": 0.01, "adam": 1e-3}
N_IN, N_HIDDEN, N_OUT = 784, 128, 10


def synthetic(rows, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((rows, N_IN), dtype=np.float32), rng.integers(0, N_OUT, rows)


def flops_per_epoch(rows):
    """Multiply-adds x 2 of forward, weight gradients and the hidden-layer input gradient."""
    per_sample = 2 * (N_IN * N_HIDDEN + N_HIDDEN * N_OUT)          # forward
    per_sample += 2 * (N_IN * N_HIDDEN + N_HIDDEN * N_OUT)         # weight gradients
    per_sample += 2 * N_HIDDEN * N_OUT                             # gradient into the hidden layer
    return per_sample * rows


# ---- peers, each run as `python epoch.py --peer NAME ...` in its own process -----------------------
def torch_epochs(rows, batch, optimizer, threads, repeats):
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    X, y = synthetic(rows)
    X, y = torch.from_numpy(X), torch.from_numpy(y)
    model = torch.nn.Sequential(torch.nn.Linear(N_IN, N_HIDDEN), torch.nn.ReLU(),
                                torch.nn.Linear(N_HIDDEN, N_OUT))
    loss_fn = torch.nn.CrossEntropyLoss()
    opt = (torch.optim.SGD(model.parameters(), lr=LR["sgd"]) if optimizer == "sgd"
           else torch.optim.Adam(model.parameters(), lr=LR["adam"]))
    generator = torch.Generator().manual_seed(0)
    seconds = []
    for _ in range(repeats + 1):
        losses = []
        started = time.perf_counter()
        order = torch.randperm(rows, generator=generator)
        for start in range(0, rows, batch):
            index = order[start:start + batch]
            opt.zero_grad()
            loss = loss_fn(model(X[index]), y[index])
            loss.backward()
            opt.step()
            losses.append(loss.item())
        seconds.append(time.perf_counter() - started)
    return seconds[1:]


def sklearn_epochs(rows, batch, optimizer, threads, repeats):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    X, y = synthetic(rows)
    seconds = []
    for _ in range(repeats):
        clf = MLPClassifier(hidden_layer_sizes=(N_HIDDEN,), activation="relu", solver=optimizer,
                            alpha=0.0, batch_size=batch, learning_rate_init=LR[optimizer],
                            max_iter=1, shuffle=True, momentum=0.0, nesterovs_momentum=False,
                            random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            started = time.perf_counter()
            clf.fit(X, y)
            seconds.append(time.perf_counter() - started)
    return seconds


PEERS = {"torch": ("torch", torch_epochs), "sklearn": ("sklearn", sklearn_epochs)}


def start_peer(name, args, configs):
    """Start peer ``name`` on all ``configs`` in a subprocess; (process, None) or (None, reason)."""
    module = PEERS[name][0]
    if importlib.util.find_spec(module) is None:
        return None, f"{module} is not installed"
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads),
               OPENBLAS_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    command = [sys.executable, os.path.abspath(__file__), "--peer", name, "--rows",
               str(args.rows), "--configs", json.dumps(configs), "--threads", str(args.threads),
               "--repeats", str(args.repeats)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env), None


def finish_peer(name, process):
    """{(optimizer, batch): median seconds per epoch} from a started peer, or ({}, reason)."""
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        return {}, f"{name} failed: {stderr.strip().splitlines()[-1:]}"
    seconds = json.loads(stdout.strip().splitlines()[-1])
    return {(opt, batch): statistics.median(s) for (opt, batch), s in seconds}, None


def run_peers(args, configs):
    """Every peer's results; one after the other, or all at once with --quick (no timing)."""
    results, notes, started = {}, [], {}
    for name in PEERS:
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
def minigd_epochs(X, y, batch, optimizer, backend, repeats, fused_path=True):
    import minigd as mg
    from minigd import fused
    model = mg.Sequential(mg.Dense(N_IN, N_HIDDEN), mg.ReLU(), mg.Dense(N_HIDDEN, N_OUT), seed=0)
    opt = (mg.SGD(model.parameters(), lr=LR["sgd"]) if optimizer == "sgd"
           else mg.Adam(model.parameters(), lr=LR["adam"]))
    previous = fused.ENABLED
    fused.ENABLED = fused_path
    try:
        with mg.use_backend(backend):
            history = mg.fit(model, X, y, optimizer=opt, epochs=repeats + 1, batch_size=batch,
                             seed=0, verbose=0)
    finally:
        fused.ENABLED = previous
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
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, NUMBA_NUM_THREADS=str(threads),
                   PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        for label in ("empty cache (compiles)", "cached"):
            out = subprocess.run([sys.executable, "-c", COLD_START], env=env, check=True,
                                 capture_output=True, text=True).stdout.split()
            results[label] = dict(zip(("import_s", "import_to_first_epoch_s", "total_s"),
                                      map(float, out)))
    return results


def sgemm_peak(threads, size=2048):
    """GFLOP/s of the fastest float32 product measured here: NumPy's BLAS on size^3 and
    minigd's own kernel on the epoch's biggest product (1024 x 784 x 128)."""
    from minigd.kernels.jit_gemm import aligned_empty
    from minigd.kernels import jit_gemm
    sys.path.insert(0, HERE)
    from kernels import blas_threads

    def best(f, flops, repeats=5):
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
        blas = best(lambda: np.matmul(a, b, out=out), 2 * size ** 3)
    return {"numpy_blas_gflops": blas, "minigd_kernel_gflops": own, "peak_gflops": max(blas, own)}


def machine():
    info = {"python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        info["lscpu"] = "\n".join(lscpu.splitlines()[:10])
        for line in lscpu.splitlines():
            if line.startswith("Model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
    except OSError:
        pass
    import numba
    info["numpy"], info["numba"] = np.__version__, numba.__version__
    for module in ("torch", "sklearn"):
        try:
            from importlib.metadata import version
            info[module] = version("scikit-learn" if module == "sklearn" else module)
        except Exception:
            info[module] = None
    return info


# ---- report -------------------------------------------------------------------------------------
def fmt(value, digits=3):
    return "-" if value is None else f"{value:.{digits}f}"


def table(results):
    lines = []
    for opt in OPTIMIZERS:
        lines.append(f"\n{opt.upper()}: seconds per epoch (median) and ratios")
        lines.append("| batch | minigd | PyTorch | minigd / PyTorch | target | sklearn | "
                     "minigd per-iteration | NumPy backend | NumPy / Numba | % of sgemm peak |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        for row in results["rows"]:
            if row["optimizer"] != opt:
                continue
            ratio = row["ratio_to_torch"]
            target = TARGETS[opt].get(row["batch"])
            met = ("" if ratio is None or target is None or results["config"]["quick"]
                   else " ok" if ratio <= target else " MISSED")
            lines.append(
                f"| {row['batch']} | {fmt(row['minigd'])} | {fmt(row['torch'])} | "
                f"{fmt(ratio, 2)}{met} | {'-' if target is None else f'<= {target:.2f}'} | "
                f"{fmt(row['sklearn'])} | {fmt(row['minigd_per_iteration'])} | "
                f"{fmt(row['numpy_backend'])} | {fmt(row['numpy_over_numba'], 1)} | "
                f"{fmt(100 * row['fraction_of_peak'], 0)}% |")
    return "\n".join(lines)


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    series = [("minigd", "minigd (Numba)"), ("minigd_per_iteration", "minigd per-iteration"),
              ("numpy_backend", "minigd NumPy backend"), ("torch", "PyTorch"),
              ("sklearn", "scikit-learn")]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, opt in zip(axes, OPTIMIZERS):
        rows = [r for r in results["rows"] if r["optimizer"] == opt]
        width = 0.8 / len(series)
        for k, (key, label) in enumerate(series):
            xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(rows))]
            ax.bar(xs, [r[key] or 0 for r in rows], width, label=label)
        ax.set_xticks(range(len(rows)), [str(r["batch"]) for r in rows])
        ax.set_xlabel("batch size")
        ax.set_title(f"{opt.upper()}: one epoch of {results['config']['rows']:,} x 784, "
                     f"{results['config']['threads']} threads")
        ax.set_yscale("log")
    axes[0].set_ylabel("seconds per epoch (log scale)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, one repeat (smoke test)")
    p.add_argument("--rows", type=int, default=60000)
    p.add_argument("--batches", default="16,64,256,1024")
    p.add_argument("--repeats", type=int, default=3, help="timed epochs per measurement")
    p.add_argument("--threads", type=int, default=None, help="default: Numba's thread count")
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    p.add_argument("--no-numpy-backend", action="store_true")
    p.add_argument("--peer", choices=sorted(PEERS), help=argparse.SUPPRESS)
    p.add_argument("--configs", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads is None:
        import numba
        args.threads = numba.get_num_threads()
    if args.peer:
        run = PEERS[args.peer][1]
        print(json.dumps([((opt, batch), run(args.rows, batch, opt, args.threads, args.repeats))
                          for opt, batch in json.loads(args.configs)]))
        return 0
    if args.quick:
        args.rows, args.batches, args.repeats = 2000, "16,256", 1

    sys.path.insert(0, ROOT)
    import numba
    numba.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    X, y = synthetic(args.rows)
    notes = []
    started = time.perf_counter()
    print(f"minigd epoch benchmark: {args.rows:,} x {N_IN} float32, 784-128-10 ReLU, "
          f"{args.threads} threads, median of {args.repeats} epochs after a warm-up")
    compile_info = None if args.quick else cold_start(args.threads)
    minigd_epochs(X[:2048], y[:2048], 64, "sgd", "numba", 1)   # load the kernels before timing
    minigd_epochs(X[:2048], y[:2048], 64, "adam", "numba", 1)
    configs = [(opt, batch) for opt in OPTIMIZERS for batch in batches]
    rows = []
    # Numba first, NumPy's BLAS last: OpenBLAS's worker threads keep spinning for a while after
    # each call and would slow the Numba threads that run next (two thread pools, two cores).
    for opt, batch in configs:
        row = {"optimizer": opt, "batch": batch}
        row["minigd"] = statistics.median(minigd_epochs(X, y, batch, opt, "numba", args.repeats))
        row["minigd_per_iteration"] = statistics.median(
            minigd_epochs(X, y, batch, opt, "numba", args.repeats, fused_path=False))
        rows.append(row)
        print(f"  minigd {opt} batch {batch}: {row['minigd']:.3f} s (per-iteration path "
              f"{row['minigd_per_iteration']:.3f} s)", flush=True)
    peak = sgemm_peak(args.threads, 512 if args.quick else 2048)
    for row in rows:
        row["numpy_backend"] = None if args.no_numpy_backend else statistics.median(
            minigd_epochs(X, y, row["batch"], row["optimizer"], "numpy", args.repeats))
    peers, peer_notes = run_peers(args, configs)
    notes += peer_notes
    for row in rows:
        for name in PEERS:
            row[name] = peers[name].get((row["optimizer"], row["batch"]))
        row["ratio_to_torch"] = None if row["torch"] is None else row["minigd"] / row["torch"]
        row["numpy_over_numba"] = (None if row["numpy_backend"] is None
                                   else row["numpy_backend"] / row["minigd"])
        row["fraction_of_peak"] = (flops_per_epoch(args.rows) / (peak["peak_gflops"] * 1e9)
                                   / row["minigd"])
    results = {"config": {"rows": args.rows, "batches": batches, "repeats": args.repeats,
                          "threads": args.threads, "quick": args.quick,
                          "threading_layer": numba.threading_layer()},
               "machine": machine(), "sgemm": peak, "flops_per_epoch": flops_per_epoch(args.rows),
               "cold_start": compile_info, "notes": notes, "rows": rows,
               "benchmark_seconds": time.perf_counter() - started}
    print(table(results))
    print(f"\nsgemm peak measured here: NumPy BLAS {peak['numpy_blas_gflops']:.0f} GFLOP/s, "
          f"minigd kernel {peak['minigd_kernel_gflops']:.0f} GFLOP/s; one epoch is "
          f"{flops_per_epoch(args.rows) / 1e9:.1f} GFLOP, so the FLOP floor is "
          f"{flops_per_epoch(args.rows) / (peak['peak_gflops'] * 1e9):.3f} s")
    if compile_info:
        first, cached = compile_info["empty cache (compiles)"], compile_info["cached"]
        print(f"JIT compile (first process, empty cache): {first['import_to_first_epoch_s']:.1f} s "
              f"from import to the first epoch done; second process (cached): import "
              f"{cached['import_s']:.2f} s, then {cached['import_to_first_epoch_s']:.2f} s to the "
              f"first epoch done")
    for note in notes:
        print(f"note: skipped a peer: {note}")
    save_results(results, args.out, "epoch", plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
