"""MLPClassifier and MLPRegressor: scikit-learn compatible estimators built on ``minigd.fit``.

Both share one base class (the parameters, training, partial_fit, pickling, prediction plumbing);
the classifier adds labels and probabilities, the regressor real-valued targets and R². They
follow scikit-learn's estimator contract by duck typing -- ``get_params`` / ``set_params``,
constructor arguments stored unchanged and checked in ``fit``, fitted attributes ending in ``_``,
``classes_`` (classifier), ``n_features_in_``, ``_estimator_type`` -- so they work in
``GridSearchCV``, ``cross_val_score`` and ``Pipeline`` without minigd importing scikit-learn.
Only ``__sklearn_tags__`` imports from scikit-learn, and only scikit-learn calls it.
"""

from __future__ import annotations

import math
import numbers
import sys
import warnings

import numpy as np

from . import _validation as check
from . import registry
from .data import iterations_per_epoch
from .history import History
from .layers import INITS
from .losses import Loss, MSELoss, SoftmaxCrossEntropy
from .schedules import as_batch_size_schedule, as_schedule
from .training import fit as _fit

_PARAMS = (
    "hidden",
    "activation",
    "init",
    "optimizer",
    "lr",
    "momentum",
    "batch_size",
    "epochs",
    "schedule",
    "schedule_options",
    "seed",
    "dtype",
    "verbose",
    "dropout",
    "batch_norm",
    "grad_clip",
    "accumulate",
)


def _block_options(dropout, batch_norm):
    """{"dropout": float in [0, 1), "batch_norm": bool}, checked (ValueError/TypeError)."""
    if (
        isinstance(dropout, bool)
        or not isinstance(dropout, numbers.Real)
        or not 0.0 <= dropout < 1.0
    ):
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


_FLAVOURED: dict[type, type] = {}


def _flavoured(cls):
    """``cls``, or when scikit-learn is already imported a subclass of both ``cls`` and the
    ``sklearn.exceptions`` class of the same name, so that ``except mg...NotFittedError`` and
    scikit-learn's own handling (``check_is_fitted``, warning filters) both recognise it."""
    exceptions = sys.modules.get("sklearn.exceptions")
    theirs = getattr(exceptions, cls.__name__, None)
    if theirs is None:
        return cls
    if theirs not in _FLAVOURED:
        _FLAVOURED[theirs] = type(
            cls.__name__, (cls, theirs), {"__module__": __name__, "__doc__": cls.__doc__}
        )
    return _FLAVOURED[theirs]


def _is_sparse(X):
    return hasattr(X, "tocsr") and hasattr(X, "nnz")


def _check_X(X, name="X", owner="MLPClassifier"):
    """X as a 2-D real array (ndarray and memmap pass through uncopied), or a clear ValueError."""
    if X is None:
        raise ValueError(f"{name} is None; expected an array of shape (n_samples, n_features)")
    if _is_sparse(X):
        raise TypeError(
            f"{name} is a sparse matrix; {owner} does not accept sparse input: "
            f"convert it with {name}.toarray()"
        )
    if not isinstance(X, np.ndarray):
        X = np.asarray(X)
    if np.issubdtype(X.dtype, np.complexfloating):
        raise ValueError(f"Complex data not supported: {name} has dtype {X.dtype}")
    if X.dtype == object:
        X = X.astype(np.float64)
    if X.ndim != 2:
        raise ValueError(
            f"Expected a 2-D array {name} of shape (n_samples, n_features), got "
            f"shape {X.shape}. Reshape your data with {name}.reshape(-1, 1) if it "
            f"has one feature or {name}.reshape(1, -1) if it is one sample."
        )
    if X.shape[1] == 0:
        raise ValueError(
            f"{name} has 0 feature(s) (shape={X.shape}) while a minimum of 1 is required."
        )
    return check.features(name, X)


