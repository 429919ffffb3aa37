"""A/B of the matrix-product implementations (own loops, BLAS split by output, BLAS split by
batch rows), interleaved.

For each batch size, one fused training epoch per implementation in turn (``MINIGD_PRODUCTS``
forced to ``own``, then ``blas``, then ``blas_rows``, then the autotuned choice), repeated
``--repeats`` times in one process, medians reported: interleaving spreads any background load
over all candidates. Also each training product alone (forward, weight and input gradient of
every layer), best of interleaved rounds, in GFLOP/s; the forward product also with its summed
dimension split between the threads (``summed``, no candidate of minigd's: per-thread partial
sums added in order, then bias and ReLU, as the fused epoch would run it).

    python benchmarks/products.py                      # this CPU's ISA
    NUMBA_CPU_NAME=haswell OPENBLAS_CORETYPE=Haswell python benchmarks/products.py   # AVX2

Results go to ``products-<ISA>.json`` in ``benchmarks/results/`` (ISA as autotune.vector_isa
names it).
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np
from _results import save_results

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from epoch import MAIN_SHAPE, minigd_epochs, parse_shape, synthetic  # noqa: E402

IMPLS = ("own", "blas", "blas_rows", "auto")


def epochs_ab(X, y, batch, optimizer, shape, repeats):
    seconds = {impl: [] for impl in IMPLS}
    for impl in IMPLS:  # warm up: compile, measure, load
        minigd_epochs(
            X[: 4 * batch],
            y[: 4 * batch],
            batch,
            optimizer,
            "numba",
            0,
            shape=shape,
            products=None if impl == "auto" else impl,
        )
    for _ in range(repeats):
        for impl in IMPLS:
            seconds[impl] += minigd_epochs(
                X,
                y,
                batch,
                optimizer,
                "numba",
                1,
                shape=shape,
                products=None if impl == "auto" else impl,
            )
    return {impl: statistics.median(s) for impl, s in seconds.items()}


_forward_summed = None


def forward_summed(x, w_t, b, act, out, partial, parts):
    """out = f(x @ w_t.T + b) with the summed dimension (the inputs) split between ``parts``
    threads (``layouts.split_summed``: thread 0's BLAS call writes ``out``, thread p's
    ``partial[p - 1]``, (parts - 1, rows, out) scratch, added in thread order), then bias and
    activation, rows split. No candidate of minigd's: measured here against them."""
    global _forward_summed
    if _forward_summed is None:
        import numba
        from layouts import split_summed

        from minigd.kernels import jit_gemm
        from minigd.kernels.jit_config import OPTIONS

        bias_activation, split = jit_gemm.bias_activation, jit_gemm.split

        @numba.njit(parallel=True, **OPTIONS)
        def run(x, w_t, b, act, out, partial, parts):
            split_summed(x, w_t.T, out, partial, parts)
            for part in numba.prange(parts):
                lo, hi = split(out.shape[0], parts, part)
                bias_activation(out[lo:hi], b, act, 0, out.shape[1])

        _forward_summed = run
    _forward_summed(x, w_t, b, act, out, partial, parts)


def summed_operands(batch, n_in, n_out, parts, seed=0):
    """(x, w_t, bias, out, partial) for :func:`forward_summed`, float32, 64-byte aligned."""
    from minigd.kernels.jit_gemm import aligned_empty

    rng = np.random.default_rng(seed)
    x, w_t = aligned_empty((batch, n_in), np.float32), aligned_empty((n_out, n_in), np.float32)
    x[...], w_t[...] = rng.random(x.shape), rng.standard_normal(w_t.shape)
    bias = rng.standard_normal(n_out).astype(np.float32)
    out = aligned_empty((batch, n_out), np.float32)
    partial = aligned_empty((max(parts - 1, 0), batch, n_out), np.float32)
    return x, w_t, bias, out, partial


