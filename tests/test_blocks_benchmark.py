"""benchmarks/blocks.py runs (--quick) and writes one row per network; no timing is checked."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_blocks_benchmark_runs(tmp_path):
    env = dict(
        os.environ,
        PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        MPLBACKEND="Agg",
    )
    done = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "benchmarks", "blocks.py"),
            "--quick",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = json.loads((tmp_path / "blocks.json").read_text())["rows"]
    assert [r["network"] for r in rows] == [
        "784-128-10 fused",
        "784-128-10 per-iteration",
        "784-128(-BN)-10",
        "784-128(-Dropout)-10",
        "784-128(-BN)(-Dropout)-10",
    ]
    assert all(r["seconds_per_epoch"] > 0 for r in rows)
    assert all(r["path"] == "per-iteration" for r in rows[1:])