def _check_y(y, n_samples):
    """y as a 1-D label array (a column vector is flattened with a warning)."""
    if y is None:
        raise ValueError("MLPClassifier requires y to be passed, but the target y is None")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        warnings.warn(
            "A column-vector y was passed when a 1d array was expected. Please change "
            "the shape of y to (n_samples,), for example using ravel().",
            _flavoured(DataConversionWarning),
            stacklevel=3,
        )
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
            raise ValueError(
                f"Unknown label type: y holds continuous values (e.g. "
                f"{y[y != np.round(y)][0]!r}); a classifier needs class labels"
            )
    return y


def _check_y_values(y, n_samples, warn=True):
    """y as real targets, (n,) or (n, k) (a column vector is flattened, with a warning when
    ``warn``, as scikit-learn's regressors do)."""
    if y is None:
        raise ValueError("MLPRegressor requires y to be passed, but the target y is None")
    if _is_sparse(y):
        raise TypeError("y is a sparse matrix; MLPRegressor needs a dense y: use y.toarray()")
    y = np.asarray(y)
    if y.dtype == object:
        y = y.astype(np.float64)
    if np.issubdtype(y.dtype, np.complexfloating):
        raise ValueError(f"Complex data not supported: y has dtype {y.dtype}")
    if not (np.issubdtype(y.dtype, np.floating) or np.issubdtype(y.dtype, np.integer)):
        raise ValueError(f"y must hold numbers for a regressor, got dtype {y.dtype}")
    if y.ndim == 2 and y.shape[1] == 1:
        if warn:
            warnings.warn(
                "A column-vector y was passed when a 1d array was expected. Please "
                "change the shape of y to (n_samples,), for example using ravel().",
                _flavoured(DataConversionWarning),
                stacklevel=3,
            )
        y = y[:, 0]
    if y.ndim not in (1, 2) or (y.ndim == 2 and y.shape[1] == 0):
        raise ValueError(
            f"y should be a 1d array (n_samples,) or a 2d array (n_samples, "
            f"n_targets), got an array of shape {y.shape} instead."
        )
    if y.shape[0] != n_samples:
        raise ValueError(f"y has {y.shape[0]} targets but X has {n_samples} samples")
    if np.issubdtype(y.dtype, np.floating):
        if np.isnan(y).any():
            raise ValueError("Input y contains NaN.")
        if not np.isfinite(y).all():
            raise ValueError(
                f"Input y contains infinity or a value too large for dtype({y.dtype.name!r})."
            )
    return y


def _unique(values, name):
    try:
        return np.unique(values)
    except TypeError:
        raise TypeError(
            f"{name} mixes label types that cannot be sorted (e.g. str and int)"
        ) from None


