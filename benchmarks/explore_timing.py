"""Seconds per change of ``mg.explore``: retrain + redraw, for the defaults and the corners.

Runs the explorer outside Jupyter (the widgets work without a front end), first once to
compile the Numba kernels, then sets one widget at a time from Python, as a user would, and
prints the wall time of each change (train, and train + draw).

    python benchmarks/explore_timing.py            # the active backend (MINIGD_BACKEND)
    taskset -c 0,1 python benchmarks/explore_timing.py   # pinned to 2 cores
"""

import statistics
import sys
import time

import minigd as mg

CHANGES = [  # (widget, value), applied in order; each is one retrain
    ("lr", 0.3),
    ("lr", 0.1),
    ("optimizer", "Adam"),
    ("lr", 0.003),
    ("schedule", "cosine"),
    ("schedule", "warmup + cosine"),
    ("schedule", "cyclic"),
    ("optimizer", "SGD"),
    ("lr", 0.1),
    ("schedule", "constant"),
    ("activation", "Tanh"),
    ("activation", "ReLU"),
    ("hidden", 8),
    ("hidden", 32),
    ("batch_size", 8),
    ("batch_size", 128),
    ("batch_size", 32),
    ("epochs", 10),
    ("epochs", 5),
    # corners: the most work the sliders allow
    ("batch_size", 1),
    ("epochs", 20),
    ("hidden", 128),
    ("batch_size", 1024),
]


def main():
    started = time.perf_counter()
    explorer = mg.explore()
    print(
        f"backend {mg.get_backend()}; first run (includes compiling): "
        f"{time.perf_counter() - started:.2f} s"
    )
    explorer.retrain()  # a warm run with the defaults
    rows = []
    for name, value in CHANGES:
        explorer.widgets[name].value = value
        s = explorer.settings
        rows.append((explorer.seconds, explorer.train_seconds))
        print(
            f"{name:>10} = {value!s:<16} batch {s['batch_size']:>4} epochs {s['epochs']:>2} "
            f"hidden {s['hidden']:>3}: {explorer.seconds:.3f} s "
            f"(train {explorer.train_seconds:.3f} s)"
        )
    usual = [total for total, _ in rows[:-4]]
    print(
        f"changes at usual settings: median {statistics.median(usual):.3f} s, "
        f"max {max(usual):.3f} s; corners: {', '.join(f'{t:.2f}' for t, _ in rows[-4:])} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
