"""The checkpoint file format: model, optimizer, history, training position and callback state in
one ``.npz``, without pickle. (``fit``'s resume machinery lives in :mod:`minigd.resume`.)

A checkpoint is an ``np.savez`` archive read back with ``np.load(allow_pickle=False)``:

    model/<key>             the model's weights (``model.state_dict()``)
    optimizer/<key>         the optimizer's state arrays (momentum_buffer, exp_avg, ...)
    history/<field>         the per-iteration history as arrays (epoch, iteration, step, ...)
    callbacks/<i>/...       arrays held by callbacks (EarlyStopping's best weights)
    metadata                UTF-8 JSON: format version, model architecture and dtype, optimizer
                            type, hyperparameters and step count, the per-epoch history, the
                            training position (epoch, iteration, step, lr_scale, iterator seed)
                            and callback state (EarlyStopping best / wait, ...)
    sha256                  SHA-256 of the metadata and of every array (name, dtype, shape, bytes)

Writes are atomic (temp file beside the target, then ``os.replace``): a crash or kill during a
save leaves the previous checkpoint as it was. Reading checks the archive, the JSON and the
digest, so a truncated or modified file raises ``ValueError`` naming the path.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import zipfile
from typing import Any, Sequence

import numpy as np

from ._io import atomic_open
from .callbacks import Callback
from .history import History
from .layers import Dense
from .model import Sequential
from .optim import Optimizer

FORMAT = "minigd-checkpoint"
VERSION = 1
_INT_FIELDS = ("epoch", "iteration", "step", "batch_size")
_FLOAT_FIELDS = ("lr", "loss")
# saved when the history has them (grad_norm: always since it is recorded), float64 with NaN
# for None (a genuine NaN reads back as None)
_OPTIONAL_FIELDS = ("grad_norm", "momentum", "micro_batches")


# ---- writing --------------------------------------------------------------------------------
def save_checkpoint(
    path: str | os.PathLike,
    model: Sequential,
    optimizer: Optimizer | None = None,
    *,
    history: History | None = None,
    training: dict[str, Any] | None = None,
    callbacks: Sequence[Callback] = (),
) -> str | os.PathLike:
    """Write model, optimizer state, history, training position and callback state to ``path``.

    The file is one ``.npz`` (arrays plus a JSON metadata string and a SHA-256 digest), written
    atomically: until the new file is complete, ``path`` keeps its previous content.

    Parameters
    ----------
    path : str or os.PathLike, written exactly as given (no suffix added)
    model : Sequential
    optimizer : SGD, Adam, AdamW or None, default None
    history : History or None, default None
    training : JSON-serialisable dict or None, default None (``fit`` stores its position here)
    callbacks : iterable of Callback, default ()
        Each callback with ``state_dict()`` (JSON values, numpy arrays, dicts of arrays) and
        ``load_state_dict(d)`` is saved: EarlyStopping and ReduceLROnPlateau (counters, best
        weights) and any of your own; others hold no state worth saving and are skipped
        (:func:`stateful_callbacks`).

    Example
    -------
    >>> mg.save_checkpoint("run.npz", model, optimizer, history=history)
    >>> ckpt = mg.load_checkpoint("run.npz")
    >>> ckpt.restore(model, optimizer)
    """
    path = check_path(path)
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a minigd Sequential, got {type(model).__name__}")
    if optimizer is not None:
        _check_optimizer(model, optimizer)
    if history is not None and not isinstance(history, History):
        raise TypeError(f"history must be a minigd History or None, got {type(history).__name__}")
    if training is not None and not isinstance(training, dict):
        raise TypeError(f"training must be a dict or None, got {type(training).__name__}")
    callbacks = list(callbacks)
    for i, cb in enumerate(callbacks):
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks[{i}] must be a minigd Callback, got {type(cb).__name__}")

    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    meta: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "model": {"architecture": _architecture(model), "dtype": str(model.dtype)},
        "optimizer": None,
        "history": None,
        "training": training,
        "callbacks": [],
    }
    if optimizer is not None:
        state = optimizer.state_dict()
        meta["optimizer"] = {
            "type": state["type"],
            "hyperparameters": state["hyperparameters"],
            "step": int(state["step"]),
        }
        arrays.update({f"optimizer/{k}": v for k, v in state["state"].items()})
    if history is not None:
        meta["history"], history_arrays = _encode_history(history)
        arrays.update(history_arrays)
    for i, cb in enumerate(stateful_callbacks(callbacks)):
        encoded = _encode(dict(cb.state_dict()), f"callbacks/{i}", arrays)
        meta["callbacks"].append({"type": type(cb).__name__, "state": encoded})
    try:
        text = json.dumps(meta, default=_json_scalar)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"training and callback state must be JSON-serialisable: {exc}") from None
    metadata = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    digest = np.frombuffer(_digest(metadata, arrays), dtype=np.uint8)
    with atomic_open(path, "wb") as handle:
        # numpy's stubs type **kwds like allow_pickle (a bool); every value here is an array
        np.savez(handle, metadata=metadata, sha256=digest, **arrays)  # type: ignore[arg-type]
    return path


def _check_optimizer(model, optimizer):
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a minigd optimizer, got {type(optimizer).__name__}")
    owned = {id(p) for p in model.parameters()}
    if not all(id(p) in owned for p in optimizer.params):
        raise ValueError(
            "optimizer was built for another model's parameters: pass the optimizer of this model"
        )


def _json_scalar(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def check_path(path):
    """``path`` as a str (os.fspath); TypeError unless it is a str or os.PathLike."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    return os.fspath(path)


