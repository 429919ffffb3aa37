"""MLPClassifier: a scikit-learn compatible classifier built on ``minigd.fit``.

It follows scikit-learn's estimator contract by duck typing -- ``get_params`` / ``set_params``,
constructor arguments stored unchanged and checked in ``fit``, fitted attributes ending in ``_``,
``classes_``, ``n_features_in_``, ``_estimator_type = "classifier"`` -- so it works in
``GridSearchCV``, ``cross_val_score`` and ``Pipeline`` without minigd importing scikit-learn.
Only ``__sklearn_tags__`` imports from scikit-learn, and only scikit-learn calls it.
"""
import math
import numbers
import sys
import warnings

import numpy as np

from . import _validation as check
from . import registry
from .history import History
from .layers import INITS
from .schedules import as_batch_size_schedule, as_schedule
from .training import fit as _fit

_PARAMS = ("hidden", "activation", "init", "optimizer", "lr", "momentum", "batch_size", "epochs",
           "schedule", "seed", "dtype", "verbose", "dropout", "batch_norm")


def _block_options(dropout, batch_norm):
    """{"dropout": float in [0, 1), "batch_norm": bool}, checked (ValueError/TypeError)."""
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) \
            or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be a float in [0, 1), got {dropout!r}")
    return {"dropout": float(dropout), "batch_norm": check.boolean("batch_norm", batch_norm)}


class DataConversionWarning(UserWarning):
    """A column vector y was flattened to 1-D (scikit-learn warns with a class of this name)."""


class NotFittedError(ValueError, AttributeError):
    """predict / predict_proba / score was called before fit."""

    def __reduce__(self):
        return _rebuild_not_fitted, self.args


def _rebuild_not_fitted(*args):
    return _flavoured(NotFittedError)(*args)


_FLAVOURED = {}


def _flavoured(cls):
    """``cls``, or when scikit-learn is already imported a subclass of both ``cls`` and the
    ``sklearn.exceptions`` class of the same name, so that ``except mg...NotFittedError`` and
    scikit-learn's own handling (``check_is_fitted``, warning filters) both recognise it."""
    exceptions = sys.modules.get("sklearn.exceptions")
    theirs = getattr(exceptions, cls.__name__, None)
    if theirs is None:
        return cls
    if theirs not in _FLAVOURED:
        _FLAVOURED[theirs] = type(cls.__name__, (cls, theirs),
                                  {"__module__": __name__, "__doc__": cls.__doc__})
    return _FLAVOURED[theirs]


def _is_sparse(X):
    return hasattr(X, "tocsr") and hasattr(X, "nnz")


def _check_X(X, name="X"):
    """X as a 2-D real array (ndarray and memmap pass through uncopied), or a clear ValueError."""
    if X is None:
        raise ValueError(f"{name} is None; expected an array of shape (n_samples, n_features)")
    if _is_sparse(X):
        raise TypeError(f"{name} is a sparse matrix; MLPClassifier does not accept sparse input: "
                        f"convert it with {name}.toarray()")
    if not isinstance(X, np.ndarray):
        X = np.asarray(X)
    if np.issubdtype(X.dtype, np.complexfloating):
        raise ValueError(f"Complex data not supported: {name} has dtype {X.dtype}")
    if X.dtype == object:
        X = X.astype(np.float64)
    if X.ndim != 2:
        raise ValueError(f"Expected a 2-D array {name} of shape (n_samples, n_features), got "
                         f"shape {X.shape}. Reshape your data with {name}.reshape(-1, 1) if it "
                         f"has one feature or {name}.reshape(1, -1) if it is one sample.")
    if X.shape[1] == 0:
        raise ValueError(f"{name} has 0 feature(s) (shape={X.shape}) while a minimum of 1 is "
                         f"required.")
    return check.features(name, X)


