"""Run a small stored sweep; used by tests/test_sweep_storage.py's kill-and-resume test.

    python tests/sweep_kill_helper.py DB MARKER OUT_JSON [SLEEP_SECONDS]

Trains 9 cells (3 batch sizes x 3 lrs) of a tiny MLP on synthetic data with the NumPy kernels
(nothing to compile), appending one line to MARKER each time a cell's model is built, sleeping
SLEEP_SECONDS in every build so that the test can kill it mid-sweep; writes the table to
OUT_JSON when the sweep completes.
"""

import sys
import time

import numpy as np

import minigd as mg


class CountingBuilder:
    """Builds the cell's model; records every call in the marker file."""

    def __init__(self, marker, sleep):
        self.marker, self.sleep = marker, sleep

    def __call__(self, seed):
        with open(self.marker, "a") as handle:
            handle.write(f"{seed}\n")
        time.sleep(self.sleep)
        return mg.Sequential(mg.Dense(6, 8), mg.ReLU(), mg.Dense(8, 3), seed=seed)


def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 6)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5)
    return X, y


def main(db, marker, out, sleep=0.0):
    mg.set_backend("numpy")
    X, y = data()
    result = mg.sweep(
        CountingBuilder(marker, float(sleep)),
        X,
        y,
        batch_sizes=[8, 16, 32],
        lrs=[0.05, 0.1, 0.2],
        epochs=2,
        validation_data=(X[:20], y[:20]),
        storage=db if db != "-" else None,
        verbose=1,
    )
    result.to_json(out)


if __name__ == "__main__":
    main(*sys.argv[1:])
