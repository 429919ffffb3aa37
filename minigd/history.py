"""History: what every iteration and every epoch of a run did, as dicts of equal-length lists."""
import csv
import json
import math

from ._io import atomic_open

ITERATION_KEYS = ("epoch", "iteration", "step", "batch_size", "lr", "loss")
EPOCH_KEYS = ("epoch", "train_loss", "val_loss", "val_accuracy", "seconds", "samples_per_second")


def _json_number(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class History:
    """Per-iteration and per-epoch records of a training run.

    ``iterations``: one entry per update: epoch (from 1), iteration (within the epoch, from 1),
    step (updates so far, from 1), batch_size, lr (in effect for that update), loss (of that
    batch, before the update).
    ``epochs``: one entry per epoch: epoch, train_loss (sample-weighted mean of the epoch's batch
    losses), val_loss and val_accuracy (None without validation data), seconds,
    samples_per_second.
    ``diverged`` is True when a non-finite loss stopped the run; ``divergence`` then says where.
    """

    def __init__(self):
        self.iterations = {key: [] for key in ITERATION_KEYS}
        self.epochs = {key: [] for key in EPOCH_KEYS}
        self.diverged = False
        self.divergence = None
        self.stopped_early = False

    def record_iteration(self, **values):
        for key in ITERATION_KEYS:
            self.iterations[key].append(values[key])

    def record_epoch(self, **values):
        for key in EPOCH_KEYS:
            self.epochs[key].append(values[key])

    @property
    def n_iterations(self):
        return len(self.iterations["step"])

    @property
    def n_epochs(self):
        return len(self.epochs["epoch"])

    def to_dict(self):
        return {"iterations": {k: [_json_number(v) for v in vals]
                               for k, vals in self.iterations.items()},
                "epochs": {k: [_json_number(v) for v in vals] for k, vals in self.epochs.items()},
                "diverged": self.diverged, "divergence": self.divergence,
                "stopped_early": self.stopped_early}

    @classmethod
    def from_dict(cls, data):
        history = cls()
        for table, keys in (("iterations", ITERATION_KEYS), ("epochs", EPOCH_KEYS)):
            source = data[table]
            if set(source) != set(keys):
                raise ValueError(f"history {table} must have keys {keys}, got {sorted(source)}")
            lengths = {len(v) for v in source.values()}
            if len(lengths) > 1:
                raise ValueError(f"history {table} lists have different lengths {sorted(lengths)}")
            getattr(history, table).update({k: [float(v) if isinstance(v, str) else v
                                                for v in source[k]] for k in keys})
        history.diverged = bool(data.get("diverged", False))
        history.divergence = data.get("divergence")
        history.stopped_early = bool(data.get("stopped_early", False))
        return history

    def to_json(self, path):
        """Write both tables and the divergence record as JSON (atomically)."""
        with atomic_open(path, "w") as handle:
            json.dump(self.to_dict(), handle)

    @classmethod
    def from_json(cls, path):
        with open(path) as handle:
            return cls.from_dict(json.load(handle))

    def to_csv(self, path, table="iterations"):
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