def _architecture(model):
    return [
        f"Dense({layer.in_features}, {layer.out_features_})"
        if isinstance(layer, Dense)
        else f"{type(layer).__name__}()"
        for layer in model.layers
    ]


def _digest(metadata, arrays):
    h = hashlib.sha256()
    h.update(metadata.tobytes())
    for key in sorted(arrays):
        value = arrays[key]
        h.update(f"\0{key}\0{value.dtype.str}\0{value.shape}\0".encode("utf-8"))
        h.update(np.ascontiguousarray(value).reshape(-1).view(np.uint8).data)
    return h.digest()


def _encode_history(history):
    state = history.state_dict()
    arrays = {}
    for field in _INT_FIELDS + _FLOAT_FIELDS:
        dtype = np.int64 if field in _INT_FIELDS else np.float64
        arrays[f"history/{field}"] = np.asarray(state["iterations"][field], dtype=dtype)
    for field in _OPTIONAL_FIELDS:
        if field in state["iterations"]:
            arrays[f"history/{field}"] = np.array(
                [np.nan if v is None else v for v in state["iterations"][field]], dtype=np.float64
            )
    meta = {
        "epochs": state["epochs"],
        "diverged": state["diverged"],
        "divergence": state["divergence"],
        "stopped_early": state["stopped_early"],
    }
    return meta, arrays


def stateful_callbacks(callbacks):
    """The callbacks a checkpoint saves, in order: those with callable ``state_dict`` and
    ``load_state_dict`` (EarlyStopping, ReduceLROnPlateau, and yours that define both)."""
    return [
        cb
        for cb in callbacks
        if callable(getattr(cb, "state_dict", None))
        and callable(getattr(cb, "load_state_dict", None))
    ]


def _encode(state, prefix, arrays):
    """JSON-able copy of ``state``; arrays and dicts of arrays move to ``arrays`` under prefix."""
    out = {}
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            arrays[f"{prefix}/{key}"] = value
            out[key] = {"__array__": f"{prefix}/{key}"}
        elif (
            isinstance(value, dict)
            and value
            and all(isinstance(v, np.ndarray) for v in value.values())
        ):
            names = {k: f"{prefix}/{key}/{k}" for k in value}
            arrays.update({names[k]: v for k, v in value.items()})
            out[key] = {"__arrays__": names}
        else:
            out[key] = value
    return out


