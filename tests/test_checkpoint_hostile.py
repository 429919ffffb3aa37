"""Checkpoints from a stranger: a valid SHA-256 with hostile content gives ValueError before any
large allocation (issue 9, item 7).

The files here are written by hand from the documented format (module docstring of
minigd.checkpoint), digest included, as anyone could: the digest proves integrity, not origin.
"""

import copy
import hashlib
import io
import json
import tracemalloc
import zipfile

import numpy as np
import pytest

import minigd as mg

MiB = 1 << 20


def digest(metadata, arrays):
    """SHA-256 of the metadata bytes, then of every array (name, dtype, shape, bytes) by name."""
    h = hashlib.sha256(metadata)
    for key in sorted(arrays):
        value = arrays[key]
        h.update(f"\0{key}\0{value.dtype.str}\0{value.shape}\0".encode("utf-8"))
        h.update(np.ascontiguousarray(value).tobytes())
    return np.frombuffer(h.digest(), dtype=np.uint8)


def npy_bytes(array):
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def write(path, meta, arrays):
    """A checkpoint with a correct digest for whatever ``meta`` and ``arrays`` hold."""
    text = meta if isinstance(meta, bytes) else json.dumps(meta).encode("utf-8")
    metadata = np.frombuffer(text, dtype=np.uint8)
    members = dict(arrays, metadata=metadata, sha256=digest(text, arrays))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for key, value in members.items():
            archive.writestr(key + ".npy", npy_bytes(value))
    return path


@pytest.fixture(scope="module")
def genuine(tmp_path_factory):
    """(metadata, arrays) of a real checkpoint with optimizer, history and EarlyStopping."""
    X = np.random.default_rng(0).normal(size=(64, 6)).astype(np.float32)
    y = np.arange(64) % 3
    model = mg.Sequential(mg.Dense(6, 5), mg.ReLU(), mg.Dense(5, 3), seed=0)
    opt = mg.SGD(model.parameters(), lr=0.1, momentum=0.9)
    stop = mg.EarlyStopping(patience=5, restore_best=True)
    history = mg.fit(
        model,
        X,
        y,
        optimizer=opt,
        epochs=2,
        batch_size=16,
        seed=0,
        validation_data=(X, y),
        callbacks=[stop],
    )
    path = tmp_path_factory.mktemp("genuine") / "c.npz"
    mg.save_checkpoint(path, model, opt, history=history, callbacks=[stop])
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(arrays.pop("metadata").tobytes())
    arrays.pop("sha256")
    return meta, arrays


def test_hand_written_file_with_a_valid_digest_loads(genuine, tmp_path):
    """The writer above is right: unchanged content loads (so the failures below are real)."""
    meta, arrays = genuine
    ckpt = mg.load_checkpoint(write(tmp_path / "ok.npz", meta, arrays))
    assert ckpt.optimizer_state["type"] == "SGD" and ckpt.history.n_epochs == 2
    assert ckpt.callbacks[0]["type"] == "EarlyStopping"


def _set(path, value):
    def mutate(meta, arrays):
        target = meta
        for key in path[:-1]:
            target = target[key]
        if value is KeyError:
            del target[path[-1]]
        else:
            target[path[-1]] = value

    return mutate


def _array(key, value):
    def mutate(meta, arrays):
        if value is KeyError:
            del arrays[key]
        else:
            arrays[key] = value(arrays[key]) if callable(value) else value

    return mutate


HOSTILE = {
    # missing keys
    "no model": _set(["model"], KeyError),
    "no callbacks": _set(["callbacks"], KeyError),
    "no architecture": _set(["model", "architecture"], KeyError),
    "no history array": _array("history/loss", KeyError),
    "no model weights": lambda m, a: [a.pop(k) for k in list(a) if k.startswith("model/")],
    "callback array missing": _array("callbacks/0/best_weights/0.weight", KeyError),
    # wrong types in fields
    "metadata is a list": lambda m, a: (m.clear(), m.setdefault("x", [])),
    "version as text": _set(["version"], "1"),
    "model is a list": _set(["model"], [1, 2]),
    "architecture of numbers": _set(["model", "architecture"], [1, 2]),
    "dtype int8": _set(["model", "dtype"], "int8"),
    "dtype object": _set(["model", "dtype"], "object"),
    "step as text": _set(["optimizer", "step"], "3"),
    "negative step": _set(["optimizer", "step"], -1),
    "step as bool": _set(["optimizer", "step"], True),
    "hyperparameters list": _set(["optimizer", "hyperparameters"], [0.1]),
    "callbacks a dict": _set(["callbacks"], {"a": 1}),
    "callback state a number": _set(["callbacks", 0, "state"], 5),
    "callback array name a number": _set(
        ["callbacks", 0, "state", "best_weights"], {"__arrays__": {"0.weight": 7}}
    ),
    "history epochs a number": _set(["history", "epochs"], 5),
    "history epoch values dicts": _set(["history", "epochs", "train_loss"], [{}, {}]),
    "training a string": _set(["training"], "epoch 3"),
    # wrong dtypes and shapes of arrays
    "weights float64": _array("model/0.weight", lambda v: v.astype(np.float64)),
    "weights complex": _array("model/0.weight", lambda v: v.astype(np.complex64)),
    "weights text": _array("model/0.weight", np.array(["a", "b"])),
    "weights structured": _array("model/0.weight", np.zeros(3, dtype=[("a", "<f4")])),
    "optimizer state float64": _array(
        "optimizer/0.momentum_buffer", lambda v: v.astype(np.float64)
    ),
    "history float steps": _array("history/step", lambda v: v.astype(np.float64)),
    "history 2-D": _array("history/loss", lambda v: v.reshape(1, -1)),
    "history lengths differ": _array("history/loss", lambda v: v[:-1]),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_metadata_with_a_valid_digest_is_a_value_error(genuine, tmp_path, name):
    meta, arrays = copy.deepcopy(genuine)
    HOSTILE[name](meta, arrays)
    path = write(tmp_path / "hostile.npz", meta, arrays)
    with pytest.raises(ValueError, match="hostile.npz"):
        mg.load_checkpoint(path)


@pytest.mark.parametrize("depth", [10_000, 200_000])
def test_deeply_nested_json_is_a_value_error(genuine, tmp_path, depth):
    _, arrays = genuine
    text = (
        b'{"format": "minigd-checkpoint", "version": 1, "x": ' + b"[" * depth + b"]" * depth + b"}"
    )
    with pytest.raises(ValueError, match="deep.npz"):
        mg.load_checkpoint(write(tmp_path / "deep.npz", text, arrays))


def _peak_while(fn):
    """Peak bytes traced (Python and NumPy allocations) while ``fn()`` runs."""
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def _refused(path, match):
    def load():
        with pytest.raises(ValueError, match=match):
            mg.load_checkpoint(path)

    return load


def test_huge_declared_shape_is_refused_before_reading_any_array(genuine, tmp_path, monkeypatch):
    """A header claiming 1 GiB over a few stored bytes: no array is read, nothing big allocated."""
    meta, arrays = genuine
    path = write(tmp_path / "huge.npz", meta, arrays)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (1 << 28,)}
    )
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("model/9.weight.npy", header.getvalue() + bytes(64))
    reads = []
    monkeypatch.setattr(np.lib.format, "read_array", lambda *a, **k: reads.append(1) or np.zeros(1))
    _refused(path, "declares shape")()
    assert reads == []
    monkeypatch.undo()
    peak = _peak_while(_refused(path, "declares shape"))
    assert peak < 4 * MiB, peak


