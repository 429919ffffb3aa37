"""Before/after: epoch time of mg.fit (fused path), two source trees, interleaved.

usage: python benchmarks/compare_trees.py BEFORE_TREE AFTER_TREE [rounds]   (trees: checkouts,
e.g. `git worktree add ../before <commit>`)
Each measurement is a fresh subprocess with PYTHONPATH=<tree>: warm-up epoch (compile/cache
load), then the median of 5 timed epochs, for SGD and Adam at batch 16/64/256/1024 on
784-128-10 with 32,000 rows of the bundled MNIST sample (tiled). Trees alternate every round.
"""

import json
import os
import platform
import statistics
import subprocess
import sys

CHILD = r"""
import json, time, numpy as np, minigd as mg
X, y, _, _ = mg.datasets.load_mnist_sample()
X = np.ascontiguousarray(np.tile(X, (4, 1))); y = np.tile(y, 4)
out = {}
for opt in ("sgd", "adam"):
    for b in (16, 64, 256, 1024):
        model = mg.Sequential(mg.Dense(784, 128), mg.ReLU(), mg.Dense(128, 10), seed=0)
        params = model.parameters()
        o = mg.SGD(params, lr=0.05) if opt == "sgd" else mg.Adam(params, lr=1e-3)
        mg.fit(model, X, y, optimizer=o, epochs=1, batch_size=b, seed=0, verbose=0)
        times = []
        for _ in range(5):
            t = time.perf_counter()
            mg.fit(model, X, y, optimizer=o, epochs=1, batch_size=b, seed=0, verbose=0)
            times.append(time.perf_counter() - t)
        out[f"{opt}/{b}"] = sorted(times)[2]
print(json.dumps(out))
"""


def run(tree):
    env = dict(os.environ, PYTHONPATH=tree, MINIGD_WARM_START="0")
    r = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(r.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    before, after = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    res = {"before": [], "after": []}
    for i in range(rounds):
        for name, tree in (
            (("before", before), ("after", after))
            if i % 2 == 0
            else (("after", after), ("before", before))
        ):
            res[name].append(run(tree))
    cpu = next(
        (l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
        platform.processor(),
    )
    flags = open("/proc/cpuinfo").read()
    isa = (
        "AVX-512"
        if "avx512f" in flags and os.environ.get("NUMBA_CPU_NAME") != "haswell"
        else "AVX2"
    )
    print(
        f"CPU: {cpu}; ISA of the compiled code: {isa}; rounds: {rounds}; seconds per epoch "
        "(median of 5 epochs, then median over rounds)"
    )
    print(
        f"{'config':12s} {'before':>8s} {'after':>8s} {'after/before':>12s}  "
        "spread before / after (min-max over rounds)"
    )
    for key in res["before"][0]:
        b = [r[key] for r in res["before"]]
        a = [r[key] for r in res["after"]]
        mb, ma = statistics.median(b), statistics.median(a)
        print(
            f"{key:12s} {mb:8.3f} {ma:8.3f} {ma / mb:12.2f}  "
            f"{min(b):.3f}-{max(b):.3f} / {min(a):.3f}-{max(a):.3f}"
        )
