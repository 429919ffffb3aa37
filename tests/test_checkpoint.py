"""Checkpoints: exact resume across processes, kills mid-epoch and mid-save, damaged files."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import minigd as mg

sys.path.insert(0, str(Path(__file__).parent))
from _resume_job import comparable, data, train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
JOB = Path(__file__).with_name("_resume_job.py")
_REFERENCE = {}


def _env():
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=path, MINIGD_BACKEND=mg.get_backend())


def run_job(out, *args, expect_kill=False):
    """Run _resume_job.py in a new Python process; return its weights, history and epochs run."""
    proc = subprocess.run(
        [sys.executable, str(JOB), str(out), *map(str, args)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if expect_kill:
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        return None
    assert proc.returncode == 0, proc.stderr
    with np.load(out) as result:
        history = json.loads(result["history"].tobytes())
        return result["weights"], _strip_timing(history), result["ran"].tolist()


def _strip_timing(history_dict):
    history_dict["epochs"] = {
        k: v
        for k, v in history_dict["epochs"].items()
        if k not in ("seconds", "samples_per_second")
    }
    return history_dict


def reference(optimizer):
    """The uninterrupted 4-epoch run (in this process): weights and history without timing."""
    if optimizer not in _REFERENCE:
        model, history, ran = train(4, optimizer)
        assert ran == [1, 2, 3, 4]
        plain = json.loads(json.dumps(comparable(history)))
        _REFERENCE[optimizer] = model.flat_values.copy(), plain
    return _REFERENCE[optimizer]


def assert_bit_identical(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_stopped_after_epoch_2_and_resumed_in_a_new_process_is_bit_identical(tmp_path, optimizer):
    ckpt = tmp_path / "run.npz"
    _, first, ran = run_job(
        tmp_path / "a.npz", "--epochs", 2, "--checkpoint", ckpt, "--optimizer", optimizer
    )
    assert ran == [1, 2] and len(first["epochs"]["epoch"]) == 2
    weights, history, ran = run_job(
        tmp_path / "b.npz",
        "--epochs",
        4,
        "--checkpoint",
        ckpt,
        "--resume",
        "--optimizer",
        optimizer,
    )
    assert ran == [3, 4]
    ref_weights, ref_history = reference(optimizer)
    assert_bit_identical(weights, ref_weights)
    assert history == ref_history
    assert history["iterations"]["step"] == list(range(1, 4 * 19 + 1))


def test_killed_mid_epoch_3_then_resumed_is_bit_identical(tmp_path):
    ckpt = tmp_path / "run.npz"
    # 19 iterations per epoch; saves every 5 updates; killed after update 38 + 12 = 50, just
    # before that update's save, so the last checkpoint is update 45 = epoch 3, iteration 7.
    run_job(
        tmp_path / "a.npz",
        "--epochs",
        4,
        "--checkpoint",
        ckpt,
        "--every",
        5,
        "--kill-at",
        "3:12",
        expect_kill=True,
    )
    saved = mg.load_checkpoint(ckpt)
    assert (saved.training["epochs_done"], saved.training["iteration"]) == (2, 7)
    assert saved.training["step"] == 45 and saved.history.n_iterations == 45
    weights, history, ran = run_job(
        tmp_path / "b.npz", "--epochs", 4, "--checkpoint", ckpt, "--resume"
    )
    assert ran == [3, 4]
    ref_weights, ref_history = reference("sgd")
    assert_bit_identical(weights, ref_weights)
    assert history == ref_history


_SAVER = """
import sys
import numpy as np
import minigd as mg
path = sys.argv[1]
mg.save_checkpoint(path, mg.Sequential(mg.Dense(4, 3), seed=0), training={"tag": "previous"})
print("saved previous", flush=True)
big = mg.Sequential(mg.Dense(4000, 4000, init="zeros"))
print("saving big", flush=True)
mg.save_checkpoint(path, big, training={"tag": "big"})
print("saved big", flush=True)
"""


def test_kill_during_save_leaves_the_previous_checkpoint_intact(tmp_path):
    path = tmp_path / "run.npz"
    for _attempt in range(3):
        for leftover in tmp_path.iterdir():
            leftover.unlink()
        child = subprocess.Popen(
            [sys.executable, "-c", _SAVER, str(path)], env=_env(), stdout=subprocess.PIPE, text=True
        )
        try:
            assert child.stdout.readline().strip() == "saved previous"
            previous = path.read_bytes()
            assert child.stdout.readline().strip() == "saving big"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and child.poll() is None:
                temps = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
                if temps and temps[0].stat().st_size > 0:
                    os.kill(child.pid, signal.SIGKILL)
                    break
                time.sleep(0.001)
        finally:
            child.kill()
            child.wait()
            child.stdout.close()
        if child.returncode == -signal.SIGKILL and any(
            p.name.endswith(".tmp") for p in tmp_path.iterdir()
        ):
            break  # killed while the new file was still being written
    else:
        pytest.fail("could not kill the child while it was writing its checkpoint")
    assert path.read_bytes() == previous
    ckpt = mg.load_checkpoint(path)
    assert ckpt.training == {"tag": "previous"}
    ckpt.restore(mg.Sequential(mg.Dense(4, 3), seed=5))


def _small_run(tmp_path, epochs=2, **fit_args):
    X, y, X_val, y_val = data()
    model = mg.Sequential(mg.Dense(20, 8), mg.Tanh(), mg.Dense(8, 3), seed=2)
    opt = mg.SGD(model.parameters(), lr=0.05, momentum=0.5)
    args = dict(epochs=epochs, batch_size=64, seed=3, verbose=0, checkpoint=tmp_path / "c.npz")
    args.update(fit_args)
    history = mg.fit(model, X, y, optimizer=opt, **args)
    return model, opt, history


def test_truncated_checkpoint_raises_value_error_naming_the_path(tmp_path):
    _small_run(tmp_path)
    whole = (tmp_path / "c.npz").read_bytes()
    damaged = tmp_path / "damaged.npz"
    for size in (0, 1, 30, 200, len(whole) // 2, len(whole) - 22, len(whole) - 1):
        damaged.write_bytes(whole[:size])
        with pytest.raises(ValueError, match="damaged.npz"):
            mg.load_checkpoint(damaged)


def _same_checkpoint(a, b):
    same_arrays = all(
        set(x) == set(y) and all(x[k].dtype == y[k].dtype and np.array_equal(x[k], y[k]) for k in x)
        for x, y in (
            (a.model_state, b.model_state),
            (a.optimizer_state["state"], b.optimizer_state["state"]),
        )
    )
    return (
        same_arrays
        and a.metadata == b.metadata
        and a.history == b.history
        and a.training == b.training
    )


def test_every_flipped_byte_is_detected_or_changes_nothing(tmp_path):
    model = mg.Sequential(mg.Dense(3, 2), seed=0)
    opt = mg.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(10, 3)), rng.integers(0, 2, 10)
    history = mg.fit(model, X, y, optimizer=opt, epochs=2, batch_size=4, verbose=0, seed=0)
    path = tmp_path / "small.npz"
    mg.save_checkpoint(path, model, opt, history=history, training={"note": "x"})
    original = mg.load_checkpoint(path)
    whole = bytearray(path.read_bytes())
    damaged = tmp_path / "flipped.npz"
    # 700 positions spread over headers, array data and the central directory
    positions = np.sort(np.random.default_rng(0).choice(len(whole), 700, replace=False))
    detected = 0
    for position in positions:
        flipped = bytearray(whole)
        flipped[position] ^= 0xFF
        damaged.write_bytes(flipped)
        try:
            loaded = mg.load_checkpoint(damaged)
        except ValueError as exc:
            assert "flipped.npz" in str(exc)
            detected += 1
            continue
        assert _same_checkpoint(loaded, original), f"byte {position} changed the content silently"
    assert detected > 0.75 * len(positions)  # the rest: zip timestamps, version and flag fields


def test_valid_archive_with_edited_weights_fails_the_sha256_check(tmp_path):
    _small_run(tmp_path)
    with np.load(tmp_path / "c.npz") as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["model/0.weight"][0, 0] += 1
    np.savez(tmp_path / "edited.npz", **arrays)
    with pytest.raises(ValueError, match="SHA-256.*modified"):
        mg.load_checkpoint(tmp_path / "edited.npz")


def test_checkpoint_is_plain_npz_with_json_metadata(tmp_path):
    model, opt, history = _small_run(tmp_path, callbacks=[mg.EarlyStopping("train_loss")])
    with np.load(tmp_path / "c.npz", allow_pickle=False) as archive:
        files = set(archive.files)
        meta = json.loads(archive["metadata"].tobytes())
    assert {
        "metadata",
        "sha256",
        "model/0.weight",
        "model/2.bias",
        "optimizer/0.momentum_buffer",
        "history/loss",
    } <= files
    assert meta["format"] == "minigd-checkpoint" and meta["version"] == 1
    assert meta["model"] == {
        "architecture": ["Dense(20, 8)", "Tanh()", "Dense(8, 3)"],
        "dtype": "float32",
    }
    assert meta["optimizer"]["type"] == "SGD"
    assert meta["optimizer"]["hyperparameters"]["momentum"] == 0.5
    assert meta["optimizer"]["step"] == 2 * 10
    t = meta["training"]
    assert (t["epochs_done"], t["iteration"], t["step"], t["lr_scale"]) == (2, 0, 20, 1.0)
    assert t["iterator"]["seed"] == 3 and t["iterator"]["batch_size"] == 64
    assert meta["callbacks"][0]["type"] == "EarlyStopping"
    stopper = meta["callbacks"][0]["state"]
    assert stopper["best"] == min(history.epochs["train_loss"]) and stopper["best_epoch"] in (1, 2)
    assert stopper["best_weights"] == {
        "__arrays__": {k: f"callbacks/0/best_weights/{k}" for k in model.state_dict()}
    }
    assert "callbacks/0/best_weights/0.weight" in files


def test_save_and_load_round_trip_a_diverged_history(tmp_path):
    model = mg.Sequential(mg.Dense(20, 8), mg.ReLU(), mg.Dense(8, 3), seed=0, dtype=np.float64)
    opt = mg.Adam(model.parameters(), lr=1e-3)
    X, y, _, _ = data()
    history = mg.fit(model, X, y, optimizer=opt, epochs=1, batch_size=50, verbose=0, seed=0)
    opt.lr = 1e300
    with pytest.warns(RuntimeWarning, match="diverged"):
        history2 = mg.fit(
            model,
            X,
            y,
            optimizer=mg.SGD(model.parameters(), lr=1e300),
            epochs=3,
            batch_size=50,
            verbose=0,
            seed=0,
        )
    assert history2.diverged and not np.isfinite(history2.iterations["loss"][-1])
    mg.save_checkpoint(tmp_path / "d.npz", model, opt, history=history2, training={"k": [1, 2]})
    ckpt = mg.load_checkpoint(tmp_path / "d.npz")
    assert ckpt.history == history2 and ckpt.history.divergence == history2.divergence
    assert ckpt.training == {"k": [1, 2]}
    other = mg.Sequential(mg.Dense(20, 8), mg.ReLU(), mg.Dense(8, 3), seed=9, dtype=np.float64)
    other_opt = mg.Adam(other.parameters())
    ckpt.restore(other, other_opt)
    assert_bit_identical(other.flat_values, model.flat_values)
    assert other_opt.step_count == opt.step_count and other_opt.lr == 1e300
    for name in opt.state:
        assert_bit_identical(other_opt.state[name], opt.state[name])
    assert history.n_epochs == 1


def _fresh(arch=(20, 8, 3), dtype=np.float32, optimizer=mg.SGD):
    model = mg.Sequential(
        mg.Dense(arch[0], arch[1]), mg.Tanh(), mg.Dense(arch[1], arch[2]), seed=11, dtype=dtype
    )
    opt = (
        optimizer(model.parameters(), lr=0.05)
        if optimizer is not mg.SGD
        else mg.SGD(model.parameters(), lr=0.05, momentum=0.5)
    )
    return model, opt


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(arch=(20, 9, 3)), "different model"),
        (dict(dtype=np.float64), "float32 weights but the model is float64"),
        (dict(optimizer=mg.Adam), "holds SGD state, not Adam"),
        (dict(batch_size=32), "batch_size=64, this call has batch_size=32"),
        (dict(seed=4), "seed=3, this call has seed=4"),
        (dict(shuffle=False), "shuffle=True"),
        (dict(epochs=1), "pass epochs >= 2"),
        (dict(callbacks=[mg.ReduceLROnPlateau("train_loss")]), "callbacks"),
        (dict(n_samples=500), "n_samples=600, this call has n_samples=500"),
    ],
)
def test_resume_into_a_different_run_is_rejected_and_changes_nothing(tmp_path, change, match):
    _small_run(tmp_path)
    path = tmp_path / "c.npz"
    saved = path.read_bytes()
    change = dict(change)
    model, opt = _fresh(
        change.pop("arch", (20, 8, 3)),
        change.pop("dtype", np.float32),
        change.pop("optimizer", mg.SGD),
    )
    before, opt_before = model.flat_values.copy(), opt.state_dict()
    X, y, _, _ = data()
    n = change.pop("n_samples", 600)
    args = dict(epochs=4, batch_size=64, seed=3, verbose=0, checkpoint=path, resume=True)
    args.update(change)
    with pytest.raises(ValueError, match=match):
        mg.fit(model, X[:n], y[:n], optimizer=opt, **args)
    assert_bit_identical(model.flat_values, before)
    after = opt.state_dict()
    assert (
        after["step"] == opt_before["step"]
        and after["hyperparameters"] == opt_before["hyperparameters"]
    )
    assert all(np.array_equal(after["state"][k], opt_before["state"][k]) for k in after["state"])
    assert path.read_bytes() == saved and sorted(p.name for p in tmp_path.iterdir()) == ["c.npz"]


def test_resume_with_seed_none_uses_the_saved_seed(tmp_path):
    ref_model, _, ref_history = _small_run(tmp_path / "ref", epochs=3)
    _small_run(tmp_path, epochs=1)
    model, opt = _fresh()
    X, y, _, _ = data()
    history = mg.fit(
        model,
        X,
        y,
        optimizer=opt,
        epochs=3,
        batch_size=64,
        seed=None,
        verbose=0,
        checkpoint=tmp_path / "c.npz",
        resume=True,
    )
    assert_bit_identical(model.flat_values, ref_model.flat_values)
    assert comparable(history) == comparable(ref_history)


def test_resume_without_a_file_starts_fresh_and_a_finished_run_does_nothing(tmp_path):
    model, opt, history = _small_run(tmp_path, epochs=2, resume=True)
    assert history.n_epochs == 2 and (tmp_path / "c.npz").exists()
    model2, opt2 = _fresh()
    again = mg.fit(
        model2,
        *data()[:2],
        optimizer=opt2,
        epochs=2,
        batch_size=64,
        seed=3,
        verbose=0,
        checkpoint=tmp_path / "c.npz",
        resume=True,
    )
    assert comparable(again) == comparable(history)
    assert_bit_identical(model2.flat_values, model.flat_values)
    assert opt2.step_count == opt.step_count == 20


def test_early_stopping_state_survives_a_resume(tmp_path):
    def run(epochs, path, resume=False):
        X, y, X_val, y_val = data()
        model, opt = _fresh()
        opt.lr = 1.5
        stopper = mg.EarlyStopping(patience=2, restore_best=True)
        history = mg.fit(
            model,
            X,
            y,
            optimizer=opt,
            epochs=epochs,
            batch_size=64,
            seed=3,
            verbose=0,
            validation_data=(X_val, y_val),
            callbacks=[stopper],
            checkpoint=path,
            resume=resume,
        )
        return model, history, stopper

    ref_model, ref_history, ref_stopper = run(30, tmp_path / "ref.npz")
    assert ref_history.stopped_early and ref_stopper.stopped_epoch < 30
    run(ref_stopper.best_epoch, tmp_path / "c.npz")
    model, history, stopper = run(30, tmp_path / "c.npz", resume=True)
    assert history.stopped_early and stopper.stopped_epoch == ref_stopper.stopped_epoch
    assert (stopper.best, stopper.best_epoch) == (ref_stopper.best, ref_stopper.best_epoch)
    assert_bit_identical(model.flat_values, ref_model.flat_values)
    assert comparable(history) == comparable(ref_history)
    model2, history2, _ = run(30, tmp_path / "c.npz", resume=True)  # finished: nothing to do
    assert_bit_identical(model2.flat_values, ref_model.flat_values)
    assert comparable(history2) == comparable(ref_history)


@pytest.mark.parametrize(
    "args, error, match",
    [
        (dict(resume=True), ValueError, "need checkpoint"),
        (dict(checkpoint_every=5), ValueError, "need checkpoint"),
        (dict(checkpoint="c.npz", checkpoint_every=0), ValueError, "checkpoint_every"),
        (dict(checkpoint="c.npz", checkpoint_every=True), TypeError, "checkpoint_every"),
        (dict(checkpoint="c.npz", resume="yes"), TypeError, "resume"),
        (dict(checkpoint=12), TypeError, "path"),
    ],
)
def test_bad_checkpoint_options_are_rejected(tmp_path, monkeypatch, args, error, match):
    monkeypatch.chdir(tmp_path)
    model, opt = _fresh()
    X, y, _, _ = data()
    with pytest.raises(error, match=match):
        mg.fit(model, X, y, optimizer=opt, epochs=1, batch_size=64, verbose=0, **args)
    assert list(tmp_path.iterdir()) == []


def test_a_rejected_save_leaves_the_previous_file_and_no_temp_files(tmp_path):
    model, opt = _fresh()
    path = tmp_path / "c.npz"
    mg.save_checkpoint(path, model, opt, training={"ok": 1})
    saved = path.read_bytes()
    with pytest.raises(TypeError, match="JSON"):
        mg.save_checkpoint(path, model, opt, training={"bad": object()})
    with pytest.raises(TypeError, match="history"):
        mg.save_checkpoint(path, model, opt, history={"iterations": []})
    assert path.read_bytes() == saved and [p.name for p in tmp_path.iterdir()] == ["c.npz"]


def test_not_a_checkpoint_and_missing_file(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros(3))
    with pytest.raises(ValueError, match="a.npy"):
        mg.load_checkpoint(tmp_path / "a.npy")
    np.savez(tmp_path / "b.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not a minigd checkpoint"):
        mg.load_checkpoint(tmp_path / "b.npz")
    (tmp_path / "c.txt").write_text("hello")
    with pytest.raises(ValueError, match="c.txt"):
        mg.load_checkpoint(tmp_path / "c.txt")
    with pytest.raises(FileNotFoundError, match="nothing.npz"):
        mg.load_checkpoint(tmp_path / "nothing.npz")


def test_cli_resume_matches_an_uninterrupted_run(tmp_path, capsys):
    from minigd.cli import main

    common = ["train", "--hidden", "8", "--batch-size", "256", "--quiet", "--seed", "1"]
    assert main(common + ["--epochs", "2", "--out", str(tmp_path / "full")]) == 0
    ckpt = str(tmp_path / "run.npz")
    saving = ["--checkpoint", ckpt, "--checkpoint-every", "10"]
    assert main(common + saving + ["--epochs", "1", "--out", str(tmp_path / "a")]) == 0
    assert main(common + saving + ["--epochs", "2", "--out", str(tmp_path / "b"), "--resume"]) == 0
    capsys.readouterr()
    assert (
        main(common + ["--epochs", "1", "--checkpoint-every", "5", "--out", str(tmp_path / "c")])
        == 2
    )
    assert "checkpoint_every need checkpoint" in capsys.readouterr().err
    with (
        np.load(tmp_path / "full" / "model.npz") as full,
        np.load(tmp_path / "b" / "model.npz") as resumed,
    ):
        assert all(full[k].tobytes() == resumed[k].tobytes() for k in full.files)
        n_in, hidden = full["0.weight"].shape
        model = mg.Sequential(
            mg.Dense(n_in, hidden), mg.ReLU(), mg.Dense(hidden, full["2.bias"].shape[0])
        )
        model.load_state_dict(full)  # the model.npz that `minigd train` writes
        assert all(np.array_equal(model.state_dict()[k], full[k]) for k in full.files)
    assert mg.load_checkpoint(ckpt).training["epochs_done"] == 2


def test_restore_checks_the_optimizer_belongs_to_the_model(tmp_path):
    model, opt = _fresh()
    other, other_opt = _fresh()
    with pytest.raises(ValueError, match="another model"):
        mg.save_checkpoint(tmp_path / "c.npz", model, other_opt)
    assert list(tmp_path.iterdir()) == []
    mg.save_checkpoint(tmp_path / "c.npz", model, opt)
    with pytest.raises(ValueError, match="another model"):
        mg.load_checkpoint(tmp_path / "c.npz").restore(model, other_opt)
    with pytest.raises(ValueError, match="holds no optimizer state"):
        mg.save_checkpoint(tmp_path / "m.npz", model)
        mg.load_checkpoint(tmp_path / "m.npz").restore(model, opt)


def test_resume_needs_a_checkpoint_written_by_fit(tmp_path):
    model, opt = _fresh()
    X, y, _, _ = data()
    history = mg.fit(model, X, y, optimizer=opt, epochs=1, batch_size=64, verbose=0)
    mg.save_checkpoint(tmp_path / "c.npz", model, opt, history=history, training={"epochs_done": 1})
    with pytest.raises(ValueError, match="holds no training position"):
        mg.fit(
            model,
            X,
            y,
            optimizer=opt,
            epochs=2,
            batch_size=64,
            verbose=0,
            checkpoint=tmp_path / "c.npz",
            resume=True,
        )