def _decode(state, arrays):
    out = {}
    for key, value in state.items():
        if isinstance(value, dict) and set(value) == {"__array__"}:
            out[key] = arrays[value["__array__"]].copy()
        elif isinstance(value, dict) and set(value) == {"__arrays__"}:
            out[key] = {k: arrays[name].copy() for k, name in value["__arrays__"].items()}
        else:
            out[key] = value
    return out


# ---- reading --------------------------------------------------------------------------------
class Checkpoint:
    """A checkpoint read by :func:`load_checkpoint`; ``restore(model, optimizer)`` applies it.

    Attributes: path, metadata (the JSON dict), model_state (dict of arrays), optimizer_state
    (``optimizer.state_dict()`` form, or None), history (History or None), training (dict or
    None), callbacks (list of {"type", "state"}).
    """

    def __init__(self, path, metadata, arrays):
        self.path, self.metadata = path, metadata
        self.model_state = _section(arrays, "model/")
        self.optimizer_state = None
        if metadata["optimizer"] is not None:
            opt = metadata["optimizer"]
            self.optimizer_state = {
                "type": opt["type"],
                "hyperparameters": opt["hyperparameters"],
                "step": opt["step"],
                "state": _section(arrays, "optimizer/"),
            }
        self.history = _decode_history(metadata["history"], arrays)
        self.training = metadata["training"]
        self.callbacks = [
            {"type": c["type"], "state": _decode(c["state"], arrays)} for c in metadata["callbacks"]
        ]

    def check_matches(self, model: Sequential, optimizer: Optimizer | None = None) -> None:
        """Raise ValueError/TypeError unless model (and optimizer) fit this checkpoint."""
        if not isinstance(model, Sequential):
            raise TypeError(f"model must be a minigd Sequential, got {type(model).__name__}")
        saved = self.metadata["model"]
        if saved["architecture"] != _architecture(model):
            raise ValueError(
                f"checkpoint {self.path} holds a different model: "
                f"{saved['architecture']}, not {_architecture(model)}"
            )
        if saved["dtype"] != str(model.dtype):
            raise ValueError(
                f"checkpoint {self.path} holds {saved['dtype']} weights but the "
                f"model is {model.dtype}"
            )
        if optimizer is None:
            return
        _check_optimizer(model, optimizer)
        if self.optimizer_state is None:
            raise ValueError(f"checkpoint {self.path} holds no optimizer state")
        if self.optimizer_state["type"] != type(optimizer).__name__:
            raise ValueError(
                f"checkpoint {self.path} holds {self.optimizer_state['type']} state, "
                f"not {type(optimizer).__name__}"
            )

    def restore(self, model: Sequential, optimizer: Optimizer | None = None) -> None:
        """Load weights (and optimizer state) after checking they match; all or nothing."""
        self.check_matches(model, optimizer)
        weights = model.state_dict()
        previous = optimizer.state_dict() if optimizer is not None else None
        try:
            model.load_state_dict(self.model_state)
            if optimizer is not None:
                optimizer.load_state_dict(self.optimizer_state)
        except (TypeError, ValueError) as exc:
            model.load_state_dict(weights)
            if optimizer is not None and previous is not None:
                optimizer.load_state_dict(previous)
            raise ValueError(f"checkpoint {self.path} does not fit: {exc}") from None

    def __repr__(self):
        position = ""
        if isinstance(self.training, dict) and "epochs_done" in self.training:
            position = (
                f", {self.training['epochs_done']} epochs + "
                f"{self.training['iteration']} iterations done"
            )
        return f"Checkpoint({self.path!r}{position})"


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and verify a checkpoint written by :func:`save_checkpoint`; returns a Checkpoint.

    Raises FileNotFoundError when ``path`` does not exist and ValueError (naming the path) when
    it is not a readable minigd checkpoint: truncated, modified (SHA-256 mismatch), or not one.

    Example
    -------
    >>> ckpt = mg.load_checkpoint("run.npz")
    >>> ckpt.restore(model, optimizer); ckpt.history
    """
    path = check_path(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        arrays = _read_arrays(path)
    except Exception as exc:  # zipfile, numpy and OS errors of a damaged file all mean the same
        raise ValueError(
            f"checkpoint {path} cannot be read (truncated, damaged or not written "
            f"by minigd?): {type(exc).__name__}: {exc}"
        ) from None
    metadata, digest = arrays.pop("metadata", None), arrays.pop("sha256", None)
    if metadata is None or digest is None or metadata.dtype != np.uint8 or metadata.ndim != 1:
        raise ValueError(f"{path} is not a minigd checkpoint (no metadata)")
    if not hmac.compare_digest(digest.tobytes(), _digest(metadata, arrays)):
        raise ValueError(
            f"checkpoint {path} fails its SHA-256 check: the file was modified or "
            f"damaged after it was written"
        )
    try:
        meta = json.loads(metadata.tobytes().decode("utf-8"))
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else meta
            raise ValueError(f"format is {found!r}")
        if not _is_int(meta.get("version")) or meta["version"] > VERSION:
            raise ValueError(
                f"version {meta.get('version')!r} is newer than this minigd reads ({VERSION})"
            )
        _check_metadata(meta, arrays)
        return Checkpoint(path, meta, arrays)
    except RecursionError:
        raise ValueError(
            f"{path} is not a valid minigd checkpoint: its metadata JSON is nested too deeply"
        ) from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path} is not a valid minigd checkpoint: {exc}") from None


def _read_arrays(path):
    """The archive's arrays, after checking every member's header against the file.

    A checkpoint is an uncompressed ``np.savez`` archive of numeric arrays, so every member's
    declared shape and dtype must account exactly for its stored bytes, and all of them together
    fit in the file: no header can make this allocate more than the file's size.
    """
    size = os.path.getsize(path)
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        if sum(info.file_size for info in infos) > size:
            raise ValueError("its members claim more bytes than the file holds")
        for info in infos:
            _check_member(archive, info)
        arrays = {}
        for info in infos:
            with archive.open(info) as handle:
                arrays[info.filename[:-4]] = np.lib.format.read_array(handle, allow_pickle=False)
    return arrays


def _check_member(archive, info):
    name = info.filename
    if not name.endswith(".npy"):
        raise ValueError(f"member {name!r} is not an .npy array")
    if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
        raise ValueError(f"member {name!r} is compressed (minigd writes uncompressed arrays)")
    with archive.open(info) as handle:
        version = np.lib.format.read_magic(handle)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"member {name!r} has .npy format version {version}")
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read_header(handle)
        offset = handle.tell()
    if dtype.kind not in "biuf" or dtype.hasobject or dtype.fields is not None:
        raise ValueError(f"member {name!r} has dtype {dtype}, not a number type")
    if not all(_is_int(n) and n >= 0 for n in shape):
        raise ValueError(f"member {name!r} has shape {shape}")
    count = 1
    for n in shape:
        count *= n
    if offset + count * dtype.itemsize != info.file_size:
        raise ValueError(
            f"member {name!r} declares shape {shape} of {dtype} "
            f"({count * dtype.itemsize} bytes) but stores "
            f"{info.file_size - offset} bytes"
        )


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _expect(value, types, what):
    if not isinstance(value, types) or isinstance(value, bool) and bool not in types:
        names = " or ".join("None" if t is type(None) else t.__name__ for t in types)
        raise TypeError(f"{what} must be {names}, got {type(value).__name__}")
    return value


def _check_metadata(meta, arrays):
    """Check the metadata's structure and that it agrees with the arrays (before any use)."""
    for key in ("model", "optimizer", "history", "training", "callbacks"):
        if key not in meta:
            raise KeyError(f"metadata has no {key!r}")
    model = _expect(meta["model"], (dict,), "metadata['model']")
    architecture = _expect(model.get("architecture"), (list,), "model architecture")
    if not all(isinstance(layer, str) for layer in architecture):
        raise TypeError("model architecture must be a list of layer names")
    if model.get("dtype") not in ("float32", "float64"):
        raise ValueError(f"model dtype must be 'float32' or 'float64', got {model.get('dtype')!r}")
    dtype = np.dtype(model["dtype"])
    for key, value in arrays.items():
        if key.startswith(("model/", "optimizer/")) and value.dtype != dtype:
            raise ValueError(f"array {key!r} has dtype {value.dtype}, the model is {dtype}")
    if not _section(arrays, "model/"):
        raise ValueError("it holds no model weights")
    opt = _expect(meta["optimizer"], (dict, type(None)), "metadata['optimizer']")
    if opt is not None:
        _expect(opt.get("type"), (str,), "optimizer type")
        _expect(opt.get("hyperparameters"), (dict,), "optimizer hyperparameters")
        if not _is_int(opt.get("step")) or opt["step"] < 0:
            raise ValueError(f"optimizer step must be an int >= 0, got {opt.get('step')!r}")
    history = _expect(meta["history"], (dict, type(None)), "metadata['history']")
    if history is not None:
        _check_history(history, arrays)
    _expect(meta["training"], (dict, type(None)), "metadata['training']")
    for i, cb in enumerate(_expect(meta["callbacks"], (list,), "metadata['callbacks']")):
        _expect(cb, (dict,), f"callbacks[{i}]")
        _expect(cb.get("type"), (str,), f"callbacks[{i}] type")
        for value in _expect(cb.get("state"), (dict,), f"callbacks[{i}] state").values():
            names = []
            if isinstance(value, dict) and set(value) == {"__array__"}:
                names = [value["__array__"]]
            elif isinstance(value, dict) and set(value) == {"__arrays__"}:
                names = list(_expect(value["__arrays__"], (dict,), "callback arrays").values())
            for name in names:
                if not isinstance(name, str) or name not in arrays:
                    raise ValueError(f"callbacks[{i}] refers to a missing array {name!r}")


