"""Where one training iteration of the fused epoch spends its time, kernel by kernel.

Each kernel the whole-epoch loop (``jit_epoch.train_epoch``) calls in one iteration of a
784-H-10 network is timed alone, with the epoch's own arguments, on ``--threads`` threads:
the batch gather, the forward product of each layer (bias and activation included), the loss
and its gradient, each weight gradient (with the bias gradient and the sums of squares), the
input gradient, and the SGD and Adam updates of the flat parameter buffer. Every product runs
on each implementation asked for (``own``, ``blas``, ``blas_rows``; BLAS single-threaded
inside, as the epoch runs it). The sum is compared with the FLOP floor at the sgemm peak
measured in the same process.

Also the Adam update's own anatomy: the same loop without its two divisions and square root
(what torch's formula costs, which minigd keeps exactly), on one thread.

    python benchmarks/iteration.py --batch 64
    python benchmarks/iteration.py --batch 16 --hidden 256 --activation tanh
    python benchmarks/iteration.py --quick      # smoke run (batch 16, 784-32-10)

Results go to ``iteration-<ISA>-b<batch>.json`` in ``benchmarks/results/``.
"""

import argparse
import math
import os
import sys

import numba
import numpy as np
from _results import save_results
from epoch import sgemm_peak
from kernels import per_call

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from minigd.kernels import autotune, codes, jit_epoch, jit_gemm, jit_optim  # noqa: E402
from minigd.kernels.jit import softmax_cross_entropy  # noqa: E402
from minigd.kernels.jit_config import OPTIONS  # noqa: E402
from minigd.kernels.jit_gemm import aligned_empty  # noqa: E402

IMPLS = {"own": codes.PRODUCT_OWN, "blas": codes.PRODUCT_BLAS, "blas_rows": codes.PRODUCT_BLAS_ROWS}
ACTS = {"relu": codes.ACT_RELU, "tanh": codes.ACT_TANH}
N_IN, N_OUT = 784, 10


@numba.njit(**OPTIONS)
def adam_without_divisions(param, grad, exp_avg, exp_avg_sq, step_size, c, eps, b1, b2):
    """Adam's loop with ``p -= step_size * m * (v * c + eps)`` for torch's
    ``p -= step_size * m / (sqrt(v) / c + eps)``: not a usable update, only how long the same
    memory traffic takes without the divider."""
    one = param.dtype.type(1)
    for i in range(param.shape[0]):
        g = grad[i]
        m = exp_avg[i] * b1 + (one - b1) * g
        v = exp_avg_sq[i] * b2 + (one - b2) * g * g
        exp_avg[i], exp_avg_sq[i] = m, v
        param[i] = param[i] - step_size * m * (v * c + eps)


def iteration(batch, hidden, act, impl, rows, threads, budget):
    """{kernel: microseconds per call} of one iteration with products on ``impl``."""
    rng = np.random.default_rng(0)
    f32 = np.float32

    def filled(shape, scale=1.0):
        out = aligned_empty(shape, f32)
        out[...] = rng.standard_normal(shape) * scale
        return out

    X = rng.random((rows, N_IN), dtype=f32)
    y = rng.integers(0, N_OUT, rows)
    order = rng.permutation(rows).astype(np.int64)
    xb, yb = aligned_empty((batch, N_IN), f32), np.empty(batch, np.int64)
    w1, b1 = filled((hidden, N_IN), 0.03), np.zeros(hidden, f32)
    w2, b2 = filled((N_OUT, hidden), 0.1), np.zeros(N_OUT, f32)
    h, logits = aligned_empty((batch, hidden), f32), aligned_empty((batch, N_OUT), f32)
    d2, d1 = aligned_empty((batch, N_OUT), f32), aligned_empty((batch, hidden), f32)
    g1, gb1 = aligned_empty((hidden, N_IN), f32), np.zeros(hidden, f32)
    g2, gb2 = aligned_empty((N_OUT, hidden), f32), np.zeros(N_OUT, f32)
    squares = np.zeros(max(threads, 1), f32)
    pad1, pad1_out = np.zeros((4, N_IN), f32), np.zeros((4, hidden), f32)
    pad2, pad2_out = np.zeros((4, hidden), f32), np.zeros((4, N_OUT), f32)
    partial = np.zeros(max(threads - 1, 0) * hidden * N_IN, f32)
    n_params = hidden * N_IN + hidden + N_OUT * hidden + N_OUT
    values, grads = filled((n_params,), 0.03), filled((n_params,), 1e-3)
    exp_avg, exp_avg_sq = np.zeros(n_params, f32), np.zeros(n_params, f32)
    empty = np.empty(0, f32)
    sgd_hyper, adam_hyper = np.zeros(4), np.array([0.9, 0.999, 1e-8, 0.0, 0.0])
    jit_epoch.gather(X, y, order, 0, xb, yb, threads)
    code = IMPLS[impl]
    kernels = {
        "gather": lambda: jit_epoch.gather(X, y, order, 0, xb, yb, threads),
        "forward 1": lambda: jit_gemm.dense_act_forward(
            xb, w1, b1, act, h, threads, pad1, pad1_out, code
        ),
        "forward 2": lambda: jit_gemm.dense_act_forward(
            h, w2, b2, codes.ACT_NONE, logits, threads, pad2, pad2_out, code
        ),
        "loss": lambda: softmax_cross_entropy(logits, yb, d2),
        "weight gradient 2": lambda: jit_epoch.weight_grad(
            d2, h, g2, gb2, squares, threads, code, partial
        ),
        "input gradient 2": lambda: jit_gemm.input_grad(
            d2, w2, h, act, d1, threads, min(code, codes.PRODUCT_BLAS)
        ),
        "weight gradient 1": lambda: jit_epoch.weight_grad(
            d1, xb, g1, gb1, squares, threads, code, partial
        ),
        "sgd update": lambda: jit_optim.fused_step(
            jit_optim.SGD, sgd_hyper, empty, empty, empty, 5, 0.01, values, grads, threads
        ),
        "adam update": lambda: jit_optim.fused_step(
            jit_optim.ADAM, adam_hyper, exp_avg, exp_avg_sq, empty, 5, 1e-3, values, grads, threads
        ),
    }
    with autotune.blas_threads_limited(np.array([code])):
        return {name: per_call(f, budget) * 1e6 for name, f in kernels.items()}


