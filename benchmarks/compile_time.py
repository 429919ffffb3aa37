"""Numba compile time per kernel, and the cold start of ``minigd train``, on this machine.

Each measurement runs in a fresh process with an empty ``MINIGD_CACHE_DIR``, as the first run
after ``pip install`` does:

- per kernel: one default ``minigd train`` run (784-128-10 ReLU, SGD, float32, the bundled
  sample data) with Numba's ``numba:compile`` events recorded; each kernel's *own* time is its
  compile time less the time spent compiling the kernels it calls (compiled first, nested);
- cold start: the wall time of ``minigd train --epochs 1`` from the command to its "epoch 1/1"
  line: with an empty cache and the warm start (training starts on NumPy while a background
  process compiles), with the cache that process filled, and with an empty cache compiling
  first (``MINIGD_WARM_START=0``).

    python benchmarks/compile_time.py            # per-kernel table + cold start
    python benchmarks/compile_time.py --quick    # the per-kernel table only

Results go to ``benchmarks/results/compile_time.json``.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from _results import save_results

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

RECORD = r"""
import json, sys, time
from numba.core import event
records = []
class Listener(event.Listener):
    def on_start(self, ev):
        records.append(["start", str(ev.data["dispatcher"].py_func.__module__) + "."
                        + ev.data["dispatcher"].py_func.__qualname__, time.perf_counter()])
    def on_end(self, ev):
        records.append(["end", None, time.perf_counter()])
event.register("numba:compile", Listener())
from minigd.cli import main
started = time.perf_counter()
code = main(sys.argv[1:])
total = time.perf_counter() - started
print("RECORDS " + json.dumps({"records": records, "total": total}))
sys.exit(code)
"""


def own_times(records):
    """{kernel: [inclusive, own] seconds} from nested start/end compile events."""
    stack, times = [], {}
    for kind, name, t in records:
        if kind == "start":
            stack.append([name, t, 0.0])
        else:
            name, t0, nested = stack.pop()
            inclusive = t - t0
            entry = times.setdefault(name, [0.0, 0.0])
            entry[0] += inclusive
            entry[1] += inclusive - nested
            if stack:
                stack[-1][2] += inclusive
    return times


def train_args(out, epochs=1, extra=()):
    return ["train", "--epochs", str(epochs), "--quiet", "--out", out, *extra]


def run(args, cache, script=None):
    env = dict(
        os.environ,
        MINIGD_CACHE_DIR=cache,
        MINIGD_WARM_START="0",
        PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    command = [
        sys.executable,
        "-c",
        script or "import sys; from minigd.cli import main; sys.exit(main(sys.argv[1:]))",
        *args,
    ]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return seconds, done.stdout


def per_kernel(extra=()):
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
        seconds, stdout = run(train_args(os.path.join(out, "run"), extra=extra), cache, RECORD)
    data = json.loads(stdout.split("RECORDS ", 1)[1])
    times = own_times(data["records"])
    rows = [
        {"kernel": name, "own_s": own, "inclusive_s": inclusive}
        for name, (inclusive, own) in sorted(times.items(), key=lambda kv: -kv[1][1])
    ]
    return {
        "wall_s": seconds,
        "main_s": data["total"],
        "compile_s": sum(r["own_s"] for r in rows),
        "kernels": rows,
    }


def first_epoch(args, cache, env_extra=None):
    """Seconds from starting ``minigd train`` to its "epoch 1/" line, and to its exit."""
    env = dict(
        os.environ,
        MINIGD_CACHE_DIR=cache,
        **(env_extra or {}),
        PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    env.pop("MINIGD_BACKEND", None)
    command = [sys.executable, "-m", "minigd", *args]
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    first = None
    for line in process.stdout:
        if first is None and line.startswith("epoch 1/"):
            first = time.perf_counter() - started
    if process.wait() != 0:
        raise RuntimeError(f"{' '.join(command)} failed")
    return {"to_first_epoch_s": first, "to_exit_s": time.perf_counter() - started}


def wait_for_kernels(cache, timeout=900):
    """Wait until the background compile of a warm start has filled ``cache``."""
    env = dict(
        os.environ,
        MINIGD_CACHE_DIR=cache,
        PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    probe = "from minigd.kernels import jit; print(jit.needs_compilation())"
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        out = subprocess.run(
            [sys.executable, "-c", probe], env=env, capture_output=True, text=True
        ).stdout.strip()
        if out == "False":
            return time.perf_counter() - started
        time.sleep(2)
    return None


def cold_start(extra=()):
    """``minigd train --epochs 1``, command to the first epoch done: with an empty cache and
    the warm start (default), with an empty cache compiling first (MINIGD_WARM_START=0), and
    with the cache filled."""
    results = {}
    with tempfile.TemporaryDirectory() as out:
        with tempfile.TemporaryDirectory() as cache:
            results["empty cache, warm start"] = first_epoch(
                ["train", "--epochs", "1", "--out", out + "/a", *extra], cache
            )
            results["background compile done after_s"] = wait_for_kernels(cache)
            results["cached"] = first_epoch(
                ["train", "--epochs", "1", "--out", out + "/b", *extra], cache
            )
        with tempfile.TemporaryDirectory() as cache:
            results["empty cache, compile first"] = first_epoch(
                ["train", "--epochs", "1", "--out", out + "/c", *extra],
                cache,
                {"MINIGD_WARM_START": "0"},
            )
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="only the per-kernel table")
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    p.add_argument(
        "--train-args", default="", help="extra `minigd train` flags, e.g. '--optimizer adam'"
    )
    args = p.parse_args(argv)
    extra = args.train_args.split()
    kernels = per_kernel(extra)
    print(
        f"minigd train --epochs 1 {args.train_args} with an empty cache: "
        f"{kernels['wall_s']:.1f} s in all, {kernels['compile_s']:.1f} s compiling"
    )
    print("| kernel | own compile s | with callees s |\n|---|---|---|")
    for row in kernels["kernels"]:
        print(f"| {row['kernel']} | {row['own_s']:.2f} | {row['inclusive_s']:.2f} |")
    results = {
        "train_args": extra,
        "per_kernel": kernels,
        "cpus": os.cpu_count(),
        "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    if not args.quick:
        results["cold_start"] = cold_start(extra)
        for label, value in results["cold_start"].items():
            if isinstance(value, dict):
                print(
                    f"minigd train --epochs 1, {label}: first epoch done after "
                    f"{value['to_first_epoch_s']:.1f} s, exit after {value['to_exit_s']:.1f} s"
                )
            else:
                print(f"{label}: {value}")
    save_results(results, args.out, "compile_time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
