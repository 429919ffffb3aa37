"""Optimizer updates of the Numba backend, and the dispatch the whole-epoch kernel calls.

One home per optimizer: its element kernel, its whole-buffer step (``<name>_step``, njit, also
called by :func:`fused_step`), its per-iteration wrapper (``<name>_update``, what the optimizer
class calls on the Numba backend) and its code in :data:`CODES`. An optimizer class declares
the name in :meth:`minigd.Optimizer.fused_update`; :mod:`minigd.fused` looks the code up here.
Adding an optimizer touches this module and the class only.
"""
import numba

from .jit import adam_step, sgd_step
from .jit_config import OPTIONS

SGD, ADAM = 0, 1
CODES = {"sgd": SGD, "adam": ADAM}


@numba.njit(**OPTIONS)
def fused_step(code, hyper, state1, state2, state3, step, lr, values, grads, parts):
    """One update of the whole flat buffer by the optimizer ``code`` (see :data:`CODES`):
    ``hyper`` is its float64 hyperparameters in the order its class declares them, ``state1``..
    ``state3`` its state buffers in that order (empty when unused), ``step`` counts from 1.

    sgd: hyper = (momentum, dampening, nesterov, weight_decay); adam: hyper = (beta1, beta2,
    eps, weight_decay, decoupled).
    """
    if code == SGD:
        sgd_step(values, grads, state1, lr, hyper[0], hyper[1], hyper[2] != 0, hyper[3],
                 step == 1, parts)
    elif code == ADAM:
        adam_step(values, grads, state1, state2, step, lr, hyper[0], hyper[1], hyper[2],
                  hyper[3], hyper[4] != 0, parts)