def adam_anatomy(n_params, budget):
    """Microseconds per call on one thread: minigd's Adam update and the same loop without
    its divisions and square root."""
    rng = np.random.default_rng(0)
    f32 = np.float32
    values = rng.standard_normal(n_params).astype(f32)
    grads = (rng.standard_normal(n_params) * 1e-3).astype(f32)
    m, v = np.zeros(n_params, f32), np.zeros(n_params, f32)
    empty = np.empty(0, f32)
    hyper = np.array([0.9, 0.999, 1e-8, 0.0, 0.0])
    args = (f32(1e-3), f32(math.sqrt(1 - 0.999**5)), f32(1e-8), f32(0.9), f32(0.999))
    return {
        "adam update, 1 thread": per_call(
            lambda: jit_optim.fused_step(
                jit_optim.ADAM, hyper, m, v, empty, 5, 1e-3, values, grads, 1
            ),
            budget,
        )
        * 1e6,
        "the same loop without divisions and sqrt": per_call(
            lambda: adam_without_divisions(values, grads, m, v, *args), budget
        )
        * 1e6,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--activation", choices=sorted(ACTS), default="relu")
    parser.add_argument(
        "--impls", default=",".join(IMPLS), help="comma-separated, of " + ", ".join(IMPLS)
    )
    parser.add_argument("--rows", type=int, default=60000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--quick", action="store_true", help="tiny sizes, few calls")
    args = parser.parse_args()
    impls = args.impls.split(",")
    unknown = sorted(set(impls) - set(IMPLS))
    if unknown:
        parser.error(f"--impls: unknown {', '.join(unknown)}; expected some of {', '.join(IMPLS)}")
    if min(args.batch, args.hidden, args.threads, args.rows) < 1:
        parser.error("--batch, --hidden, --threads and --rows take a whole number of at least 1")
    if args.rows < args.batch:
        parser.error(f"--rows ({args.rows}) must hold at least one batch ({args.batch})")
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    if args.quick:
        args.batch, args.hidden = 16, 32
    budget = 0.005 if args.quick else 0.2  # seconds per timed round of each kernel
    rows = 2000 if args.quick else args.rows
    peak = sgemm_peak(args.threads, 256 if args.quick else 2048)["peak_gflops"]
    # the products' FLOPs: both layers' forward and weight gradient, layer 2's input gradient
    flops = 2 * args.batch * (2 * (N_IN * args.hidden + args.hidden * N_OUT) + args.hidden * N_OUT)
    isa = autotune.vector_isa()
    print(
        f"{autotune.cpu_model()}, {isa}, {args.threads} threads: 784-{args.hidden}-10 "
        f"{args.activation}, batch {args.batch}; microseconds per call (median); sgemm peak "
        f"{peak:.0f} GFLOP/s, so the products' floor is {flops / peak / 1e3:.1f} us"
    )
    results = {"impls": {}}
    for impl in impls:
        times = iteration(
            args.batch, args.hidden, ACTS[args.activation], impl, rows, args.threads, budget
        )
        kernels = dict(times)
        for optimizer in ("sgd", "adam"):
            other = "adam update" if optimizer == "sgd" else "sgd update"
            times[f"iteration with {optimizer}"] = sum(
                us for name, us in kernels.items() if name != other
            )
        results["impls"][impl] = times
        print(f"\nproducts on {impl}:")
        for name, us in times.items():
            print(f"  {name:24s} {us:9.1f}")
        for optimizer in ("sgd", "adam"):
            total = times[f"iteration with {optimizer}"]
            print(f"  {optimizer}: {100 * flops / peak / 1e3 / total:.0f}% of the products' floor")
    anatomy = adam_anatomy(N_IN * args.hidden + args.hidden + args.hidden * N_OUT + N_OUT, budget)
    print()
    for name, us in anatomy.items():
        print(f"  {name:42s} {us:9.1f} us")
    results.update(
        machine={
            "cpu_model": autotune.cpu_model(),
            "vector_isa": isa,
            "llvm_cpu": autotune.llvm_cpu()[0],
            "numba_cpu_name": os.environ.get("NUMBA_CPU_NAME"),
            "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
        },
        config=vars(args),
        sgemm_peak_gflops=peak,
        products_flops=flops,
        adam_anatomy_us=anatomy,
    )
    save_results(results, args.out, f"iteration-{isa.replace('/', '-')}-b{args.batch}")


if __name__ == "__main__":
    main()
