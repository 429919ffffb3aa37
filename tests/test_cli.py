import json
import subprocess
import sys

import numpy as np
import pytest

import minigd as mg
from minigd.cli import build_parser, main


def test_train_writes_history_plot_and_model(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--epochs",
            "2",
            "--batch-size",
            "128",
            "--out",
            str(out),
            "--schedule",
            "step",
            "--step-size",
            "1",
            "--gamma",
            "0.5",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert (
        "plan: 7200 samples, batch 128 -> 57 iterations per epoch (last batch: 32 samples); "
        "2 epochs = 114 updates" in text
    )
    assert "epoch 2/2" in text and "test accuracy:" in text
    history = mg.History.from_json(out / "history.json")
    assert history.n_iterations == 114
    assert sorted(set(history.iterations["lr"])) == [0.05, 0.1]
    assert (out / "history.csv").read_text().count("\n") == 115
    assert (out / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["batch_size"] == 128 and 0.5 < run["test_accuracy"] <= 1
    weights = np.load(out / "model.npz", allow_pickle=False)
    assert weights["0.weight"].shape == (784, 128)


def test_train_reports_divergence_and_keeps_history(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--epochs", "1", "--lr", "1e10", "--quiet", "--out", str(out)])
    assert code == 3
    assert "diverged" in capsys.readouterr().err
    assert mg.History.from_json(out / "history.json").diverged


def test_help_explains_every_hyperparameter():
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    text = train.format_help()
    for flag in (
        "--epochs",
        "--batch-size",
        "--lr",
        "--optimizer",
        "--momentum",
        "--schedule",
        "--hidden",
        "--seed",
        "--early-stopping",
        "--warmup",
        "--backend",
        "--out",
    ):
        assert flag in text
    for action in train._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, action.dest


def test_bad_arguments_exit_with_a_message(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--optimizer", "lbfgs"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["train", "--epochs", "0", "--quiet"])
    assert info.value.code == 2
    assert "argument --epochs: must be an integer >= 1, got '0'" in capsys.readouterr().err


def test_python_dash_m_runs_the_main_job(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "minigd",
            "train",
            "--epochs",
            "1",
            "--hidden",
            "32",
            "--out",
            str(tmp_path),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "test accuracy:" in result.stdout
