"""One home for the names the CLI, the estimator, sweeps and the LR range test accept.

A class is available by name when it sets a class attribute ``name`` in its own body (a
subclass does not inherit its parent's name) and derives from the base of its kind:

    kind          base                      built-in names
    "layer"       minigd.Layer              dense, relu, sigmoid, tanh
    "activation"  minigd.Activation         relu, sigmoid, tanh
    "loss"        minigd.Loss               mse, softmax_cross_entropy
    "optimizer"   minigd.Optimizer          adam, adamw, sgd
    "schedule"    minigd.schedules.Schedule chain, constant, cosine, cyclic, exponential, ...

The classes are found by walking ``Base.__subclasses__()`` at lookup time, so a user subclass
that sets ``name = "mine"`` is available as soon as its class statement has run; there is no
table to edit and no decorator. This module imports the base modules, never the reverse.

Functions: :func:`names`, :func:`get`, :func:`build_mlp`, :func:`build_optimizer`,
:func:`optimizer_arguments`, :func:`build_schedule` (a schedule by name for a run: the CLI's
--schedule and the estimators' ``schedule="name"``), :func:`schedule_arguments`.
"""

from __future__ import annotations

import collections
import inspect
from typing import Any, Callable, Iterable, Sequence, cast

import numpy as np
import numpy.typing as npt

from . import _validation as check
from . import layers, losses, optim, schedules
from .model import Sequential

KINDS = ("layer", "activation", "loss", "optimizer", "schedule")


def _base(kind):
    """The base class whose named subclasses make up ``kind``."""
    if kind == "layer":
        return layers.Layer
    if kind == "activation":
        return layers.Activation
    if kind == "loss":
        return losses.Loss
    if kind == "optimizer":
        return optim.Optimizer
    if kind == "schedule":
        return schedules.Schedule
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def _classes(kind):
    """{name: [classes that set it]} for ``kind``, walking the subclasses recursively.

    A class defined again under the same module and qualified name (a notebook cell run twice)
    replaces the older definition instead of clashing with it: ``__subclasses__`` lists classes
    in the order they were created, so the walk keeps the last one.
    """
    found, seen, todo = {}, set(), collections.deque([_base(kind)])
    while todo:
        cls = todo.popleft()
        if cls in seen:
            continue
        seen.add(cls)
        name = cls.__dict__.get("name")
        if isinstance(name, str) and name:
            key = (cls.__module__, cls.__qualname__)
            found[name] = [
                c for c in found.get(name, []) if (c.__module__, c.__qualname__) != key
            ] + [cls]
        todo.extend(cls.__subclasses__())
    return found


def names(kind: str) -> tuple[str, ...]:
    """The sorted names of ``kind`` ("layer", "activation", "loss", "optimizer", "schedule")."""
    return tuple(sorted(_classes(kind)))


def get(kind: str, name: str) -> type:
    """The class called ``name`` among ``kind``'s classes.

    Raises ValueError listing the valid names when there is none (or when two classes claim
    the name), TypeError when ``name`` is not a string.

    >>> registry.get("optimizer", "adam")
    <class 'minigd.optim.Adam'>
    """
    found = _classes(kind)
    valid = tuple(sorted(found))
    if not isinstance(name, str):
        raise TypeError(
            f"{kind} must be a name, one of {valid}, got {name!r} ({type(name).__name__})"
        )
    if name not in found:
        raise ValueError(f"{kind} must be one of {valid}, got {name!r}")
    classes = found[name]
    if len(classes) > 1:
        where = " and ".join(f"{c.__module__}.{c.__qualname__}" for c in classes)
        raise ValueError(
            f"{kind} name {name!r} is claimed by {where}: give one of them "
            f"another class attribute name"
        )
    return classes[0]


