"""The fused fast path of ``fit``: one Numba call runs a whole epoch.

``fit`` takes this path for an epoch when all of these hold (:func:`supports`), and otherwise
runs one Python iteration per update with the same kernels and the same results:

- the backend is ``"numba"`` and ``minigd.fused.ENABLED`` is True (set it False to compare);
- no callback overrides ``on_iteration_end`` (a callback that needs Python after every update,
  such as a live plot, uses the per-iteration path: slower at small batches, same history);
- the model is a stack of Dense layers, each optionally followed by one ReLU, Tanh or Sigmoid;
- the optimizer is SGD, Adam or AdamW over all of ``model.parameters()`` in order, the loss is
  SoftmaxCrossEntropy, and X is a NumPy array (an ``np.memmap`` included) of a real dtype.

Nothing is traded for the speed: the learning rate of every iteration is computed up front
from the schedule (schedules are pure functions of the step, see
:meth:`minigd.TrainingState.lr_at`), every iteration's epoch, iteration, step, batch size, lr
and loss are recorded in the history after the call, and a non-finite loss (or an overflowing
gradient) stops the epoch before that update exactly as on the per-iteration path. The two
paths give bit-identical results. X is never copied: each batch is gathered from it (and
converted to the model dtype) inside the kernel. The progress bar moves once per epoch; an
interrupt (Ctrl-C) is handled when the epoch's call returns.
"""
import numpy as np

from . import _validation as check
from .backend import get_backend
from .layers import Dense, ReLU, Sigmoid, Tanh
from .losses import SoftmaxCrossEntropy
from .optim import SGD, Adam, AdamW

ENABLED = True
_ACTIVATIONS = {ReLU: 1, Tanh: 2, Sigmoid: 3}


def layer_spec(model):
    """(dims (L, 2), weight offsets, bias offsets, activation codes) of a supported stack;
    None for any other model."""
    dims, w_offsets, b_offsets, acts = [], [], [], []
    layers = model.layers
    i = 0
    while i < len(layers):
        dense = layers[i]
        if type(dense) is not Dense:
            return None
        act = 0
        if i + 1 < len(layers) and type(layers[i + 1]) in _ACTIVATIONS:
            act = _ACTIVATIONS[type(layers[i + 1])]
            i += 1
        i += 1
        dims.append((dense.in_features, dense.out_features_))
        w_offsets.append(dense.weight._flat[2])
        b_offsets.append(dense.bias._flat[2])
        acts.append(act)
    as_int = lambda values: np.array(values, dtype=np.int64)
    return as_int(dims).reshape(-1, 2), as_int(w_offsets), as_int(b_offsets), as_int(acts)


def _supported_input(X):
    return type(X) in (np.ndarray, np.memmap) and (X.dtype.kind in "iub" or
                                                   X.dtype in (np.float32, np.float64))


def supports(state, loss, callbacks):
    """True when this epoch can run fused (conditions in the module docstring)."""
    model, optimizer = state.model, state.optimizer
    return (ENABLED and get_backend() == "numba"
            and not any(cb.per_iteration for cb in callbacks)
            and type(loss) is SoftmaxCrossEntropy
            and type(optimizer) in (SGD, Adam, AdamW)
            and optimizer._flat is not None and optimizer._flat[0] is model._values
            and _supported_input(state.iterator.X)
            and layer_spec(model) is not None)


def learning_rates(state, epoch_index, count):
    """(lrs, error): the lr of each of the epoch's updates from ``state.lr_at`` (Python floats).

    Evaluation stops at the first schedule error, returned with the lrs before it, so the
    epoch runs up to that update and then raises it, as the per-iteration loop would.
    """
    schedule = state.schedule
    lrs = []
    try:
        if schedule is None or schedule.unit == "epoch":
            lrs = [state.lr_at(epoch_index, state.step)] * count
        else:
            for i in range(count):
                lrs.append(state.lr_at(epoch_index, state.step + i))
    except (TypeError, ValueError) as error:
        return lrs, error
    return lrs, None


def _first_invalid(lrs):
    """Index of the first lr the optimizer would reject (see Optimizer.lr), or None."""
    try:
        values = np.array(lrs, dtype=np.float64)
        if np.all(np.isfinite(values) & (values >= 0)):
            return None
    except (TypeError, ValueError):
        pass
    for i, lr in enumerate(lrs):
        try:
            check.real("lr", lr, low=0.0)
        except (TypeError, ValueError):
            return i
    return None