def _check_y(y, n_samples):
    """y as a 1-D label array (a column vector is flattened with a warning)."""
    if y is None:
        raise ValueError("MLPClassifier requires y to be passed, but the target y is None")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        warnings.warn("A column-vector y was passed when a 1d array was expected. Please change "
                      "the shape of y to (n_samples,), for example using ravel().",
                      _flavoured(DataConversionWarning), stacklevel=3)
        y = y.ravel()
    if y.ndim != 1:
        raise ValueError(f"y should be a 1d array, got an array of shape {y.shape} instead.")
    if y.shape[0] != n_samples:
        raise ValueError(f"y has {y.shape[0]} labels but X has {n_samples} samples")
    if np.issubdtype(y.dtype, np.complexfloating):
        raise ValueError(f"Complex data not supported: y has dtype {y.dtype}")
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)):
            raise ValueError("Input y contains NaN or infinity")
        if not np.all(y == np.round(y)):
            raise ValueError(f"Unknown label type: y holds continuous values (e.g. "
                             f"{y[y != np.round(y)][0]!r}); a classifier needs class labels")
    return y


def _unique(values, name):
    try:
        return np.unique(values)
    except TypeError:
        raise TypeError(f"{name} mixes label types that cannot be sorted (e.g. str and int)") \
            from None