def build_mlp(
    n_features: int,
    hidden: Sequence[int],
    n_outputs: int,
    *,
    activation: str = "relu",
    init: str = "he",
    seed: int | None = None,
    dtype: npt.DTypeLike = np.float32,
    dropout: float = 0.0,
    batch_norm: bool = False,
) -> Sequential:
    """A dense network: Dense(n_features, hidden[0]), activation, ..., Dense(., n_outputs).

    Each hidden layer is Dense, [BatchNorm], activation, [Dropout]: BatchNorm when
    ``batch_norm``, Dropout when ``dropout > 0``.

    Parameters
    ----------
    n_features : int >= 1, input width
    hidden : sequence of int >= 1, hidden widths (empty: one Dense layer, a linear model)
    n_outputs : int >= 1, output width (the number of classes for classification)
    activation : str, default "relu"; any name of ``names("activation")``, between Dense layers
    init : str, default "he"; the Dense initialisation ("he", "xavier", "torch", "zeros")
    seed : int or None, default None; seeds the weights (same seed: same weights)
    dtype : float32 (default) or float64
    dropout : float in [0, 1), default 0.0; a Dropout(dropout) after each hidden activation
    batch_norm : bool, default False; a BatchNorm between each hidden Dense and its activation

    Returns a :class:`minigd.Sequential`. The CLI, ``MLPClassifier``, ``MLPBuilder`` (sweeps)
    and the examples build their networks here.
    """
    n_features = check.positive_int("n_features", n_features)
    n_outputs = check.positive_int("n_outputs", n_outputs)
    if isinstance(hidden, (str, bytes)) or not hasattr(hidden, "__iter__"):
        raise TypeError(f"hidden must be a sequence of layer widths, got {hidden!r}")
    hidden = [check.positive_int(f"hidden[{i}]", h) for i, h in enumerate(hidden)]
    act = get("activation", activation)
    dense = get("layer", "dense")
    batch_norm = check.boolean("batch_norm", batch_norm)
    dropout_layer = get("layer", "dropout")(dropout)  # checks dropout (ValueError)
    widths = [n_features] + hidden + [n_outputs]
    model_layers = []
    for i in range(len(widths) - 1):
        model_layers.append(dense(widths[i], widths[i + 1], init=init))
        if i < len(widths) - 2:
            if batch_norm:
                model_layers.append(get("layer", "batch_norm")(widths[i + 1]))
            model_layers.append(act())
            if dropout_layer.p > 0:
                model_layers.append(dropout_layer.clone())
    return Sequential(*model_layers, seed=seed, dtype=dtype)


def optimizer_arguments(name: str) -> tuple[str, ...]:
    """The keyword arguments optimizer ``name`` takes besides params and lr, in order.

    >>> registry.optimizer_arguments("sgd")
    ('momentum', 'dampening', 'nesterov', 'weight_decay')
    """
    cls = get("optimizer", name)
    skip = {"self", "params", "lr"}
    return tuple(
        p.name
        for p in inspect.signature(cls).parameters.values()
        if p.name not in skip and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    )


def build_optimizer(name: str, params: Iterable[Any], lr: float, **hyper: Any) -> Any:
    """``Optimizer(params, lr=lr, **hyper)`` for the optimizer called ``name``.

    A hyperparameter the optimizer does not take is a TypeError naming it and listing the ones
    it takes (no argument is silently dropped); an unknown name is a ValueError listing the
    valid names.

    >>> registry.build_optimizer("sgd", model.parameters(), 0.1, momentum=0.9)
    SGD(lr=0.1, momentum=0.9, ...)
    """
    cls = get("optimizer", name)
    accepted = optimizer_arguments(name)
    for key in hyper:
        if key not in accepted:
            raise TypeError(
                f"optimizer {name!r} does not take {key!r}; it takes "
                f"{', '.join(accepted) or 'no hyperparameters'} besides lr"
            )
    return cls(params, lr=lr, **hyper)


