"""The fused fast path of ``fit``: one Numba call runs a whole epoch.

``fit`` takes this path for an epoch when all of these hold (:func:`supports`), and otherwise
runs one Python iteration per update with the same kernels and the same results:

- the backend is ``"numba"`` and ``minigd.fused.ENABLED`` is True (set it False to compare);
- no callback overrides ``on_iteration_end`` (a callback that needs Python after every update,
  such as a live plot, uses the per-iteration path: slower at small batches, same history);
- ``fit(accumulate=1)`` (gradient accumulation runs one Python iteration per micro-batch);
- every layer declares a fused role (:meth:`minigd.Layer.fused_role`): the model is a stack of
  Dense layers, each optionally followed by one activation (ReLU, Tanh, Sigmoid);
- the optimizer declares a fused update (:meth:`minigd.Optimizer.fused_update`: SGD, Adam,
  AdamW, RMSprop, Adagrad; kernels in :mod:`minigd.kernels.jit_optim`) and covers all of
  ``model.parameters()`` in order; the loss is SoftmaxCrossEntropy;
  X is a NumPy array (an ``np.memmap`` included) of a real dtype.

:func:`supports` says which condition failed; ``fit`` prints that reason once when a user-written
layer, loss or optimizer keeps the epoch on the per-iteration path.

Nothing is traded for the speed: the learning rate of every iteration is computed up front
from the schedule (schedules are pure functions of the step, see
:meth:`minigd.TrainingState.lr_at`), every iteration's epoch, iteration, step, batch size, lr,
loss, gradient norm (and momentum, when the schedule sets it) are recorded in the history
after the call, and a non-finite loss (or an overflowing gradient) stops the epoch before that
update exactly as on the per-iteration path. The two paths give bit-identical results. X is
never copied: each batch is gathered from it (and converted to the model dtype) inside the
kernel. The progress bar moves once per epoch; an interrupt (Ctrl-C) is handled when the epoch's
call returns.
"""

import contextlib
from collections import namedtuple

import numpy as np

from . import _validation as check
from .backend import get_backend
from .losses import SoftmaxCrossEntropy

ENABLED = True


def layer_spec(model):
    """(dims (L, 2), weight offsets, bias offsets, activation codes) of a stack the fused kernel
    runs, read from each layer's ``fused_role()``; None for any other model."""
    return _layer_spec(model)[0]


def _layer_spec(model):
    """(spec or None, reason): as layer_spec, with the reason a model is not supported."""
    dims, w_offsets, b_offsets, acts = [], [], [], []
    roles = [layer.fused_role() for layer in model.layers]
    for layer, role in zip(model.layers, roles):
        if role is None:
            return None, (
                f"layer {type(layer).__name__} has no fused kernel: training runs one "
                f"Python iteration per update"
            )
    kept = [i for i, role in enumerate(roles) if role != "identity"]  # Flatten: nothing to run
    layers, roles = [model.layers[i] for i in kept], [roles[i] for i in kept]
    i = 0
    while i < len(roles):
        if roles[i] != "dense":
            return None, (
                f"layer {kept[i]} ({type(layers[i]).__name__}) does not follow a Dense "
                f"layer: the fused kernel runs Dense layers each optionally followed "
                f"by one activation"
            )
        dense, act = layers[i], 0
        if i + 1 < len(roles) and roles[i + 1] != "dense":
            act = roles[i + 1]
            i += 1
        i += 1
        dims.append((dense.in_features, dense.out_features(dense.in_features)))
        w_offsets.append(dense.weight.offset)
        b_offsets.append(dense.bias.offset)
        acts.append(act)
    as_int = lambda values: np.array(values, dtype=np.int64)
    return (as_int(dims).reshape(-1, 2), as_int(w_offsets), as_int(b_offsets), as_int(acts)), None


def _supported_input(X):
    return type(X) in (np.ndarray, np.memmap) and (
        X.dtype.kind in "iub" or X.dtype in (np.float32, np.float64)
    )


def _loss_role(loss):
    """The loss's fused role; a loss class without ``fused_role`` runs fused only when it is
    the built-in SoftmaxCrossEntropy."""
    if callable(getattr(loss, "fused_role", None)):
        return loss.fused_role()
    return "softmax_cross_entropy" if type(loss) is SoftmaxCrossEntropy else None


class Support(namedtuple("Support", "ok reason")):
    """(ok, reason) from :func:`supports`; true when ok. ``reason`` says why not (else None)."""

    def __bool__(self):
        return bool(self.ok)

    @property
    def custom(self):
        """True when a user-written layer, loss or optimizer (no fused kernel) is the reason."""
        return self.reason is not None and "has no fused kernel" in self.reason


