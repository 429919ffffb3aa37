"""Gradient noise scale (McCandlish et al. 2018, "An Empirical Model of Large-Batch Training",
Appendix A): B_simple = tr(Sigma) / |G|^2, the batch size at which the gradient's noise and its
signal are equally large, estimated without bias from gradient norms at two batch sizes."""

from __future__ import annotations

import csv
import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from .. import _validation as check
from .._io import atomic_open
from ..backend import kernels as _active_kernels
from ..callbacks import Callback
from ..data import BatchIterator, _seed_or_fresh
from ..model import Sequential
from ..progress import progress_bar


@dataclass(frozen=True)
class NoiseScaleEstimate:
    """The two unbiased estimators averaged over ``n_pairs`` draws, and their ratio.

    b_simple = trace / grad_sq (inf when grad_sq <= 0: the noise swamps the signal; draw more
    pairs). The standard errors are those of the means over pairs; b_simple_stderr comes from
    the delta method with the covariance of the two estimators. ``loss`` is the mean loss of
    the big batches (an unbiased estimate of the loss on the whole data), NaN when not measured.
    """

    b_simple: float
    grad_sq: float
    trace: float
    grad_sq_stderr: float
    trace_stderr: float
    b_simple_stderr: float
    n_pairs: int
    small_batch: int
    big_batch: int
    loss: float = math.nan

    def to_dict(self):
        return asdict(self)


def _batch_pair(small_batch, big_batch):
    small_batch = check.positive_int("small_batch", small_batch)
    big_batch = check.positive_int("big_batch", big_batch)
    if not small_batch < big_batch:
        raise ValueError(
            f"small_batch must be smaller than big_batch, got small_batch="
            f"{small_batch}, big_batch={big_batch}"
        )
    return small_batch, big_batch


def noise_scale_from_norms(small_sq_norms, big_sq_norms, small_batch, big_batch, losses=None):
    """B_simple from squared norms of mini-batch mean gradients, ``|G_small|^2`` and
    ``|G_big|^2``, one pair per draw (McCandlish et al. 2018, eqs. A.2-A.3).

    With E|G_B|^2 = |G|^2 + tr(Sigma) / B (batches drawn i.i.d.), both are unbiased:
        |G|^2     ~ (B_big |G_big|^2 - B_small |G_small|^2) / (B_big - B_small)
        tr(Sigma) ~ (|G_small|^2 - |G_big|^2) / (1 / B_small - 1 / B_big)
    Each is averaged over the pairs first and the ratio taken last, as the paper advises (the
    ratio of means is consistent; a mean of ratios is not).

    Parameters
    ----------
    small_sq_norms, big_sq_norms : 1-D arrays of equal length n_pairs >= 1
    small_batch, big_batch : int, 1 <= small_batch < big_batch
    losses : optional 1-D array of the big batches' losses (their mean is recorded)

    Returns
    -------
    NoiseScaleEstimate
    """
    small_batch, big_batch = _batch_pair(small_batch, big_batch)
    small = np.asarray(small_sq_norms, dtype=np.float64)
    big = np.asarray(big_sq_norms, dtype=np.float64)
    if small.ndim != 1 or small.shape != big.shape or small.size == 0:
        raise ValueError(
            f"small_sq_norms and big_sq_norms must be 1-D of the same non-zero "
            f"length, got shapes {small.shape} and {big.shape}"
        )
    if not (np.all(np.isfinite(small)) and np.all(np.isfinite(big))):
        raise ValueError("squared gradient norms contain NaN or inf (has training diverged?)")
    grad_sq_draws = (big_batch * big - small_batch * small) / (big_batch - small_batch)
    trace_draws = (small - big) / (1.0 / small_batch - 1.0 / big_batch)
    n = small.size
    grad_sq, trace = float(grad_sq_draws.mean()), float(trace_draws.mean())
    if n > 1:
        cov = np.cov(np.stack([grad_sq_draws, trace_draws]), ddof=1) / n
        grad_sq_se, trace_se = math.sqrt(cov[0, 0]), math.sqrt(cov[1, 1])
    else:
        cov, grad_sq_se, trace_se = None, math.nan, math.nan
    if grad_sq > 0:
        b_simple = trace / grad_sq
        b_se = math.nan
        if cov is not None:
            var = (cov[1, 1] - 2 * b_simple * cov[0, 1] + b_simple**2 * cov[0, 0]) / grad_sq**2
            b_se = math.sqrt(max(var, 0.0))
    else:
        b_simple, b_se = math.inf, math.nan
    loss = math.nan if losses is None else float(np.mean(losses))
    return NoiseScaleEstimate(
        b_simple=b_simple,
        grad_sq=grad_sq,
        trace=trace,
        grad_sq_stderr=grad_sq_se,
        trace_stderr=trace_se,
        b_simple_stderr=b_se,
        n_pairs=n,
        small_batch=small_batch,
        big_batch=big_batch,
        loss=loss,
    )


