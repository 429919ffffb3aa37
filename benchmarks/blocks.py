"""What Dropout and BatchNorm cost: epoch time of 784-128-10 (ReLU, SGD momentum 0.9, batch 64)
on the bundled MNIST sample, plain on the fused whole-epoch path and on the per-iteration path,
and with BatchNorm, Dropout(0.2) and both (which train on the per-iteration path: they have no
fused kernel).

    python benchmarks/blocks.py [--epochs 3] [--batch-size 64] [--quick] [--out DIR]

Prints one line per network (the fastest epoch, in seconds, the first epoch not counted: it
compiles; the minimum is the least disturbed by other work on the machine)
and writes DIR/blocks.json (default benchmarks/results).
"""

import argparse
import os
import time

from _results import save_results

import minigd as mg
from minigd import fused

NETWORKS = {
    "784-128-10 fused": ([], True),
    "784-128-10 per-iteration": ([], False),
    "784-128(-BN)-10": (["bn"], True),
    "784-128(-Dropout)-10": (["dropout"], True),
    "784-128(-BN)(-Dropout)-10": (["bn", "dropout"], True),
}


def build(blocks, hidden):
    layers = [mg.Dense(784, hidden)]
    if "bn" in blocks:
        layers.append(mg.BatchNorm(hidden))
    layers.append(mg.ReLU())
    if "dropout" in blocks:
        layers.append(mg.Dropout(0.2))
    return mg.Sequential(*layers, mg.Dense(hidden, 10), seed=0)


class _EpochTimer(mg.Callback):
    def on_train_begin(self, state):
        self.times = []

    def on_epoch_begin(self, state):
        self.start = time.perf_counter()

    def on_epoch_end(self, state):
        self.times.append(time.perf_counter() - self.start)


def epoch_seconds(X, y, blocks, allow_fused, epochs, batch_size, hidden):
    model = build(blocks, hidden)
    timer = _EpochTimer()
    previous = fused.ENABLED
    fused.ENABLED = allow_fused
    try:
        mg.fit(
            model,
            X,
            y,
            optimizer=mg.SGD(model.parameters(), lr=0.05, momentum=0.9),
            epochs=epochs,
            batch_size=batch_size,
            seed=0,
            verbose=0,
            callbacks=[timer],
        )
    finally:
        fused.ENABLED = previous
    return min(timer.times[1:] or timer.times)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--quick", action="store_true", help="1000 rows, 2 epochs (a smoke run)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = p.parse_args()
    X, y, _, _ = mg.datasets.load_mnist_sample()
    epochs = args.epochs
    if args.quick:
        X, y, epochs = X[:1000], y[:1000], 2
    rows = []
    print(
        f"backend {mg.get_backend()}; {len(X)} rows, batch {args.batch_size}, "
        f"fastest of epochs 2..{epochs}, s/epoch"
    )
    for name, (blocks, allow_fused) in NETWORKS.items():
        seconds = epoch_seconds(X, y, blocks, allow_fused, epochs, args.batch_size, 128)
        path = (
            "fused"
            if allow_fused and not blocks and mg.get_backend() == "numba"
            else "per-iteration"
        )
        rows.append({"network": name, "path": path, "seconds_per_epoch": seconds})
        print(f"  {name:28s} {path:14s} {seconds:8.3f} s/epoch")
    save_results(
        {
            "backend": mg.get_backend(),
            "rows_of_X": len(X),
            "batch_size": args.batch_size,
            "epochs": epochs,
            "rows": rows,
        },
        args.out,
        "blocks",
    )


if __name__ == "__main__":
    main()
