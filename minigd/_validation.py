"""Argument checks shared by the public entry points; every message names the argument."""

import math
import numbers

import numpy as np


def _describe(value):
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def positive_int(name, value):
    """An int >= 1 (bools rejected)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {_describe(value)}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)


def non_negative_int(name, value):
    """An int >= 0 (bools rejected)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= 0, got {_describe(value)}")
    if value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value}")
    return int(value)


def real(name, value, *, low=None, high=None, low_open=False, high_open=False, finite=True):
    """A real number (bools rejected) in the interval given by low/high and their openness."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {_describe(value)}")
    try:
        value = float(value)
    except OverflowError:
        raise ValueError(f"{name} must be finite, got {_describe(value)}") from None
    if finite and not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ValueError(f"{name} must be in {left}{lo}, {hi}{right}, got {value}")
    return value


def non_negative(name, value):
    return real(name, value, low=0.0)


def choice(name, value, options):
    """One of ``options`` (compared with ==, strings only with strings); returns the option."""
    for option in options:
        if isinstance(option, str) != isinstance(value, str):
            continue
        try:
            if bool(value == option):
                return option
        except (TypeError, ValueError):
            continue
    raise ValueError(f"{name} must be one of {tuple(options)}, got {_describe(value)}")


def seed(name, value):
    """None or an int >= 0 (bools rejected)."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a non-negative int or None, got {_describe(value)}")
    if value < 0:
        raise ValueError(f"{name} must be a non-negative int or None, got {value}")
    return int(value)


def float_dtype(name, value):
    """np.float32 or np.float64 (anything np.dtype() maps to one of them)."""
    try:
        dtype = np.dtype(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be float32 or float64, got {_describe(value)}") from None
    if dtype.type not in (np.float32, np.float64):
        raise TypeError(f"{name} must be float32 or float64, got {dtype}")
    return dtype


def _as_array(name, value):
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be an array of numbers; np.asarray failed: {exc}") from None


def _reject_tensor(name, value):
    """TypeError for a torch (or other framework) tensor, saying how to convert it."""
    module = type(value).__module__ or ""
    if module.split(".")[0] == "torch" or (hasattr(value, "numpy") and hasattr(value, "detach")):
        raise TypeError(
            f"{name} is a {module.split('.')[0]} {type(value).__name__}; minigd "
            f"takes NumPy arrays: convert with {name}.numpy() (or "
            f"{name}.detach().cpu().numpy() for a tensor on a GPU or with grad)"
        )


def boolean(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {_describe(value)}")
    return bool(value)


def features(name, X, n_features=None, check_finite=True):
    """A 2-D numeric array-like (ndarray, memmap) of shape (n, n_features), non-empty and finite."""
    _reject_tensor(name, X)
    if not hasattr(X, "shape") or not hasattr(X, "dtype"):
        X = _as_array(name, X)
    if X.dtype == object or not (np.issubdtype(X.dtype, np.number) or X.dtype == np.bool_):
        raise TypeError(f"{name} must hold numbers, got dtype {X.dtype}")
    if np.issubdtype(X.dtype, np.complexfloating):
        raise TypeError(f"{name} must hold real numbers, got dtype {X.dtype}")
    if len(X.shape) != 2:
        raise ValueError(f"{name} must be 2-D (samples, features), got shape {tuple(X.shape)}")
    if X.shape[0] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(X.shape)}")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(
            f"{name} has {X.shape[1]} features but the model's first layer expects {n_features}"
        )
    if check_finite and np.issubdtype(X.dtype, np.floating):
        bad = _first_non_finite_row(X)
        if bad is not None:
            raise ValueError(f"{name} contains NaN or inf (first in row {bad})")
    return X


def _first_non_finite_row(X, chunk_bytes=1 << 22):
    """Index of the first row holding NaN or inf, reading X in blocks of about 4 MB."""
    chunk = max(1, chunk_bytes // max(1, X.shape[1] * X.dtype.itemsize))
    for start in range(0, X.shape[0], chunk):
        block = np.asarray(X[start : start + chunk])
        finite_rows = np.isfinite(block).all(axis=1)
        if not finite_rows.all():
            return start + int(np.argmin(finite_rows))
    return None


def labels(name, y, n_samples=None, n_classes=None):
    """A 1-D integer array of class ids in [0, n_classes), returned as int64."""
    _reject_tensor(name, y)
    if not hasattr(y, "dtype"):
        y = _as_array(name, y)
    if y.dtype == np.bool_ or not (
        np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)
    ):
        raise TypeError(f"{name} must hold integer class ids, got dtype {y.dtype}")
    if len(y.shape) != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(y.shape)}")
    if n_samples is not None and y.shape[0] != n_samples:
        raise ValueError(f"{name} has {y.shape[0]} labels but X has {n_samples} samples")
    if y.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    y = np.asarray(y)
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise TypeError(f"{name} must hold integer class ids, got non-integer values")
        if np.abs(y).max() >= 2.0**62:
            raise ValueError(f"{name} has class id {np.abs(y).max():g}, far beyond any output")
    elif y.dtype == np.uint64 and y.max() >= 2**62:
        raise ValueError(f"{name} has class id {y.max()}, far beyond any output")
    y = y.astype(np.int64, copy=False)
    low, high = int(y.min()), int(y.max())
    if low < 0:
        raise ValueError(f"{name} must be class ids >= 0, got {low}")
    if n_classes is not None and high >= n_classes:
        raise ValueError(
            f"{name} has class id {high} but the model has {n_classes} outputs "
            f"(ids must be in [0, {n_classes - 1}])"
        )
    return y


def values(name, y, n_samples=None, n_outputs=None):
    """Real-valued targets of shape (n,) or (n, n_outputs), finite, returned without copying.

    A 1-D y (one output) comes back as an (n, 1) view, so targets have the outputs' shape.
    """
    _reject_tensor(name, y)
    if not hasattr(y, "shape") or not hasattr(y, "dtype"):
        y = _as_array(name, y)
    if y.dtype == np.bool_ or not (
        np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)
    ):
        raise TypeError(f"{name} must hold real numbers, got dtype {y.dtype}")
    if len(y.shape) not in (1, 2):
        raise ValueError(f"{name} must be 1-D (N,) or 2-D (N, outputs), got shape {tuple(y.shape)}")
    if n_samples is not None and y.shape[0] != n_samples:
        raise ValueError(f"{name} has {y.shape[0]} targets but X has {n_samples} samples")
    if y.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    y = np.asarray(y) if not isinstance(y, np.ndarray) else y
    if y.ndim == 1:
        y = y.reshape(-1, 1)
    if n_outputs is not None and y.shape[1] != n_outputs:
        raise ValueError(
            f"{name} has {y.shape[1]} target column(s) but the model has {n_outputs} outputs"
        )
    if np.issubdtype(y.dtype, np.floating):
        bad = _first_non_finite_row(y)
        if bad is not None:
            raise ValueError(f"{name} contains NaN or inf (first in row {bad})")
    return y
