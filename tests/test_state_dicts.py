"""Each object fit resumes has its own state_dict / load_state_dict, and checkpoint.py is only the
file format (issue 10, item 6)."""

import ast
from pathlib import Path

import numpy as np
import pytest

import minigd as mg
from minigd.resume import CheckpointSaver

ROOT = Path(__file__).resolve().parents[1]


def _imports(module):
    tree = ast.parse((ROOT / "minigd" / f"{module}.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names.add((node.module or "").split(".")[0] if node.level == 1 else node.module)
    return names


def test_checkpoint_module_is_the_file_format_only():
    assert not {"training", "resume", "data", "schedules"} & _imports("checkpoint")
    assert "checkpoint" in _imports("resume") and "resume" in _imports("training")


def test_history_state_dict_round_trips_in_place_and_checks_its_tables():
    history = mg.History(("mse", "r2"))
    history.record_iteration(epoch=1, iteration=1, step=1, batch_size=4, lr=0.1, loss=float("inf"))
    history.record_epoch(
        epoch=1,
        train_loss=1.0,
        val_loss=None,
        val_mse=None,
        val_r2=None,
        seconds=1.0,
        samples_per_second=4.0,
    )
    other = mg.History()
    same = other
    other.load_state_dict(history.state_dict())
    assert other is same and other == history and other.metric_names == ("mse", "r2")
    assert mg.History.from_dict(history.to_dict()) == history
    assert history.monitorable == ("train_loss", "val_loss", "val_mse", "val_r2")
    bad = history.state_dict()
    bad["epochs"]["accuracy"] = [0.5]
    with pytest.raises(ValueError, match="val_<metric>"):
        other.load_state_dict(bad)
    assert other == history
    with pytest.raises(ValueError, match="missing"):
        history.record_epoch(
            epoch=2, train_loss=1.0, val_loss=None, seconds=1.0, samples_per_second=1.0
        )


def test_iterator_state_dict_carries_the_seed_and_refuses_other_batching():
    X, y = np.zeros((10, 2)), np.arange(10) % 2
    saved = mg.BatchIterator(X, y, 4, seed=7)
    fresh = mg.BatchIterator(X, y, 4, seed=1)
    fresh.load_state_dict(saved.state_dict())
    assert fresh.seed == 7 and np.array_equal(fresh.permutation(3), saved.permutation(3))
    with pytest.raises(ValueError, match="batch_size=4, this one has batch_size=5"):
        mg.BatchIterator(X, y, 5, seed=1).load_state_dict(saved.state_dict())
    with pytest.raises(ValueError, match="leaves no batch"):
        mg.BatchIterator(X, y, 4, drop_last=True).check_batch_size(11)


def test_iterator_buffers_are_reused_by_gather():
    X, y = np.arange(20.0).reshape(10, 2), np.arange(10) % 3
    it = mg.BatchIterator(X, y, 4, dtype=np.float32)
    xb, yb = it.buffers()
    assert xb.shape == (4, 2) and xb.dtype == np.float32 and yb.dtype == np.int64
    it.gather(np.array([9, 0]), xb, yb)
    assert xb[:2].tolist() == [[18, 19], [0, 1]] and yb[:2].tolist() == [0, 0]
    assert it.buffers()[0] is xb
    values = mg.BatchIterator(X, X[:, :1] * 0.5, 4, dtype=np.float64, target_kind="values")
    assert values.buffers()[1].shape == (4, 1) and values.buffers()[1].dtype == np.float64


def test_callback_state_dicts_round_trip():
    stopper = mg.EarlyStopping(monitor="train_loss", patience=2)
    for value in (3.0, 2.0, 2.5):
        stopper.update(value)
    other = mg.EarlyStopping(monitor="train_loss", patience=2)
    other.load_state_dict(stopper.state_dict())
    assert other.update(2.6) is False and other.should_stop and other.stopped_epoch == 4
    plateau = mg.ReduceLROnPlateau(monitor="train_loss", patience=0)
    plateau.best, plateau.reductions = 1.0, [(1, 0.1, 0.01)]
    again = mg.ReduceLROnPlateau(monitor="train_loss", patience=0)
    state = plateau.state_dict()
    state["reductions"] = [list(r) for r in state["reductions"]]  # as JSON gives it back
    again.load_state_dict(state)
    assert again.reductions == [(1, 0.1, 0.01)] and again.best == 1.0


def test_training_state_position_between_and_within_epochs(tmp_path):
    X = np.random.default_rng(0).normal(size=(40, 3))
    y = np.arange(40) % 2
    seen = []

    class Watch(mg.Callback):
        def on_epoch_begin(self, state):
            seen.append(
                ("begin", state.state_dict()["epochs_done"], state.state_dict()["iteration"])
            )

        def on_iteration_end(self, state):
            if state.iteration == 2:
                seen.append(
                    ("mid", state.state_dict()["epochs_done"], state.state_dict()["iteration"])
                )

        def on_epoch_end(self, state):
            seen.append(("end", state.state_dict()["epochs_done"], state.state_dict()["iteration"]))

    model = mg.Sequential(mg.Dense(3, 2), seed=0)
    mg.fit(
        model,
        X,
        y,
        optimizer=mg.SGD(model.parameters(), lr=0.1),
        epochs=2,
        batch_size=16,
        verbose=0,
        callbacks=[Watch()],
    )
    assert seen == [
        ("begin", 0, 0),
        ("mid", 0, 2),
        ("end", 1, 0),
        ("begin", 1, 0),
        ("mid", 1, 2),
        ("end", 2, 0),
    ]
    state = mg.TrainingState(
        model,
        mg.SGD(model.parameters(), lr=0.1),
        mg.History(),
        mg.BatchIterator(X, y, 16),
        3,
        None,
        0.1,
    )
    state.load_state_dict(
        {
            "epochs_done": 1,
            "iteration": 2,
            "step": 5,
            "lr_scale": 0.5,
            "current_lr": 0.05,
            "base_lr": 0.1,
            "stop_training": False,
        }
    )
    assert (state.epoch, state.iteration, state.start_iteration) == (2, 2, 2)
    assert state.state_dict()["epochs_done"] == 1 and state.state_dict()["iteration"] == 2
    assert isinstance(CheckpointSaver(str(tmp_path / "c.npz"), None, []), mg.Callback)
