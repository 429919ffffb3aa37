"""Warm start: train on the NumPy backend while a background process compiles the Numba kernels.

The first run after an install would otherwise wait for Numba to compile the whole-epoch kernel
(40-60 s on a 2-core machine). :class:`WarmStart` is a callback for ``mg.fit``:

- at the start of training, when the Numba backend is active and its cache holds no compiled
  kernels, it starts one background process (lower priority) that trains a copy of the model and
  optimizer for one epoch on a few random rows of the same dtype with the Numba backend, which
  compiles exactly the kernels this run needs (its dtype, activations, optimizer) into the
  on-disk cache, then switches this process to the NumPy backend, with NumPy's BLAS on one
  thread until the compile is done (two BLAS threads and a compiler on 2 cores oversubscribe);
- at the start of each later epoch, once that process has finished, it switches back to the
  Numba backend, which loads the kernels from the cache (about a second) and measures the
  product choice (minigd.kernels.autotune) here, a few milliseconds per shape, rather than in
  the background process, whose own compiling would skew the timings;
- at the end, the Numba backend is active again if the kernels are ready; otherwise the
  background process is left to finish filling the cache for the next run, and NumPy stays
  active.

Determinism: the epochs before the switch run on the NumPy backend, which agrees with the Numba
backend to rounding but not bit for bit, and the switch happens when the compilation finishes,
which depends on the machine's load. A warm-started run is therefore not bit-identical to a pure
Numba run, nor to another warm-started run. ``minigd train`` warm-starts only when no backend was
chosen (no ``--backend``, no ``MINIGD_BACKEND``); ``--backend numba`` or ``MINIGD_WARM_START=0``
compile first and keep every run bit-identical.

The model, the loss and the optimizer's class reach the background process pickled through its
stdin (no file is written); a model that cannot be pickled, or a background process that fails,
leaves the run on the NumPy backend to its end.
"""

import os
import pickle
import subprocess
import sys

import numpy as np

from .. import backend
from ..callbacks import Callback

ENV = "MINIGD_WARM_START"