# The schedules build_schedule makes by name: the argument that takes the lr, and the defaults
# that depend on the run: epochs E, updates per epoch U (a list), and the run's length N in the
# schedule's unit (E per epoch, the total of U per iteration).
_SCHEDULE_RUN_DEFAULTS: dict[str, tuple[str, Callable[..., dict[str, Any]]]] = {
    "constant": ("lr", lambda E, U, N: {}),
    "step": ("lr", lambda E, U, N: {"step_size": 3}),
    "exponential": ("lr", lambda E, U, N: {"gamma": 0.9}),
    "cosine": ("lr", lambda E, U, N: {"t_max": N}),
    "cyclic": ("base_lr", lambda E, U, N: {"step_size": 2 * U[0]}),
    "onecycle": ("max_lr", lambda E, U, N: {"total_steps": N}),
    "warm-restarts": ("lr", lambda E, U, N: {"t_0": max(1, N // 3)}),
    "multistep": (
        "lr",
        lambda E, U, N: {"milestones": sorted({max(1, N // 2), max(1, 3 * N // 4)})},
    ),
    "poly": ("lr", lambda E, U, N: {"total_steps": N}),
}


def schedule_arguments(name: str) -> tuple[str, ...]:
    """The keyword arguments schedule ``name`` takes besides its lr, in order.

    >>> registry.schedule_arguments("multistep")
    ('milestones', 'gamma', 'unit')
    """
    cls = get("schedule", name)
    params = [
        p
        for p in inspect.signature(cls).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    return tuple(p.name for p in params[1:])


def build_schedule(
    name: str, lr: float, *, epochs: int, updates_per_epoch: int | Sequence[int], **options: Any
) -> Any:
    """The lr schedule called ``name`` for a run of ``epochs`` epochs, starting (or peaking) at lr.

    What the CLI's ``--schedule`` and the estimators' ``schedule="name"`` build. ``options`` are
    the schedule's own keyword arguments (``milestones=[5, 8]``, ``pct_start=0.25``, ...); the
    ones not given get defaults from the run:

    ==============  ===========================================================================
    constant        Constant(lr)
    step            StepDecay(lr, step_size=3, gamma=0.1), per epoch
    exponential     ExponentialDecay(lr, gamma=0.9), per epoch
    cosine          CosineAnnealing(lr, t_max=epochs, min_lr=0), per epoch
    cyclic          CyclicLR(base_lr=lr, max_lr=10 lr, step_size=2 epochs of updates)
    onecycle        OneCycle(max_lr=lr, total_steps=every update of the run), per update
    warm-restarts   CosineWarmRestarts(lr, t_0=max(1, epochs // 3), t_mult=1), per epoch
    multistep       MultiStepDecay(lr, milestones at 1/2 and 3/4 of the epochs, gamma=0.1)
    poly            PolynomialDecay(lr, total_steps=epochs, power=1.0), per epoch
    ==============  ===========================================================================

    A ``unit="iteration"`` (or ``"epoch"`` for onecycle) option counts those run lengths in
    updates (or epochs) instead.

    Parameters
    ----------
    name : str, one of the names above (``names("schedule")`` lists every registered one)
    lr : float > 0, the schedule's starting (or peak, for onecycle and cyclic's base) lr
    epochs : int >= 1, the epochs of the run
    updates_per_epoch : int >= 1, or a sequence of one int per epoch (a batch-size schedule)
    **options : the schedule's other keyword arguments; one it does not take is a TypeError
        naming it and listing those it takes.
    """
    cls = get("schedule", name)
    if name not in _SCHEDULE_RUN_DEFAULTS:
        raise ValueError(
            f"schedule {name!r} cannot be built by name from a run (it wraps other "
            f"schedules); build it yourself, e.g. mg.schedules."
            f"{cls.__name__}(...), and pass the object"
        )
    epochs = check.positive_int("epochs", epochs)
    if isinstance(updates_per_epoch, (int, np.integer)) and not isinstance(updates_per_epoch, bool):
        updates = [check.positive_int("updates_per_epoch", updates_per_epoch)] * epochs
    else:
        updates = [
            check.positive_int(f"updates_per_epoch[{i}]", u)
            for i, u in enumerate(cast(Sequence[int], updates_per_epoch))
        ]
        if len(updates) != epochs:
            raise ValueError(f"updates_per_epoch has {len(updates)} entries for {epochs} epochs")
    accepted = schedule_arguments(name)
    for key in options:
        if key not in accepted:
            raise TypeError(
                f"schedule {name!r} does not take {key!r}; it takes "
                f"{', '.join(accepted) or 'nothing'} besides its lr"
            )
    lr_argument, run_defaults = _SCHEDULE_RUN_DEFAULTS[name]
    unit = options.get("unit", inspect.signature(cls).parameters["unit"].default)
    length = sum(updates) if unit == "iteration" else epochs
    arguments = run_defaults(epochs, updates, length)
    if name == "cyclic":
        arguments["max_lr"] = 10 * lr
    arguments.update(options)
    return cls(**{lr_argument: lr}, **arguments)
