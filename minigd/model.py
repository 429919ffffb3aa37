"""Sequential: a stack of layers with all parameters in one flat buffer."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _validation as check
from .backend import kernels as _active_kernels
from .hooks import hooks_apply
from .layers import Buffer, Flatten, Layer, Parameter

DTYPES = (np.float32, np.float64)
_PREDICT_CHUNK = 4096
_CHUNK_BYTES = 16 << 20


def chunk_rows(n_features, dtype):
    """Rows per chunk for predict/evaluate: 4096, fewer when a chunk would exceed ~16 MiB."""
    return max(1, min(_PREDICT_CHUNK, _CHUNK_BYTES // (n_features * np.dtype(dtype).itemsize)))


class evaluating:
    """Context manager: ``with evaluating(model):`` runs in eval mode, then restores the mode."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.previous = self.model.training
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        self.model.train(self.previous)


def _check_dtype(dtype):
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dtype.type not in DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


class Sequential:
    """Layers applied in order; ``model(x)`` returns the logits.

    Every parameter is a view into one flat ``float32`` (or ``float64``) buffer and every
    gradient a view into a second one, so optimizers update the whole model in one pass.
    Buffers for activations and gradients are allocated once and reused for every batch.
    The engine API that the training loop, the fused path and the experiments use is public:
    ``flat_values``, ``flat_grads``, ``forward_batch``, ``backward_batch``. ``train()`` and
    ``eval()`` set the mode of every layer; ``predict*`` run in eval mode and restore it.
    Layer buffers (non-trainable state) travel with ``state_dict``, ``clone``, copy and pickle.

    ``copy.copy``, ``copy.deepcopy`` and pickle all give an independent model, equal to
    ``model.clone()``: same layers, dtype, seed and current weights, with its own flat buffers
    (gradients start at zero). ``copy.copy`` is a full copy too, on purpose: a shallow copy
    would share the weights with the original, and training one would silently change both.
    A pickle holds the configuration, the weights and the layer buffers only, never the reused
    batch buffers, so it stays about the size of the weights.

    Parameters
    ----------
    *layers : Layer
    seed : int or None, default None
        Seeds the initial weights (``None``: fresh entropy, kept in ``model.seed``).
    dtype : float32 or float64, default np.float32

    Example
    -------
    >>> import minigd as mg
    >>> model = mg.Sequential(mg.Dense(784, 128), mg.ReLU(), mg.Dense(128, 10), seed=0)
    >>> model.num_parameters()
    101770
    """

    def __init__(
        self, *layers: Layer, seed: int | None = None, dtype: npt.DTypeLike = np.float32
    ) -> None:
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(
                    f"layer {i} must be a minigd layer (a subclass of mg.Layer), "
                    f"got {type(layer).__name__}"
                )
        if len({id(layer) for layer in layers}) != len(layers):
            raise ValueError("the same layer object appears twice; create a new one for each use")
        seed = check.seed("seed", seed)
        self.dtype = _check_dtype(dtype)
        if seed is None:
            entropy: Any = np.random.SeedSequence().entropy  # an int when drawn from the OS
            seed = entropy
        self.seed = int(seed)
        self.layers = list(layers)
        self.training = True
        self._widths = self._infer_widths()
        self._build_parameters()
        self._capacity = 0
        self._batch = None

    def _infer_widths(self):
        first = next(
            (l for l in self.layers if isinstance(getattr(l, "in_features", None), int)), None
        )
        if first is None:
            raise ValueError(
                "Sequential needs at least one layer with in_features, such as "
                "Dense, to know its input width"
            )
        widths = [first.in_features]
        for i, layer in enumerate(self.layers):
            expected = getattr(layer, "in_features", widths[-1])
            if expected != widths[-1]:
                raise ValueError(
                    f"layer {i} ({layer!r}) expects {expected} inputs but the "
                    f"previous layer gives {widths[-1]}"
                )
            widths.append(layer.out_features(widths[-1]))
        return widths

    def _build_parameters(self):
        """Adopt every layer's parameters into the flat buffers, give every buffer an array of
        the model dtype, and initialise the parameters (one SeedSequence child per layer)."""
        named = [
            (f"{i}.{name}", p)
            for i, layer in enumerate(self.layers)
            for name, p in layer.named_parameters()
        ]
        total = sum(p.size for _, p in named)
        self._values = np.zeros(total, dtype=self.dtype)
        self._grads = np.zeros(total, dtype=self.dtype)
        self._named = {}
        offset = 0
        for key, param in named:
            param.adopt(self._values, self._grads, offset)
            self._named[key] = param
            offset += param.size
        self._buffers = {}
        for i, layer in enumerate(self.layers):
            for name, buffer in layer.named_buffers():
                buffer.value = (
                    np.zeros(buffer.shape, dtype=self.dtype)
                    if buffer.value is None
                    else np.array(buffer.value, dtype=self.dtype)
                )
                self._buffers[f"{i}.{name}"] = buffer
        root = np.random.SeedSequence(self.seed)
        for layer, child in zip(self.layers, root.spawn(len(self.layers))):
            layer.reset_parameters(np.random.default_rng(child))

    # ---- shapes -------------------------------------------------------------------------
    @property
    def n_features(self) -> int:
        """Number of input features the first layer expects."""
        return self._widths[0]

    @property
    def n_outputs(self) -> int:
        """Width of the output (number of classes for a classifier)."""
        return self._widths[-1]

    def num_parameters(self) -> int:
        return int(self._values.size)

    @property
    def flat_values(self) -> np.ndarray:
        """Every parameter value in one 1-D array (parameters are views of it; writable)."""
        return self._values

    @property
    def flat_grads(self) -> np.ndarray:
        """Every parameter gradient in one 1-D array, in the order of ``flat_values``."""
        return self._grads

    def parameters(self) -> list[Parameter]:
        """The Parameter objects (``value`` and ``grad`` arrays, updated in place), in order."""
        return list(self._named.values())

    def named_parameters(self) -> list[tuple[str, Parameter]]:
        """[("0.weight", Parameter), ...] keyed by layer index, in order."""
        return list(self._named.items())

    def buffers(self) -> list[Buffer]:
        """The layers' Buffer objects (non-trainable state), in order."""
        return list(self._buffers.values())

    def named_buffers(self) -> list[tuple[str, Buffer]]:
        """[("{layer index}.{name}", Buffer), ...] in order."""
        return list(self._buffers.items())

    # ---- mode ---------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Sequential:
        """Set every layer to training mode (``mode=False``: evaluation); returns the model."""
        mode = check.boolean("mode", mode)
        for layer in self.layers:
            layer.train(mode)
        self.training = mode
        return self

    def eval(self) -> Sequential:
        """Set every layer to evaluation mode; returns the model."""
        return self.train(False)

    # ---- compute ------------------------------------------------------------------------
    def _reserve(self, n):
        if n <= self._capacity:
            return
        for i, layer in enumerate(self.layers):
            layer.allocate(n, self._widths[i], self.dtype)
        self._capacity = n

    def forward_batch(self, x, kernels=None):
        """Logits for a C-contiguous batch x of the model dtype (engine API, unchecked).

        Returns a view of a reused buffer, valid until the next call; no allocation once the
        capacity (the largest batch so far) is reached. ``kernels``: a backend kernel module,
        default the active backend's.
        """
        kernels = kernels or _active_kernels()
        self._reserve(x.shape[0])
        for layer in self.layers:
            if hooks_apply(type(layer), ("forward_batch",), ("forward",)):
                x = layer.forward_batch(x, kernels)
            else:  # a subclass rewrote the math of a built-in: run what it wrote
                x = Layer.forward_batch(layer, x, kernels)
        self._batch = x.shape[0]
        return x

    def backward_batch(self, dlogits, need_dx=False, kernels=None):
        """Back-propagate d(loss)/d(logits) of the last ``forward_batch`` (engine API,
        unchecked): fill every ``grad``; return dx (a reused buffer) or None."""
        kernels = kernels or _active_kernels()
        dy = dlogits
        last = len(self.layers) - 1
        for i in range(last, -1, -1):
            layer = self.layers[i]
            if hooks_apply(type(layer), ("backward_batch",), ("backward",)):
                dy = layer.backward_batch(dy, kernels, need_dx or i > 0)
            else:
                dy = Layer.backward_batch(layer, dy, kernels, need_dx or i > 0)
        return dy

    def check_input(self, X: npt.ArrayLike, name: str = "X") -> np.ndarray:
        """X validated as (n, n_features) (ValueError/TypeError naming ``name`` otherwise).

        When the first layer is a :class:`minigd.Flatten`, X may have more dimensions, such as
        (n, 28, 28) images: it is viewed as (n, -1) (a reshape, which copies nothing for a
        C-contiguous array or memmap).
        """
        shape = getattr(X, "shape", None)
        if (
            isinstance(self.layers[0], Flatten)
            and shape is not None
            and len(shape) > 2
            and hasattr(X, "reshape")
        ):
            X = X.reshape(shape[0], -1)
        return check.features(name, X, self.n_features)

    def _as_input(self, x, name="x"):
        x = self.check_input(x, name)
        return np.ascontiguousarray(x, dtype=self.dtype)

    def forward(self, x: npt.ArrayLike) -> np.ndarray:
        """Logits of shape (n, n_outputs) for inputs x of shape (n, n_features) (a new array)."""
        return self.forward_batch(self._as_input(x)).copy()

    __call__ = forward

    def backward(self, dlogits: np.ndarray) -> np.ndarray:
        """Back-propagate d(loss)/d(logits) of the last forward: fill every ``grad``, return dx."""
        if self._batch is None:
            raise RuntimeError("backward() needs a forward() first")
        dlogits = check.features("dlogits", dlogits)
        if dlogits.shape != (self._batch, self.n_outputs):
            raise ValueError(
                f"dlogits must have shape {(self._batch, self.n_outputs)} (the last "
                f"forward's output), got {dlogits.shape}"
            )
        dlogits = np.ascontiguousarray(dlogits, dtype=self.dtype)
        return self.backward_batch(dlogits, need_dx=True).copy()

    def predict_logits(self, X: npt.ArrayLike) -> np.ndarray:
        """Logits for every row of X, in eval mode, computed in chunks (X may be a memmap)."""
        X = self.check_input(X, "X")
        out = np.empty((X.shape[0], self.n_outputs), dtype=self.dtype)
        kernels = _active_kernels()
        rows = chunk_rows(self.n_features, self.dtype)
        with evaluating(self):
            for start in range(0, X.shape[0], rows):
                chunk = np.ascontiguousarray(X[start : start + rows], dtype=self.dtype)
                out[start : start + chunk.shape[0]] = self.forward_batch(chunk, kernels)
        return out

    def predict(self, X: npt.ArrayLike) -> np.ndarray:
        """Class ids (int64) of the largest logit for every row of X (eval mode)."""
        return self.predict_logits(X).argmax(axis=1).astype(np.int64)

    def predict_proba(self, X: npt.ArrayLike) -> np.ndarray:
        """Softmax of the logits, float64, shape (n, n_outputs) (eval mode)."""
        logits = self.predict_logits(X).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        return logits

    # ---- state --------------------------------------------------------------------------
    def _entries(self):
        """{key: Parameter or Buffer}: what state_dict holds, parameters first."""
        return {**self._named, **self._buffers}

    def state_dict(self) -> dict[str, np.ndarray]:
        """{"0.weight": array, "0.bias": array, ...}: copies of every parameter, then every
        buffer (``"{layer index}.{name}"``)."""
        return {key: p.value.copy() for key, p in self._entries().items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Copy arrays into the parameters and buffers after checking keys, shapes and dtypes
        (all or nothing).

        ``state`` is a dict of arrays as ``state_dict()`` gives, or any mapping of them, such as
        ``np.load("model.npz")`` of a file written with ``np.savez(path, **model.state_dict())``
        (the ``model.npz`` of ``minigd train``).
        """
        if not isinstance(state, Mapping):
            raise TypeError(
                f"state must be a dict (or mapping, such as np.load of an .npz) of "
                f"arrays, got {type(state).__name__}"
            )
        entries = self._entries()
        keys = set(state.keys())
        missing = sorted(set(entries) - keys)
        unexpected = sorted(keys - set(entries))
        if missing or unexpected:
            raise ValueError(
                f"state dict keys do not match the model: missing {missing}, "
                f"unexpected {unexpected}"
            )
        state = {key: state[key] for key in entries}  # reads an NpzFile's arrays once
        for key, p in entries.items():
            value = state[key]
            if not isinstance(value, np.ndarray):
                raise TypeError(f"state[{key!r}] must be a numpy array, got {type(value).__name__}")
            if value.shape != p.shape:
                raise ValueError(f"state[{key!r}] has shape {value.shape}, expected {p.shape}")
            if value.dtype != p.dtype:
                raise TypeError(f"state[{key!r}] has dtype {value.dtype}, expected {p.dtype}")
            if not np.all(np.isfinite(value)):
                raise ValueError(f"state[{key!r}] contains NaN or inf")
        for key, p in entries.items():
            p.value[...] = state[key]

    def clone(self) -> Sequential:
        """An independent copy: same layers, dtype, seed, mode, current weights and buffers."""
        other = Sequential(
            *[layer.clone() for layer in self.layers], seed=self.seed, dtype=self.dtype
        )
        other.flat_values[...] = self._values
        for (_, mine), (_, theirs) in zip(self.named_buffers(), other.named_buffers()):
            theirs.value[...] = mine.value
        return other.train(self.training)

    # ---- copy and pickle -------------------------------------------------------------------
    _SCRATCH = ("_values", "_grads", "_named", "_buffers", "_capacity", "_batch", "layers")

    def __getstate__(self):
        """Configuration and copies of the weights and buffers; no gradients, views or batch
        buffers."""
        state = {k: v for k, v in self.__dict__.items() if k not in self._SCRATCH}
        state["layers"] = [layer.clone() for layer in self.layers]
        for layer in state["layers"]:
            for entry in layer.parameters() + layer.buffers():
                entry.release()
        state["weights"] = self._values.copy()
        state["buffers"] = {key: b.value.copy() for key, b in self._buffers.items()}
        return state

    def __setstate__(self, state):
        """Rebuild the flat buffers and every view from the configuration, then copy the weights
        and buffers in (fresh, writable arrays even when the pickle's were read-only)."""
        state = dict(state)
        if "weights" not in state:  # a pickle from before __getstate__ existed
            state["weights"] = state["_values"]
            state = {k: v for k, v in state.items() if k not in self._SCRATCH[:-1]}
        state["layers"] = [layer.clone() for layer in state["layers"]]  # older layer classes
        weights = state.pop("weights")
        buffers = state.pop("buffers", {})
        state.setdefault("training", True)
        self.__dict__.update(state)
        self._build_parameters()  # binds every layer to its views (weights overwritten)
        if weights.shape != self._values.shape:
            raise ValueError(
                f"pickled weights have shape {weights.shape}, the layers need {self._values.shape}"
            )
        if set(buffers) != set(self._buffers):
            raise ValueError(
                f"pickled buffers {sorted(buffers)} do not match the layers' "
                f"{sorted(self._buffers)}"
            )
        self._values[...] = weights
        for key, value in buffers.items():
            self._buffers[key].value[...] = value
        self.train(self.training)
        self._capacity = 0
        self._batch = None

    def __copy__(self):
        """A full, independent copy (as ``clone()``): see the class docstring."""
        return self.__deepcopy__({})

    def __deepcopy__(self, memo):
        other = type(self).__new__(type(self))
        memo[id(self)] = other
        state = self.__getstate__()
        weights, buffers = state.pop("weights"), state.pop("buffers")
        state = copy.deepcopy(state, memo)
        state["weights"], state["buffers"] = weights, buffers
        other.__setstate__(state)
        # an optimizer deep-copied after the model, in the same call, then holds the copy's views
        memo[id(self._values)], memo[id(self._grads)] = other.flat_values, other.flat_grads
        for (_, p), (_, twin) in zip(self.named_parameters(), other.named_parameters()):
            memo[id(p)] = twin
        return other

    def __repr__(self):
        lines = [f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers)]
        return (
            "Sequential(\n"
            + "\n".join(lines)
            + f"\n)  # {self.num_parameters():,} parameters, {self.dtype}"
        )