def _round_up(n, multiple=16):
    return -(-n // multiple) * multiple


def _optimizer_arrays(optimizer):
    if type(optimizer) is SGD:
        from .kernels.jit_epoch import SGD as kind
        hyper = [optimizer.momentum, optimizer.dampening, float(optimizer.nesterov),
                 optimizer.weight_decay]
        names = ("momentum_buffer",)
    else:
        from .kernels.jit_epoch import ADAM as kind
        hyper = [optimizer.betas[0], optimizer.betas[1], optimizer.eps, optimizer.weight_decay,
                 float(optimizer.decoupled)]
        names = ("exp_avg", "exp_avg_sq")
    return kind, np.array(hyper, dtype=np.float64), names


def run_epoch(state, bar, start=0):
    """Run epoch ``state.epoch`` fused from iteration ``start`` (0-based; > 0 when resuming);
    record it in the history; return (loss sum, samples) of the updates applied.

    ``loss sum`` is the sum of batch loss times batch size, as the per-iteration path returns
    it. ``bar`` is a tqdm-like progress bar, closed on return.
    """
    from .kernels import autotune, jit_epoch  # imported here: `import minigd` stays Numba-free
    from .kernels.jit_config import parallel_parts
    from .kernels.jit_gemm import aligned_empty
    from .training import _mark_divergence

    model, optimizer, history = state.model, state.optimizer, state.history
    iterator = state.iterator
    epoch_index = state.epoch - 1
    sizes = iterator.batch_sizes()[start:]
    lrs, error = learning_rates(state, epoch_index, len(sizes))
    invalid = _first_invalid(lrs)
    n_run = len(lrs) if invalid is None else invalid

    dims, w_offsets, b_offsets, acts = layer_spec(model)
    dtype, batch = model.dtype, iterator.batch_sizes()[0]
    kind, hyper, names = _optimizer_arrays(optimizer)
    values = aligned_empty(model._values.shape, dtype)
    grads = aligned_empty(model._grads.shape, dtype)
    states = [aligned_empty(model._values.shape, dtype) for _ in names]
    jit_epoch.to_kernel_layout(model._values, values, dims, w_offsets)
    jit_epoch.to_kernel_layout(model._grads, grads, dims, w_offsets)
    for kernel_state, name in zip(states, names):
        jit_epoch.to_kernel_layout(optimizer.state[name], kernel_state, dims, w_offsets)
    state2 = states[1] if len(states) > 1 else np.empty(0, dtype=dtype)
    a_offsets = np.concatenate([[0], np.cumsum([_round_up(batch * w) for w in dims[:, 1]])])
    a_offsets = a_offsets.astype(np.int64)
    workspace = aligned_empty(a_offsets[-1], dtype)
    deltas = aligned_empty(2 * _round_up(batch * int(dims[:, 1].max())), dtype)
    xbuf = aligned_empty((batch, iterator.X.shape[1]), dtype)
    ybuf = np.empty(batch, dtype=np.int64)
    losses = np.zeros(max(n_run, 1), dtype=np.float64)
    order = np.ascontiguousarray(iterator.permutation(epoch_index), dtype=np.int64)
    y = np.ascontiguousarray(iterator.y, dtype=np.int64)

    parts = parallel_parts()
    products = autotune.epoch_products(dims, iterator.batch_size, sizes, dtype, parts)
    try:
        with autotune.blas_threads_limited(products):
            count, status = (0, jit_epoch.COMPLETED) if n_run == 0 else jit_epoch.train_epoch(
                iterator.X, y, order, iterator.batch_size, start, n_run, values, grads,
                states[0], state2, dims, w_offsets, b_offsets, acts, kind, hyper,
                optimizer.step_count, np.array(lrs[:n_run], dtype=np.float64), xbuf, ybuf,
                workspace, a_offsets, deltas, losses, parts, products)
        jit_epoch.from_kernel_layout(values, model._values, dims, w_offsets)
        jit_epoch.from_kernel_layout(grads, model._grads, dims, w_offsets)
        for kernel_state, name in zip(states, names):
            jit_epoch.from_kernel_layout(kernel_state, optimizer.state[name], dims, w_offsets)

        diverged = status != jit_epoch.COMPLETED
        applied = count - 1 if diverged else count
        losses = losses[:count].tolist()
        table = history.iterations
        table["epoch"].extend([state.epoch] * count)
        table["iteration"].extend(range(start + 1, start + count + 1))
        table["step"].extend(range(state.step + 1, state.step + count + 1))
        table["batch_size"].extend(sizes[:count])
        table["lr"].extend(lrs[:count])
        table["loss"].extend(losses)
        optimizer.step_count += applied
        state.step += applied
        loss_sum, samples = 0.0, 0
        for value, n in zip(losses[:applied], sizes):
            loss_sum += value * n
            samples += n
        if count:
            state.iteration, state.current_lr = start + count, lrs[count - 1]
            optimizer.lr = lrs[count - 1]
        bar.update(applied)
        if diverged:
            cause = "loss" if status == jit_epoch.LOSS_DIVERGED else "gradient"
            _mark_divergence(state, start + count, lrs[count - 1], losses[-1], cause)
        elif invalid is not None:
            optimizer.lr = lrs[invalid]     # raises the optimizer's own error, as the loop would
        elif error is not None:
            raise error
    finally:
        bar.close()
    return loss_sum, samples