class _GradientProbe:
    """Squared norms of mini-batch gradients of a private copy of a model (buffers reused)."""

    def __init__(self, model, X, y, small_batch, big_batch):
        self.model = model.clone()
        self.small_batch, self.big_batch = small_batch, big_batch
        self.data = BatchIterator(
            X,
            y,
            big_batch,
            shuffle=False,
            seed=0,
            dtype=model.dtype,
            validate=False,
            reuse_buffers=True,
        )
        self.xbuf = np.empty((big_batch, self.data.X.shape[1]), dtype=model.dtype)
        self.ybuf = np.empty(big_batch, dtype=np.int64)
        self.grad = np.empty((big_batch, model.n_outputs), dtype=model.dtype)

    def _squared_norm(self, xb, yb, kernels):
        logits = self.model.forward_batch(xb, kernels)
        dlogits = self.grad[: len(yb)]  # softmax cross-entropy and its gradient, one pass
        value = kernels.softmax_cross_entropy(logits, yb, dlogits)
        self.model.backward_batch(dlogits, kernels=kernels)
        grads = self.model.flat_grads
        return float(np.dot(grads, grads)), value

    def measure(self, model, n_pairs, rng, bar=None):
        """(|G_small|^2 per pair, |G_big|^2 per pair, big-batch loss per pair) at model's weights.

        Each pair draws big_batch row indices i.i.d. (with replacement); the small batch is the
        first small_batch of them, so the two norms are positively correlated, which lowers
        the variance of their difference (both estimators stay unbiased).
        """
        self.model.flat_values[...] = model.flat_values
        kernels = _active_kernels()
        small, big, losses = np.empty(n_pairs), np.empty(n_pairs), np.empty(n_pairs)
        xbuf, ybuf = self.xbuf, self.ybuf
        for i in range(n_pairs):
            index = rng.integers(0, self.data.n_samples, size=self.big_batch)
            self.data.gather(index, xbuf, ybuf)
            big[i], losses[i] = self._squared_norm(xbuf, ybuf, kernels)
            small[i], _ = self._squared_norm(
                xbuf[: self.small_batch], ybuf[: self.small_batch], kernels
            )
            if bar is not None:
                bar.update()
        return small, big, losses