def supports(state, loss, callbacks):
    """Support(ok, reason): whether this epoch can run fused (conditions in the module
    docstring) and, when not, why in one sentence."""
    model, optimizer = state.model, state.optimizer
    if not ENABLED:
        return Support(False, "minigd.fused.ENABLED is False")
    if get_backend() != "numba":
        return Support(False, f"the {get_backend()} backend runs one Python iteration per update")
    hooked = [type(cb).__name__ for cb in callbacks if cb.per_iteration]
    if hooked:
        return Support(False, f"callback {hooked[0]} needs Python after every update")
    if _loss_role(loss) != "softmax_cross_entropy":
        return Support(
            False,
            f"loss {type(loss).__name__} has no fused kernel: training runs "
            f"one Python iteration per update",
        )
    if state.iterator.target_kind != "classes":
        return Support(
            False, "class-probability targets (N, C) train one Python iteration per update"
        )
    if optimizer.fused_update() is None:
        return Support(
            False,
            f"optimizer {type(optimizer).__name__} has no fused kernel: "
            f"training runs one Python iteration per update",
        )
    if optimizer.flat is None or optimizer.flat[0] is not model.flat_values:
        return Support(False, "the optimizer does not cover all of model.parameters() in order")
    if not _supported_input(state.iterator.X):
        return Support(
            False,
            f"X of type {type(state.iterator.X).__name__} and dtype "
            f"{state.iterator.X.dtype} is gathered in Python",
        )
    spec, reason = _layer_spec(model)
    return Support(spec is not None, reason)


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


def epoch_mode(model, batch_size, optimizer):
    """How an epoch of ``model`` at ``batch_size`` with ``optimizer`` runs its products on the
    Numba backend (minigd.kernels.autotune.epoch_mode, measured once per machine and shape):
    "split" between Numba's threads, or "whole" on BLAS's threads; None on the NumPy backend
    and for models the fused kernel does not run."""
    spec = layer_spec(model) if get_backend() == "numba" else None
    if spec is None:
        return None
    from .kernels import autotune
    from .kernels.jit_config import parallel_parts

    update = _update_probe(optimizer, model.flat_values.size, model.dtype)
    dims, _, _, acts = spec
    return autotune.epoch_mode(dims, batch_size, model.dtype, parallel_parts(), update, acts)


def training_scope(model, batch_size, optimizer):
    """The context both paths of fit run an epoch in: minigd.kernels.autotune.whole_epoch
    when :func:`epoch_mode` is "whole", else nothing. Both paths run the same calls in it,
    so they give the same bits."""
    if epoch_mode(model, batch_size, optimizer) != "whole":
        return contextlib.nullcontext()
    from .kernels import autotune
    from .kernels.jit_config import parallel_parts

    return autotune.whole_epoch(parallel_parts())


def _update_probe(optimizer, size, dtype):
    """(name, function(parts)) running the optimizer's fused update once on scratch buffers of
    ``size`` parameters (what the epoch mode's measurement times), or None for an optimizer
    without a fused update."""
    fused_update = optimizer.fused_update()
    if fused_update is None:
        return None
    from .kernels import jit_optim
    from .kernels.jit_gemm import aligned_empty

    name, hyper, names = fused_update
    hyper = np.asarray(hyper, dtype=np.float64)
    buffers = []

    def filled(value):
        array = aligned_empty(size, dtype)
        array[...] = value
        return array

    def run(parts):
        if not buffers:  # allocated when measured, not for a cached choice
            empty = np.empty(0, dtype=dtype)
            states = [empty if n is None else filled(0.0) for n in names]
            buffers.extend([filled(1.0), filled(1e-3), *(states + [empty] * 3)[:3]])
        values, grads, state1, state2, state3 = buffers
        jit_optim.fused_step(
            jit_optim.CODES[name], hyper, state1, state2, state3, 1, 0.0, values, grads, parts
        )

    return name, run


