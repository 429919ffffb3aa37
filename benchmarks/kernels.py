"""Per-kernel timings, NumPy reference against Numba, and the measurements behind the design.

1. Every kernel of minigd.kernels at the shapes of a 784-128-10 network, per batch size:
   microseconds per call for the NumPy reference and the Numba kernel, and the speedup.
2. Matrix products (the 784 x 128 layer's forward and weight gradient), GFLOP/s: NumPy's
   OpenBLAS, ``np.dot`` inside ``@njit`` (SciPy's OpenBLAS; skipped without SciPy), and
   minigd's own register-blocked loops, on 1 thread and on all threads.
3. Launching one parallel region, per Numba threading layer (each in its own process).
4. Numba's error model: the Adam update loop compiled with ``error_model="python"`` (the
   default) and ``"numpy"``.

    python benchmarks/kernels.py            # a minute or two
    python benchmarks/kernels.py --quick    # smoke run
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np
from _results import save_results

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)


def per_call(f, budget=0.05, repeats=5):
    """Median seconds per call of f() over ``repeats`` rounds of about ``budget`` seconds."""
    f()
    started, calls = time.perf_counter(), 0
    while time.perf_counter() - started < budget / 5:
        f()
        calls += 1
    calls = max(1, calls * 5)
    rounds = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            f()
        rounds.append((time.perf_counter() - started) / calls)
    return statistics.median(rounds)


def kernel_cases(batch, dtype=np.float32):
    """(name, argument builder) per kernel, shapes of 784-128-10 at ``batch``."""
    rng = np.random.default_rng(0)
    r = lambda *shape: rng.standard_normal(shape).astype(dtype)
    n_params = 784 * 128 + 128 + 128 * 10 + 10
    x, w1, b1, h = r(batch, 784), r(784, 128), r(128), r(batch, 128)
    w2, logits, labels = r(128, 10), r(batch, 10), rng.integers(0, 10, batch)
    p, g, m, v = r(n_params), r(n_params), r(n_params), np.abs(r(n_params))
    return [
        ("dense_forward 784->128", "dense_forward", (x, w1, b1, np.empty((batch, 128), dtype))),
        (
            "dense_backward 784->128 (no dx)",
            "dense_backward",
            (x, h, w1, np.empty_like(w1), np.empty_like(b1), None),
        ),
        (
            "dense_backward 128->10",
            "dense_backward",
            (h, logits, w2, np.empty_like(w2), np.empty(10, dtype), np.empty_like(h)),
        ),
        ("relu_forward", "relu_forward", (h, np.empty_like(h))),
        ("relu_backward", "relu_backward", (h, h, np.empty_like(h))),
        ("tanh_forward", "tanh_forward", (h, np.empty_like(h))),
        ("sigmoid_forward", "sigmoid_forward", (h, np.empty_like(h))),
        ("softmax_cross_entropy", "softmax_cross_entropy", (logits, labels, np.empty_like(logits))),
        ("sgd_update (momentum 0.9)", "sgd_update", (p, g, m, 0.01, 0.9, 0.0, False, 0.0, False)),
        ("adam_update", "adam_update", (p, g, m, v, 10, 1e-3, 0.9, 0.999, 1e-8, 0.0, False)),
    ]


def kernels_table(batches, budget):
    """All Numba timings first, then all NumPy ones: OpenBLAS's workers spin for a while after
    each call and would steal the core Numba's second thread needs (two pools, two cores)."""
    from minigd.kernels import jit, reference

    cases = [
        (batch, label, name, args) for batch in batches for label, name, args in kernel_cases(batch)
    ]
    numba_s = [per_call(lambda: getattr(jit, name)(*args), budget) for _, _, name, args in cases]
    numpy_s = [
        per_call(lambda: getattr(reference, name)(*args), budget) for _, _, name, args in cases
    ]
    rows = []
    for (batch, label, _, _), t_nb, t_np in zip(cases, numba_s, numpy_s):
        rows.append(
            {
                "batch": batch,
                "kernel": label,
                "numpy_us": 1e6 * t_np,
                "numba_us": 1e6 * t_nb,
                "speedup": t_np / t_nb,
            }
        )
        print(
            f"  batch {batch:5d}  {label:34s} NumPy {1e6 * t_np:9.1f} us   "
            f"Numba {1e6 * t_nb:9.1f} us   x{t_np / t_nb:5.1f}"
        )
    return rows


def blas_threads(n):
    """Context limiting NumPy's BLAS to n threads (threadpoolctl; a no-op without it)."""
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(n)
    except ImportError:
        import contextlib

        return contextlib.nullcontext()


