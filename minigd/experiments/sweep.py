"""Batch size x learning rate sweeps: train every cell, one row of results per cell.

A cell is (batch_size, lr, seed). Each cell builds a fresh model with ``build_model(seed)``,
trains it with ``minigd.fit`` (shuffling seeded by the same seed) and reports its final losses
and accuracies, its number of updates and its wall time. A cell's numbers depend only on the
cell and the data, never on where or in which order it runs: cells run with one BLAS and one
Numba thread, in this process (``n_jobs=1``) or in joblib workers, so ``n_jobs`` and the joblib
backend (processes, a Dask or Ray cluster) change the timings and nothing else.

With ``storage="sweep.db"`` every finished cell is committed to SQLite as it arrives (see
:mod:`minigd.experiments.sweep_storage`); rerunning the same call skips the stored cells, and
``SweepResult.from_storage`` / ``SweepResult.list_storage`` read the file back.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import inspect
import json
import math
import numbers
import time
import warnings
from os import PathLike
from typing import Any, Callable, Sequence

import numpy as np

from .. import _validation as check
from .. import registry
from .._io import atomic_open
from ..backend import get_backend, use_backend
from ..history import History
from ..metrics import evaluate
from ..model import Sequential
from ..optim import Optimizer
from ..progress import progress_bar
from ..schedules import linear_scaling, sqrt_scaling
from ..training import fit
from .sweep_storage import SweepStorage, data_fingerprint, sweep_key

COLUMNS = (
    "batch_size",
    "lr",
    "seed",
    "train_loss",
    "val_loss",
    "val_accuracy",
    "train_accuracy",
    "updates",
    "epochs",
    "seconds",
    "diverged",
)
SCALINGS = {"linear": linear_scaling, "sqrt": sqrt_scaling}


class MLPBuilder:
    """A picklable ``build_model``: ``MLPBuilder((784, 128, 10))(seed)`` returns
    ``Sequential(Dense(784, 128), ReLU(), Dense(128, 10), seed=seed)``, built by
    :func:`minigd.registry.build_mlp`.

    Parameters
    ----------
    widths : sequence of int >= 1, input width, hidden widths, number of classes (at least 2)
    activation : "relu" (default), "tanh", "sigmoid" or any ``registry.names("activation")``,
        between the Dense layers
    dtype : "float32" (default) or "float64"
    init : weight initialisation of the Dense layers, default "he"
    dropout : float in [0, 1), default 0.0; batch_norm : bool, default False (as build_mlp)

    A lambda works as ``build_model`` too (joblib and Dask ship it with cloudpickle); a builder
    object also has a readable repr, which ``SweepResult.config`` records.
    """

    def __init__(
        self, widths, activation="relu", dtype="float32", init="he", dropout=0.0, batch_norm=False
    ):
        widths = tuple(widths)
        if len(widths) < 2:
            raise ValueError(f"widths needs an input and an output width, got {widths!r}")
        self.widths = tuple(check.positive_int(f"widths[{i}]", w) for i, w in enumerate(widths))
        self.activation = registry.get("activation", activation).name
        self.dtype = check.choice("dtype", str(np.dtype(dtype)), ("float32", "float64"))
        self.init = init
        self.dropout, self.batch_norm = dropout, batch_norm
        registry.build_mlp(1, [1], 2, dropout=dropout, batch_norm=batch_norm)  # checks them

    def __call__(self, seed):
        return registry.build_mlp(
            self.widths[0],
            self.widths[1:-1],
            self.widths[-1],
            activation=self.activation,
            init=self.init,
            seed=seed,
            dtype=self.dtype,
            dropout=self.dropout,
            batch_norm=self.batch_norm,
        )

    def __repr__(self):
        extra = (f", dropout={self.dropout!r}" if self.dropout else "") + (
            ", batch_norm=True" if self.batch_norm else ""
        )
        return (
            f"MLPBuilder({self.widths!r}, activation={self.activation!r}, "
            f"dtype={self.dtype!r}, init={self.init!r}{extra})"
        )


class SweepResult:
    """The outcome of :func:`sweep`.

    ``table``: a list of row dicts, one per cell in the order batch size, then lr, then seed,
    with the keys of ``COLUMNS``: batch_size, lr, seed, train_loss (mean loss of the last
    epoch), val_loss, val_accuracy (last epoch; NaN without validation data), train_accuracy
    (final model on the training data), updates (optimizer steps applied), epochs (completed),
    seconds (wall time of the cell), diverged (True when a non-finite loss stopped the cell;
    its losses and accuracies are then NaN).
    ``histories``: {(batch_size, lr, seed): History} of every cell.
    ``config``: the sweep's arguments (epochs, optimizer, scaling, ...), the builder's name and a
    fingerprint of the data; the storage key is a hash of it.
    ``resumed``: how many cells came from ``storage`` instead of running (0 without storage).
    ``missing``: the (batch_size, lr, seed) cells not finished yet; empty except for an
    interrupted sweep read back with :meth:`from_storage`.
    """

    def __init__(self, table, histories, config, resumed=0, missing=()):
        self.table, self.histories, self.config = table, histories, config
        self.resumed, self.missing = resumed, list(missing)

    def rows(self, **where):
        """Copies of the rows whose columns equal ``where`` (all rows without arguments)."""
        unknown = set(where) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown column(s) {sorted(unknown)}; columns are {COLUMNS}")
        return [dict(row) for row in self.table if all(_equal(row[k], v) for k, v in where.items())]

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
        data = {
            "config": self.config,
            "columns": list(COLUMNS),
            "table": [{k: _json_value(row[k]) for k in COLUMNS} for row in self.table],
        }
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
        table = [
            {k: (math.nan if row[k] is None else row[k]) for k in COLUMNS} for row in data["table"]
        ]
        histories = {}
        for row, history in zip(table, data.get("histories", [])):
            histories[_key(row)] = History.from_dict(history)
        return cls(table, histories, data["config"])

    @classmethod
    def from_storage(cls, path, key=None):
        """Load a sweep stored by ``sweep(..., storage=path)``.

        Parameters
        ----------
        path : the SQLite file
        key : the sweep's key (see :meth:`list_storage`); default None takes the only sweep in
            the file and raises ValueError listing the keys when it holds several

        Rows are the finished cells in grid order; an interrupted sweep lists its unfinished
        cells in ``missing``. A file that is not a minigd sweep database gives ValueError.
        """
        with SweepStorage(path, create=False) as store:
            if key is None:
                stored = store.summary()
                if len(stored) != 1:
                    listing = "; ".join(
                        f"{s['key']} ({s['done']}/{s['cells']} cells, batch "
                        f"sizes {s['config'].get('batch_sizes')}, lrs "
                        f"{s['config'].get('lrs')})"
                        for s in stored
                    )
                    raise ValueError(
                        f"{path!r} holds {len(stored)} sweeps, pass key= one of: "
                        f"{listing or 'none'}"
                    )
                key = stored[0]["key"]
            config, cells = store.sweep(key)
            done = store.finished(key, cells)
        table = [done[c][0] for c in cells if c in done]
        histories = {c: done[c][1] for c in cells if c in done}
        return cls(
            table, histories, config, resumed=len(done), missing=[c for c in cells if c not in done]
        )

    @staticmethod
    def list_storage(path):
        """The sweeps stored in ``path``: a list of dicts with key, cells (grid size), done
        (finished cells), created (Unix time) and config, oldest first."""
        with SweepStorage(path, create=False) as store:
            return store.summary()

    def __len__(self):
        return len(self.table)

    def __repr__(self):
        diverged = sum(row["diverged"] for row in self.table)
        return (
            f"SweepResult({len(self.table)} cells: batch sizes "
            f"{sorted({r['batch_size'] for r in self.table})}, "
            f"{len({r['lr'] for r in self.table})} lrs, "
            f"{len({r['seed'] for r in self.table})} seeds; {diverged} diverged)"
        )


def _key(row):
    return (row["batch_size"], row["lr"], row["seed"])


def _equal(a, b):
    return a == b or (
        isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    )


def _json_value(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def sweep(
    build_model: Callable[..., Sequential],
    X: np.ndarray,
    y: np.ndarray,
    *,
    batch_sizes: Sequence[int],
    lrs: Sequence[float] | None = None,
    scaling: str | None = None,
    base_lr: float | None = None,
    base_batch_size: int | None = None,
    epochs: int,
    seeds: Sequence[int] = (0,),
    optimizer: str | Callable[..., Optimizer] = "sgd",
    optimizer_kwargs: dict[str, Any] | None = None,
    validation_data: tuple[np.ndarray, np.ndarray] | None = None,
    n_jobs: int = 1,
    backend: str | None = None,
    storage: str | PathLike | None = None,
    verbose: int = 0,
) -> SweepResult:
    """Train one model per (batch size, lr, seed) cell and tabulate the results.

    The lrs are either given (``lrs``: every batch size meets every lr) or follow a batch-size
    rule from ``base_lr`` at ``base_batch_size`` (``scaling``): "linear",
    lr(B) = base_lr * B / base_batch_size (Goyal et al. 2017), or "sqrt",
    lr(B) = base_lr * sqrt(B / base_batch_size) (Hoffer et al. 2017).

    Parameters
    ----------
    build_model : callable returning a fresh Sequential, either ``build_model(seed)`` (e.g.
        MLPBuilder, ``lambda seed: ...``) or ``build_model()`` (e.g. ``lambda: model``). The
        signature is inspected once, before any cell runs: one required positional parameter
        gets the cell's seed; no required parameter gets ``seed=`` if it has a parameter named
        ``seed``, else nothing; anything else is a TypeError. Each cell trains a *clone* of
        what the builder returns (``model.clone()``: a plain Sequential with the same layers
        and weights), so ``lambda: model`` is safe: cells never share weights and ``model``
        itself is never trained. With a zero-argument builder every seed starts from
        the same weights and the seed only changes the shuffling.
    X, y : training data, as ``fit`` takes it (X may be an np.memmap; never copied)
    batch_sizes : sequence of int >= 1
    lrs : sequence of float > 0, or None when ``scaling`` is given
    scaling : None (default), "linear" or "sqrt"
    base_lr : float > 0, needed with ``scaling``
    base_batch_size : int >= 1, default the smallest batch size
    epochs : int >= 1
    seeds : sequence of int >= 0, default (0,); seeds the model and the shuffling of a cell
    optimizer : "sgd" (default), "adam", "adamw", or a factory (params, lr) -> Optimizer
    optimizer_kwargs : dict or None (default): more arguments of the named optimizer, e.g.
        ``{"momentum": 0.9, "weight_decay": 1e-4}`` for "sgd"; checked before any cell runs
    validation_data : (X_val, y_val) or None; fills val_loss and val_accuracy
    n_jobs : int, default 1 (serial, in this process, joblib not needed); -1 uses every core
    backend : joblib backend name ("loky", "threading", "dask", "ray"...) or None: joblib's
        default or the one an enclosing ``joblib.parallel_config`` sets; "dask" needs a
        ``distributed.Client`` to exist (``minigd sweep --dask-workers N`` makes one)
    storage : path of a SQLite file, or None (default). Every finished cell (row and History)
        is committed there in its own transaction by this process (whatever ``n_jobs`` and
        ``backend``), so a killed sweep loses only the cells that were running. Calling again
        with the same arguments and storage skips the stored cells and returns the same table
        as an uninterrupted sweep (their ``seconds`` are the stored ones). Sweeps with another
        grid, epochs, optimizer, builder name, kernel backend or data get their own key in the
        same file. Read back with ``SweepResult.from_storage``. A file that is not a minigd
        sweep database raises ValueError and is left unchanged.
    verbose : 0 (default) silent, 1 a progress bar over cells (and "resuming: k of n cells
        done" when storage already holds k cells)

    Each cell runs with one BLAS thread (threadpoolctl) and one Numba thread, in the kernel
    backend active here, with divergence recorded in its row instead of raised or warned.
    The storage key is a hash of ``result.config``: the grid, epochs, optimizer and
    ``optimizer_kwargs``, kernel backend, the builder as :func:`describe` names it (an
    MLPBuilder by its repr; a function by its name, a digest of its code and the models it
    closes over; a builder object without a repr only by its class name, so give such a class
    a ``__repr__`` saying what it builds), and a data fingerprint (shapes, dtypes and 256
    evenly spaced rows of X, y and the validation arrays; the data is never copied). An edit
    the key cannot see (a builder object's attributes, a data row between the sampled ones)
    needs a new storage file. Parallel runs collect results with joblib's
    ``return_as="generator_unordered"``, which every backend but "multiprocessing" supports.

    Example
    -------
    >>> X, y, X_val, y_val = mg.datasets.load_mnist_sample()
    >>> result = mg.sweep(mg.MLPBuilder((784, 128, 10)), X, y, batch_sizes=[32, 128, 512],
    ...                   lrs=[0.03, 0.1, 0.3], epochs=3, validation_data=(X_val, y_val),
    ...                   n_jobs=-1, storage="sweep.db")
    >>> result.best("val_accuracy")
    >>> mg.plot.sweep_heatmap(result, value="val_accuracy")
    """
    builder = SeededBuilder(build_model)
    cells, config = _plan(batch_sizes, lrs, scaling, base_lr, base_batch_size, seeds)
    epochs = check.positive_int("epochs", epochs)
    optimizer_kwargs = _check_optimizer(optimizer, optimizer_kwargs)
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, numbers.Integral) or n_jobs == 0:
        raise ValueError(f"n_jobs must be a non-zero int (-1: all cores), got {n_jobs!r}")
    if backend is not None and not isinstance(backend, str):
        raise TypeError(f"backend must be a joblib backend name or None, got {backend!r}")
    verbose = check.choice("verbose", verbose, (0, 1))
    X = check.features("X", X)
    y = check.labels("y", y, X.shape[0])
    arrays = [X, y]
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise TypeError("validation_data must be a pair (X_val, y_val)")
        X_val = check.features("validation_data[0]", validation_data[0], X.shape[1])
        validation_data = (
            X_val,
            check.labels("validation_data[1]", validation_data[1], X_val.shape[0]),
        )
        arrays += list(validation_data)
    if (
        storage is not None
        and not isinstance(storage, (str, bytes))
        and not hasattr(storage, "__fspath__")
    ):
        raise TypeError(f"storage must be a file path or None, got {storage!r}")
    config.update(
        epochs=epochs,
        optimizer=optimizer if isinstance(optimizer, str) else describe(optimizer),
        build_model=describe(build_model),
        n_samples=int(X.shape[0]),
        kernels=get_backend(),
        data=data_fingerprint(*arrays),
    )
    if optimizer_kwargs:
        config["optimizer_kwargs"] = optimizer_kwargs
    task = dict(
        build_model=builder,
        X=X,
        y=y,
        epochs=epochs,
        optimizer=optimizer,
        optimizer_kwargs=optimizer_kwargs,
        validation_data=validation_data,
        kernels=get_backend(),
    )
    done, save = {}, None
    with contextlib.ExitStack() as stack:
        if storage is not None:
            store = stack.enter_context(SweepStorage(storage))
            key = sweep_key(config)
            store.begin(key, config, cells)
            done = store.finished(key, cells)
            position = {cell: i for i, cell in enumerate(cells)}
            if done and verbose:
                print(f"resuming: {len(done)} of {len(cells)} cells done", flush=True)

            def save(row, history):
                store.save(key, position[_key(row)], row, history)

        todo = [cell for cell in cells if cell not in done]
        ran = {
            _key(row): (row, history)
            for row, history in _run(todo, task, n_jobs, backend, verbose, save)
        }
    outcomes = [done[c] if c in done else ran[c] for c in cells]
    table = [row for row, _ in outcomes]
    histories = {_key(row): history for row, history in outcomes}
    return SweepResult(table, histories, config, resumed=len(done))


class SeededBuilder:
    """``build_model`` called the way its signature asks, always as ``builder(seed)``.

    ``SeededBuilder(f)(seed)`` calls ``f(seed)``, ``f(seed=seed)`` or ``f()`` (see
    :func:`sweep`) and returns a clone of the model, so a builder that returns one shared
    model still gives every cell its own weights. Raises TypeError at construction for a
    non-callable or a signature that takes neither zero arguments nor a seed.
    """

    EXPECTED = (
        "build_model must be callable as build_model(seed) or build_model(), "
        "returning a minigd Sequential"
    )

    def __init__(self, build_model):
        if not callable(build_model):
            raise TypeError(f"{self.EXPECTED}; got {type(build_model).__name__}")
        self.build_model = build_model
        self.mode = self._mode(build_model)

    def _mode(self, build_model):
        try:
            signature = inspect.signature(build_model)
        except (TypeError, ValueError):  # some builtins have no signature
            return "positional"
        P = inspect.Parameter
        params = list(signature.parameters.values())
        required = [
            p
            for p in params
            if p.default is P.empty and p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)
        ]
        required_kw = [p.name for p in params if p.default is P.empty and p.kind is P.KEYWORD_ONLY]
        named_seed = any(
            p.name == "seed" and p.kind in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY) for p in params
        )
        if len(required) == 1 and not required_kw:
            return "positional"
        if not required and required_kw in ([], ["seed"]):
            return "keyword" if named_seed else "none"
        raise TypeError(
            f"{self.EXPECTED}; {describe(build_model)} has signature "
            f"{signature}, which needs other arguments. Wrap it, e.g. "
            f"lambda seed: build(seed, ...)"
        )

    def __call__(self, seed):
        if self.mode == "positional":
            model = self.build_model(seed)
        elif self.mode == "keyword":
            model = self.build_model(seed=seed)
        else:
            model = self.build_model()
        if not isinstance(model, Sequential):
            raise TypeError(
                f"build_model must return a minigd Sequential, got "
                f"{type(model).__name__} (seed {seed})"
            )
        return model.clone()

    def __repr__(self):
        return f"SeededBuilder({describe(self.build_model)}, mode={self.mode!r})"


def describe(obj):
    """A name for a builder or optimizer factory that is the same in every run, never a memory
    address: its repr when its class defines one (MLPBuilder); for a function or lambda
    ``module.qualname[digest of its code](values)``, where values fingerprint what it closes
    over and the global models it names (a Sequential by its architecture and weights, a
    number or string by its repr), so ``lambda: model_a`` and ``lambda: model_b`` differ; for
    functools.partial the function plus its arguments; for other objects their class name."""
    if isinstance(obj, functools.partial):
        args = ", ".join(
            [_token(a) for a in obj.args]
            + [f"{k}={_token(v)}" for k, v in sorted(obj.keywords.items())]
        )
        return f"partial({describe(obj.func)}, {args})"
    name = f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', '?')}"
    if inspect.ismethod(obj):
        return f"{describe(obj.__func__)} of {describe(obj.__self__)}"
    if inspect.isfunction(obj):
        code = obj.__code__
        values = [
            _token(cell.cell_contents) for cell in obj.__closure__ or () if _has_contents(cell)
        ]
        values += [
            f"{n}={_token(obj.__globals__[n])}"
            for n in code.co_names
            if isinstance(obj.__globals__.get(n), Sequential)
        ]
        return f"{name}[{_code_digest(code)}]" + (f"({', '.join(values)})" if values else "")
    if inspect.isclass(obj) or inspect.isbuiltin(obj):
        return name
    if type(obj).__repr__ is not object.__repr__:
        return repr(obj)
    return f"{type(obj).__module__}.{type(obj).__qualname__} instance"


def _has_contents(cell):
    try:
        cell.cell_contents  # noqa: B018 (reading an empty cell raises ValueError)
    except ValueError:
        return False
    return True


def _code_digest(code):
    digest = hashlib.sha256(code.co_code)
    for const in code.co_consts:
        digest.update((_code_digest(const) if inspect.iscode(const) else repr(const)).encode())
    digest.update(repr(code.co_names).encode())
    return digest.hexdigest()[:8]


def _token(value):
    if isinstance(value, Sequential):
        digest = hashlib.sha256(repr(value).encode())
        for key, array in value.state_dict().items():
            digest.update(key.encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        return f"Sequential[{digest.hexdigest()[:8]}]"
    if value is None or isinstance(value, (bool, numbers.Number, str)):
        return repr(value)
    if isinstance(value, (tuple, list)) and len(value) <= 16:
        return "(" + ", ".join(_token(v) for v in value) + ")"
    if inspect.isfunction(value) or isinstance(value, functools.partial):
        return describe(value)
    return type(value).__qualname__


def _plan(batch_sizes, lrs, scaling, base_lr, base_batch_size, seeds):
    batch_sizes = _int_list("batch_sizes", batch_sizes)
    seeds = _int_list("seeds", seeds, low=0)
    if (lrs is None) == (scaling is None):
        raise ValueError(
            "give exactly one of lrs (a grid of learning rates) and scaling "
            "('linear' or 'sqrt' from base_lr at base_batch_size)"
        )
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
    base_batch_size = (
        min(batch_sizes)
        if base_batch_size is None
        else check.positive_int("base_batch_size", base_batch_size)
    )
    cells = [(b, rule(base_lr, b, base_batch_size), s) for b in batch_sizes for s in seeds]
    return cells, {
        "batch_sizes": batch_sizes,
        "lrs": sorted({c[1] for c in cells}),
        "seeds": seeds,
        "scaling": scaling,
        "base_lr": base_lr,
        "base_batch_size": base_batch_size,
    }


def _int_list(name, values, low=1):
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name} must be a sequence of ints, got {values!r}")
    checker = check.positive_int if low == 1 else check.non_negative_int
    values = [checker(f"{name}[{i}]", v) for i, v in enumerate(values)]
    if not values or len(set(values)) != len(values):
        raise ValueError(f"{name} must be non-empty and without repeats, got {values}")
    return values


def _check_optimizer(optimizer, optimizer_kwargs):
    """Check optimizer and optimizer_kwargs; return the kwargs as a plain dict (or None)."""
    if isinstance(optimizer, str):
        registry.get("optimizer", optimizer)
    elif not callable(optimizer):
        raise TypeError(
            f"optimizer must be a name {registry.names('optimizer')} or a factory "
            f"(params, lr) -> Optimizer, got {optimizer!r}"
        )
    if optimizer_kwargs is None:
        return None
    if not isinstance(optimizer, str):
        raise ValueError(
            f"optimizer_kwargs applies to a named optimizer "
            f"{registry.names('optimizer')}; a factory takes its own arguments"
        )
    if not isinstance(optimizer_kwargs, dict):
        raise TypeError(f"optimizer_kwargs must be a dict, got {optimizer_kwargs!r}")
    accepted = list(registry.optimizer_arguments(optimizer))
    for name, value in optimizer_kwargs.items():
        if name not in accepted:
            raise ValueError(f"optimizer_kwargs: {optimizer!r} takes {accepted}, not {name!r}")
        if not isinstance(value, (bool, numbers.Real, tuple, list)):
            raise TypeError(
                f"optimizer_kwargs[{name!r}] must be a number, bool or pair, got {value!r}"
            )
    kwargs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in optimizer_kwargs.items()}
    probe = registry.build_mlp(1, (), 2, seed=0)
    registry.build_optimizer(
        optimizer, probe.parameters(), 1e-3, **_optimizer_args(kwargs)
    )  # ValueError names the argument
    return kwargs


def _optimizer_args(kwargs):
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in (kwargs or {}).items()}


def _run(cells, task, n_jobs, backend, verbose, save=None):
    """Run ``cells``; yield (row, History) as each finishes (in any order with joblib), after
    ``save(row, history)`` has stored it."""
    bar = progress_bar(len(cells), "sweep", bool(verbose), unit="cell", leave=True)
    try:
        for row, history in _outcomes(cells, task, n_jobs, backend):
            if save is not None:
                save(row, history)
            bar.update()
            yield row, history
    finally:
        bar.close()


def _outcomes(cells, task, n_jobs, backend):
    if not cells:
        return
    if n_jobs == 1 and backend is None:
        for cell in cells:
            yield run_cell(cell, **task)
        return
    import joblib

    jobs = (joblib.delayed(run_cell)(cell, **task) for cell in cells)
    # parallel_config knows "dask" and "ray" (it registers them); Parallel(backend=...) does not
    config = (
        joblib.parallel_config(backend=backend) if backend is not None else contextlib.nullcontext()
    )
    with config:
        yield from joblib.Parallel(n_jobs=n_jobs, return_as="generator_unordered")(jobs)


def run_cell(
    cell, *, build_model, X, y, epochs, optimizer, validation_data, kernels, optimizer_kwargs=None
):
    """Train and measure one (batch_size, lr, seed) cell; returns (row, History).

    ``build_model`` is called as ``build_model(seed)`` (wrap other builders in SeededBuilder).

    Runs with one BLAS thread and one Numba thread and the kernel backend ``kernels``, so the
    numbers are the same in this process or in any worker.
    """
    batch_size, lr, seed = cell
    started = time.perf_counter()
    with (
        _one_thread(kernels),
        use_backend(kernels),
        warnings.catch_warnings(),
        np.errstate(over="ignore", invalid="ignore", divide="ignore"),
    ):
        warnings.simplefilter("ignore", RuntimeWarning)
        model = build_model(seed)
        if not isinstance(model, Sequential):
            raise TypeError(
                f"build_model({seed}) must return a minigd Sequential, got {type(model).__name__}"
            )
        if isinstance(optimizer, str):
            opt = registry.build_optimizer(
                optimizer, model.parameters(), lr, **_optimizer_args(optimizer_kwargs)
            )
        else:
            opt = optimizer(model.parameters(), lr)
            if not isinstance(opt, Optimizer):
                raise TypeError(
                    f"optimizer factory must return a minigd Optimizer, got {type(opt).__name__}"
                )
        history = fit(
            model,
            X,
            y,
            optimizer=opt,
            epochs=epochs,
            batch_size=batch_size,
            seed=seed,
            validation_data=validation_data,
            verbose=0,
        )
        nan = math.nan
        diverged = bool(history.diverged)
        last = {k: (v[-1] if v and v[-1] is not None else nan) for k, v in history.epochs.items()}
        train_accuracy = nan if diverged else evaluate(model, X, y)["accuracy"]
    row = {
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "train_loss": nan if diverged else last["train_loss"],
        "val_loss": nan if diverged else last["val_loss"],
        "val_accuracy": nan if diverged else last["val_accuracy"],
        "train_accuracy": train_accuracy,
        "updates": history.n_iterations - int(diverged),
        "epochs": history.n_epochs,
        "seconds": time.perf_counter() - started,
        "diverged": diverged,
    }
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