def _check_history(history, arrays):
    lengths = set()
    for field in _INT_FIELDS + _FLOAT_FIELDS:
        key = f"history/{field}"
        if key not in arrays:
            raise KeyError(f"history array {key!r} is missing")
        value = arrays[key]
        expected = np.int64 if field in _INT_FIELDS else np.float64
        if value.dtype != expected or value.ndim != 1:
            raise ValueError(
                f"history array {key!r} must be 1-D {np.dtype(expected)}, got "
                f"{value.ndim}-D {value.dtype}"
            )
        lengths.add(value.shape[0])
    for field in _OPTIONAL_FIELDS:
        value = arrays.get(f"history/{field}")
        if value is not None:
            if value.dtype != np.float64 or value.ndim != 1:
                raise ValueError(
                    f"history array 'history/{field}' must be 1-D float64, got "
                    f"{value.ndim}-D {value.dtype}"
                )
            lengths.add(value.shape[0])
    if len(lengths) > 1:
        raise ValueError(f"history arrays have different lengths {sorted(lengths)}")
    epochs = _expect(history.get("epochs"), (dict,), "history epochs")
    for name, values in epochs.items():
        for value in _expect(values, (list,), f"history epochs[{name!r}]"):
            _expect(value, (int, float, str, type(None)), f"history epochs[{name!r}] values")
    _expect(history.get("divergence"), (dict, type(None)), "history divergence")


def _section(arrays, prefix):
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}


def _decode_history(meta, arrays):
    if meta is None:
        return None
    iterations = {f: arrays[f"history/{f}"].tolist() for f in _INT_FIELDS + _FLOAT_FIELDS}
    for field in _OPTIONAL_FIELDS:
        if f"history/{field}" in arrays:
            iterations[field] = [
                None if v != v else (int(v) if field == "micro_batches" else v)
                for v in arrays[f"history/{field}"].tolist()
            ]
    return History.from_dict(
        {
            "iterations": iterations,
            "epochs": meta["epochs"],
            "diverged": meta["diverged"],
            "divergence": meta["divergence"],
            "stopped_early": meta["stopped_early"],
        }
    )
