"""How one epoch of minigd scales: with the number of rows N, the batch size, the hidden width.

- against N (10k .. 1M rows, 784 float32 features, batch 64, SGD): in-memory arrays up to
  100k rows and an ``np.memmap`` file beyond (1M rows = 3.1 GB on disk). Each N runs in its
  own process, which reports its peak resident memory (``ru_maxrss``) and its anonymous
  memory (``RssAnon``, what the process itself allocated) after training. Cost grows
  linearly in N; the memory minigd allocates does not grow with N beyond the data itself and
  the epoch's permutation (8 bytes per row): batches are gathered into reused buffers and
  the dataset is never copied. File-backed pages of a memmap count in ``ru_maxrss`` but are
  page cache the kernel can drop.
- against the batch size (8 .. 4096) at N = 60000, hidden 128;
- against the hidden width (32 .. 1024) at N = 60000, batch 64.

    python benchmarks/scaling.py            # a few minutes
    python benchmarks/scaling.py --quick    # smoke run
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from _results import save_figure, save_results

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
IN_MEMORY_LIMIT = 100_000

RUNS = """
import json, resource, sys
import numpy as np
sys.path.insert(0, {root!r})
import minigd as mg
rows, path, epochs = {rows}, {path!r}, {epochs}
if path:
    X = np.memmap(path, dtype=np.float32, mode="r", shape=(rows, 784))
else:
    X = np.random.default_rng(0).random((rows, 784), dtype=np.float32)
y = np.random.default_rng(1).integers(0, 10, rows)
results = []
for batch, hidden in {configs!r}:
    model = mg.Sequential(mg.Dense(784, hidden), mg.ReLU(), mg.Dense(hidden, 10), seed=0)
    history = mg.fit(model, X, y, optimizer=mg.SGD(model.parameters(), lr=0.01),
                     epochs=epochs, batch_size=batch, seed=0, verbose=0)
    anon = None
    if sys.platform.startswith("linux"):
        anon = next(int(line.split()[1]) for line in open("/proc/self/status")
                    if line.startswith("RssAnon")) / 1024
    results.append({{"batch": batch, "hidden": hidden,
                     "seconds": min(history.epochs["seconds"][1:] or history.epochs["seconds"]),
                     "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                     "rss_anon_mb": anon}})
print(json.dumps(results))
"""
# each measurement is the fastest epoch after the first (which loads the cached kernels)


def runs(rows, configs, path="", epochs=2):
    """Train once per (batch, hidden) in ``configs`` in one fresh process; its measurements."""
    code = RUNS.format(root=ROOT, rows=rows, path=path, epochs=epochs, configs=list(configs))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_memmap(path, rows, chunk=65536):
    """A (rows, 784) float32 memmap filled chunk by chunk (never the whole array in memory)."""
    X = np.memmap(path, dtype=np.float32, mode="w+", shape=(rows, 784))
    rng = np.random.default_rng(0)
    for start in range(0, rows, chunk):
        stop = min(rows, start + chunk)
        X[start:stop] = rng.random((stop - start, 784), dtype=np.float32)
    X.flush()
    del X


def against_rows(sizes, tmp):
    results = []
    for rows in sizes:
        path = ""
        if rows > IN_MEMORY_LIMIT:
            path = os.path.join(tmp, f"X_{rows}.f32")
            write_memmap(path, rows)
        run = runs(rows, [(64, 128)], path=path, epochs=3)[0]
        run.update(rows=rows, memmap=bool(path), us_per_row=1e6 * run["seconds"] / rows)
        add_memory_without_data(run)
        results.append(run)
        print(
            f"  N {rows:>9,} {'memmap' if path else 'in RAM':7s} {run['seconds']:8.3f} s/epoch "
            f"{run['us_per_row']:6.2f} us/row   peak RSS {run['peak_rss_mb']:7.0f} MB   "
            f"RssAnon {run['rss_anon_mb'] or 0:6.0f} MB "
            f"({run['anon_without_data_mb'] or 0:4.0f} MB "
            f"without an in-RAM dataset)",
            flush=True,
        )
        if path:
            os.remove(path)
    return results


def add_memory_without_data(run):
    """RssAnon less the dataset when it is an in-memory array: what training itself holds."""
    data_mb = 0 if run["memmap"] else run["rows"] * 784 * 4 / 2**20
    run["anon_without_data_mb"] = (
        None if run["rss_anon_mb"] is None else run["rss_anon_mb"] - data_mb
    )


def against(name, values, rows, **fixed):
    """Epoch time with ``name`` (batch or hidden) set to each of ``values``, in one process."""
    configs = [(fixed.get("batch", 64), fixed.get("hidden", 128)) for _ in values]
    configs = [(v, h) if name == "batch" else (b, v) for v, (b, h) in zip(values, configs)]
    results = runs(rows, configs, epochs=3)
    for run in results:
        print(f"  {name} {run[name]:5d}: {run['seconds']:7.3f} s/epoch", flush=True)
    return results


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    rows = results["rows"]
    axes[0].loglog([r["rows"] for r in rows], [r["seconds"] for r in rows], "o-", label="epoch")
    ax2 = axes[0].twinx()
    ax2.semilogx(
        [r["rows"] for r in rows],
        [r["anon_without_data_mb"] or 0 for r in rows],
        "s--",
        color="gray",
        label="memory",
    )
    ax2.set_ylim(0, 2 * max(r["anon_without_data_mb"] or 0 for r in rows))
    ax2.set_ylabel("anonymous memory, in-RAM data excluded (MB)", color="gray")
    axes[0].set(
        xlabel="rows N (memmap beyond 100k)",
        ylabel="seconds per epoch",
        title="epoch time against N (batch 64)",
    )
    for ax, key, title in (
        (axes[1], "batch", "against batch size (N = 60k)"),
        (axes[2], "hidden", "against hidden width (N = 60k, batch 64)"),
    ):
        ax.loglog([r[key] for r in results[key]], [r["seconds"] for r in results[key]], "o-")
        ax.set(xlabel=key, ylabel="seconds per epoch", title=title)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    args = p.parse_args(argv)
    if args.quick:
        sizes, batches, widths, rows = (1000, 3000), (16, 256), (32, 64), 2000
        global IN_MEMORY_LIMIT
        IN_MEMORY_LIMIT = 2000  # exercise the memmap path on a tiny file
    else:
        sizes = (10_000, 30_000, 100_000, 300_000, 1_000_000)
        batches, widths, rows = (8, 16, 64, 256, 1024, 4096), (32, 128, 512, 1024), 60_000
    with tempfile.TemporaryDirectory(dir=args.out if os.path.isdir(args.out) else None) as tmp:
        print("epoch time and memory against N")
        results = {"rows": against_rows(sizes, tmp)}
    print("against batch size")
    results["batch"] = against("batch", batches, rows)
    print("against hidden width")
    results["hidden"] = against("hidden", widths, rows)
    save_results(results, args.out, "scaling", plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
