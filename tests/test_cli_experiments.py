"""minigd lr-find and minigd noise-scale, run through cli.main with their outputs checked."""

import csv
import json

import pytest

from minigd.cli import build_parser, main

PNG = b"\x89PNG\r\n\x1a\n"


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_lr_find_writes_csv_json_png_and_prints_suggestions(tmp_path, capsys):
    out = tmp_path / "lr"
    code = main(["lr-find", "--out", str(out), "--num-iter", "60", "--hidden", "32", "--seed", "1"])
    assert code == 0
    printed = capsys.readouterr().out
    data = json.loads((out / "lr_range.json").read_text())
    assert set(data["suggestions"]) == {"steepest", "min_div_10", "valley"}
    assert f"suggested lr (min_div_10): {data['suggestions']['min_div_10']:.3g}" in printed
    assert "lr range test: 60 updates, lr 1e-06 -> 10 (exp), batch 64, sgd" in printed
    rows = read_csv(out / "lr_range.csv")
    assert len(rows) == len(data["lr"]) <= 60
    assert float(rows[0]["lr"]) == 1e-6
    assert data["config"]["seed"] == 1 and data["config"]["batch_size"] == 64
    assert (out / "lr_range.png").read_bytes().startswith(PNG)


def test_lr_find_flags_reach_the_test(tmp_path):
    out = tmp_path / "lr"
    code = main(
        [
            "lr-find",
            "--out",
            str(out),
            "--num-iter",
            "12",
            "--mode",
            "linear",
            "--start-lr",
            "0.001",
            "--end-lr",
            "0.1",
            "--batch-size",
            "128",
            "--optimizer",
            "sgd",
            "--momentum",
            "0.5",
            "--diverge-threshold",
            "0",
            "--smooth",
            "0.5",
            "--hidden",
            "16",
            "--quiet",
        ]
    )
    assert code == 0
    data = json.loads((out / "lr_range.json").read_text())
    assert data["lr"] == pytest.approx([0.001 + 0.009 * i for i in range(12)], rel=1e-12)
    assert data["config"]["diverge_threshold"] is None and data["config"]["smooth"] == 0.5
    assert "momentum=0.5" in data["config"]["optimizer"]
    assert data["stop_reason"] == "completed"


def test_lr_find_bad_range_is_a_clear_error(tmp_path, capsys):
    code = main(["lr-find", "--out", str(tmp_path), "--start-lr", "1", "--end-lr", "0.1"])
    assert code == 2
    assert "start_lr must be smaller than end_lr" in capsys.readouterr().err


def test_noise_scale_at_init_only(tmp_path, capsys):
    out = tmp_path / "ns"
    code = main(
        [
            "noise-scale",
            "--out",
            str(out),
            "--epochs",
            "0",
            "--n-pairs",
            "3",
            "--small-batch",
            "16",
            "--big-batch",
            "256",
            "--hidden",
            "16",
            "--quiet",
        ]
    )
    assert code == 0
    rows = read_csv(out / "noise_scale.csv")
    assert len(rows) == 1 and rows[0]["epoch"] == "0" and rows[0]["step"] == "0"
    assert float(rows[0]["b_simple"]) != 0
    assert "B_simple" in capsys.readouterr().out
    assert (out / "noise_scale.png").read_bytes().startswith(PNG)


def test_noise_scale_during_training_is_seeded(tmp_path):
    args = [
        "noise-scale",
        "--epochs",
        "1",
        "--n-pairs",
        "2",
        "--small-batch",
        "16",
        "--big-batch",
        "128",
        "--hidden",
        "16",
        "--batch-size",
        "256",
        "--quiet",
    ]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert main(args + ["--out", str(tmp_path / "b")]) == 0
    a = json.loads((tmp_path / "a" / "noise_scale.json").read_text())
    b = json.loads((tmp_path / "b" / "noise_scale.json").read_text())
    assert a["records"] == b["records"]
    assert a["records"]["step"] == [0, 32]  # 8000 / 256 = 31.25 -> 32 updates
    assert a["config"]["big_batch"] == 128 and a["diverged"] is False


def test_noise_scale_bad_batches_is_a_clear_error(tmp_path, capsys):
    code = main(
        [
            "noise-scale",
            "--out",
            str(tmp_path),
            "--small-batch",
            "64",
            "--big-batch",
            "64",
            "--epochs",
            "0",
        ]
    )
    assert code == 2
    assert "small_batch must be smaller than big_batch" in capsys.readouterr().err


def test_help_lists_the_experiment_commands(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    assert "lr-find" in text and "noise-scale" in text