class _MLPEstimator:
    """What MLPClassifier and MLPRegressor share: the constructor parameters (scikit-learn's
    parameter protocol), checking them in ``fit``, building the network and the optimizer,
    training with ``minigd.fit`` (``fit`` and ``partial_fit``), pickling, and the fitted checks.

    A subclass sets ``_estimator_type``, ``_loss`` (the minigd loss it trains) and writes its
    targets' check and encoding (``_targets``), ``predict`` and ``score``.
    """

    _estimator_type: str | None = None
    _loss: Loss | None = None  # the minigd Loss the network trains on (stateless: shared)

    def _store(self, params):
        """Store the constructor arguments unchanged (scikit-learn checks them in fit)."""
        for name in _PARAMS:
            setattr(self, name, params[name])

    # ---- scikit-learn's parameter protocol ---------------------------------------------------
    def get_params(self, deep=True):
        """The constructor arguments as a dict (``deep`` is accepted for scikit-learn; no
        parameter is itself an estimator)."""
        return {name: getattr(self, name) for name in _PARAMS}

    def set_params(self, **params):
        """Set constructor arguments by name; returns self. Unknown names raise ValueError."""
        for name, value in params.items():
            if name not in _PARAMS:
                raise ValueError(
                    f"Invalid parameter {name!r} for estimator {self!r}. Valid "
                    f"parameters are: {sorted(_PARAMS)!r}."
                )
            setattr(self, name, value)
        return self

    def __sklearn_is_fitted__(self):
        return hasattr(self, "model_")

    def __repr__(self):
        defaults = type(self)()
        changed = [
            f"{name}={getattr(self, name)!r}"
            for name in _PARAMS
            if not _same(getattr(self, name), getattr(defaults, name))
        ]
        return f"{type(self).__name__}({', '.join(changed)})"

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
    def _fit(self, X, targets, n_outputs):
        """Train a new network of ``n_outputs`` outputs on (X, targets); returns self."""
        config = self._checked_params()
        root = config["seed"]
        config["schedule"] = _named_schedule(config, X.shape[0])
        self._start(X.shape[1], n_outputs, config, root)
        try:
            self.history_ = self._train(
                X,
                targets,
                config,
                config["epochs"],
                batch_size=config["batch_size"],
                schedule=config["schedule"],
                shuffle_seed=root,
            )
        except Exception:
            self._forget()
            raise
        self._summarise()
        return self

    def _partial_fit(self, X, targets, n_outputs):
        """One more epoch on (X, targets); the first call builds the network (see partial_fit)."""
        if not hasattr(self, "model_"):
            config = self._checked_params()
            config["schedule"] = _named_schedule(config, X.shape[0])
            self._start(X.shape[1], n_outputs, config, config["seed"])
            self.history_ = History(self._loss.metric_names)
        else:
            config = self._config_
            self._check_n_features(X)
        done_epochs, done_steps = self.history_.n_epochs, self.history_.n_iterations
        batch = config["batch_size"](done_epochs)
        schedule = config["schedule"]
        if schedule is not None:
            offset = done_epochs if schedule.unit == "epoch" else done_steps
            schedule = _Shifted(schedule, offset)
        shuffle_seed = int(
            np.random.SeedSequence([self._root_seed, done_epochs]).generate_state(1)[0]
        )
        part = self._train(
            X, targets, config, 1, batch_size=batch, schedule=schedule, shuffle_seed=shuffle_seed
        )
        _append_history(self.history_, part, done_epochs, done_steps)
        self._summarise()
        return self

    def _forget(self):
        for name in [k for k in vars(self) if k.endswith("_") or k == "_root_seed"]:
            delattr(self, name)

    def _start(self, n_features, n_outputs, config, root):
        self.n_features_in_ = int(n_features)
        self._root_seed = root
        self._config_ = config
        self.model_ = self._build_model(n_features, n_outputs, config, root)
        self.optimizer_ = self._build_optimizer(self.model_, config)

    def _train(self, X, targets, config, epochs, *, batch_size, schedule, shuffle_seed):
        return _fit(
            self.model_,
            X,
            targets,
            optimizer=self.optimizer_,
            epochs=epochs,
            batch_size=batch_size,
            loss=self._loss,
            schedule=schedule,
            seed=shuffle_seed,
            verbose=config["verbose"],
            grad_clip=config["grad_clip"],
            accumulate=config["accumulate"],
        )

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
            raise ValueError(
                f"momentum applies to optimizer='sgd' only, got momentum={momentum} "
                f"with optimizer={optimizer!r}"
            )
        if isinstance(self.dtype, str):
            dtype = check.choice("dtype", self.dtype, ("float32", "float64"))
        else:
            dtype = self.dtype
        seed = self.seed
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % 2**63)
        elif isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise TypeError(f"seed must be a non-negative int or None, got {seed!r}")
        epochs = check.positive_int("epochs", self.epochs)
        batch_size = as_batch_size_schedule(self.batch_size)
        schedule, options = self.schedule, self.schedule_options
        if options is not None and not isinstance(options, dict):
            raise TypeError(
                f"schedule_options must be a dict of the schedule's keyword "
                f"arguments or None, got {type(options).__name__}"
            )
        if isinstance(schedule, str):
            accepted = registry.schedule_arguments(schedule)  # an unknown name raises
            for key in options or {}:
                if key not in accepted:
                    raise TypeError(
                        f"schedule_options: schedule {schedule!r} does not take "
                        f"{key!r}; it takes {', '.join(accepted)}"
                    )
        else:
            if options:
                raise ValueError(
                    f"schedule_options applies to a schedule given by name "
                    f"(schedule='onecycle', ...), got schedule={schedule!r}"
                )
            schedule = as_schedule(schedule)
        return {
            "hidden": hidden,
            "activation": activation,
            "init": init,
            "optimizer": optimizer,
            "lr": lr,
            "momentum": momentum,
            "batch_size": batch_size,
            "epochs": epochs,
            "schedule": schedule,
            "schedule_options": dict(options or {}),
            "seed": int(seed),
            "dtype": dtype,
            "verbose": check.choice("verbose", self.verbose, (0, 1, 2)),
            **_block_options(self.dropout, self.batch_norm),
            "grad_clip": (
                None
                if self.grad_clip is None
                else check.real("grad_clip", self.grad_clip, low=0.0, low_open=True)
            ),
            "accumulate": check.positive_int("accumulate", self.accumulate),
        }

    @staticmethod
    def _build_model(n_features, n_outputs, config, seed):
        return registry.build_mlp(
            n_features,
            config["hidden"],
            n_outputs,
            activation=config["activation"],
            init=config.get("init", "he"),
            seed=seed,
            dtype=config["dtype"],
            dropout=config.get("dropout", 0.0),
            batch_norm=config.get("batch_norm", False),
        )

    @staticmethod
    def _build_optimizer(model, config):
        name = config["optimizer"]
        hyper = (
            {"momentum": config["momentum"]}
            if "momentum" in registry.optimizer_arguments(name)
            else {}
        )
        return registry.build_optimizer(name, model.parameters(), config["lr"], **hyper)

    # ---- prediction --------------------------------------------------------------------------
    def _check_fitted(self):
        if not hasattr(self, "model_"):
            raise _flavoured(NotFittedError)(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                f"appropriate arguments before using this estimator."
            )

    def _check_n_features(self, X):
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(self).__name__} is "
                f"expecting {self.n_features_in_} features as input"
            )

    def _outputs(self, X):
        """The network's outputs for X (logits or predicted values), after the checks."""
        self._check_fitted()
        X = _check_X(X, owner=type(self).__name__)
        self._check_n_features(X)
        return self.model_.predict_logits(X)


