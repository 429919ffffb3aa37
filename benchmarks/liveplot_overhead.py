"""What ``mg.LivePlot`` costs: the same training with and without it, inside a Jupyter kernel.

LivePlot draws only in a kernel, so this script starts one (nbclient, as the notebook tests
do) and times, in it, on the bundled 8000-image sample (784-128-10 ReLU, SGD lr 0.1, seed 0):

- NumPy backend: no callback, and ``LivePlot()`` (defaults: every="auto" = 10 updates here,
  min_interval=1 s, max_overhead=0.03);
- Numba backend: no callback (the fused epoch), ``LivePlot()`` (every="auto" = epoch ends,
  fused epoch kept), a do-nothing per-update callback (the per-iteration path alone) and
  ``LivePlot(every=10)`` (per-iteration path + redraws).

Each row is the best of ``--repeats`` runs (the machine may be shared). It prints the seconds,
the overhead against the row's baseline, LivePlot's own redraws and drawing seconds (which
include the one-time figure set-up, the first of them also matplotlib's import), and the
median time of one warm redraw.

    python benchmarks/liveplot_overhead.py [--epochs 4] [--batch 64] [--repeats 2]
"""

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

KERNEL_CODE = r"""
import json, time, warnings
import minigd as mg

X, y, X_test, y_test = mg.datasets.load_mnist_sample()
X_val, y_val = X[7000:], y[7000:]
X, y = X[:7000], y[:7000]

class Nothing(mg.Callback):
    def on_iteration_end(self, state):
        pass

def run(backend, make_callback):
    best, extra = None, {}
    for _ in range(REPEATS):
        with mg.use_backend(backend):
            model = mg.Sequential(mg.Dense(784, 128), mg.ReLU(), mg.Dense(128, 10), seed=0)
            opt = mg.SGD(model.parameters(), lr=0.1)
            cb = make_callback()
            started = time.perf_counter()
            history = mg.fit(model, X, y, optimizer=opt, epochs=EPOCHS, batch_size=BATCH, seed=0,
                   validation_data=(X_val, y_val), callbacks=[] if cb is None else [cb],
                   verbose=0)
            seconds = time.perf_counter() - started
        LAST[:] = [cb, history]
        if best is None or seconds < best:
            best = seconds
            if isinstance(cb, mg.LivePlot):
                extra = {"redraws": cb.redraws, "draw_seconds": cb.draw_seconds}
    return dict(seconds=best, **extra)

LAST = []
run("numba", lambda: None)   # compile outside the timings
rows = {
    ("numpy", "none"): run("numpy", lambda: None),
    ("numpy", "LivePlot()"): run("numpy", lambda: mg.LivePlot()),
    ("numba", "none (fused epoch)"): run("numba", lambda: None),
    ("numba", "LivePlot()"): run("numba", lambda: mg.LivePlot()),
    ("numba", "do-nothing per-update callback"): run("numba", Nothing),
    ("numba", "LivePlot(every=10)"): run("numba", lambda: mg.LivePlot(every=10)),
}
plot, history = LAST
costs = []
for _ in range(8):   # one warm redraw of the full history (render + display update)
    started = time.perf_counter()
    plot.redraw(history)
    costs.append(time.perf_counter() - started)
print("RESULT" + json.dumps({"rows": [[b, c, r] for (b, c), r in rows.items()],
                             "redraw": sorted(costs)[len(costs) // 2],
                             "updates": history.n_iterations}))
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    import nbformat
    from nbclient import NotebookClient

    code = f"EPOCHS, BATCH, REPEATS = {args.epochs}, {args.batch}, {args.repeats}\n" + KERNEL_CODE
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    env_path = ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = env_path
    NotebookClient(nb, timeout=3600, kernel_name="python3").execute()
    text = "".join(o.get("text", "") for o in nb.cells[0].outputs if o.get("name") == "stdout")
    result = json.loads(text.split("RESULT", 1)[1])
    rows = result["rows"]
    print(
        f"bundled sample, 7000 train / 1000 validation, 784-128-10, SGD, batch {args.batch}, "
        f"{args.epochs} epochs, best of {args.repeats}, in a Jupyter kernel"
    )
    baseline = {}
    for backend, case, r in rows:
        baseline.setdefault(backend, r["seconds"])
        overhead = 100 * (r["seconds"] / baseline[backend] - 1)
        drawing = ""
        if "redraws" in r:
            drawing = (
                f"  {r['redraws']} redraws, {r['draw_seconds']:.2f} s drawing "
                f"({100 * r['draw_seconds'] / r['seconds']:.1f}% of the run)"
            )
        print(f"{backend:6} {case:32} {r['seconds']:7.2f} s  {overhead:+6.1f}%{drawing}")
    print(
        f"one redraw of a {result['updates']}-update history (median of 8, warm): "
        f"{result['redraw']:.3f} s; with max_overhead=0.03 the next waits "
        f"{result['redraw'] / 0.03:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
