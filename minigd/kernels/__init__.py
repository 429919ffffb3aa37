"""Array kernels behind the layers, the loss and the optimizers.

Two implementations with one signature each: :mod:`minigd.kernels.reference` (plain NumPy, for
reading and checking) and the Numba kernels. :func:`minigd.backend.kernels` returns the module
of the active backend; nothing else chooses.
"""