def products_ab(shape, batch, rounds=7):
    """GFLOP/s of each implementation on each product of the model in training (forward,
    weight and input gradient), best of rounds; blas_rows where the product has it. The
    forward product also ``summed`` (:func:`forward_summed`, not a candidate), interleaved."""
    from minigd.kernels import autotune, jit_gemm
    from minigd.kernels.jit_config import parallel_parts

    sizes, _ = parse_shape(shape)
    parts, rows = parallel_parts(), []
    for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        for product in ("forward", "weight_grad") + (("input_grad",) if l > 0 else ()):
            run = autotune._operands(product, batch, n_in, n_out, np.float32, parts)
            names = list(autotune.product_candidates(product))
            calls = [lambda impl=impl: run(impl, parts) for impl in range(len(names))]
            if product == "forward" and parts > 1 and jit_gemm.BLAS_AVAILABLE:
                x, w_t, bias, out, partial = summed_operands(batch, n_in, n_out, parts)
                names.append("summed")
                calls.append(
                    lambda: forward_summed(x, w_t, bias, jit_gemm.RELU, out, partial, parts)
                )
            flops = 2 * batch * n_in * n_out
            best = {}
            with autotune.blas_threads_limited([jit_gemm.BLAS]):
                for call in calls:
                    call()
                reps = max(1, int(2e7 // flops))
                for _ in range(rounds):
                    for call, name in zip(calls, names):
                        started = time.perf_counter()
                        for _ in range(reps):
                            call()
                        rate = flops * reps / (time.perf_counter() - started) / 1e9
                        best[name] = max(best.get(name, 0), rate)
            rows.append(
                {
                    "product": product,
                    "layer": f"{n_in}x{n_out}",
                    "batch": batch,
                    **{f"{k}_gflops": v for k, v in best.items()},
                }
            )
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=8000)
    p.add_argument("--batches", default="16,64,256,1024")
    p.add_argument("--shapes", default=MAIN_SHAPE)
    p.add_argument("--optimizer", default="sgd", choices=("sgd", "adam"))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    args = p.parse_args(argv)
    from minigd.kernels import autotune

    isa = autotune.vector_isa()
    X, y = synthetic(args.rows)
    results = {
        "machine": {
            "cpu_model": autotune.cpu_model(),
            "vector_isa": isa,
            "llvm_cpu": autotune.llvm_cpu()[0],
            "blas": autotune.blas_library(),
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        },
        "config": vars(args),
        "epochs": [],
        "products": [],
    }
    print(
        f"{autotune.cpu_model()}, {isa}: seconds per epoch ({args.rows:,} rows, "
        f"{args.optimizer}), median of {args.repeats}, interleaved"
    )
    print(
        "| shape | batch | own | blas | blas_rows | auto | auto chose |"
        "\n|---|---|---|---|---|---|---|"
    )
    for shape in args.shapes.split(","):
        for batch in map(int, args.batches.split(",")):
            medians = epochs_ab(X, y, batch, args.optimizer, shape, args.repeats)
            from epoch import chosen_products

            chose = chosen_products(shape, args.rows, batch, args.optimizer)
            results["epochs"].append({"shape": shape, "batch": batch, "chose": chose, **medians})
            print(
                f"| {shape} | {batch} | {medians['own']:.3f} | {medians['blas']:.3f} | "
                f"{medians['blas_rows']:.3f} | {medians['auto']:.3f} | {chose} |",
                flush=True,
            )
            results["products"] += products_ab(shape, batch)
    print(
        "\n| product | layer | batch | own GFLOP/s | blas GFLOP/s | blas_rows GFLOP/s | "
        "summed split GFLOP/s (forward, no candidate) |\n|---|---|---|---|---|---|---|"
    )

    def rate(value):
        return "-" if value is None else f"{value:.0f}"

    for r in results["products"]:
        print(
            f"| {r['product']} | {r['layer']} | {r['batch']} | {rate(r.get('own_gflops'))} | "
            f"{rate(r.get('blas_gflops'))} | {rate(r.get('blas_rows_gflops'))} | "
            f"{rate(r.get('summed_gflops'))} |"
        )
    save_results(results, args.out, "products-" + isa.replace("/", "-"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
