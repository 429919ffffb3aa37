"""argparse ``type=`` functions for minigd's command line: numbers checked when parsed.

argparse prefixes a failed check with the flag, so ``minigd train --batch-size 0`` ends with
``minigd train: error: argument --batch-size: must be an integer >= 1, got '0'`` and exit code 2,
before any data is loaded. Every subcommand (train, lr-find, noise-scale, sweep) uses these.

Exported: positive_int, nonnegative_int, positive_float, nonnegative_float, fraction,
decay_factor, threshold_or_zero, hidden_sizes, data_source.
"""
import argparse
import math
import os

DATA_CHOICES = ("sample", "mnist")


def _int(text, what):
    try:
        return int(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None


def _float(text, what):
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be {what} (finite), got {text!r}")
    return value


def positive_int(text):
    """An integer >= 1 (batch sizes, epochs, iteration counts)."""
    value = _int(text, "an integer >= 1")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def nonnegative_int(text):
    """An integer >= 0 (seeds, warmup epochs, patience with 0 meaning off)."""
    value = _int(text, "an integer >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def positive_float(text):
    """A finite number > 0 (learning rates)."""
    value = _float(text, "a number > 0")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def nonnegative_float(text):
    """A finite number >= 0 (weight decay, lr floors)."""
    value = _float(text, "a number >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def fraction(text):
    """A number in [0, 1) (momentum, smoothing, validation split)."""
    value = _float(text, "a number in [0, 1)")
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}")
    return value


def decay_factor(text):
    """A number in (0, 1] (multiplicative lr decay per step)."""
    value = _float(text, "a number in (0, 1]")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {text!r}")
    return value


def threshold_or_zero(text):
    """0 (off) or a number > 1 (a multiple of the best loss)."""
    value = _float(text, "0 or a number > 1")
    if value != 0 and value <= 1:
        raise argparse.ArgumentTypeError(f"must be 0 (off) or a number > 1, got {text!r}")
    return value


def hidden_sizes(text):
    """Comma-separated layer widths, each >= 1: ``"256,128"`` -> [256, 128]."""
    try:
        sizes = [int(part) for part in text.split(",") if part.strip() != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes comma-separated ints, got {text!r}") from None
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be >= 1, got {text!r}")
    return sizes


def data_source(text):
    """'sample', 'mnist', or the path of an existing .npz file holding arrays X and y."""
    if text in DATA_CHOICES:
        return text
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(
            f"takes 'sample', 'mnist' or the path of an .npz file with arrays X and y "
            f"(np.savez(path, X=X, y=y)); {text!r} is neither a choice nor an existing file")
    return text
