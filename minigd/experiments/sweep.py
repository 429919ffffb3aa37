"""Batch size x learning rate sweeps: train every cell, one row of results per cell.

A cell is (batch_size, lr, seed). Each cell builds a fresh model with ``build_model(seed)``,
trains it with ``minigd.fit`` (shuffling seeded by the same seed) and reports its final losses
and accuracies, its number of updates and its wall time. A cell's numbers depend only on the
cell and the data, never on where or in which order it runs: cells run with one BLAS and one
Numba thread, in this process (``n_jobs=1``) or in joblib workers, so ``n_jobs`` and the joblib
backend (processes, a Dask or Ray cluster) change the timings and nothing else.
"""
import csv
import json
import math
import numbers
import time
import warnings

import numpy as np

from .. import _validation as check
from .._io import atomic_open
from ..backend import get_backend, use_backend
from ..history import History
from ..layers import Dense, ReLU, Sigmoid, Tanh
from ..metrics import evaluate
from ..model import Sequential
from ..optim import SGD, Adam, AdamW, Optimizer
from ..schedules import linear_scaling, sqrt_scaling
from ..training import fit

COLUMNS = ("batch_size", "lr", "seed", "train_loss", "val_loss", "val_accuracy",
           "train_accuracy", "updates", "epochs", "seconds", "diverged")
SCALINGS = {"linear": linear_scaling, "sqrt": sqrt_scaling}
OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}
ACTIVATIONS = {"relu": ReLU, "tanh": Tanh, "sigmoid": Sigmoid}


class MLPBuilder:
    """A picklable ``build_model``: ``MLPBuilder((784, 128, 10))(seed)`` returns
    ``Sequential(Dense(784, 128), ReLU(), Dense(128, 10), seed=seed)``.

    Parameters
    ----------
    widths : sequence of int >= 1, input width, hidden widths, number of classes (at least 2)
    activation : "relu" (default), "tanh" or "sigmoid", between the Dense layers
    dtype : "float32" (default) or "float64"
    init : weight initialisation of the Dense layers, default "he"

    A lambda works as ``build_model`` too (joblib and Dask ship it with cloudpickle); a builder
    object also has a readable repr, which ``SweepResult.config`` records.
    """

    def __init__(self, widths, activation="relu", dtype="float32", init="he"):
        widths = tuple(widths)
        if len(widths) < 2:
            raise ValueError(f"widths needs an input and an output width, got {widths!r}")
        self.widths = tuple(check.positive_int(f"widths[{i}]", w) for i, w in enumerate(widths))
        self.activation = check.choice("activation", activation, tuple(ACTIVATIONS))
        self.dtype = check.choice("dtype", str(np.dtype(dtype)), ("float32", "float64"))
        self.init = init

    def __call__(self, seed):
        layers = []
        for i in range(len(self.widths) - 1):
            layers.append(Dense(self.widths[i], self.widths[i + 1], init=self.init))
            if i < len(self.widths) - 2:
                layers.append(ACTIVATIONS[self.activation]())
        return Sequential(*layers, seed=seed, dtype=self.dtype)

    def __repr__(self):
        return (f"MLPBuilder({self.widths!r}, activation={self.activation!r}, "
                f"dtype={self.dtype!r}, init={self.init!r})")