def products_table(batches, budget, threads):
    import numba

    from minigd.kernels import jit_gemm

    try:
        import scipy.linalg.cython_blas  # noqa: F401  (np.dot inside @njit needs it)

        @numba.njit
        def njit_dot(a, b, out):
            np.dot(a, b, out)
    except ImportError:
        njit_dot = None
    rows = []
    rng = np.random.default_rng(0)
    for batch in batches:
        x = rng.random((batch, 784), dtype=np.float32)
        w = rng.random((784, 128), dtype=np.float32)
        w_t, dz = np.ascontiguousarray(w.T), rng.random((batch, 128), dtype=np.float32)
        z, dw_t = np.empty((batch, 128), np.float32), np.empty((128, 784), np.float32)
        flops = 2 * batch * 784 * 128
        for n_threads in sorted({1, threads}):
            row = {"batch": batch, "threads": n_threads}
            with blas_threads(n_threads):
                row["numpy_forward"] = flops / per_call(lambda: np.matmul(x, w, out=z), budget)
                row["numpy_weight_grad"] = flops / per_call(
                    lambda: np.matmul(dz.T, x, out=dw_t), budget
                )
                if njit_dot is not None:
                    row["njit_np_dot_forward"] = flops / per_call(lambda: njit_dot(x, w, z), budget)
                    row["njit_np_dot_weight_grad"] = flops / per_call(
                        lambda: njit_dot(dz.T, x, dw_t), budget
                    )
            row["minigd_forward"] = flops / per_call(
                lambda: jit_gemm.matmul_nt(x, w_t, z, n_threads), budget
            )
            row["minigd_weight_grad"] = flops / per_call(
                lambda: jit_gemm.matmul_tn(dz, x, dw_t, n_threads), budget
            )
            row = {k: (v / 1e9 if k not in ("batch", "threads") else v) for k, v in row.items()}
            rows.append(row)
            print(
                "  batch {batch:5d} threads {threads}: ".format(**row)
                + "  ".join(f"{k} {v:.0f}" for k, v in row.items() if k not in ("batch", "threads"))
                + "  GFLOP/s",
                flush=True,
            )
    return rows


LAUNCH = """
import time, numpy as np, numba
@numba.njit(parallel=True)
def region(a):
    for t in numba.prange(a.shape[0]):
        a[t] += 1.0
@numba.njit
def many(a, n):
    for _ in range(n):
        region(a)
a = np.zeros(numba.get_num_threads())
many(a, 10)
best = min((lambda t: (many(a, 2000), time.perf_counter() - t)[1])(time.perf_counter())
           for _ in range(5))
print(numba.threading_layer(), best / 2000)
"""


def launch_table():
    rows = []
    for layer in ("omp", "tbb", "workqueue"):
        env = dict(os.environ, NUMBA_THREADING_LAYER=layer)
        done = subprocess.run(
            [sys.executable, "-c", LAUNCH], env=env, capture_output=True, text=True
        )
        if done.returncode != 0:
            print(f"  {layer:9s}: not available here")
            rows.append({"layer": layer, "us": None})
            continue
        name, seconds = done.stdout.split()
        rows.append({"layer": layer, "us": 1e6 * float(seconds)})
        print(f"  {layer:9s}: {1e6 * float(seconds):7.1f} us per parallel region", flush=True)
    return rows


def error_model_table(budget):
    import math

    import numba

    def adam(p, g, m, v, lr, b1, b2, eps, c1, c2):
        for i in range(p.shape[0]):
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i]
            p[i] -= lr / c1 * m[i] / (math.sqrt(v[i]) / c2 + eps)

    rng = np.random.default_rng(0)
    p, g, m = rng.random((3, 101770), dtype=np.float32)
    v = np.abs(m)
    args = (
        p,
        g,
        m,
        v,
        np.float32(1e-3),
        np.float32(0.9),
        np.float32(0.999),
        np.float32(1e-8),
        np.float32(0.5),
        np.float32(0.5),
    )
    rows = {}
    for model in ("python", "numpy"):
        f = numba.njit(error_model=model)(adam)
        rows[model] = 1e6 * per_call(lambda: f(*args), budget)
        print(
            f"  error_model={model!r:9s}: {rows[model]:7.1f} us per Adam update of 101,770 float32",
            flush=True,
        )
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    args = p.parse_args(argv)
    import numba

    threads = numba.get_num_threads()
    batches = (16, 256) if args.quick else (16, 64, 256, 1024)
    budget = 0.005 if args.quick else 0.1
    print(f"1. kernels, NumPy reference vs Numba (float32, {threads} threads)")
    results = {"threads": threads, "kernels": kernels_table(batches, budget)}
    print("2. matrix products of the 784x128 layer")
    results["products_gflops"] = products_table(batches, budget, threads)
    if not args.quick:
        print("3. one parallel region, per threading layer")
        results["parallel_region"] = launch_table()
    print("4. Numba error model on the Adam update loop")
    results["error_model_us"] = error_model_table(budget)
    save_results(results, args.out, "kernels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