class MLPClassifier(_MLPEstimator):
    """A dense ReLU (or tanh, sigmoid) network trained by mini-batch gradient descent, with
    scikit-learn's classifier API.

    The network is n_features -> hidden[0] -> ... -> hidden[-1] -> n_classes, trained on the
    softmax cross-entropy by ``minigd.fit``: ``epochs`` passes over the data, each in
    ceil(N / batch_size) updates. ``predict_proba`` is the softmax of the logits and ``predict``
    its most probable class. Labels may be any sortable values (ints, strings): ``classes_``
    holds them sorted and the network's output i stands for ``classes_[i]``.

    Parameters (stored as given; checked when ``fit`` runs, as scikit-learn requires)
    ----------
    hidden : tuple of int, default (128,)   (() gives a linear model)
    activation : "relu" (default), "tanh", "sigmoid" or any ``registry.names("activation")``
    init : "he" (default), "xavier", "torch" or "zeros": the Dense layers' initialisation
    optimizer : "sgd" (default), "adam", "adamw" or any ``registry.names("optimizer")``
    lr : float > 0, default 0.1
    momentum : float in [0, 1), default 0.0 (SGD only)
    batch_size : int >= 1 or a batch-size schedule (StepBatchSize, ...), default 64
    epochs : int >= 1, default 10 (``fit``); ``partial_fit`` trains one epoch per call
    schedule : None (default: constant ``lr``), a minigd lr schedule or callable t -> lr, or
        a schedule's registry name ("cosine", "onecycle", "warm-restarts", "multistep",
        "poly", "step", "exponential", "cyclic"), built when ``fit`` runs from ``lr``,
        ``epochs`` and the updates per epoch of the data (``minigd.registry.build_schedule``:
        "onecycle" peaks at ``lr`` and ends with the last update)
    schedule_options : dict or None, default None; keyword arguments of a schedule given by
        name (``{"milestones": [5, 8]}``, ``{"pct_start": 0.25}``, ``{"t_0": 2}``, ...)
    seed : int or None, default None; seeds the weights and the shuffling, so two fits with
        one seed give bit-identical models (None: fresh entropy per fit)
    dtype : "float32" (default) or "float64"
    verbose : 0 (default), 1 or 2, as ``minigd.fit``
    dropout : float in [0, 1), default 0.0; a Dropout after each hidden activation
    grad_clip : float > 0 or None (default); clip the global gradient norm (``fit(grad_clip=)``)
    accumulate : int >= 1, default 1; micro-batches per update (``fit(accumulate=)``)
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
    _loss = SoftmaxCrossEntropy()

    def __init__(
        self,
        hidden=(128,),
        activation="relu",
        optimizer="sgd",
        lr=0.1,
        momentum=0.0,
        batch_size=64,
        epochs=10,
        schedule=None,
        seed=None,
        dtype="float32",
        verbose=0,
        init="he",
        schedule_options=None,
        dropout=0.0,
        batch_norm=False,
        grad_clip=None,
        accumulate=1,
    ):
        self._store(locals())

    def __sklearn_tags__(self):
        from sklearn.utils import ClassifierTags, InputTags, Tags, TargetTags

        return Tags(
            estimator_type="classifier",
            target_tags=TargetTags(required=True),
            classifier_tags=ClassifierTags(),
            input_tags=InputTags(),
        )

    def fit(self, X, y):
        """Train a new network for ``epochs`` epochs on (X, y); returns self."""
        X = _check_X(X)
        y = _check_y(y, X.shape[0])
        classes = _unique(y, "y")
        if len(classes) < 2:
            raise ValueError(
                f"y has 1 class ({classes[0]!r}); a classifier needs at least 2 classes"
            )
        self._fit(X, np.searchsorted(classes, y), len(classes))
        self.classes_ = classes
        return self

    def partial_fit(self, X, y, classes=None):
        """Train one epoch on (X, y), continuing from the previous call (or from ``fit``).

        ``classes`` (all labels that will ever be seen) is required on the first call, as in
        scikit-learn, and must not change afterwards; the network and its hyperparameters are
        those of the first call (or of ``fit``). Optimizer state (momentum, Adam moments)
        and the schedules carry over: call k (from 0) uses the lr schedule at epoch k (or from
        the updates done so far, for a per-iteration schedule), the batch size of epoch k, and
        a shuffle seeded by (seed, k). A schedule given by name is built on the first call, for
        ``epochs`` calls on data of that call's size.
        """
        X = _check_X(X)
        y = _check_y(y, X.shape[0])
        first = not hasattr(self, "model_")
        if first and classes is None:
            raise ValueError(
                "classes must be passed on the first call to partial_fit "
                "(all labels that will ever be seen)"
            )
        if classes is not None:
            classes = _unique(np.asarray(classes), "classes")
            if not first and not np.array_equal(classes, self.classes_):
                raise ValueError(
                    f"classes={classes!r} differs from classes_={self.classes_!r} "
                    f"of the earlier calls"
                )
        if first:
            if len(classes) < 2:
                raise ValueError(
                    f"classes has 1 class ({classes[0]!r}); a classifier needs at least 2 classes"
                )
            self.classes_ = classes
        return self._partial_fit(X, self._encode(y), len(classes if first else self.classes_))

    def _encode(self, y):
        codes = np.searchsorted(self.classes_, y)
        known = (codes < len(self.classes_)) & (
            self.classes_[np.minimum(codes, len(self.classes_) - 1)] == y
        )
        if not np.all(known):
            raise ValueError(
                f"y contains labels not in classes_ {self.classes_!r}: "
                f"{_unique(y[~known], 'y')[:5]!r}"
            )
        return codes

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes), float64; columns follow classes_."""
        logits = self._outputs(X).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        return logits

    def predict_log_proba(self, X):
        """log of predict_proba, computed stably (log-sum-exp)."""
        logits = self._outputs(X).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        logits -= np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return logits

    def predict(self, X):
        """The most probable label of every row of X (values from classes_)."""
        codes = self._outputs(X).argmax(axis=1)
        return self.classes_[codes]

    def score(self, X, y, sample_weight=None):
        """Mean accuracy of predict(X) against y (weighted by sample_weight when given)."""
        y = _check_y(y, _check_X(X).shape[0])
        return float(np.average(self.predict(X) == y, weights=sample_weight))


