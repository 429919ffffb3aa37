"""The two epoch modes of the Numba backend side by side: "split" (each product split between
Numba's threads) and "whole" (every kernel on one thread, every product one BLAS call on BLAS's
threads), forced with ``MINIGD_EPOCH_MODE``, against what minigd chooses by measurement
("auto") and the NumPy backend, in one process. "split-own-forward" is "split" with
``MINIGD_FORWARD_BLAS=0``: training's forward product on minigd's own loops instead of chosen
by measurement (own loops or BLAS), the default before stop 18.

For each shape, optimizer and batch size, the five are run in turn, ``--rounds`` times over
(interleaved, so that a slow minute hits all of them), each a ``fit`` of ``--epochs`` epochs
whose first epoch is dropped as warm-up; the number is the median of the remaining epochs.
The JSON records the CPU model and vector ISA (compare ISAs with ``NUMBA_CPU_NAME=haswell
OPENBLAS_CORETYPE=Haswell``) and the mode minigd chose for each row.

    python benchmarks/epoch_modes.py                      # 784-128-10 and 784-512-512-10
    python benchmarks/epoch_modes.py --quick              # a smoke run on tiny sizes
"""

import argparse
import os
import platform
import statistics
import time

import numpy as np
from _results import save_results

HERE = os.path.dirname(os.path.abspath(__file__))
MODES = ("split", "split-own-forward", "whole", "auto", "numpy")


def build(shape, optimizer):
    import minigd as mg

    sizes = [int(n) for n in shape.split("-")]
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [mg.Dense(n_in, n_out), mg.ReLU()]
    model = mg.Sequential(*layers[:-1], seed=0)
    if optimizer == "sgd":
        return model, mg.SGD(model.parameters(), lr=0.01)
    return model, mg.Adam(model.parameters(), lr=1e-3)


def epochs_seconds(X, y, shape, optimizer, batch, mode, epochs):
    import minigd as mg
    from minigd.kernels import autotune

    os.environ[autotune.MODE_ENV] = {"auto": "auto", "numpy": "auto", "whole": "whole"}.get(
        mode, "split"
    )
    os.environ[autotune.FORWARD_ENV] = "0" if mode == "split-own-forward" else "1"
    model, opt = build(shape, optimizer)
    with mg.use_backend("numpy" if mode == "numpy" else "numba"):
        history = mg.fit(model, X, y, optimizer=opt, epochs=epochs, batch_size=batch, verbose=0)
    return history.epochs["seconds"][1:]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=60000)
    p.add_argument("--shapes", default="784-128-10,784-512-512-10")
    p.add_argument("--batches", default="64,256,1024")
    p.add_argument("--optimizers", default="sgd,adam")
    p.add_argument("--epochs", type=int, default=4, help="per fit; the first is a warm-up")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.rows, args.shapes, args.batches = 512, "784-16-10", "64"
        args.optimizers, args.epochs, args.rounds = "sgd", 2, 1

    from minigd import fused
    from minigd.kernels import autotune, jit_config

    previous = {env: os.environ.get(env) for env in (autotune.MODE_ENV, autotune.FORWARD_ENV)}
    rng = np.random.default_rng(0)
    X = rng.random((args.rows, 784), dtype=np.float32)
    y = rng.integers(0, 10, args.rows)
    rows = []
    started = time.perf_counter()
    try:
        for shape in args.shapes.split(","):
            for optimizer in args.optimizers.split(","):
                for batch in [int(b) for b in args.batches.split(",")]:
                    times = {mode: [] for mode in MODES}
                    for _ in range(args.rounds):
                        for mode in MODES:
                            times[mode] += epochs_seconds(
                                X, y, shape, optimizer, batch, mode, args.epochs
                            )
                    os.environ[autotune.MODE_ENV] = "auto"
                    model, opt = build(shape, optimizer)
                    row = {
                        "shape": shape,
                        "optimizer": optimizer,
                        "batch": batch,
                        "chosen": fused.epoch_mode(model, batch, opt),
                        **{mode: statistics.median(times[mode]) for mode in MODES},
                    }
                    row["whole_over_split"] = row["whole"] / row["split"]
                    row["split_over_own_forward"] = row["split"] / row["split-own-forward"]
                    row["auto_over_numpy"] = row["auto"] / row["numpy"]
                    rows.append(row)
                    print(
                        f"{shape} {optimizer} batch {batch}: split {row['split']:.3f} s "
                        f"(own forward {row['split-own-forward']:.3f} s), "
                        f"whole {row['whole']:.3f} s (x{row['whole_over_split']:.2f}), "
                        f"auto {row['auto']:.3f} s (chose {row['chosen']}), "
                        f"NumPy backend {row['numpy']:.3f} s",
                        flush=True,
                    )
    finally:
        for env, value in previous.items():
            if value is None:
                os.environ.pop(env, None)
            else:
                os.environ[env] = value
    results = {
        "config": vars(args),
        "machine": {
            "cpu_model": autotune.cpu_model(),
            "vector_isa": autotune.vector_isa(),
            "llvm_cpu": autotune.llvm_cpu()[0],
            "blas": autotune.blas_library(),
            "threads": jit_config.parallel_parts(),
            "python": platform.python_version(),
        },
        "rows": rows,
        "benchmark_seconds": time.perf_counter() - started,
    }
    print(f"machine: {results['machine']['cpu_model']}, {results['machine']['vector_isa']}")
    save_results(results, args.out, "epoch_modes")


if __name__ == "__main__":
    main()
