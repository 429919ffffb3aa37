"""What checkpointing costs: one save/load of a 784-128-10 model with its history, and fit with
checkpoint=None / every epoch / every N updates on the bundled MNIST sample.

    python benchmarks/checkpoint_cost.py [--epochs 3] [--every 25]
"""

import argparse
import os
import tempfile
import time

import minigd as mg


def build(seed=0):
    model = mg.Sequential(mg.Dense(784, 128), mg.ReLU(), mg.Dense(128, 10), seed=seed)
    return model, mg.SGD(model.parameters(), lr=0.1, momentum=0.9)


def timed_fit(X, y, epochs, **args):
    model, opt = build()
    start = time.perf_counter()
    history = mg.fit(
        model, X, y, optimizer=opt, epochs=epochs, batch_size=64, seed=0, verbose=0, **args
    )
    return time.perf_counter() - start, model, opt, history


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--every", type=int, default=25)
    args = p.parse_args()
    X, y, _, _ = mg.datasets.load_mnist_sample()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "run.npz")
        base, model, opt, history = timed_fit(X, y, args.epochs)
        start = time.perf_counter()
        for _ in range(20):
            mg.save_checkpoint(path, model, opt, history=history)
        save = (time.perf_counter() - start) / 20
        start = time.perf_counter()
        for _ in range(20):
            mg.load_checkpoint(path)
        load = (time.perf_counter() - start) / 20
        print(
            f"backend {mg.get_backend()}; checkpoint of {model.num_parameters():,} parameters "
            f"+ momentum + {history.n_iterations} history rows: "
            f"{os.path.getsize(path) / 1e6:.2f} MB, save {1e3 * save:.1f} ms (incl. fsync), "
            f"load+verify {1e3 * load:.1f} ms"
        )
        epoch_end, *_ = timed_fit(X, y, args.epochs, checkpoint=path)
        os.unlink(path)
        every, *_ = timed_fit(X, y, args.epochs, checkpoint=path, checkpoint_every=args.every)
        print(
            f"fit {args.epochs} epochs x {len(X) // 64 + 1} iterations: no checkpoint "
            f"{base:.2f} s, every epoch {epoch_end:.2f} s, every {args.every} updates "
            f"{every:.2f} s"
        )


if __name__ == "__main__":
    main()
