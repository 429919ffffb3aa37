"""The benchmark scripts still run: each with ``--quick`` (tiny sizes) in its own process.

Peers that are not installed (PyTorch, scikit-learn) are skipped by the scripts themselves.
These tests check that the scripts work and write their results, not any timing.
"""

import json
import os
import subprocess
import sys

import numpy as np
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


def test_layouts_benchmark_runs(tmp_path):
    stdout = run_script("layouts.py", tmp_path)
    (path,) = tmp_path.glob("layouts-*.json")
    results = json.loads(path.read_text())
    (row,) = results["rows"]
    assert row["layer"] == [64, 32] and row["batch"] == 16
    assert len(row["gflops"]) == 12 and all(v > 0 for v in row["gflops"].values())
    summary = row["summary"]  # not a first layer: the input gradient counts
    assert summary["products"] == ["forward", "weight_grad", "input_grad"]
    assert summary["natural_over_kernel"] == summary["natural_us"] / summary["kernel_us"]
    assert results["machine"]["vector_isa"] and "natural" in stdout


def test_epoch_rounds_combine_cell_by_cell():
    """--rounds: each column the median over the rounds, each ratio the median of the rounds'
    own ratios (a round without a peer's time is left out of that ratio), the floor share at
    the best peak."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import epoch

    config = (epoch.MAIN_SHAPE, "sgd", 64)

    def cells(minigd, torch, numpy_backend, peak, blas_products):
        cell = dict.fromkeys(epoch.ROUND_KEYS)
        cell.update(
            minigd=minigd,
            torch=torch,
            numpy_backend=numpy_backend,
            peak_gflops=peak,
            blas_products_s=blas_products,
        )
        return {config: cell}

    rounds = [
        (cells(1.0, 2.0, 3.0, 100.0, 0.5), {"peak_gflops": 100.0}),
        (cells(3.0, 2.0, 3.0, 50.0, 1.0), {"peak_gflops": 200.0}),
        (cells(2.0, None, 8.0, 300.0, None), {"peak_gflops": 150.0}),
    ]

    class Args:
        rows = 1000

    row = epoch.combine_rounds(Args, config, "own", rounds, {"best_gflops": 300.0})
    assert row["minigd"] == 2.0 and row["torch"] == 2.0 and row["jax"] is None
    assert row["ratio_to_torch"] == 1.0  # median of 0.5 and 1.5; round 3 has no PyTorch time
    assert row["ratio_to_jax"] is None
    assert row["numpy_over_numba"] == 3.0  # median of 3, 1, 4
    flops = epoch.flops_per_epoch(1000)
    # each round's share at the peak measured next to its epoch: flops / 100e9 / 1.0,
    # / 50e9 / 3.0 and / 300e9 / 2.0, the median the middle one; the best peak's share aside
    assert row["fraction_of_peak"] == flops / 50e9 / 3.0
    assert row["fraction_of_best_peak"] == flops / 300e9 / 2.0
    assert row["rounds"]["minigd"] == [1.0, 3.0, 2.0]
    # BLAS alone on the products: each round's share at that round's own peak (flops / 100e9
    # / 0.5 and / 200e9 / 1.0; round 3 has no BLAS time), the median of the two
    assert row["blas_fraction_of_peak"] == pytest.approx(
        (flops / 100e9 / 0.5 + flops / 200e9 / 1.0) / 2
    )
    assert row["share_of_blas_products"] == pytest.approx((0.5 + 1.0 / 3.0) / 2)
    one = epoch.combine_rounds(Args, config, "own", rounds[:1], {"best_gflops": 100.0})
    assert "rounds" not in one and one["ratio_to_torch"] == 0.5


def test_epoch_benchmark_refuses_zero_rounds(capsys):
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import epoch

    for flag in ("--rounds", "--repeats"):
        with pytest.raises(SystemExit):
            epoch.main([flag, "0"])
        assert "at least 1" in capsys.readouterr().err


def test_iteration_benchmark_runs(tmp_path):
    stdout = run_script("iteration.py", tmp_path)
    (path,) = tmp_path.glob("iteration-*-b16.json")
    results = json.loads(path.read_text())
    assert set(results["impls"]) == {"own", "blas", "blas_rows"}
    for times in results["impls"].values():
        kernels = {k: v for k, v in times.items() if not k.startswith("iteration")}
        assert len(kernels) == 9 and all(v > 0 for v in kernels.values())
        assert times["iteration with sgd"] == sum(
            v for k, v in kernels.items() if k != "adam update"
        )
        assert times["iteration with adam"] == sum(
            v for k, v in kernels.items() if k != "sgd update"
        )
    assert len(results["adam_anatomy_us"]) == 2 and results["machine"]["vector_isa"]
    assert "products' floor" in stdout


def test_forward_summed_split_computes_the_forward_product():
    """products.py's summed-split forward (timed against minigd's candidates) computes
    f(x @ W.T + b): checked against NumPy in float64, odd sizes so the split is uneven."""
    from minigd.kernels import jit_gemm

    if not jit_gemm.BLAS_AVAILABLE:
        pytest.skip("no BLAS the compiled code can call")
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import products

    for parts in (2, 3):
        x, w_t, bias, out, partial = products.summed_operands(37, 51, 33, parts, seed=parts)
        products.forward_summed(x, w_t, bias, jit_gemm.RELU, out, partial, parts)
        expected = np.maximum(x.astype(np.float64) @ w_t.T.astype(np.float64) + bias, 0.0)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)
        assert (out == 0).any() and (out > 0).any()  # the ReLU cut some, kept others
    from minigd.kernels.jit_config import parallel_parts

    rows = products.products_ab("40-24-3:relu", 16, rounds=1)
    forward = [r for r in rows if r["product"] == "forward"]
    assert [r["layer"] for r in forward] == ["40x24", "24x3"]
    for r in rows:
        rates = [v for k, v in r.items() if k.endswith("_gflops")]
        assert rates and all(v > 0 for v in rates)
        # summed splits between threads: timed only where the products run on more than one
        assert ("summed_gflops" in r) == (r["product"] == "forward" and parallel_parts() > 1)
