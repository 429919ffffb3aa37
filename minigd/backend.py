"""The one place that chooses the array backend: ``"numba"`` (default) or ``"numpy"``.

The choice is read from ``MINIGD_BACKEND`` at import and changed with :func:`set_backend`.
Both backends implement the kernels of :mod:`minigd.kernels.reference` with the same signatures.
"""

import importlib
import os

BACKENDS = ("numba", "numpy")
_MODULES = {"numpy": "minigd.kernels.reference", "numba": "minigd.kernels.jit"}
_DEFAULT = "numba"
_active = None


def _check_name(name, source):
    if not isinstance(name, str) or name.lower() not in BACKENDS:
        raise ValueError(f"{source} must be one of {BACKENDS}, got {name!r}")
    return name.lower()


def set_backend(name):
    """Select the kernels used from now on: ``"numba"`` or ``"numpy"``; returns the previous one."""
    global _active
    previous = get_backend()
    _active = _check_name(name, "backend")
    return previous


def get_backend():
    """Name of the active backend."""
    global _active
    if _active is None:
        env = os.environ.get("MINIGD_BACKEND")
        _active = _check_name(env, "MINIGD_BACKEND") if env else _DEFAULT
    return _active


def kernels(name=None):
    """The kernel module of ``name`` (default: the active backend)."""
    name = get_backend() if name is None else _check_name(name, "backend")
    return importlib.import_module(_MODULES[name])


class TrainingKernels:
    """A backend's kernels as fit's training loop hands them to ``forward_batch``: the same,
    except that ``dense_forward`` is the backend's ``dense_forward_train`` (on the Numba
    backend, the product the autotuner measured fastest for the batch's shape; the whole-epoch
    kernel runs the same, so both paths of fit give the same bits). Anywhere else (predict,
    evaluate, ``model.forward``) ``dense_forward`` keeps every row independent of its
    batch-mates."""

    def __init__(self, kernels):
        self.kernels = kernels
        self.dense_forward = kernels.dense_forward_train

    def __getattr__(self, name):
        return getattr(self.kernels, name)


class use_backend:
    """Context manager: ``with mg.use_backend("numpy"): ...``, the previous backend back on exit."""

    def __init__(self, name):
        self.name = _check_name(name, "backend")

    def __enter__(self):
        self._previous = set_backend(self.name)
        return self

    def __exit__(self, *exc):
        set_backend(self._previous)


COMPILE_MESSAGE = "compiling the Numba kernels (first run only; cached on disk afterwards)..."
_announced = False


def announce_compilation(say):
    """Tell the user when the Numba kernels must be compiled (first run after install).

    The one place that prints the compile line, for ``minigd train`` and for
    ``mg.fit(verbose>=1)`` alike: calls ``say(COMPILE_MESSAGE)`` when the active backend is
    Numba and its on-disk cache is still empty, at most once per process. Returns True when it
    announced, so the caller can compile the kernels before timing anything.
    """
    global _announced
    if _announced or get_backend() != "numba":
        return False
    module = kernels()
    needs = getattr(module, "needs_compilation", None)
    if needs is not None and needs():
        say(COMPILE_MESSAGE)
        _announced = True
        return True
    return False