class SweepResult:
    """The outcome of :func:`sweep`.

    ``table``: a list of row dicts, one per cell in the order batch size, then lr, then seed,
    with the keys of ``COLUMNS``: batch_size, lr, seed, train_loss (mean loss of the last
    epoch), val_loss, val_accuracy (last epoch; NaN without validation data), train_accuracy
    (final model on the training data), updates (optimizer steps applied), epochs (completed),
    seconds (wall time of the cell), diverged (True when a non-finite loss stopped the cell;
    its losses and accuracies are then NaN).
    ``histories``: {(batch_size, lr, seed): History} of every cell.
    ``config``: the sweep's arguments (epochs, optimizer, scaling, ...).
    """

    def __init__(self, table, histories, config):
        self.table, self.histories, self.config = table, histories, config

    def rows(self, **where):
        """Copies of the rows whose columns equal ``where`` (all rows without arguments)."""
        unknown = set(where) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown column(s) {sorted(unknown)}; columns are {COLUMNS}")
        return [dict(row) for row in self.table
                if all(_equal(row[k], v) for k, v in where.items())]

    def column(self, name):
        """One column as a list, in table order."""
        check.choice("name", name, COLUMNS)
        return [row[name] for row in self.table]

    def best(self, value="val_accuracy", mode=None):
        """The row with the best ``value`` among cells that did not diverge (max for accuracies,
        min for losses unless ``mode`` says "max" or "min"); None if every cell diverged."""
        check.choice("value", value, COLUMNS)
        mode = mode or ("max" if "accuracy" in value else "min")
        check.choice("mode", mode, ("min", "max"))
        rows = [r for r in self.table if not r["diverged"] and math.isfinite(r[value])]
        if not rows:
            return None
        pick = max if mode == "max" else min
        return dict(pick(rows, key=lambda r: r[value]))

    def to_csv(self, path):
        """Write the table as CSV with a header row (atomically)."""
        with atomic_open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(COLUMNS)
            for row in self.table:
                writer.writerow([row[k] for k in COLUMNS])

    def to_dict(self, histories=True):
        data = {"config": self.config, "columns": list(COLUMNS),
                "table": [{k: _json_value(row[k]) for k in COLUMNS} for row in self.table]}
        if histories:
            data["histories"] = [self.histories[_key(row)].to_dict() for row in self.table]
        return data

    def to_json(self, path, histories=True):
        """Write config, table (NaN as null) and, by default, every cell's history (atomically)."""
        with atomic_open(path, "w") as handle:
            json.dump(self.to_dict(histories), handle, allow_nan=False)

    @classmethod
    def from_json(cls, path):
        with open(path) as handle:
            data = json.load(handle)
        table = [{k: (math.nan if row[k] is None else row[k]) for k in COLUMNS}
                 for row in data["table"]]
        histories = {}
        for row, history in zip(table, data.get("histories", [])):
            histories[_key(row)] = History.from_dict(history)
        return cls(table, histories, data["config"])

    def __len__(self):
        return len(self.table)

    def __repr__(self):
        diverged = sum(row["diverged"] for row in self.table)
        return (f"SweepResult({len(self.table)} cells: batch sizes "
                f"{sorted({r['batch_size'] for r in self.table})}, "
                f"{len({r['lr'] for r in self.table})} lrs, "
                f"{len({r['seed'] for r in self.table})} seeds; {diverged} diverged)")


def _key(row):
    return (row["batch_size"], row["lr"], row["seed"])


def _equal(a, b):
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a)
                      and math.isnan(b))


