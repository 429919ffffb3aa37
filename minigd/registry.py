"""One home for the names the CLI, the estimator, sweeps and the LR range test accept.

A class is available by name when it sets a class attribute ``name`` in its own body (a
subclass does not inherit its parent's name) and derives from the base of its kind:

    kind          base                      built-in names
    "layer"       minigd.Layer              dense, relu, sigmoid, tanh
    "activation"  minigd.Activation         relu, sigmoid, tanh
    "loss"        minigd.Loss               softmax_cross_entropy
    "optimizer"   minigd.Optimizer          adam, adamw, sgd
    "schedule"    minigd.schedules.Schedule chain, constant, cosine, cyclic, exponential, ...

The classes are found by walking ``Base.__subclasses__()`` at lookup time, so a user subclass
that sets ``name = "mine"`` is available as soon as its class statement has run; there is no
table to edit and no decorator. This module imports the base modules, never the reverse.

Functions: :func:`names`, :func:`get`, :func:`build_mlp`, :func:`build_optimizer`,
:func:`optimizer_arguments`.
"""
import inspect

import numpy as np

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
    """{name: [classes that set it]} for ``kind``, walking the subclasses recursively."""
    found, seen, todo = {}, set(), [_base(kind)]
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        name = cls.__dict__.get("name")
        if isinstance(name, str) and name:
            found.setdefault(name, []).append(cls)
        todo.extend(cls.__subclasses__())
    return found


def names(kind):
    """The sorted names of ``kind`` ("layer", "activation", "loss", "optimizer", "schedule")."""
    return tuple(sorted(_classes(kind)))


def get(kind, name):
    """The class called ``name`` among ``kind``'s classes.

    Raises ValueError listing the valid names when there is none (or when two classes claim
    the name), TypeError when ``name`` is not a string.

    >>> registry.get("optimizer", "adam")
    <class 'minigd.optim.Adam'>
    """
    found = _classes(kind)
    valid = tuple(sorted(found))
    if not isinstance(name, str):
        raise TypeError(f"{kind} must be a name, one of {valid}, got {name!r} "
                        f"({type(name).__name__})")
    if name not in found:
        raise ValueError(f"{kind} must be one of {valid}, got {name!r}")
    classes = found[name]
    if len(classes) > 1:
        where = " and ".join(f"{c.__module__}.{c.__qualname__}" for c in classes)
        raise ValueError(f"{kind} name {name!r} is claimed by {where}: give one of them "
                         f"another class attribute name")
    return classes[0]


def build_mlp(n_features, hidden, n_outputs, *, activation="relu", init="he", seed=None,
              dtype=np.float32, dropout=0.0, batch_norm=False):
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
    dropout_layer = get("layer", "dropout")(dropout)      # checks dropout (ValueError)
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


def optimizer_arguments(name):
    """The keyword arguments optimizer ``name`` takes besides params and lr, in order.

    >>> registry.optimizer_arguments("sgd")
    ('momentum', 'dampening', 'nesterov', 'weight_decay')
    """
    cls = get("optimizer", name)
    skip = {"self", "params", "lr"}
    return tuple(p.name for p in inspect.signature(cls).parameters.values()
                 if p.name not in skip and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def build_optimizer(name, params, lr, **hyper):
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
            raise TypeError(f"optimizer {name!r} does not take {key!r}; it takes "
                            f"{', '.join(accepted) or 'no hyperparameters'} besides lr")
    return cls(params, lr=lr, **hyper)
