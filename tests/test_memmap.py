"""Data larger than memory: X as an np.memmap (or any integer-indexable array-like) is gathered
one batch at a time, converted per batch, and never materialised."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minigd as mg

ROOT = Path(__file__).resolve().parents[1]
MiB = 1 << 20


class RowsOnly:
    """An array-like that, like h5py, only reads rows at increasing integer indices."""

    def __init__(self, array):
        self._array = array
        self.shape, self.dtype = array.shape, array.dtype
        self.reads = 0

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self._array[index]
        index = np.asarray(index)
        if index.ndim != 1 or np.any(np.diff(index) <= 0):
            raise TypeError("indices must be increasing")
        self.reads += 1
        return self._array[index]


def _pixels(n=300, features=16, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, size=(n, features), dtype=np.uint8)
    y = (X[:, 0] > 127).astype(np.int64) + 2 * (X[:, 1] > 127)
    return X, y


def test_batches_from_a_uint8_memmap_and_a_rows_only_array_like_match_memory(tmp_path):
    X, y = _pixels()
    mm = np.memmap(tmp_path / "X.u8", dtype=np.uint8, mode="w+", shape=X.shape)
    mm[:] = X
    mm.flush()
    mm = np.memmap(tmp_path / "X.u8", dtype=np.uint8, mode="r", shape=X.shape)
    rows = RowsOnly(X)
    iterators = [
        mg.BatchIterator(source, y, batch_size=64, seed=1, dtype=dtype)
        for source in (X.astype(np.float64), mm, rows)
        for dtype in (np.float32,)
    ]
    for epoch in (0, 1):
        batches = [[(xb.copy(), yb.copy()) for xb, yb in it.batches(epoch)] for it in iterators]
        for other in batches[1:]:
            for (x1, y1), (x2, y2) in zip(batches[0], other):
                assert x2.dtype == np.float32 and x1.tobytes() == x2.tobytes()
                assert np.array_equal(y1, y2)
    assert rows.reads == 2 * len(iterators[2])


def test_fit_on_a_uint8_memmap_equals_fit_on_the_converted_array(tmp_path):
    X, y = _pixels()
    mm = np.memmap(tmp_path / "X.u8", dtype=np.uint8, mode="w+", shape=X.shape)
    mm[:] = X
    mm.flush()
    mm = np.memmap(tmp_path / "X.u8", dtype=np.uint8, mode="r", shape=X.shape)
    results = []
    for source in (mm, X.astype(np.float32), RowsOnly(X)):
        model = mg.Sequential(mg.Dense(16, 8), mg.ReLU(), mg.Dense(8, 4), seed=0)
        opt = mg.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        history = mg.fit(
            model, source, y, optimizer=opt, epochs=2, batch_size=32, seed=3, verbose=0
        )
        results.append((model.flat_values.tobytes(), history.iterations["loss"]))
    assert results[0] == results[1] == results[2]
    assert isinstance(mm, np.memmap) and mm.dtype == np.uint8  # used in place, not replaced


_CHILD = r"""
import json, resource, sys
limit = int(sys.argv[4])
resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
import numpy as np
import minigd as mg

def status():
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, value = line.split(":", 1)
            fields[key] = value.strip()
    return {k: int(fields[k].split()[0]) for k in ("RssAnon", "VmHWM", "VmData")}

class PeakMemory(mg.Callback):
    def __init__(self):
        self.anon = self.data = 0
    def on_iteration_end(self, state):
        s = status()
        self.anon, self.data = max(self.anon, s["RssAnon"]), max(self.data, s["VmData"])

n, features = int(sys.argv[2]), int(sys.argv[3])
X = np.memmap(sys.argv[1], dtype=np.uint8, mode="r", shape=(n, features))
y = np.load(sys.argv[1] + ".labels.npy")
try:
    np.ones(limit // 8)
    raise SystemExit("RLIMIT_DATA is not enforced here")
except MemoryError:
    pass
before = status()
model = mg.Sequential(mg.Dense(features, 16), mg.ReLU(), mg.Dense(16, 4), seed=0)
peak = PeakMemory()
history = mg.fit(model, X, y, optimizer=mg.Adam(model.parameters(), lr=1e-3), epochs=1,
                 batch_size=512, seed=0, verbose=0, callbacks=[peak])
accuracy = mg.accuracy(model, X[:8192], y[:8192])
print(json.dumps({"before": before, "peak_anon_kb": peak.anon, "peak_vmdata_kb": peak.data,
                  "vm_hwm_kb": status()["VmHWM"], "iterations": history.n_iterations,
                  "first_loss": history.iterations["loss"][0],
                  "last_loss": history.epochs["train_loss"][-1], "accuracy": accuracy}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc and RLIMIT_DATA")
def test_training_on_a_memmap_several_times_larger_than_the_allowed_memory(tmp_path):
    path = tmp_path / "pixels.u8"
    try:
        _train_on_a_large_memmap(path)
    finally:  # pytest keeps recent tmp_path folders; do not leave 512 MiB behind
        path.unlink(missing_ok=True)


def _train_on_a_large_memmap(path):
    n, features = 131072, 4096  # 512 MiB of uint8 pixels
    limit = 160 * MiB  # the child may allocate at most this (RLIMIT_DATA)
    X = np.memmap(path, dtype=np.uint8, mode="w+", shape=(n, features))
    rng = np.random.default_rng(0)
    y = np.empty(n, dtype=np.int64)
    chunk = 8192
    for start in range(0, n, chunk):
        block = rng.integers(0, 256, size=(chunk, features), dtype=np.uint8)
        X[start : start + chunk] = block
        y[start : start + chunk] = (block[:, 0] > 127) + 2 * (block[:, 1] > 127)
    X.flush()
    del X
    np.save(str(path) + ".labels.npy", y)
    file_size = path.stat().st_size
    assert file_size >= 3 * limit

    env = dict(
        os.environ,
        MINIGD_BACKEND="numpy",
        OPENBLAS_NUM_THREADS="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    )
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), str(n), str(features), str(limit)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"\nmemmap {file_size / MiB:.0f} MiB, RLIMIT_DATA {limit / MiB:.0f} MiB: {report}")
    assert report["iterations"] == n // 512
    assert report["last_loss"] < report["first_loss"] / 5 and 0 <= report["accuracy"] <= 1
    assert report["peak_vmdata_kb"] * 1024 <= limit < file_size / 3
    # Training added about one batch (512 x 4096 float32 = 8 MiB, plus its uint8 staging copy)
    # and the model's buffers to the private memory; the dataset stayed in the page cache.
    growth_kb = report["peak_anon_kb"] - report["before"]["RssAnon"]
    assert growth_kb * 1024 < 48 * MiB
    assert report["peak_anon_kb"] * 1024 < file_size / 4