def _json_value(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def sweep(build_model, X, y, *, batch_sizes, lrs=None, scaling=None, base_lr=None,
          base_batch_size=None, epochs, seeds=(0,), optimizer="sgd", validation_data=None,
          n_jobs=1, backend=None, verbose=0):
    """Train one model per (batch size, lr, seed) cell and tabulate the results.

    The lrs are either given (``lrs``: every batch size meets every lr) or follow a batch-size
    rule from ``base_lr`` at ``base_batch_size`` (``scaling``): "linear",
    lr(B) = base_lr * B / base_batch_size (Goyal et al. 2017), or "sqrt",
    lr(B) = base_lr * sqrt(B / base_batch_size) (Hoffer et al. 2017).

    Parameters
    ----------
    build_model : callable seed -> Sequential, a fresh model for each cell (e.g. MLPBuilder)
    X, y : training data, as ``fit`` takes it (X may be an np.memmap)
    batch_sizes : sequence of int >= 1
    lrs : sequence of float > 0, or None when ``scaling`` is given
    scaling : None (default), "linear" or "sqrt"
    base_lr : float > 0, needed with ``scaling``
    base_batch_size : int >= 1, default the smallest batch size
    epochs : int >= 1
    seeds : sequence of int >= 0, default (0,); seeds the model and the shuffling of a cell
    optimizer : "sgd" (default), "adam", "adamw", or a factory (params, lr) -> Optimizer
    validation_data : (X_val, y_val) or None; fills val_loss and val_accuracy
    n_jobs : int, default 1 (serial, in this process, joblib not needed); -1 uses every core
    backend : joblib backend name ("loky", "threading", "dask", "ray"...) or None: joblib's
        default or the one an enclosing ``joblib.parallel_config`` sets; Dask needs a
        ``distributed.Client`` to exist
    verbose : 0 (default) silent, 1 a progress bar over cells

    Each cell runs with one BLAS thread (threadpoolctl) and one Numba thread, in the kernel
    backend active here, with divergence recorded in its row instead of raised or warned.

    Example
    -------
    >>> X, y, X_val, y_val = mg.datasets.load_mnist_sample()
    >>> result = mg.sweep(mg.MLPBuilder((784, 128, 10)), X, y, batch_sizes=[32, 128, 512],
    ...                   lrs=[0.03, 0.1, 0.3], epochs=3, validation_data=(X_val, y_val),
    ...                   n_jobs=-1)
    >>> result.best("val_accuracy")
    >>> mg.plot.sweep_heatmap(result, value="val_accuracy")
    """
    if not callable(build_model):
        raise TypeError(f"build_model must be a callable seed -> Sequential, got "
                        f"{type(build_model).__name__}")
    cells, config = _plan(batch_sizes, lrs, scaling, base_lr, base_batch_size, seeds)
    epochs = check.positive_int("epochs", epochs)
    _check_optimizer(optimizer)
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, numbers.Integral) or n_jobs == 0:
        raise ValueError(f"n_jobs must be a non-zero int (-1: all cores), got {n_jobs!r}")
    if backend is not None and not isinstance(backend, str):
        raise TypeError(f"backend must be a joblib backend name or None, got {backend!r}")
    verbose = check.choice("verbose", verbose, (0, 1))
    X = check.features("X", X)
    y = check.labels("y", y, X.shape[0])
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise TypeError("validation_data must be a pair (X_val, y_val)")
        X_val = check.features("validation_data[0]", validation_data[0], X.shape[1])
        validation_data = (X_val, check.labels("validation_data[1]", validation_data[1],
                                               X_val.shape[0]))
    config.update(epochs=epochs, optimizer=optimizer if isinstance(optimizer, str)
                  else repr(optimizer), build_model=repr(build_model), n_samples=int(X.shape[0]),
                  kernels=get_backend())
    task = dict(build_model=build_model, X=X, y=y, epochs=epochs, optimizer=optimizer,
                validation_data=validation_data, kernels=get_backend())
    outcomes = _run(cells, task, n_jobs, backend, verbose)
    table = [row for row, _ in outcomes]
    histories = {_key(row): history for row, history in outcomes}
    return SweepResult(table, histories, config)


def _plan(batch_sizes, lrs, scaling, base_lr, base_batch_size, seeds):
    batch_sizes = _int_list("batch_sizes", batch_sizes)
    seeds = _int_list("seeds", seeds, low=0)
    if (lrs is None) == (scaling is None):
        raise ValueError("give exactly one of lrs (a grid of learning rates) and scaling "
                         "('linear' or 'sqrt' from base_lr at base_batch_size)")
    if lrs is not None:
        if isinstance(lrs, (str, bytes)) or not hasattr(lrs, "__iter__"):
            raise TypeError(f"lrs must be a sequence of learning rates, got {lrs!r}")
        lrs = [check.real(f"lrs[{i}]", lr, low=0.0, low_open=True) for i, lr in enumerate(lrs)]
        if not lrs or len(set(lrs)) != len(lrs):
            raise ValueError(f"lrs must be non-empty and without repeats, got {lrs}")
        cells = [(b, lr, s) for b in batch_sizes for lr in lrs for s in seeds]
        return cells, {"batch_sizes": batch_sizes, "lrs": lrs, "seeds": seeds, "scaling": None}
    rule = SCALINGS[check.choice("scaling", scaling, tuple(SCALINGS))]
    if base_lr is None:
        raise ValueError(f"scaling={scaling!r} needs base_lr (the lr at base_batch_size)")
    base_lr = check.real("base_lr", base_lr, low=0.0, low_open=True)
    base_batch_size = (min(batch_sizes) if base_batch_size is None
                       else check.positive_int("base_batch_size", base_batch_size))
    cells = [(b, rule(base_lr, b, base_batch_size), s) for b in batch_sizes for s in seeds]
    return cells, {"batch_sizes": batch_sizes, "lrs": sorted({c[1] for c in cells}),
                   "seeds": seeds, "scaling": scaling, "base_lr": base_lr,
                   "base_batch_size": base_batch_size}


