"""Weight storage for the BLAS products: minigd's kernel layout against the natural one.

The fused epoch keeps each dense weight transposed, (out, in), the layout its own product
kernels read along the summed dimension (``jit_epoch.to_kernel_layout``). BLAS does not need
that: it reads either storage through its transpose flags, but OpenBLAS packs the operands
differently for each, and on small batches the packing shows. This script measures how much
the natural storage, (in, out) as ``Dense.W`` holds it, would change the BLAS products, so
that a change of layout is decided by numbers from the machine at hand:

- forward ``out = x @ W``: kernel storage reads ``w_t.T``, natural reads ``w``;
- weight gradient: kernel storage writes ``dW.T = d.T @ x`` (out, in), natural writes
  ``dW = x.T @ d`` (in, out);
- input gradient ``d_prev = d @ W.T``: kernel storage reads ``w_t``, natural reads ``w.T``.

Each product runs on 2 threads the two ways the fused epoch can split it (the output's
columns or rows, or the batch rows with per-thread partial sums: ``blas`` and ``blas_rows``),
BLAS single-threaded inside; the forward product also a third way no candidate of minigd's
takes (``summed``: its summed dimension split, per-thread partial sums added in order).
Rounds are interleaved, medians reported in GFLOP/s. The summary adds, per storage, the time
of each product at its best split: a layer's products per iteration (the first layer has no
input gradient).

    python benchmarks/layouts.py                  # this CPU's ISA
    NUMBA_CPU_NAME=haswell OPENBLAS_CORETYPE=Haswell python benchmarks/layouts.py   # AVX2

Results go to ``layouts-<ISA>.json`` in ``benchmarks/results/``.
"""

import argparse
import os
import statistics
import sys
import time

import numba
import numpy as np
from _results import save_results
from numba import prange

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from minigd.kernels import autotune  # noqa: E402
from minigd.kernels.jit_config import OPTIONS  # noqa: E402
from minigd.kernels.jit_gemm import add_rows, aligned_empty, blas_matmul, split  # noqa: E402

N_IN = 784  # a layer with this many inputs is a network's first: it has no input gradient


@numba.njit(parallel=True, **OPTIONS)
def split_columns(a, b, out, parts):
    """out[:, lo:hi] = a @ b[:, lo:hi], one BLAS call per part."""
    for part in prange(parts):
        lo, hi = split(out.shape[1], parts, part)
        blas_matmul(a, b[:, lo:hi], out[:, lo:hi])


@numba.njit(parallel=True, **OPTIONS)
def split_rows(a, b, out, parts):
    """out[lo:hi] = a[lo:hi] @ b, one BLAS call per part."""
    for part in prange(parts):
        lo, hi = split(out.shape[0], parts, part)
        blas_matmul(a[lo:hi], b, out[lo:hi])


@numba.njit(parallel=True, **OPTIONS)
def split_summed(a, b, out, partial, parts):
    """out = a @ b with the summed dimension split: part 0 into ``out``, part p into
    ``partial[p - 1]``, then added in part order (rows of ``out`` split)."""
    for part in prange(parts):
        lo, hi = split(a.shape[1], parts, part)
        blas_matmul(a[:, lo:hi], b[lo:hi], out if part == 0 else partial[part - 1])
    for part in prange(parts):
        lo, hi = split(out.shape[0], parts, part)
        for p in range(parts - 1):
            add_rows(out, partial[p], lo, hi)