def gradient_noise_scale(
    model: Sequential,
    X: np.ndarray,
    y: np.ndarray,
    small_batch: int,
    big_batch: int,
    *,
    n_pairs: int = 20,
    seed: int | None = None,
    details: bool = False,
    progress: bool = False,
) -> float | NoiseScaleEstimate:
    """Estimate the simple gradient noise scale B_simple = tr(Sigma) / |G|^2 at the model's
    current weights (McCandlish et al. 2018), the paper's estimate of the critical batch size:
    below it a bigger batch buys almost proportionally fewer steps; above it, little.

    G is the gradient of the mean loss over (X, y) and Sigma the covariance of per-sample
    gradients, so a batch-B mean gradient has E|G_B|^2 = |G|^2 + tr(Sigma) / B. Each of
    ``n_pairs`` draws takes a big batch of rows i.i.d. from (X, y) and its first small_batch
    rows, computes both full gradient vectors (every weight and bias), and feeds the squared
    norms to the unbiased two-batch estimators (see :func:`noise_scale_from_norms`); the two
    estimators are averaged over draws and B_simple is their ratio.

    ``model`` is not changed (a copy computes the gradients).

    On the MNIST sample (784-128-10 ReLU, SGD lr 0.1, batch 64) B_simple is about 50 at
    initialisation and 200-350 after one epoch; a batch-size loop finds the critical batch
    growing alike but about 6x smaller (33 at loss 0.5, 55 at 0.35): B_simple equals the
    paper's B_noise only for an isotropic Hessian (docs/guides/noise_scale.md).

    Parameters
    ----------
    model : Sequential
    X : array-like (N, features); y : array-like (N,) class ids
    small_batch, big_batch : int, 1 <= small_batch < big_batch (B_big / B_small of 10 or
        more keeps the estimators' variance low)
    n_pairs : int >= 1, default 20 (standard errors need >= 2)
    seed : int or None, default None; same seed and weights -> the same value, bit for bit
    details : bool, default False; True returns the NoiseScaleEstimate (both estimators,
        standard errors, the mean big-batch loss) instead of the float
    progress : bool, default False; a tqdm bar over the pairs (hidden when not a terminal)

    Returns
    -------
    float B_simple (inf when the |G|^2 estimate is <= 0, with a RuntimeWarning), or a
    NoiseScaleEstimate with ``details=True``

    Example
    -------
    >>> X, y, _, _ = mg.datasets.load_mnist_sample()
    >>> model = mg.Sequential(mg.Dense(784, 128), mg.ReLU(), mg.Dense(128, 10), seed=0)
    >>> mg.gradient_noise_scale(model, X, y, small_batch=32, big_batch=1024, n_pairs=50, seed=0)
    61.1...
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a minigd Sequential, got {type(model).__name__}")
    small_batch, big_batch = _batch_pair(small_batch, big_batch)
    n_pairs = check.positive_int("n_pairs", n_pairs)
    details = check.boolean("details", details)
    progress = check.boolean("progress", progress)
    X = check.features("X", X, model.n_features)
    y = check.labels("y", y, X.shape[0], model.n_outputs)
    rng = np.random.default_rng(_seed_or_fresh(seed))
    probe = _GradientProbe(model, X, y, small_batch, big_batch)
    bar = progress_bar(n_pairs, "noise scale", progress, unit="pair")
    try:
        small, big, losses = probe.measure(model, n_pairs, rng, bar)
    finally:
        bar.close()
    estimate = noise_scale_from_norms(small, big, small_batch, big_batch, losses)
    if math.isinf(estimate.b_simple):
        warnings.warn(
            f"the |G|^2 estimate is {estimate.grad_sq:.3g} <= 0: the gradient noise "
            f"swamps the signal at these weights; B_simple is reported as inf (use "
            f"more pairs or a bigger big_batch)",
            RuntimeWarning,
            stacklevel=2,
        )
    return estimate if details else estimate.b_simple


RECORD_KEYS = ("epoch", "step", "loss", "b_simple", "b_simple_stderr", "grad_sq", "trace")


class GradientNoiseScale(Callback):
    """Callback tracking B_simple during ``fit`` so it can be plotted against the loss.

    Measures at the start (``at_start``) and after every epoch, or every ``every`` updates.
    Each measurement is :func:`gradient_noise_scale` with ``n_pairs`` draws on a private copy
    of the model (training is not disturbed, and its random stream is separate from fit's).
    ``records`` is a dict of equal-length lists: epoch (0 = before training), step (updates so
    far), loss (mean big-batch loss at that point), b_simple, b_simple_stderr, grad_sq, trace.

    Note: ``every=N`` overrides ``on_iteration_end``, which makes ``fit`` call Python after
    every update (the per-iteration path: no fused Numba epoch for that run). Each measurement
    costs n_pairs * (small_batch + big_batch) samples of forward + backward.

    Parameters
    ----------
    small_batch, big_batch : int, 1 <= small_batch < big_batch
    n_pairs : int >= 1, default 10
    every : int >= 1 or None, default None (at epoch ends)
    data : (X, y) or None, default None (the training data given to fit)
    seed : int or None, default None
    at_start : bool, default True (also measure before the first update)
    progress : bool, default False; a tqdm bar per measurement (hidden when not a terminal)

    ``start(model, X, y)`` and ``measure(model, epoch, step)`` do the same outside ``fit``.

    Example
    -------
    >>> tracker = mg.GradientNoiseScale(32, 1024, seed=0)
    >>> history = mg.fit(model, X, y, optimizer=opt, epochs=5, batch_size=64, callbacks=[tracker])
    >>> tracker.records["b_simple"]; mg.plot.noise_scale(tracker)
    """

    def __init__(
        self,
        small_batch,
        big_batch,
        n_pairs=10,
        every=None,
        data=None,
        seed=None,
        at_start=True,
        progress=False,
    ):
        self.small_batch, self.big_batch = _batch_pair(small_batch, big_batch)
        self.n_pairs = check.positive_int("n_pairs", n_pairs)
        self.every = None if every is None else check.positive_int("every", every)
        if data is not None and (not isinstance(data, (tuple, list)) or len(data) != 2):
            raise TypeError("data must be a pair (X, y) or None")
        self.data = data
        self.seed = _seed_or_fresh(seed)
        self.at_start = check.boolean("at_start", at_start)
        self.progress = check.boolean("progress", progress)
        self.records = {key: [] for key in RECORD_KEYS}
        self._probe = None

    @property
    def per_iteration(self):
        return self.every is not None

    def start(self, model, X, y):
        """Clear the records and restart the random stream; measure on (X, y) from now on
        (``data``, when given, takes the place of X, y). ``fit`` calls this at the start."""
        if self.data is not None:
            X, y = self.data
        X = check.features("X", X, model.n_features)
        y = check.labels("y", y, X.shape[0], model.n_outputs)
        self.records = {key: [] for key in RECORD_KEYS}
        self._rng = np.random.default_rng(self.seed)
        self._probe = _GradientProbe(model, X, y, self.small_batch, self.big_batch)

    def measure(self, model, epoch=0, step=0):
        """Estimate B_simple at ``model``'s weights now and append it to ``records`` (NaN when
        the gradient is not finite); returns the NoiseScaleEstimate or None."""
        if self._probe is None:
            raise RuntimeError("measure() needs start(model, X, y) first (fit calls it)")
        bar = progress_bar(self.n_pairs, f"noise scale (step {step})", self.progress, unit="pair")
        try:
            small, big, losses = self._probe.measure(model, self.n_pairs, self._rng, bar)
            estimate = noise_scale_from_norms(small, big, self.small_batch, self.big_batch, losses)
        except ValueError:
            estimate = None
        finally:
            bar.close()
        values = {"epoch": epoch, "step": step}
        for key in RECORD_KEYS[2:]:
            values[key] = math.nan if estimate is None else getattr(estimate, key)
        for key in RECORD_KEYS:
            self.records[key].append(values[key])
        return estimate

    def on_train_begin(self, state):
        self.start(state.model, state.iterator.X, state.iterator.y)
        if self.at_start:
            self.measure(state.model, state.epoch, state.step)

    def on_iteration_end(self, state):
        if self.every is not None and state.step % self.every == 0:
            self.measure(state.model, state.epoch, state.step)

    def on_epoch_end(self, state):
        if self.every is None:
            self.measure(state.model, state.epoch, state.step)

    def to_dict(self):
        """The records with NaN/inf written as strings (JSON-safe)."""
        return {
            key: [v if not isinstance(v, float) or math.isfinite(v) else str(v) for v in values]
            for key, values in self.records.items()
        }

    def to_csv(self, path):
        """Write the records, one row per measurement (atomically)."""
        with atomic_open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(RECORD_KEYS)
            writer.writerows(zip(*(self.records[k] for k in RECORD_KEYS)))

    def __repr__(self):
        when = "every epoch" if self.every is None else f"every {self.every} updates"
        return (
            f"GradientNoiseScale(small_batch={self.small_batch}, big_batch="
            f"{self.big_batch}, n_pairs={self.n_pairs}, {when})"
        )