def _int_list(name, values, low=1):
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name} must be a sequence of ints, got {values!r}")
    checker = check.positive_int if low == 1 else check.non_negative_int
    values = [checker(f"{name}[{i}]", v) for i, v in enumerate(values)]
    if not values or len(set(values)) != len(values):
        raise ValueError(f"{name} must be non-empty and without repeats, got {values}")
    return values


def _check_optimizer(optimizer):
    if isinstance(optimizer, str):
        check.choice("optimizer", optimizer, tuple(OPTIMIZERS))
    elif not callable(optimizer):
        raise TypeError(f"optimizer must be 'sgd', 'adam', 'adamw' or a factory "
                        f"(params, lr) -> Optimizer, got {optimizer!r}")


def _run(cells, task, n_jobs, backend, verbose):
    from tqdm.auto import tqdm
    bar = tqdm(total=len(cells), desc="sweep", unit="cell", disable=None if verbose else True)
    try:
        if n_jobs == 1 and backend is None:
            results = []
            for cell in cells:
                results.append(run_cell(cell, **task))
                bar.update()
            return results
        import joblib
        jobs = (joblib.delayed(run_cell)(cell, **task) for cell in cells)
        parallel = joblib.Parallel(n_jobs=n_jobs, backend=backend, return_as="generator")
        results = []
        for outcome in parallel(jobs):
            results.append(outcome)
            bar.update()
        return results
    finally:
        bar.close()


def run_cell(cell, *, build_model, X, y, epochs, optimizer, validation_data, kernels):
    """Train and measure one (batch_size, lr, seed) cell; returns (row, History).

    Runs with one BLAS thread and one Numba thread and the kernel backend ``kernels``, so the
    numbers are the same in this process or in any worker.
    """
    batch_size, lr, seed = cell
    started = time.perf_counter()
    with _one_thread(kernels), use_backend(kernels), warnings.catch_warnings(), \
            np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        model = build_model(seed)
        if not isinstance(model, Sequential):
            raise TypeError(f"build_model({seed}) must return a minigd Sequential, got "
                            f"{type(model).__name__}")
        if isinstance(optimizer, str):
            opt = OPTIMIZERS[optimizer](model.parameters(), lr=lr)
        else:
            opt = optimizer(model.parameters(), lr)
            if not isinstance(opt, Optimizer):
                raise TypeError(f"optimizer factory must return a minigd Optimizer, got "
                                f"{type(opt).__name__}")
        history = fit(model, X, y, optimizer=opt, epochs=epochs, batch_size=batch_size,
                      seed=seed, validation_data=validation_data, verbose=0)
        nan = math.nan
        diverged = bool(history.diverged)
        last = {k: (v[-1] if v and v[-1] is not None else nan) for k, v in history.epochs.items()}
        train_accuracy = nan if diverged else evaluate(model, X, y)["accuracy"]
    row = {"batch_size": batch_size, "lr": lr, "seed": seed,
           "train_loss": nan if diverged else last["train_loss"],
           "val_loss": nan if diverged else last["val_loss"],
           "val_accuracy": nan if diverged else last["val_accuracy"],
           "train_accuracy": train_accuracy,
           "updates": history.n_iterations - int(diverged),
           "epochs": history.n_epochs,
           "seconds": time.perf_counter() - started,
           "diverged": diverged}
    return row, history


class _one_thread:
    """Limit BLAS (threadpoolctl) and Numba to one thread inside the block; restore after."""

    def __init__(self, kernels):
        self.kernels = kernels

    def __enter__(self):
        from threadpoolctl import threadpool_limits
        self._blas = threadpool_limits(limits=1)
        self._numba = None
        if self.kernels == "numba":
            import numba
            self._numba = numba.get_num_threads()
            numba.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        self._blas.restore_original_limits()
        if self._numba is not None:
            import numba
            numba.set_num_threads(self._numba)