def enabled():
    """False when ``MINIGD_WARM_START`` is 0 / false / no / off."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def kernels_ready():
    """True when the on-disk cache holds the compiled main kernels for this CPU."""
    from . import jit

    return not jit.needs_compilation()


class WarmStart(Callback):
    """Start on the NumPy backend while the Numba kernels compile in the background; switch
    to Numba at the first epoch boundary after they are ready (see the module docstring).

    Parameters
    ----------
    say : callable, optional
        Called with one line when training starts on NumPy and when it switches (default: quiet).
    """

    def __init__(self, say=None):
        self.say = say or (lambda line: None)
        self.process = None
        self.active = False
        self.switched_at = None  # the epoch that first ran on Numba
        self._blas_limits = None  # threadpoolctl limits while the compile runs

    def begin(self, model, optimizer, X, y, batch_size, sizes=None, loss=None):
        """Start the background compile and switch to NumPy, if the Numba kernels are not
        compiled yet (callable before ``fit``; ``sizes``: the epoch's batch sizes; ``loss``:
        the run's loss, default SoftmaxCrossEntropy)."""
        if (
            self.process is not None
            or not enabled()
            or backend.get_backend() != "numba"
            or kernels_ready()
        ):
            return
        self.process = start_compile(model, optimizer, X, y, batch_size, sizes, loss)
        if self.process is None:
            return
        backend.set_backend("numpy")
        self.active = True
        self._limit_blas()
        self.say(
            "compiling the Numba kernels in the background (first run only); "
            "starting on the NumPy backend"
        )

    def _limit_blas(self):
        """NumPy's BLAS on one thread while the compiler runs beside it: on a 2-core machine a
        second BLAS thread shares a core with the compiler, and every product waits for the
        slower thread (NumPy epochs measured 18-34 s under load, against ~1 s alone)."""
        try:
            from threadpoolctl import threadpool_limits

            self._blas_limits = threadpool_limits(limits=1, user_api="blas")
        except Exception:  # threadpoolctl missing or failing: BLAS keeps its threads
            self._blas_limits = None

    def _release_blas(self):
        limits, self._blas_limits = getattr(self, "_blas_limits", None), None
        if limits is not None:
            limits.restore_original_limits()

    def on_train_begin(self, state):
        it = state.iterator
        self.begin(
            state.model, state.optimizer, it.X, it.y, it.batch_size, it.batch_sizes(), state.loss
        )

    def _finished(self):
        code = self.process.poll()
        if code is None:
            return False
        self._release_blas()  # the compiler is done: BLAS gets its threads back
        if code != 0 or not kernels_ready():
            self.active = False  # the compile failed: stay on NumPy for this run
        return True

    def on_epoch_begin(self, state):
        if self.active and self._finished() and self.active:
            backend.set_backend("numba")
            self.active = False
            self.switched_at = state.epoch
            self.say(f"kernels compiled: the Numba backend runs from epoch {state.epoch}")

    def on_train_end(self, state):
        if self.active and self._finished() and self.active:
            backend.set_backend("numba")
            self.active = False
        self._release_blas()  # the run is over: the rest of the program gets its BLAS back


def start_compile(model, optimizer, X, y, batch_size, sizes=None, loss=None):
    """Start the background compile of the kernels a run of ``model`` needs; the Popen, or None
    when the model cannot be sent (it is then left to compile in the foreground)."""
    batch = int(batch_size)
    last = int(sizes[-1]) if sizes else len(X) % batch
    rows = batch + (last if 0 < last < batch else 0)
    # the optimizer travels as its class: the kernels depend on its kind, not its settings
    job = {
        "model": model,
        "optimizer": type(optimizer),
        "lr": float(optimizer.lr),
        "rows": rows,
        "batch": batch,
        "x_dtype": np.dtype(X.dtype).str,
        "features": int(X.shape[1]),
        "x_readonly": not X.flags.writeable,
        "y_dtype": np.dtype(y.dtype).str,
        "y_shape": tuple(int(n) for n in np.shape(y)[1:]),
        "loss": loss,
    }
    try:
        payload = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return None
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "minigd.kernels.warm_start"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        process.stdin.write(payload)
        process.stdin.close()
    except OSError:
        return None
    return process


def compile_job(job):
    """The background process: one epoch with the Numba backend on random rows of the run's
    dtypes, and an evaluation, so that every kernel the run needs is compiled and cached."""
    import minigd as mg

    from . import autotune

    # the products are measured by the training process once it switches, not here, where
    # this compile's own load would skew the timings; the compiled code does not depend on it
    os.environ[autotune.ENV] = "own"
    rng = np.random.default_rng(0)
    X = rng.random((job["rows"], job["features"])).astype(np.dtype(job["x_dtype"]))
    if job["x_readonly"]:
        X.flags.writeable = False
    # class 0 (or zero values / probabilities): valid targets for any model and loss
    y = np.zeros((job["rows"],) + tuple(job.get("y_shape", ())), dtype=np.dtype(job["y_dtype"]))
    loss = job.get("loss")
    if y.ndim == 2 and (loss is None or isinstance(loss, mg.SoftmaxCrossEntropy)):
        y[:, 0] = 1  # class-probability targets: all mass on class 0
    with mg.use_backend("numba"):
        model = job["model"]
        optimizer = job["optimizer"](model.parameters(), lr=job["lr"])
        mg.fit(
            model,
            X,
            y,
            optimizer=optimizer,
            epochs=1,
            batch_size=job["batch"],
            loss=loss,
            validation_data=(X, y),
            verbose=0,
        )
    autotune.compile_candidates(model.dtype)


def main():
    """Entry point of the background process: read the job from stdin, compile, exit 0."""
    try:
        os.nice(10)  # leave the cores to the training run in the foreground
    except (AttributeError, OSError):
        pass
    job = pickle.loads(sys.stdin.buffer.read())
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compile_job(job)
    return 0


if __name__ == "__main__":
    sys.exit(main())