def run_epoch(state, bar, start=0):
    """Run epoch ``state.epoch`` fused from iteration ``start`` (0-based; > 0 when resuming);
    record it in the history; return (loss sum, samples, divergence) of the updates applied.

    ``loss sum`` is the sum of batch loss times batch size, as the per-iteration path returns
    it; ``divergence`` is None, or (iteration, lr, loss, cause) of the update that was not
    applied (the caller marks it in the history). ``bar`` is a tqdm-like progress bar, closed
    on return.
    """
    # imported here: `import minigd` stays Numba-free
    from .kernels import autotune, jit_epoch, jit_optim
    from .kernels.jit_config import parallel_parts
    from .kernels.jit_gemm import aligned_empty

    model, optimizer, history = state.model, state.optimizer, state.history
    iterator = state.iterator
    epoch_index = state.epoch - 1
    sizes = iterator.batch_sizes()[start:]
    lrs, error = learning_rates(state, epoch_index, len(sizes))
    momenta = [state.momentum_at(epoch_index, state.step + i) for i in range(len(lrs))]
    if not momenta or momenta[0] is None:
        momenta = []
    invalid = _first_invalid(lrs)
    n_run = len(lrs) if invalid is None else invalid

    dims, w_offsets, b_offsets, acts = layer_spec(model)
    dtype, batch = model.dtype, iterator.batch_sizes()[0]
    name, hyper, names = optimizer.fused_update()
    flat_values, flat_grads = model.flat_values, model.flat_grads
    values = aligned_empty(flat_values.shape, dtype)
    grads = aligned_empty(flat_grads.shape, dtype)
    names = list(names)
    states = [
        np.empty(0, dtype=dtype) if n is None else aligned_empty(flat_values.shape, dtype)
        for n in names
    ]
    jit_epoch.to_kernel_layout(flat_values, values, dims, w_offsets)
    jit_epoch.to_kernel_layout(flat_grads, grads, dims, w_offsets)
    for kernel_state, state_name in zip(states, names):
        if state_name is not None:
            jit_epoch.to_kernel_layout(optimizer.state[state_name], kernel_state, dims, w_offsets)
    if len(states) > 3:
        raise ValueError(
            f"fused_update of {type(optimizer).__name__} names {len(states)} "
            f"state arrays; the fused kernel takes at most 3"
        )
    state1, state2, state3 = (states + [np.empty(0, dtype=dtype)] * 3)[:3]
    a_offsets = np.concatenate([[0], np.cumsum([_round_up(batch * w) for w in dims[:, 1]])])
    a_offsets = a_offsets.astype(np.int64)
    losses = np.zeros(max(n_run, 1), dtype=np.float64)
    norms = np.zeros(max(n_run, 1), dtype=np.float64)
    data = jit_epoch.Data(
        iterator.X,
        np.ascontiguousarray(iterator.y, dtype=np.int64),
        np.ascontiguousarray(iterator.permutation(epoch_index), dtype=np.int64),
        iterator.batch_size,
    )
    net = jit_epoch.Network(values, grads, dims, w_offsets, b_offsets, acts)
    update = jit_epoch.Update(
        jit_optim.CODES[name],
        np.asarray(hyper, dtype=np.float64),
        state1,
        state2,
        state3,
        optimizer.step_count,
        np.array(lrs[:n_run], dtype=np.float64),
        -1.0 if state.grad_clip is None else float(state.grad_clip),
        np.array(momenta[:n_run], dtype=np.float64),
        -1 if optimizer.momentum_index is None else optimizer.momentum_index,
    )

    divergence = None
    try:
        with training_scope(model, iterator.batch_size, optimizer):
            parts = parallel_parts()  # 1 in the whole-product mode
            products = autotune.epoch_products(dims, iterator.batch_size, sizes, dtype, parts)
            work = jit_epoch.Workspace(
                aligned_empty((batch, iterator.X.shape[1]), dtype),
                np.empty(batch, dtype=np.int64),
                aligned_empty(a_offsets[-1], dtype),
                a_offsets,
                aligned_empty(2 * _round_up(batch * int(dims[:, 1].max())), dtype),
                losses,
                norms,
                aligned_empty(jit_epoch.partial_size(dims, products, parts), dtype),
            )
            with autotune.blas_threads_limited(products):
                count, status = (
                    (0, jit_epoch.COMPLETED)
                    if n_run == 0
                    else jit_epoch.train_epoch(
                        data, net, update, work, start, n_run, parts, products
                    )
                )
        jit_epoch.from_kernel_layout(values, flat_values, dims, w_offsets)
        jit_epoch.from_kernel_layout(grads, flat_grads, dims, w_offsets)
        for kernel_state, state_name in zip(states, names):
            if state_name is not None:
                jit_epoch.from_kernel_layout(
                    kernel_state, optimizer.state[state_name], dims, w_offsets
                )

        diverged = status != jit_epoch.COMPLETED
        applied = count - 1 if diverged else count
        losses = losses[:count].tolist()
        norms = norms[:count].tolist()
        if status == jit_epoch.LOSS_DIVERGED:
            norms[-1] = None  # no backward pass ran for that iteration
        table = history.iterations
        table["epoch"].extend([state.epoch] * count)
        table["iteration"].extend(range(start + 1, start + count + 1))
        table["step"].extend(range(state.step + 1, state.step + count + 1))
        table["batch_size"].extend(sizes[:count])
        table["lr"].extend(lrs[:count])
        table["loss"].extend(losses)
        table["grad_norm"].extend(norms)
        if momenta:
            table.setdefault("momentum", [None] * (len(table["step"]) - count))
            table["momentum"].extend(momenta[:count])
        optimizer.step_count += applied
        state.step += applied
        loss_sum, samples = 0.0, 0
        for value, n in zip(losses[:applied], sizes):
            loss_sum += value * n
            samples += n
        if count:
            state.iteration, state.current_lr = start + count, lrs[count - 1]
            optimizer.lr = lrs[count - 1]
            if momenta:
                optimizer.set_momentum(momenta[count - 1])
        bar.update(applied)
        if diverged:
            cause = "loss" if status == jit_epoch.LOSS_DIVERGED else "gradient"
            divergence = (start + count, lrs[count - 1], losses[-1], cause)
        elif invalid is not None:
            optimizer.lr = lrs[invalid]  # raises the optimizer's own error, as the loop would
        elif error is not None:
            raise error
    finally:
        bar.close()
    return loss_sum, samples, divergence
