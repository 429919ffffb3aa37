"""BatchIterator: one epoch of mini-batches gathered from X by index, never copying X."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from . import _validation as check


def _seed_or_fresh(seed):
    seed = check.seed("seed", seed)
    return int(np.random.SeedSequence().entropy) if seed is None else seed


def iterations_per_epoch(n_samples, batch_size, drop_last=False):
    """Updates in one epoch: ceil(n_samples / batch_size), or floor with drop_last."""
    if drop_last:
        return n_samples // batch_size
    return -(-n_samples // batch_size)


def _reuse_buffers(reuse_buffers, copy):
    """Resolve ``reuse_buffers`` and its older spelling ``copy`` (``copy=False`` = reuse)."""
    if reuse_buffers is not None:
        reuse_buffers = check.boolean("reuse_buffers", reuse_buffers)
    if copy is not None:
        copy = check.boolean("copy", copy)
        if reuse_buffers is not None and reuse_buffers == copy:
            raise ValueError(
                f"copy={copy} contradicts reuse_buffers={reuse_buffers}: pass "
                f"reuse_buffers alone (copy is its older, opposite spelling)"
            )
        return not copy
    return bool(reuse_buffers)


class BatchIterator:
    """Iterate over (X, y) in mini-batches; ``for xb, yb in it`` is one epoch.

    N samples in batches of B give ``len(it) = ceil(N / B)`` iterations per epoch, the last one
    holding ``N - (len(it) - 1) * B`` samples; with ``drop_last=True`` it is ``floor(N / B)`` and
    the short batch is skipped. Each epoch visits every sample exactly once (the dropped tail
    aside), in the order ``permutation(epoch)``: a pure function of (seed, epoch), so epoch e's
    order can be recomputed to resume mid-epoch.

    Every batch is a fresh pair of arrays, so batches can be kept (``list(it)``, or collecting
    ``xb`` across a loop), as torch's DataLoader and Keras give them. ``reuse_buffers=True``
    gathers every batch into the same two buffers instead: a yielded ``xb`` is then overwritten
    by the next batch. ``fit`` uses that so its loop does not allocate. A fresh batch costs one
    allocation of ``batch x features`` more: for 64 x 784 float32 rows of a 60,000-row X, about
    38 us per batch instead of 37 us (gathering included; ``np.empty`` itself ~0.4 us), next to
    ~500 us for one forward pass of a 784-128-10 model on the NumPy backend. X is only indexed,
    never copied, so an ``np.memmap`` larger than memory works; each batch is converted to
    ``dtype`` as it is gathered.

    Parameters
    ----------
    X : array-like of shape (N, features)  (ndarray, memmap, or any integer-array indexable)
    y : array-like of shape (N,): integer class ids; with ``target_kind="values"`` real numbers
        of shape (N,) or (N, k) (an ndarray or memmap, only indexed, never copied)
    batch_size : int >= 1
    shuffle : bool, default True
    drop_last : bool, default False
    seed : int or None, default None (fresh entropy, kept in ``it.seed``)
    dtype : float32 or float64, default np.float32
    reuse_buffers : bool, default False
        Yield views of two buffers reused for every batch (no allocation per batch; a batch is
        valid only until the next one is gathered).
    copy : bool or None, default None
        The older spelling, kept for compatibility: ``copy=True`` is the default behaviour,
        ``copy=False`` means ``reuse_buffers=True``. Passing both so that they contradict
        (``copy=True`` with ``reuse_buffers=True``, or both False) is a ValueError.
    target_kind : {"classes", "values"}, default "classes"
        "classes": each ``yb`` is int64 of shape (batch,). "values" (a regression loss's
        targets): each ``yb`` is (batch, k) in ``dtype``, a 1-D y giving k = 1.

    Example
    -------
    >>> it = BatchIterator(np.zeros((8000, 784)), np.zeros(8000, int), batch_size=64)
    >>> it.describe()
    '8000 samples, batch 64 -> 125 iterations per epoch (last batch: 64 samples)'
    """

    def __init__(
        self,
        X: np.ndarray,
        y: np.ndarray,
        batch_size: int,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int | None = None,
        dtype: npt.DTypeLike = np.float32,
        copy: bool | None = None,
        validate: bool = True,
        reuse_buffers: bool | None = None,
        target_kind: str = "classes",
    ) -> None:
        self.target_kind = check.choice("target_kind", target_kind, ("classes", "values"))
        if validate:
            X = check.features("X", X)
            y = (
                check.labels("y", y, X.shape[0])
                if self.target_kind == "classes"
                else check.values("y", y, X.shape[0])
            )
        y = np.asarray(y)
        if self.target_kind == "values" and y.ndim == 1:
            y = y.reshape(-1, 1)
        self.X, self.y = X, y
        self.batch_size = check.positive_int("batch_size", batch_size)
        self.shuffle = check.boolean("shuffle", shuffle)
        self.drop_last = check.boolean("drop_last", drop_last)
        self.reuse_buffers = _reuse_buffers(reuse_buffers, copy)
        self.seed = _seed_or_fresh(seed)
        self.dtype = check.float_dtype("dtype", dtype)
        self.n_samples = int(X.shape[0])
        self.check_batch_size(self.batch_size)
        self.epoch = 0
        self._rows, self._xbuf, self._ybuf, self._stage, self._ystage = 0, None, None, None, None

    def check_batch_size(self, batch_size: int) -> None:
        """Raise ValueError when ``batch_size`` with drop_last leaves no batch of this data."""
        if self.drop_last and batch_size > self.n_samples:
            raise ValueError(
                f"batch_size={batch_size} with drop_last=True leaves no batch "
                f"from {self.n_samples} samples"
            )

    def set_batch_size(self, batch_size: int) -> None:
        """Use ``batch_size`` from the next epoch on (a batch-size schedule calls this per epoch).

        The sample order is unchanged (``permutation(epoch)`` depends on seed and epoch only);
        the batch buffers are reallocated only when the batch grows past their size.
        """
        batch_size = check.positive_int("batch_size", batch_size)
        self.check_batch_size(batch_size)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return iterations_per_epoch(self.n_samples, self.batch_size, self.drop_last)

    @property
    def last_batch_size(self):
        """Samples in the last batch of an epoch."""
        if self.drop_last:
            return self.batch_size
        return self.n_samples - (len(self) - 1) * self.batch_size

    @property
    def samples_per_epoch(self):
        return len(self) * self.batch_size if self.drop_last else self.n_samples

    def describe(self) -> str:
        """One line: samples, batch size, iterations per epoch, the last batch."""
        text = (
            f"{self.n_samples} samples, batch {self.batch_size} -> {len(self)} iterations "
            f"per epoch (last batch: {self.last_batch_size} samples"
        )
        dropped = self.n_samples - self.samples_per_epoch
        if dropped:
            text += f"; {dropped} dropped each epoch"
        return text + ")"

    def permutation(self, epoch: int) -> np.ndarray:
        """Sample order of epoch ``epoch`` (0-based): arange(N) without shuffle."""
        if not self.shuffle:
            return np.arange(self.n_samples)
        rng = np.random.default_rng([self.seed, int(epoch)])
        return rng.permutation(self.n_samples)

    def batch_sizes(self):
        """Size of every batch of one epoch."""
        sizes = [self.batch_size] * len(self)
        if sizes:
            sizes[-1] = self.last_batch_size
        return sizes

    @property
    def copy(self):
        """``not reuse_buffers`` (the older spelling)."""
        return not self.reuse_buffers

    @property
    def target_dtype(self):
        """dtype of a gathered ``yb``: int64 for class ids, ``dtype`` for values."""
        return np.dtype(np.int64) if self.target_kind == "classes" else self.dtype

    def _target_shape(self, rows):
        return (rows,) if self.target_kind == "classes" else (rows, self.y.shape[1])

    def _ensure_buffers(self, always=False):
        rows = min(self.batch_size, self.n_samples)
        if self._rows >= rows and (self._xbuf is not None or not always):
            return
        self._rows = max(rows, self._rows)
        rows = self._rows
        if self.reuse_buffers or always:
            self._xbuf = np.empty((rows, self.X.shape[1]), dtype=self.dtype)
            self._ybuf = np.empty(self._target_shape(rows), dtype=self.target_dtype)
        converts = isinstance(self.X, np.ndarray) and self.X.dtype != self.dtype
        self._stage = np.empty((rows, self.X.shape[1]), dtype=self.X.dtype) if converts else None
        self._ystage = (
            np.empty(self._target_shape(rows), dtype=self.y.dtype)
            if self.y.dtype != self.target_dtype
            else None
        )

    def buffers(self):
        """(xb, yb): the two buffers of ``min(batch_size, N)`` rows that ``gather`` can fill.

        Allocated on first use and reused (also when ``reuse_buffers`` is False), so a caller
        that draws its own indices gathers without allocating: ``it.gather(index, *it.buffers())``
        fills the first ``len(index)`` rows.
        """
        self._ensure_buffers(always=True)
        return self._xbuf, self._ybuf

    def gather(self, index, out_x, out_y):
        """Copy rows ``index`` of X and y into ``out_x``/``out_y`` (converting X's dtype).

        An ndarray or memmap is gathered with ``np.take`` into a reused buffer (a staging buffer
        of X's dtype when it differs, e.g. uint8 pixels). Any other array-like is read as
        ``X[sorted index]`` (h5py and zarr want increasing indices) and put back in order.
        Buffers with more rows than ``index`` (e.g. :meth:`buffers`) get their first
        ``len(index)`` rows filled. y is gathered the same way (as int64 class ids, or as
        values of ``dtype``).
        """
        self._ensure_buffers()
        n = len(index)
        if out_x.shape[0] != n:  # buffers() of a full batch, a shorter index
            out_x, out_y = out_x[:n], out_y[:n]
        if not isinstance(self.X, np.ndarray):
            order = np.argsort(index, kind="stable")
            out_x[order] = self.X[index[order]]
        elif self._stage is None:
            np.take(self.X, index, axis=0, out=out_x)
        else:
            stage = self._stage[:n]
            np.take(self.X, index, axis=0, out=stage)
            out_x[...] = stage
        if self._ystage is None:
            np.take(self.y, index, axis=0, out=out_y)
        else:
            stage = self._ystage[:n]
            np.take(self.y, index, axis=0, out=stage)
            out_y[...] = stage

    def batches(self, epoch, start=0):
        """Yield (xb, yb) for epoch ``epoch`` (0-based), from iteration ``start`` (0-based) on.

        ``batches(e, start=k)`` yields exactly the batches ``k, k+1, ...`` of ``batches(e)``:
        this is how a run killed after k iterations of an epoch resumes it. Batches are fresh
        arrays unless the iterator was made with ``reuse_buffers=True``.
        """
        epoch = check.non_negative_int("epoch", epoch)
        start = check.non_negative_int("start", start)
        if start > len(self):
            raise ValueError(
                f"start must be in [0, {len(self)}] (iterations per epoch), got {start}"
            )
        return self._batches(epoch, start)

    def _batches(self, epoch, start):
        self._ensure_buffers()
        order = self.permutation(epoch)
        B = self.batch_size
        for i in range(start, len(self)):
            index = order[i * B : (i + 1) * B]
            if self.reuse_buffers:
                xb, yb = self._xbuf[: len(index)], self._ybuf[: len(index)]
            else:
                xb = np.empty((len(index), self.X.shape[1]), dtype=self.dtype)
                yb = np.empty(self._target_shape(len(index)), dtype=self.target_dtype)
            self.gather(index, xb, yb)
            yield xb, yb

    def state_dict(self):
        """What identifies this iterator's batches (JSON values): seed, batch_size, shuffle,
        drop_last, n_samples, n_features. With the epoch number it fixes every batch."""
        return {
            "seed": self.seed,
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
            "n_samples": self.n_samples,
            "n_features": int(self.X.shape[1]),
        }

    def load_state_dict(self, state):
        """Continue a saved iterator over the same data: checks batching and data size, then
        takes the saved seed, so ``permutation(e)`` is the saved run's. ValueError when the
        saved batching or data differ (nothing changes then)."""
        now = self.state_dict()
        for key in ("batch_size", "shuffle", "drop_last", "n_samples", "n_features"):
            if state[key] != now[key]:
                raise ValueError(
                    f"the saved iterator has {key}={state[key]}, this one has "
                    f"{key}={now[key]}: resuming needs the same data and batching"
                )
        self.seed = check.seed("seed", state["seed"])

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        return self.batches(epoch)

    def __repr__(self):
        reuse = ", reuse_buffers=True" if self.reuse_buffers else ""
        return (
            f"BatchIterator(n_samples={self.n_samples}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, drop_last={self.drop_last}, seed={self.seed}{reuse})"
        )