class MLPClassifier:
    """A dense ReLU (or tanh, sigmoid) network trained by mini-batch gradient descent, with
    scikit-learn's estimator API.

    The network is n_features -> hidden[0] -> ... -> hidden[-1] -> n_classes, trained on the
    softmax cross-entropy by ``minigd.fit``: ``epochs`` passes over the data, each in
    ceil(N / batch_size) updates. ``predict_proba`` is the softmax of the logits and ``predict``
    its most probable class. Labels may be any sortable values (ints, strings): ``classes_``
    holds them sorted and the network's output i stands for ``classes_[i]``.

    Parameters (stored as given; checked when ``fit`` runs, as scikit-learn requires)
    ----------
    hidden : tuple of int, default (128,)   (() gives multinomial logistic regression)
    activation : "relu" (default), "tanh", "sigmoid" or any ``registry.names("activation")``
    init : "he" (default), "xavier", "torch" or "zeros": the Dense layers' initialisation
    optimizer : "sgd" (default), "adam", "adamw" or any ``registry.names("optimizer")``
    lr : float > 0, default 0.1
    momentum : float in [0, 1), default 0.0 (SGD only)
    batch_size : int >= 1 or a batch-size schedule (StepBatchSize, ...), default 64
    epochs : int >= 1, default 10 (``fit``); ``partial_fit`` trains one epoch per call
    schedule : minigd lr schedule or callable t -> lr, default None (constant ``lr``)
    seed : int or None, default None; seeds the weights and the shuffling, so two fits with
        one seed give bit-identical models (None: fresh entropy per fit)
    dtype : "float32" (default) or "float64"
    verbose : 0 (default), 1 or 2, as ``minigd.fit``
    dropout : float in [0, 1), default 0.0; a Dropout after each hidden activation
    batch_norm : bool, default False; a BatchNorm before each hidden activation

    Attributes after fit: classes_, n_features_in_, model_ (the Sequential), optimizer_,
    history_ (the minigd History), n_iter_ (epochs trained), loss_curve_ (train loss per epoch),
    loss_ (its last value).

    Note: unlike scikit-learn's MLPClassifier there is no L2 term, early stopping or
    convergence test: ``fit`` trains exactly ``epochs`` epochs (use minigd.fit with callbacks
    for more control); ``random_state`` is called ``seed`` here.

    Example
    -------
    >>> X, y, X_test, y_test = mg.datasets.load_mnist_sample()
    >>> clf = mg.MLPClassifier(hidden=(128,), lr=0.1, batch_size=64, epochs=5, seed=0)
    >>> clf.fit(X, y).score(X_test, y_test)      # about 0.93
    """
    _estimator_type = "classifier"

    def __init__(self, hidden=(128,), activation="relu", optimizer="sgd", lr=0.1, momentum=0.0,
                 batch_size=64, epochs=10, schedule=None, seed=None, dtype="float32", verbose=0,
                 init="he", dropout=0.0, batch_norm=False):
        self.hidden = hidden
        self.activation = activation
        self.init = init
        self.optimizer = optimizer
        self.lr = lr
        self.momentum = momentum
        self.batch_size = batch_size
        self.epochs = epochs
        self.schedule = schedule
        self.seed = seed
        self.dtype = dtype
        self.verbose = verbose
        self.dropout = dropout
        self.batch_norm = batch_norm

    # ---- scikit-learn's parameter protocol ---------------------------------------------------
    def get_params(self, deep=True):
        """The constructor arguments as a dict (``deep`` is accepted for scikit-learn; no
        parameter is itself an estimator)."""
        return {name: getattr(self, name) for name in _PARAMS}

    def set_params(self, **params):
        """Set constructor arguments by name; returns self. Unknown names raise ValueError."""
        for name, value in params.items():
            if name not in _PARAMS:
                raise ValueError(f"Invalid parameter {name!r} for estimator {self!r}. Valid "
                                 f"parameters are: {sorted(_PARAMS)!r}.")
            setattr(self, name, value)
        return self

    def __sklearn_tags__(self):
        from sklearn.utils import ClassifierTags, InputTags, Tags, TargetTags
        return Tags(estimator_type="classifier", target_tags=TargetTags(required=True),
                    classifier_tags=ClassifierTags(), input_tags=InputTags())

    def __sklearn_is_fitted__(self):
        return hasattr(self, "model_")

    def __repr__(self):
        defaults = MLPClassifier()
        changed = [f"{name}={getattr(self, name)!r}" for name in _PARAMS
                   if not _same(getattr(self, name), getattr(defaults, name))]
        return f"MLPClassifier({', '.join(changed)})"

    def __getstate__(self):
        """The attributes, with the optimizer as its ``state_dict()``: the optimizer holds views
        of the model's weights, which a pickle would otherwise store a second time."""
        state = dict(self.__dict__)
        if "optimizer_" in state:
            state["optimizer_"] = state["optimizer_"].state_dict()
        return state

    def __setstate__(self, state):
        """Unpickle (or deep-copy) with fresh, writable arrays: the model rebuilds its buffers and
        the optimizer is rebuilt on them (a joblib load with ``mmap_mode="r"`` makes every array
        read-only, the weights and optimizer state included)."""
        self.__dict__.update(state)
        if "model_" in state:
            model = state["model_"]
            saved = state["optimizer_"]
            optimizer = self._build_optimizer(model, state["_config_"])
            optimizer.load_state_dict(saved if isinstance(saved, dict) else saved.state_dict())
            self.model_, self.optimizer_ = model, optimizer

    # ---- training ----------------------------------------------------------------------------
    def fit(self, X, y):
        """Train a new network for ``epochs`` epochs on (X, y); returns self."""
        config = self._checked_params()
        X = _check_X(X)
        y = _check_y(y, X.shape[0])
        classes = _unique(y, "y")
        if len(classes) < 2:
            raise ValueError(f"y has 1 class ({classes[0]!r}); a classifier needs at least 2 "
                             f"classes")
        root = config["seed"]
        self._start(X.shape[1], classes, config, root)
        try:
            self.history_ = self._train(X, np.searchsorted(classes, y), config,
                                        config["epochs"], batch_size=config["batch_size"],
                                        schedule=config["schedule"], shuffle_seed=root)
        except Exception:
            self._forget()
            raise
        self._summarise()
        return self

    def partial_fit(self, X, y, classes=None):
        """Train one epoch on (X, y), continuing from the previous call (or from ``fit``).

        ``classes`` (all labels that will ever be seen) is required on the first call, as in
        scikit-learn, and must not change afterwards; the network and its hyperparameters are
        those of the first call (or of ``fit``). Optimizer state (momentum, Adam moments)
        and the schedules carry over: call k (from 0) uses the lr schedule at epoch k (or from
        the updates done so far, for a per-iteration schedule), the batch size of epoch k, and
        a shuffle seeded by (seed, k).
        """
        X = _check_X(X)
        y = _check_y(y, X.shape[0])
        first = not hasattr(self, "model_")
        if first and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit "
                             "(all labels that will ever be seen)")
        if classes is not None:
            classes = _unique(np.asarray(classes), "classes")
            if not first and not np.array_equal(classes, self.classes_):
                raise ValueError(f"classes={classes!r} differs from classes_={self.classes_!r} "
                                 f"of the earlier calls")
        if first:
            if len(classes) < 2:
                raise ValueError(f"classes has 1 class ({classes[0]!r}); a classifier needs at "
                                 f"least 2 classes")
            config = self._checked_params()
            self._start(X.shape[1], classes, config, config["seed"])
            self.history_ = History()
        else:
            config = self._config_
            self._check_n_features(X)
        codes = self._encode(y)
        done_epochs, done_steps = self.history_.n_epochs, self.history_.n_iterations
        batch = config["batch_size"](done_epochs)
        schedule = config["schedule"]
        if schedule is not None:
            offset = done_epochs if schedule.unit == "epoch" else done_steps
            schedule = _Shifted(schedule, offset)
        shuffle_seed = int(np.random.SeedSequence([self._root_seed, done_epochs])
                           .generate_state(1)[0])
        part = self._train(X, codes, config, 1, batch_size=batch, schedule=schedule,
                           shuffle_seed=shuffle_seed)
        _append_history(self.history_, part, done_epochs, done_steps)
        self._summarise()
        return self

    def _forget(self):
        for name in [k for k in vars(self) if k.endswith("_") or k == "_root_seed"]:
            delattr(self, name)

    def _start(self, n_features, classes, config, root):
        self.classes_ = classes
        self.n_features_in_ = int(n_features)
        self._root_seed = root
        self._config_ = config
        self.model_ = self._build_model(n_features, len(classes), config, root)
        self.optimizer_ = self._build_optimizer(self.model_, config)

    def _train(self, X, codes, config, epochs, *, batch_size, schedule, shuffle_seed):
        return _fit(self.model_, X, codes, optimizer=self.optimizer_, epochs=epochs,
                    batch_size=batch_size, schedule=schedule, seed=shuffle_seed,
                    verbose=config["verbose"])

    def _summarise(self):
        self.n_iter_ = self.history_.n_epochs
        self.loss_curve_ = list(self.history_.epochs["train_loss"])
        self.loss_ = self.loss_curve_[-1] if self.loss_curve_ else math.nan

    def _checked_params(self):
        """The constructor arguments validated and normalised (never written back)."""
        hidden = self.hidden
        if isinstance(hidden, numbers.Integral) and not isinstance(hidden, bool):
            hidden = (hidden,)
        if not isinstance(hidden, (tuple, list)):
            raise TypeError(f"hidden must be a tuple of layer widths, got {hidden!r}")
        hidden = tuple(check.positive_int(f"hidden[{i}]", h) for i, h in enumerate(hidden))
        activation = registry.get("activation", self.activation).name
        init = check.choice("init", self.init, INITS)
        optimizer = registry.get("optimizer", self.optimizer).name
        lr = check.real("lr", self.lr, low=0.0, low_open=True)
        momentum = check.real("momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        if momentum and "momentum" not in registry.optimizer_arguments(optimizer):
            raise ValueError(f"momentum applies to optimizer='sgd' only, got momentum={momentum} "
                             f"with optimizer={optimizer!r}")
        if isinstance(self.dtype, str):
            dtype = check.choice("dtype", self.dtype, ("float32", "float64"))
        else:
            dtype = self.dtype
        seed = self.seed
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % 2 ** 63)
        elif isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise TypeError(f"seed must be a non-negative int or None, got {seed!r}")
        return {"hidden": hidden, "activation": activation, "init": init,
                "optimizer": optimizer, "lr": lr,
                "momentum": momentum, "batch_size": as_batch_size_schedule(self.batch_size),
                "epochs": check.positive_int("epochs", self.epochs),
                "schedule": as_schedule(self.schedule), "seed": int(seed), "dtype": dtype,
                "verbose": check.choice("verbose", self.verbose, (0, 1, 2)),
                **_block_options(self.dropout, self.batch_norm)}

    @staticmethod
    def _build_model(n_features, n_classes, config, seed):
        return registry.build_mlp(n_features, config["hidden"], n_classes,
                                  activation=config["activation"],
                                  init=config.get("init", "he"), seed=seed,
                                  dtype=config["dtype"], dropout=config.get("dropout", 0.0),
                                  batch_norm=config.get("batch_norm", False))

    @staticmethod
    def _build_optimizer(model, config):
        name = config["optimizer"]
        hyper = ({"momentum": config["momentum"]}
                 if "momentum" in registry.optimizer_arguments(name) else {})
        return registry.build_optimizer(name, model.parameters(), config["lr"], **hyper)

    # ---- prediction --------------------------------------------------------------------------
    def _check_fitted(self):
        if not hasattr(self, "model_"):
            raise _flavoured(NotFittedError)(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                f"appropriate arguments before using this estimator.")

    def _check_n_features(self, X):
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is "
                             f"expecting {self.n_features_in_} features as input")

    def _encode(self, y):
        codes = np.searchsorted(self.classes_, y)
        known = (codes < len(self.classes_)) & (self.classes_[np.minimum(
            codes, len(self.classes_) - 1)] == y)
        if not np.all(known):
            raise ValueError(f"y contains labels not in classes_ {self.classes_!r}: "
                             f"{_unique(y[~known], 'y')[:5]!r}")
        return codes

    def _logits(self, X):
        self._check_fitted()
        X = _check_X(X)
        self._check_n_features(X)
        return self.model_.predict_logits(X)

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes), float64; columns follow classes_."""
        logits = self._logits(X).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        return logits

    def predict_log_proba(self, X):
        """log of predict_proba, computed stably (log-sum-exp)."""
        logits = self._logits(X).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        logits -= np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return logits

    def predict(self, X):
        """The most probable label of every row of X (values from classes_)."""
        codes = self._logits(X).argmax(axis=1)
        return self.classes_[codes]

    def score(self, X, y, sample_weight=None):
        """Mean accuracy of predict(X) against y (weighted by sample_weight when given)."""
        y = _check_y(y, _check_X(X).shape[0])
        return float(np.average(self.predict(X) == y, weights=sample_weight))


class _Shifted:
    """schedule(t + offset), keeping the unit: continues a schedule across partial_fit calls."""

    def __init__(self, schedule, offset):
        self.schedule, self.offset, self.unit = schedule, offset, schedule.unit

    def __call__(self, t):
        return self.schedule(t + self.offset)


def _append_history(total, part, epochs_before, steps_before):
    for key, values in part.iterations.items():
        shift = {"epoch": epochs_before, "step": steps_before}.get(key, 0)
        total.iterations[key].extend(v + shift for v in values)
    total.epochs["epoch"].extend(e + epochs_before for e in part.epochs["epoch"])
    for key, values in part.epochs.items():
        if key != "epoch":
            total.epochs[key].extend(values)
    if part.diverged and not total.diverged:
        total.diverged = True
        total.divergence = dict(part.divergence, epoch=part.divergence["epoch"] + epochs_before,
                                step=part.divergence["step"] + steps_before)


def _same(a, b):
    try:
        return bool(a == b) and type(a) is type(b)
    except (TypeError, ValueError):
        return a is b