def test_compressed_bomb_with_a_valid_digest_is_refused_small(genuine, tmp_path):
    """64 MiB of zeros deflated to ~64 KiB, its digest correct: refused without inflating it."""
    meta, arrays = genuine
    count = 16 * MiB  # float32: 64 MiB
    chunk = np.zeros(MiB, dtype=np.float32)
    members = dict(arrays, **{"model/9.weight": None})
    path = tmp_path / "bomb.npz"
    text = json.dumps(meta).encode("utf-8")
    # the bomb member deflated and streamed, its bytes hashed as they go
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        h = hashlib.sha256(text)
        for key in sorted(members):
            if key == "model/9.weight":
                h.update(f"\0{key}\0<f4\0{(count,)}\0".encode("utf-8"))
                header = io.BytesIO()
                np.lib.format.write_array_header_1_0(
                    header, {"descr": "<f4", "fortran_order": False, "shape": (count,)}
                )
                info = zipfile.ZipInfo(key + ".npy")
                info.compress_type = zipfile.ZIP_DEFLATED
                with archive.open(info, "w", force_zip64=True) as out:
                    out.write(header.getvalue())
                    for _ in range(count // MiB):
                        out.write(chunk.data)
                        h.update(chunk.data)
            else:
                value = members[key]
                h.update(f"\0{key}\0{value.dtype.str}\0{value.shape}\0".encode("utf-8"))
                h.update(np.ascontiguousarray(value).tobytes())
                archive.writestr(key + ".npy", npy_bytes(value))
        archive.writestr("metadata.npy", npy_bytes(np.frombuffer(text, np.uint8)))
        archive.writestr("sha256.npy", npy_bytes(np.frombuffer(h.digest(), np.uint8)))
    assert path.stat().st_size < 2 * MiB
    with zipfile.ZipFile(path) as archive:  # the bomb is what it claims
        assert archive.getinfo("model/9.weight.npy").file_size > 64 * MiB
    peak = _peak_while(_refused(path, "compressed"))
    assert peak < 4 * MiB, peak


def test_huge_shapes_in_the_metadata_allocate_nothing(genuine, tmp_path):
    """An architecture naming enormous layers is only text: loading it allocates nothing big and
    restoring it into a model that is not that architecture is a ValueError."""
    meta, arrays = copy.deepcopy(genuine)
    meta["model"]["architecture"] = ["Dense(100000000000, 100000000000)"]
    path = write(tmp_path / "text.npz", meta, arrays)
    peak = _peak_while(lambda: mg.load_checkpoint(path))
    assert peak < 4 * MiB, peak
    model = mg.Sequential(mg.Dense(6, 5), mg.ReLU(), mg.Dense(5, 3), seed=0)
    with pytest.raises(ValueError, match="different model"):
        mg.load_checkpoint(path).restore(model)


def test_malformed_training_position_is_a_value_error_on_resume(genuine, tmp_path):
    meta, arrays = copy.deepcopy(genuine)
    meta["training"] = {
        "epochs_done": 1,
        "iteration": 0,
        "step": "8",
        "epochs": 2,
        "lr_scale": 1.0,
        "current_lr": 0.1,
        "base_lr": 0.1,
        "stop_training": False,
        "iterator": 5,
    }
    path = write(tmp_path / "pos.npz", meta, arrays)
    X = np.zeros((64, 6), np.float32)
    model = mg.Sequential(mg.Dense(6, 5), mg.ReLU(), mg.Dense(5, 3), seed=0)
    with pytest.raises(ValueError, match="malformed training position"):
        mg.fit(
            model,
            X,
            np.arange(64) % 3,
            optimizer=mg.SGD(model.parameters(), lr=0.1),
            epochs=2,
            batch_size=16,
            checkpoint=path,
            resume=True,
            callbacks=[mg.EarlyStopping(patience=5, restore_best=True)],
        )