class MLPRegressor(_MLPEstimator):
    """A dense ReLU (or tanh, sigmoid) network trained by mini-batch gradient descent on the
    mean squared error (``mg.MSELoss``), with scikit-learn's regressor API.

    The network is n_features -> hidden[0] -> ... -> hidden[-1] -> n_targets (one output for a
    1-D y), trained by ``minigd.fit``: ``epochs`` passes over the data, each in
    ceil(N / batch_size) updates, recording ``train_loss`` (the MSE) per epoch. ``predict``
    returns float64 of y's shape: (n_samples,) for a 1-D y, (n_samples, n_targets) for a 2-D
    one. ``score`` is R² (scikit-learn's ``r2_score``, averaged uniformly over the targets).
    Targets are used as given: standardise a y far from unit scale first (scikit-learn's
    ``TransformedTargetRegressor`` with a ``StandardScaler`` does it in a pipeline).

    Parameters (stored as given; checked when ``fit`` runs, as scikit-learn requires)
    ----------
    hidden : tuple of int, default (100,)   (() gives a linear model)
    activation : "relu" (default), "tanh", "sigmoid" or any ``registry.names("activation")``
    init : "he" (default), "xavier", "torch" or "zeros": the Dense layers' initialisation
    optimizer : "adam" (default), "sgd", "adamw" or any ``registry.names("optimizer")``
    lr : float > 0, default 0.001
    momentum : float in [0, 1), default 0.0 (SGD only)
    batch_size : int >= 1 or a batch-size schedule (StepBatchSize, ...), default 32
    epochs : int >= 1, default 100 (``fit``); ``partial_fit`` trains one epoch per call
    schedule : None (default: constant ``lr``), a minigd lr schedule or callable t -> lr, or
        a schedule's registry name ("cosine", "onecycle", "warm-restarts", "multistep",
        "poly", "step", "exponential", "cyclic"), built when ``fit`` runs from ``lr``,
        ``epochs`` and the updates per epoch of the data (``minigd.registry.build_schedule``:
        "onecycle" peaks at ``lr`` and ends with the last update)
    schedule_options : dict or None, default None; keyword arguments of a schedule given by
        name (``{"milestones": [5, 8]}``, ``{"pct_start": 0.25}``, ``{"t_0": 2}``, ...)
    seed : int or None, default None; seeds the weights and the shuffling, so two fits with
        one seed give bit-identical models (None: fresh entropy per fit)
    dtype : "float32" (default) or "float64"
    verbose : 0 (default), 1 or 2, as ``minigd.fit``
    dropout : float in [0, 1), default 0.0; a Dropout after each hidden activation
    grad_clip : float > 0 or None (default); clip the global gradient norm (``fit(grad_clip=)``)
    accumulate : int >= 1, default 1; micro-batches per update (``fit(accumulate=)``)
    batch_norm : bool, default False; a BatchNorm before each hidden activation

    Attributes after fit: n_features_in_, n_outputs_, model_ (the Sequential), optimizer_,
    history_ (the minigd History), n_iter_ (epochs trained), loss_curve_ (train MSE per epoch),
    loss_ (its last value).

    Note: like scikit-learn's MLPRegressor it defaults to Adam with lr 1e-3, but with no L2 term,
    early stopping or convergence test: ``fit`` trains exactly ``epochs`` epochs;
    ``random_state`` is called ``seed`` here.

    Example
    -------
    >>> X, y = mg.datasets.make_regression(n_samples=1000, n_features=8, noise=0.1, seed=0)
    >>> reg = mg.MLPRegressor(hidden=(64,), epochs=50, seed=0).fit(X[:800], y[:800])
    >>> reg.score(X[800:], y[800:])             # R², close to 1
    """

    _estimator_type = "regressor"
    _loss = MSELoss()

    def __init__(
        self,
        hidden=(100,),
        activation="relu",
        optimizer="adam",
        lr=0.001,
        momentum=0.0,
        batch_size=32,
        epochs=100,
        schedule=None,
        seed=None,
        dtype="float32",
        verbose=0,
        init="he",
        schedule_options=None,
        dropout=0.0,
        batch_norm=False,
        grad_clip=None,
        accumulate=1,
    ):
        self._store(locals())

    def __sklearn_tags__(self):
        from sklearn.utils import InputTags, RegressorTags, Tags, TargetTags

        return Tags(
            estimator_type="regressor",
            target_tags=TargetTags(required=True, multi_output=True, single_output=True),
            regressor_tags=RegressorTags(),
            input_tags=InputTags(),
        )

    def fit(self, X, y):
        """Train a new network for ``epochs`` epochs on (X, y); returns self."""
        X = _check_X(X, owner="MLPRegressor")
        y = _check_y_values(y, X.shape[0])
        self._fit(X, y, 1 if y.ndim == 1 else y.shape[1])
        self.n_outputs_ = 1 if y.ndim == 1 else y.shape[1]
        self._y_ndim = y.ndim
        return self

    def partial_fit(self, X, y):
        """Train one epoch on (X, y), continuing from the previous call (or from ``fit``).

        The network and its hyperparameters are those of the first call (or of ``fit``);
        optimizer state and schedules carry over as in ``MLPClassifier.partial_fit``. Later
        calls must give y with the same number of targets.
        """
        X = _check_X(X, owner="MLPRegressor")
        y = _check_y_values(y, X.shape[0])
        n_outputs = 1 if y.ndim == 1 else y.shape[1]
        if hasattr(self, "model_") and n_outputs != self.n_outputs_:
            raise ValueError(
                f"y has {n_outputs} target(s) but the earlier calls had {self.n_outputs_}"
            )
        self._partial_fit(X, y, n_outputs)
        self.n_outputs_, self._y_ndim = n_outputs, y.ndim
        return self

    def predict(self, X):
        """Predicted values, float64: shape (n_samples,) for a 1-D training y, else
        (n_samples, n_targets)."""
        outputs = self._outputs(X).astype(np.float64)
        return outputs[:, 0] if self._y_ndim == 1 else outputs

    def score(self, X, y, sample_weight=None):
        """R² of predict(X) against y (scikit-learn's ``r2_score``: 1 is perfect, 0 is the mean's
        score; averaged uniformly over the targets; a constant target scores 1.0 when predicted
        exactly, else 0.0), weighted by sample_weight when given."""
        y = _check_y_values(y, _check_X(X, owner="MLPRegressor").shape[0], warn=False)
        return r2_score(y, self.predict(X), sample_weight)