def cases(batch, n_in, n_out, parts, rng):
    """{(product, storage, split): callable} for one layer and batch."""
    x = aligned_empty((batch, n_in), np.float32)
    x[:] = rng.standard_normal((batch, n_in))
    d = aligned_empty((batch, n_out), np.float32)
    d[:] = rng.standard_normal((batch, n_out))
    w_t = aligned_empty((n_out, n_in), np.float32)
    w_t[:] = rng.standard_normal((n_out, n_in))
    w = aligned_empty((n_in, n_out), np.float32)
    w[:] = w_t.T
    out = aligned_empty((batch, n_out), np.float32)
    g_t = aligned_empty((n_out, n_in), np.float32)
    g = aligned_empty((n_in, n_out), np.float32)
    part_t = aligned_empty((parts - 1, n_out, n_in), np.float32)
    part = aligned_empty((parts - 1, n_in, n_out), np.float32)
    part_out = aligned_empty((parts - 1, batch, n_out), np.float32)
    d_prev = aligned_empty((batch, n_in), np.float32)
    return {
        ("forward", "kernel", "blas"): lambda: split_columns(x, w_t.T, out, parts),
        ("forward", "kernel", "blas_rows"): lambda: split_rows(x, w_t.T, out, parts),
        ("forward", "natural", "blas"): lambda: split_columns(x, w, out, parts),
        ("forward", "natural", "blas_rows"): lambda: split_rows(x, w, out, parts),
        # not a candidate of minigd's: the forward product's summed dimension split, as
        # blas_rows splits the weight gradient's
        ("forward", "kernel", "summed"): lambda: split_summed(x, w_t.T, out, part_out, parts),
        ("forward", "natural", "summed"): lambda: split_summed(x, w, out, part_out, parts),
        ("weight_grad", "kernel", "blas"): lambda: split_rows(d.T, x, g_t, parts),
        ("weight_grad", "kernel", "blas_rows"): lambda: split_summed(d.T, x, g_t, part_t, parts),
        ("weight_grad", "natural", "blas"): lambda: split_columns(x.T, d, g, parts),
        ("weight_grad", "natural", "blas_rows"): lambda: split_summed(x.T, d, g, part, parts),
        ("input_grad", "kernel", "blas"): lambda: split_rows(d, w_t, d_prev, parts),
        ("input_grad", "natural", "blas"): lambda: split_rows(d, w.T, d_prev, parts),
    }


def measure(batch, n_in, n_out, parts, rounds, rng):
    """GFLOP/s of every case, the median of ``rounds`` interleaved rounds."""
    todo = cases(batch, n_in, n_out, parts, rng)
    calls = max(3, 40_000 // batch)
    seconds = {key: [] for key in todo}
    with autotune.blas_threads_limited(np.array([1])):
        for f in todo.values():
            f()
        for _ in range(rounds):
            for key, f in todo.items():
                started = time.perf_counter()
                for _ in range(calls):
                    f()
                seconds[key].append((time.perf_counter() - started) / calls)
    flops = 2 * batch * n_in * n_out
    return {key: flops / statistics.median(s) / 1e9 for key, s in seconds.items()}


def summary(gflops, batch, n_in, n_out, first_layer):
    """Per storage: microseconds per iteration of the layer's products, each at its best
    split, and the ratio natural / kernel."""
    flops = 2 * batch * n_in * n_out
    products = ("forward", "weight_grad") + (() if first_layer else ("input_grad",))
    total = {}
    for storage in ("kernel", "natural"):
        total[storage] = sum(
            flops / max(v for (p, s, _), v in gflops.items() if p == product and s == storage) / 1e3
            for product in products
        )
    return {
        "kernel_us": total["kernel"],
        "natural_us": total["natural"],
        "natural_over_kernel": total["natural"] / total["kernel"],
        "products": list(products),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="64,256,1024")
    parser.add_argument("--layers", default="784x128,784x256,784x512,512x512")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--quick", action="store_true", help="one small layer, one round")
    args = parser.parse_args()
    if args.rounds < 1 or args.threads < 2:
        parser.error("--rounds takes at least 1 and --threads at least 2 (the splits need two)")
    if args.quick:
        args.batches, args.layers, args.rounds = "16", "64x32", 1
    rng = np.random.default_rng(0)
    isa = autotune.vector_isa()
    print(f"{autotune.cpu_model()}, {isa}, {args.threads} threads: GFLOP/s (median)")
    rows = []
    for layer in args.layers.split(","):
        n_in, n_out = (int(v) for v in layer.split("x"))
        for batch in (int(b) for b in args.batches.split(",")):
            gflops = measure(batch, n_in, n_out, args.threads, args.rounds, rng)
            row = {
                "layer": [n_in, n_out],
                "batch": batch,
                "gflops": {"/".join(key): value for key, value in gflops.items()},
                "summary": summary(gflops, batch, n_in, n_out, first_layer=n_in == N_IN),
            }
            rows.append(row)
            s = row["summary"]
            print(
                f"{n_in}x{n_out} batch {batch}: "
                + ", ".join(f"{k} {v:.0f}" for k, v in row["gflops"].items())
                + f"; products at best split: kernel {s['kernel_us']:.0f} us, natural "
                f"{s['natural_us']:.0f} us ({s['natural_over_kernel']:.2f})",
                flush=True,
            )
    results = {
        "machine": {
            "cpu_model": autotune.cpu_model(),
            "vector_isa": isa,
            "llvm_cpu": autotune.llvm_cpu()[0],
            "numba_cpu_name": os.environ.get("NUMBA_CPU_NAME"),
            "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
        },
        "config": vars(args),
        "rows": rows,
    }
    save_results(results, args.out, "layouts-" + isa.replace("/", "-"))


if __name__ == "__main__":
    main()
