"""History: what every iteration and every epoch of a run did, as dicts of equal-length lists."""

from __future__ import annotations

import csv
import json
import math
import os
from typing import Any, Sequence

from ._io import atomic_open

ITERATION_KEYS = ("epoch", "iteration", "step", "batch_size", "lr", "loss", "grad_norm")
# columns present only in runs that use them (a schedule that sets momentum; accumulate > 1)
OPTIONAL_ITERATION_KEYS = ("momentum", "micro_batches")
EPOCH_KEYS = ("epoch", "train_loss", "val_loss", "val_accuracy", "seconds", "samples_per_second")


def epoch_keys(metric_names=("accuracy",)):
    """The per-epoch record's keys for a loss with ``metric_names``: epoch, train_loss,
    val_loss, val_<metric> for each metric, seconds, samples_per_second."""
    return (
        ("epoch", "train_loss", "val_loss")
        + tuple(f"val_{m}" for m in metric_names)
        + ("seconds", "samples_per_second")
    )


def _metric_names(keys):
    """The metric names of an epoch table with ``keys`` (its val_<metric> columns)."""
    base = set(epoch_keys(()))
    if not base <= set(keys) or not all(k in base or k.startswith("val_") for k in keys):
        raise ValueError(
            f"history epochs must have keys {epoch_keys(())} and val_<metric> "
            f"columns, got {sorted(keys)}"
        )
    return tuple(k[4:] for k in keys if k not in base)


def _json_number(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class History:
    """Per-iteration and per-epoch records of a training run.

    ``iterations``: one entry per update: epoch (from 1), iteration (within the epoch, from 1),
    step (updates so far, from 1), batch_size (samples in the update), lr (in effect for that
    update), loss (of that batch, before the update), grad_norm (the global L2 norm of the
    gradient before any clipping; None where the loss diverged before the backward pass), and
    when used: momentum (set by the schedule), micro_batches (with ``fit(accumulate=k)``).
    ``epochs``: one entry per epoch: epoch, train_loss (sample-weighted mean of the epoch's batch
    losses), val_loss and one val_<metric> per metric of the loss (val_accuracy for
    classification, val_mse and val_r2 for regression; None without validation data), seconds,
    samples_per_second.
    ``diverged`` is True when a non-finite loss stopped the run; ``divergence`` then says where.

    Parameters
    ----------
    metric_names : tuple of str, default ("accuracy",): the loss's ``metric_names``
    """

    def __init__(self, metric_names: Sequence[str] = ("accuracy",)) -> None:
        self.metric_names = tuple(metric_names)
        self.iterations: dict[str, list[Any]] = {key: [] for key in ITERATION_KEYS}
        self.epochs: dict[str, list[Any]] = {key: [] for key in epoch_keys(self.metric_names)}
        self.diverged = False
        self.divergence = None
        self.stopped_early = False

    def record_iteration(self, **values: Any) -> None:
        """Append one update; ``values`` holds ITERATION_KEYS (grad_norm may be left out: None)
        and optionally momentum and micro_batches."""
        rows = self.n_iterations
        for key in ITERATION_KEYS:
            self.iterations[key].append(values[key] if key != "grad_norm" else values.get(key))
        for key in OPTIONAL_ITERATION_KEYS:
            if key in values:
                self.iterations.setdefault(key, [None] * rows).append(values[key])

    def record_epoch(self, **values: Any) -> None:
        """Append one epoch; ``values`` holds every key of ``epochs``."""
        missing = [key for key in self.epochs if key not in values]
        if missing:
            raise ValueError(f"record_epoch needs {list(self.epochs)}; missing {missing}")
        for key in self.epochs:
            self.epochs[key].append(values[key])

    @property
    def monitorable(self) -> tuple[str, ...]:
        """The recorded per-epoch values a callback can monitor: train_loss, val_loss, val_*."""
        return tuple(k for k in self.epochs if k not in ("epoch", "seconds", "samples_per_second"))

    @property
    def n_iterations(self) -> int:
        return len(self.iterations["step"])

    @property
    def n_epochs(self) -> int:
        return len(self.epochs["epoch"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "iterations": {
                k: [_json_number(v) for v in vals] for k, vals in self.iterations.items()
            },
            "epochs": {k: [_json_number(v) for v in vals] for k, vals in self.epochs.items()},
            "diverged": self.diverged,
            "divergence": self.divergence,
            "stopped_early": self.stopped_early,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        """A History from :meth:`to_dict`'s form (non-finite numbers may be strings)."""
        history = cls(_metric_names(list(data["epochs"])))
        history.load_state_dict(data)
        return history

    def state_dict(self):
        """Both tables (copies of their lists) and the divergence and early-stop records."""
        return {
            "iterations": {k: list(v) for k, v in self.iterations.items()},
            "epochs": {k: list(v) for k, v in self.epochs.items()},
            "diverged": self.diverged,
            "divergence": self.divergence,
            "stopped_early": self.stopped_early,
        }

    def load_state_dict(self, data):
        """Replace this history's records with ``data`` (:meth:`state_dict` or :meth:`to_dict`
        form; the epoch table may hold other val_<metric> columns). ValueError when the
        tables' keys or lengths are wrong; nothing changes then."""
        tables = {}
        for table, keys in (("iterations", ITERATION_KEYS), ("epochs", None)):
            source = data[table]
            if keys is None:
                keys = epoch_keys(_metric_names(list(source)))
            else:  # grad_norm (absent before it was recorded) and the optional columns
                source = dict(source)
                if "grad_norm" not in source and "step" in source:
                    source["grad_norm"] = [None] * len(source["step"])
                keys = ITERATION_KEYS + tuple(k for k in OPTIONAL_ITERATION_KEYS if k in source)
            if set(source) != set(keys):
                raise ValueError(f"history {table} must have keys {keys}, got {sorted(source)}")
            lengths = {len(v) for v in source.values()}
            if len(lengths) > 1:
                raise ValueError(f"history {table} lists have different lengths {sorted(lengths)}")
            tables[table] = {
                k: [float(v) if isinstance(v, str) else v for v in source[k]] for k in keys
            }
        self.iterations, self.epochs = tables["iterations"], tables["epochs"]
        self.metric_names = _metric_names(list(self.epochs))
        self.diverged = bool(data.get("diverged", False))
        self.divergence = data.get("divergence")
        self.stopped_early = bool(data.get("stopped_early", False))

    def to_json(self, path: str | os.PathLike) -> None:
        """Write both tables and the divergence record as JSON (atomically)."""
        with atomic_open(path, "w") as handle:
            json.dump(self.to_dict(), handle)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> History:
        with open(path) as handle:
            return cls.from_dict(json.load(handle))

    def to_csv(self, path: str | os.PathLike, table: str = "iterations") -> None:
        """Write one table (``"iterations"`` or ``"epochs"``) as CSV with a header (atomically)."""
        if table not in ("iterations", "epochs"):
            raise ValueError(f"table must be 'iterations' or 'epochs', got {table!r}")
        data = getattr(self, table)
        keys = list(data)
        with atomic_open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(keys)
            writer.writerows(zip(*(data[k] for k in keys)))

    def __eq__(self, other):
        return isinstance(other, History) and self.to_dict() == other.to_dict()

    def __repr__(self):
        state = ", diverged" if self.diverged else ""
        return f"History({self.n_epochs} epochs, {self.n_iterations} iterations{state})"
