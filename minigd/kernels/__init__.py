"""Array kernels behind the layers, the loss and the optimizers.

Two implementations with one signature each: :mod:`minigd.kernels.reference` (plain NumPy, for
reading and checking) and :mod:`minigd.kernels.jit` (Numba), built from the matrix products of
:mod:`~minigd.kernels.jit_gemm`, with the whole-epoch kernel of :mod:`~minigd.kernels.jit_epoch`
and the compile and threading choices of :mod:`~minigd.kernels.jit_config`.
:func:`minigd.backend.kernels` returns the module of the active backend; nothing else chooses.
:mod:`~minigd.kernels.codes` holds the numbers the classes and the kernels share (activation
and status codes); :mod:`~minigd.kernels.jit_optim` the optimizer updates of the Numba backend,
in one place.
The compiled Numba code is cached per user, never inside this package
(see :func:`~minigd.kernels.jit_config.cache_directory` and the ``minigd cache`` command).
"""
