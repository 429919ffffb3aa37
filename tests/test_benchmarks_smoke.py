"""The benchmark scripts still run: each with ``--quick`` (tiny sizes) in its own process.

Peers that are not installed (PyTorch, scikit-learn) are skipped by the scripts themselves.
These tests check that the scripts work and write their results, not any timing.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(name, out):
    env = dict(
        os.environ,
        PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        MPLBACKEND="Agg",
    )
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", name), "--quick", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def test_epoch_benchmark_runs(tmp_path):
    stdout = run_script("epoch.py", tmp_path)
    results = json.loads((tmp_path / "epoch.json").read_text())
    assert (tmp_path / "epoch.png").stat().st_size > 0
    assert {(r["optimizer"], r["batch"]) for r in results["rows"]} == {
        ("sgd", 16),
        ("sgd", 256),
        ("adam", 16),
        ("adam", 256),
    }
    for row in results["rows"]:
        assert row["minigd"] > 0 and row["minigd_per_iteration"] > 0 and row["numpy_backend"] > 0
    for peer in ("torch", "sklearn"):
        try:
            __import__(peer)
        except ImportError:
            assert any(peer in note for note in results["notes"])
        else:
            assert all(row[peer] > 0 for row in results["rows"])
    assert "minigd / PyTorch" in stdout


def test_kernels_benchmark_runs(tmp_path):
    run_script("kernels.py", tmp_path)
    results = json.loads((tmp_path / "kernels.json").read_text())
    assert {row["kernel"].split()[0] for row in results["kernels"]} >= {
        "dense_forward",
        "dense_backward",
        "relu_forward",
        "softmax_cross_entropy",
        "sgd_update",
        "adam_update",
    }
    assert all(row["numpy_us"] > 0 and row["numba_us"] > 0 for row in results["kernels"])
    assert set(results["error_model_us"]) == {"python", "numpy"}


def test_scaling_benchmark_runs(tmp_path):
    stdout = run_script("scaling.py", tmp_path)
    results = json.loads((tmp_path / "scaling.json").read_text())
    assert [r["memmap"] for r in results["rows"]] == [False, True]
    assert all(r["seconds"] > 0 and r["peak_rss_mb"] > 0 for r in results["rows"])
    assert [r["batch"] for r in results["batch"]] == [16, 256]
    assert [r["hidden"] for r in results["hidden"]] == [32, 64]
    assert "memmap" in stdout


pytestmark = pytest.mark.skipif(
    not os.path.isdir(os.path.join(ROOT, "benchmarks")),
    reason="benchmarks/ is not part of this installation",
)


def test_epoch_modes_benchmark_runs(tmp_path):
    stdout = run_script("epoch_modes.py", tmp_path)
    results = json.loads((tmp_path / "epoch_modes.json").read_text())
    (row,) = results["rows"]
    assert row["chosen"] in ("split", "whole")
    modes = ("split", "split-own-forward", "whole", "auto", "numpy")
    assert all(row[mode] > 0 for mode in modes)
    assert row["split_over_own_forward"] == row["split"] / row["split-own-forward"]
    assert results["machine"]["vector_isa"] and "chose" in stdout and "own forward" in stdout