def r2_score(y_true, y_pred, sample_weight=None):
    """scikit-learn's ``r2_score`` (multioutput="uniform_average", force_finite=True), float."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(y_true.shape)
    if y_true.ndim == 1:
        y_true, y_pred = y_true[:, None], y_pred[:, None]
    w = np.ones(len(y_true)) if sample_weight is None else np.asarray(sample_weight, float)
    w = w[:, None]
    sse = (w * (y_true - y_pred) ** 2).sum(axis=0)
    mean = (w * y_true).sum(axis=0) / w.sum()
    sst = (w * (y_true - mean) ** 2).sum(axis=0)
    scores = np.where(
        sst > 0, 1.0 - sse / np.where(sst > 0, sst, 1.0), np.where(sse == 0, 1.0, 0.0)
    )
    return float(scores.mean())


def _named_schedule(config, n_samples):
    """config's schedule, built from the run when it is given by name."""
    schedule = config["schedule"]
    if not isinstance(schedule, str):
        return schedule
    sizes = config["batch_size"].values(config["epochs"])
    updates = [iterations_per_epoch(n_samples, min(b, n_samples)) for b in sizes]
    return registry.build_schedule(
        schedule,
        config["lr"],
        epochs=config["epochs"],
        updates_per_epoch=updates,
        **config["schedule_options"],
    )


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
        total.divergence = dict(
            part.divergence,
            epoch=part.divergence["epoch"] + epochs_before,
            step=part.divergence["step"] + steps_before,
        )


def _same(a, b):
    try:
        return bool(a == b) and type(a) is type(b)
    except (TypeError, ValueError):
        return a is b
