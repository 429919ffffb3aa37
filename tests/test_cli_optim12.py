"""CLI: --optimizer rmsprop|adagrad, --grad-clip, --accumulate."""

import pytest

import minigd as mg
from minigd.cli import main


def test_train_with_rmsprop_grad_clip_and_accumulate(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--epochs",
            "1",
            "--batch-size",
            "64",
            "--optimizer",
            "rmsprop",
            "--lr",
            "0.001",
            "--momentum",
            "0.5",
            "--grad-clip",
            "1.0",
            "--accumulate",
            "4",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "batch 64 x 4 accumulated = effective 256 -> " in text
    history = mg.History.from_json(out / "history.json")
    assert set(history.iterations["micro_batches"][:-1]) == {4}
    assert all(v > 0 for v in history.iterations["grad_norm"])


def test_adagrad_by_name_and_flags_that_do_not_apply(tmp_path, capsys):
    code = main(
        [
            "train",
            "--epochs",
            "1",
            "--optimizer",
            "adagrad",
            "--quiet",
            "--out",
            str(tmp_path / "a"),
        ]
    )
    assert code == 0
    for argv in (
        ["--optimizer", "rmsprop", "--nesterov", "--momentum", "0.9"],
        ["--optimizer", "adagrad", "--momentum", "0.9"],
        ["--grad-clip", "0"],
        ["--accumulate", "0"],
    ):
        with pytest.raises(SystemExit) as info:
            main(["train", "--quiet", "--out", str(tmp_path / "b")] + argv)
        assert info.value.code == 2
