"""fit: the mini-batch training loop, with a per-iteration history and divergence detection."""

from __future__ import annotations

import bisect
import contextlib
import math
import time
import warnings
from os import PathLike
from typing import Callable, Sequence, cast

import numpy as np
import numpy.typing as npt

from . import _validation as check
from . import fused
from .backend import TrainingKernels, announce_compilation, get_backend
from .backend import kernels as _active_kernels
from .callbacks import Callback, warn_foreign_hooks
from .data import BatchIterator, iterations_per_epoch
from .history import History
from .layers import Layer
from .losses import Loss, SoftmaxCrossEntropy, loss_and_grad
from .metrics import evaluate
from .model import Sequential
from .optim import Optimizer
from .progress import progress_bar
from .resume import checkpoint_callback
from .schedules import (
    BatchSizeSchedule,
    ConstantBatchSize,
    Schedule,
    as_batch_size_schedule,
    as_schedule,
)

DIVERGENCE_POLICIES = ("warn", "raise")


class DivergenceError(RuntimeError):
    """A non-finite loss stopped training; carries where it happened and the history so far."""

    def __init__(self, message, *, epoch, iteration, step, lr, loss, history):
        super().__init__(message)
        self.epoch, self.iteration, self.step = epoch, iteration, step
        self.lr, self.loss, self.history = lr, loss, history


class TrainingState:
    """What callbacks see and may change during ``fit``.

    Attributes: model, optimizer, history, iterator, epochs (total), epoch (current, from 1),
    step (updates applied so far), current_lr (lr of the latest update), lr_scale (multiplies
    the scheduled lr; ReduceLROnPlateau lowers it), stop_training (set True to stop after this
    epoch), batch_schedule (None for a fixed batch size, else sets the batch size per epoch),
    start_iteration (iterations of the next epoch already done, when resuming), loss (the
    Loss being minimised), has_validation (True when fit has validation_data),
    epoch_finished (False while epoch ``epoch`` still has iterations to run), grad_clip (None,
    or the max global gradient norm of fit(grad_clip=...)), accumulate (micro-batches per
    update, fit(accumulate=...)).
    """

    def __init__(
        self,
        model,
        optimizer,
        history,
        iterator,
        epochs,
        schedule,
        base_lr,
        batch_schedule=None,
        loss=None,
        has_validation=False,
    ):
        self.model, self.optimizer, self.history = model, optimizer, history
        self.iterator, self.epochs, self.schedule = iterator, epochs, schedule
        self.base_lr, self.batch_schedule = base_lr, batch_schedule
        self.loss = SoftmaxCrossEntropy() if loss is None else loss
        self.has_validation = bool(has_validation)
        self.epoch = 0
        self.epoch_finished = True
        self.iteration = 0
        self.step = 0
        self.lr_scale = 1.0
        self.current_lr = base_lr
        self.stop_training = False
        self.start_iteration = 0
        self.grad_clip = None
        self.accumulate = 1

    def state_dict(self):
        """The run's position and lr state as JSON values (what a checkpoint's ``training`` holds).

        epochs_done and iteration (of the epoch in progress; 0 between epochs), step, epochs,
        lr_scale, current_lr, base_lr, stop_training, the schedule (its repr) and its position
        schedule_t (epochs done or updates done, in the schedule's unit), and the loss's name.
        """
        done = self.epoch if self.epoch_finished else self.epoch - 1
        iteration = 0 if self.epoch_finished else self.iteration
        schedule = self.schedule
        return {
            "epochs_done": done,
            "iteration": iteration,
            "step": self.step,
            "epochs": self.epochs,
            "lr_scale": self.lr_scale,
            "current_lr": self.current_lr,
            "base_lr": self.base_lr,
            "stop_training": bool(self.stop_training),
            "schedule": None if schedule is None else repr(schedule),
            "schedule_t": None
            if schedule is None
            else (done if schedule.unit == "epoch" else self.step),
            "loss": type(self.loss).__name__,
        }

    def load_state_dict(self, state):
        """Continue from :meth:`state_dict`'s position (``epochs`` stays this run's total)."""
        done, iteration = state["epochs_done"], state["iteration"]
        self.epoch = done + 1 if iteration else done
        self.epoch_finished = not iteration
        self.iteration = self.start_iteration = iteration
        self.step = state["step"]
        self.lr_scale, self.stop_training = state["lr_scale"], state["stop_training"]
        self.current_lr, self.base_lr = state["current_lr"], state["base_lr"]

    def momentum_at(self, epoch_index, step):
        """The momentum the schedule sets for the update after ``step`` updates, or None."""
        if self.schedule is None or not self.schedule.sets_momentum:
            return None
        t = epoch_index if self.schedule.unit == "epoch" else step
        return self.schedule.momentum(t)

    def lr_at(self, epoch_index, step):
        """Learning rate for the update after ``step`` updates, in 0-based epoch ``epoch_index``."""
        if self.schedule is None:
            return self.base_lr * self.lr_scale
        t = epoch_index if self.schedule.unit == "epoch" else step
        return self.schedule(t) * self.lr_scale


def _check_model_and_optimizer(model, optimizer):
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a minigd Sequential, got {type(model).__name__}")
    if not isinstance(optimizer, Optimizer):
        raise TypeError(
            f"optimizer must be a minigd optimizer (SGD, Adam, AdamW, RMSprop, "
            f"Adagrad), got "
            f"{type(optimizer).__name__}"
        )
    owned = {id(p) for p in model.parameters()}
    if not all(id(p) in owned for p in optimizer.params):
        raise ValueError(
            "optimizer was built for another model's parameters: pass "
            "model.parameters() of this model"
        )


def _check_loss(loss):
    if loss is None:
        return SoftmaxCrossEntropy()
    if not isinstance(loss, Loss):
        raise TypeError(
            f"loss must be a minigd Loss (SoftmaxCrossEntropy, or a subclass of "
            f"mg.Loss with value_and_grad), got {type(loss).__name__}"
        )
    if loss.target_kind not in ("classes", "values"):
        raise ValueError(
            f"{type(loss).__name__}.target_kind must be 'classes' or 'values', "
            f"got {loss.target_kind!r}"
        )
    return loss


def _check_callbacks(callbacks) -> list[Callback]:
    """A list of Callback; a single Callback is wrapped in a list."""
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback):
        callbacks = [callbacks]
    try:
        callbacks = list(callbacks)
    except TypeError:
        raise TypeError(
            f"callbacks must be a list of callbacks, e.g. "
            f"callbacks=[mg.EarlyStopping()], got {type(callbacks).__name__}"
        ) from None
    for i, cb in enumerate(callbacks):
        if not isinstance(cb, Callback):
            raise TypeError(
                f"callbacks[{i}] must be a minigd Callback (subclass mg.Callback), "
                f"got {type(cb).__name__}"
            )
        warn_foreign_hooks(cb)
    return callbacks


SCALE_SAMPLE_ROWS = 256
SCALE_LIMIT = 10.0


def _warn_if_inputs_unscaled(X):
    """Warn when X's values are far from unit scale (e.g. raw 0..255 pixels).

    Reads at most SCALE_SAMPLE_ROWS rows (fewer when rows are wide: at most 2**18 values)
    spread over X (a strided view, so an np.memmap reads only those rows) and warns when their
    root mean square exceeds SCALE_LIMIT: standardized or [0, 1] inputs have it near or below
    1, raw MNIST pixels about 80. With such inputs the first logits are hundreds and the loss
    explodes or the ReLUs die.
    """
    rows = max(1, min(SCALE_SAMPLE_ROWS, (1 << 18) // max(1, X.shape[1])))
    step = max(1, X.shape[0] // rows)
    sample = np.asarray(X[::step][:rows], dtype=np.float64).reshape(-1)
    rms = float(np.sqrt(np.dot(sample, sample) / sample.size))
    if not rms > SCALE_LIMIT:
        return
    low, high = float(sample.min()), float(sample.max())
    if low >= 0 and high <= 255:
        fix = "scale X, e.g. X / 255 for pixel values 0..255"
    else:
        fix = "standardize X, e.g. (X - X.mean(axis=0)) / X.std(axis=0)"
    warnings.warn(
        f"X is far from unit scale (values {low:g}..{high:g}, root mean square "
        f"{rms:.3g} in a sample of {min(rows, X.shape[0])} rows): the first losses "
        f"can explode and the network stop learning. {fix}, before fit.",
        UserWarning,
        stacklevel=3,
    )


def _check_validation(validation_data, model, loss):
    if validation_data is None:
        return None
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        raise TypeError("validation_data must be a pair (X_val, y_val)")
    X_val = model.check_input(validation_data[0], "validation_data[0]")
    y_val = loss.check_targets(
        validation_data[1], X_val.shape[0], model.n_outputs, name="validation_data[1]"
    )
    return X_val, y_val


def fit(
    model: Sequential,
    X: npt.ArrayLike,
    y: npt.ArrayLike,
    *,
    optimizer: Optimizer,
    epochs: int,
    batch_size: int | BatchSizeSchedule | Callable[[int], int],
    loss: Loss | None = None,
    schedule: Schedule | Callable[[int], float] | None = None,
    shuffle: bool = True,
    drop_last: bool = False,
    seed: int | None = None,
    validation_data: tuple[npt.ArrayLike, npt.ArrayLike] | None = None,
    callbacks: Callback | Sequence[Callback] = (),
    verbose: int = 1,
    on_divergence: str = "warn",
    checkpoint: str | PathLike | None = None,
    resume: bool = False,
    checkpoint_every: int | None = None,
    grad_clip: float | None = None,
    accumulate: int = 1,
) -> History:
    """Train ``model`` on (X, y) with mini-batch gradient descent; return its History.

    One epoch is one pass over the data in ``ceil(N / batch_size)`` iterations (``floor`` with
    drop_last); every iteration is one update ``optimizer.step()`` on one batch's mean loss.
    Before each update the lr is set to ``schedule(t) * lr_scale`` (t in the schedule's unit,
    from 0), or to the optimizer's initial lr times lr_scale without a schedule, and recorded.
    A schedule that sets the momentum (``schedule.sets_momentum``: OneCycle) also sets SGD's
    momentum, Adam's beta1 or RMSprop's momentum to ``schedule.momentum(t)`` before each
    update, as torch's OneCycleLR(cycle_momentum=True), recorded as
    ``history.iterations["momentum"]``.

    Parameters
    ----------
    model : Sequential
    X : array-like (N, features), float; may be an np.memmap (only indexed, never copied)
    y : targets of the loss: integer class ids in [0, model.n_outputs), shape (N,), for a
        classification loss; real values of shape (N,) or (N, n_outputs) for a loss with
        ``target_kind="values"`` (may be an np.memmap: gathered per batch, never copied).
        Bad targets give a ValueError naming the loss and the form it takes.
    optimizer : an Optimizer (SGD, Adam, AdamW, RMSprop, Adagrad, or a subclass of
        mg.Optimizer) built on ``model.parameters()``
    epochs : int >= 1
    batch_size : int >= 1, or a batch-size schedule (StepBatchSize, callable epoch -> int)
        evaluated before each epoch (from 0); every value is checked before training starts
    loss : Loss, default a new SoftmaxCrossEntropy. Any subclass of mg.Loss; one without a fused
        kernel trains on the per-iteration path (fit says so once with verbose).
    schedule : minigd schedule or callable t -> lr, default None (constant lr)
    shuffle, drop_last : bool, as BatchIterator
    seed : int or None, seeds the shuffling (the permutation of epoch e depends on seed and e)
    validation_data : (X_val, y_val) or None; adds val_loss and the loss's metrics to each
        epoch (val_accuracy; val_mse and val_r2 for a regression loss), evaluated in eval mode
    callbacks : list of Callback (EarlyStopping, ReduceLROnPlateau, ...); a single Callback is
        accepted too. A hook fit never calls (Keras' ``on_batch_end``, ...) warns once.
    verbose : 0 silent, 1 plan + progress bar + a line per epoch, 2 no progress bar; 1 and 2
        also say when the Numba kernels are being compiled (first run after install)

    A small sample of X (at most 256 rows) is checked for scale: values far from unit scale
    (raw 0..255 pixels, say) give a UserWarning with the fix (``X / 255``, or standardize).
    on_divergence : "warn" (default) or "raise"
        A non-finite loss stops training before that update: the iteration is recorded,
        ``history.diverged`` is set and a warning names epoch, iteration and lr; "raise"
        raises DivergenceError with the same facts and the history instead.
    checkpoint : path or None, default None
        Save model, optimizer, history, position and callback state there (atomically) at the
        end of every epoch; see :func:`minigd.save_checkpoint`.
    resume : bool, default False
        Continue from ``checkpoint`` if that file exists (else start fresh): the same epoch,
        iteration and permutation, so the result is bit-identical to an uninterrupted run.
        ``epochs`` is the total: a checkpoint after epoch 2 with epochs=4 runs epochs 3 and 4.
    checkpoint_every : int >= 1 or None, default None
        Also save after every that many updates, so a kill mid-epoch loses little.
    grad_clip : float > 0 or None, default None
        Clip the global L2 norm of the gradient to it before each update, as
        ``torch.nn.utils.clip_grad_norm_(params, grad_clip)``: the gradient is multiplied by
        ``grad_clip / (norm + 1e-6)`` when that is below 1. Whether or not it is set,
        ``history.iterations["grad_norm"]`` records every update's norm before clipping.
    accumulate : int >= 1, default 1
        Gradient accumulation: every ``accumulate`` consecutive batches of ``batch_size`` (the
        micro-batches) make one update on the mean loss over all their samples, so
        ``accumulate=4, batch_size=8`` equals ``batch_size=32`` to float rounding. Iterations,
        the history (one row per update; ``batch_size`` is the update's samples and
        ``micro_batches`` its micro-batches), checkpoints and schedules count updates. An
        epoch's last incomplete group is one smaller update, or dropped with drop_last (the
        plan line says which). Runs on the per-iteration path (one Python iteration per
        micro-batch); resume with the same ``accumulate``.

    Example
    -------
    >>> X, y, X_test, y_test = mg.datasets.load_mnist_sample()
    >>> model = mg.Sequential(mg.Dense(784, 128), mg.ReLU(), mg.Dense(128, 10), seed=0)
    >>> history = mg.fit(model, X, y, optimizer=mg.SGD(model.parameters(), lr=0.1),
    ...                  epochs=5, batch_size=64, seed=0)
    """
    loss = _check_loss(loss)
    _check_model_and_optimizer(model, optimizer)
    epochs = check.positive_int("epochs", epochs)
    verbose = check.choice("verbose", verbose, (0, 1, 2))
    on_divergence = check.choice("on_divergence", on_divergence, DIVERGENCE_POLICIES)
    schedule = as_schedule(schedule)
    if grad_clip is not None:
        grad_clip = check.real("grad_clip", grad_clip, low=0.0, low_open=True)
    accumulate = check.positive_int("accumulate", accumulate)
    callbacks = _check_callbacks(callbacks)
    X = model.check_input(X, "X")
    y = loss.check_targets(y, X.shape[0], model.n_outputs)
    validation = _check_validation(validation_data, model, loss)
    _warn_if_inputs_unscaled(X)
    batch_schedule = as_batch_size_schedule(batch_size)
    batch_sizes = batch_schedule.values(epochs)
    iterator = BatchIterator(
        X,
        y,
        batch_sizes[0],
        shuffle=shuffle,
        drop_last=drop_last,
        seed=seed,
        dtype=model.dtype,
        validate=False,
        reuse_buffers=True,
        target_kind="classes" if y.ndim == 1 else "values",
    )
    for size in batch_sizes:
        iterator.check_batch_size(size)

    history = History(loss.metric_names)
    state = TrainingState(
        model,
        optimizer,
        history,
        iterator,
        epochs,
        schedule,
        optimizer.lr,
        None if isinstance(batch_schedule, ConstantBatchSize) else batch_schedule,
        loss=loss,
        has_validation=validation is not None,
    )
    state.grad_clip, state.accumulate = grad_clip, accumulate
    if schedule is not None and schedule.sets_momentum:
        # a float when sets_momentum; TypeError/ValueError here, before training
        optimizer.set_momentum(cast(float, schedule.momentum(0)))
    saver = checkpoint_callback(
        state, callbacks, checkpoint, resume, checkpoint_every, seed, verbose
    )
    callbacks += [saver] if saver is not None else []
    if verbose:
        announce_compilation(print)
        print(
            _plan_line(iterator, batch_sizes)
            if accumulate == 1
            else _accumulate_plan_line(iterator, batch_sizes, accumulate)
        )
        support = fused.supports(state, loss, callbacks)
        if support.custom:
            print(support.reason)  # a user-written layer, loss or optimizer: said once
    model.train()
    for cb in callbacks:
        cb.on_train_begin(state)
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            _train(state, loss, validation, callbacks, verbose, on_divergence)
    finally:
        for cb in callbacks:
            cb.on_train_end(state)
    return state.history


def _train(state, loss, validation, callbacks, verbose, on_divergence):
    history, model = state.history, state.model
    first = state.epoch + 1 if state.epoch_finished else state.epoch
    for epoch in range(first, state.epochs + 1):
        if state.stop_training:
            return
        state.epoch = epoch
        if state.batch_schedule is not None:
            state.iterator.set_batch_size(state.batch_schedule(epoch - 1))
        start, state.start_iteration = state.start_iteration, 0
        state.iteration, state.epoch_finished = start, False
        for cb in callbacks:
            cb.on_epoch_begin(state)
        started = time.perf_counter()
        _, samples = _run_epoch(state, loss, callbacks, verbose, start)
        seconds = time.perf_counter() - started
        if history.diverged:
            _report_divergence(history, on_divergence)
            return
        state.epoch_finished = True
        val = evaluate(model, *validation, loss=loss) if validation is not None else None
        metrics = {f"val_{name}": None if val is None else val[name] for name in loss.metric_names}
        history.record_epoch(
            epoch=epoch,
            train_loss=_epoch_train_loss(history, epoch),
            val_loss=None if val is None else val["loss"],
            **metrics,
            seconds=seconds,
            samples_per_second=samples / seconds,
        )
        if verbose:
            print(_epoch_line(history, state.epochs))
        for cb in callbacks:
            cb.on_epoch_end(state)
        if state.stop_training:
            return


def _epoch_train_loss(history, epoch):
    """Sample-weighted mean of the epoch's batch losses, summed in iteration order (so a resumed
    epoch, whose first iterations ran in another process, gives the same number)."""
    records = history.iterations
    first = bisect.bisect_left(records["epoch"], epoch)
    total, samples = 0.0, 0
    for value, n in zip(records["loss"][first:], records["batch_size"][first:]):
        total += value * n
        samples += n
    return total / samples


def _run_epoch(state, loss, callbacks, verbose, start=0):
    """One epoch from iteration ``start`` (0-based), one Python iteration per update; returns
    (sum of batch loss * size, samples) of the iterations it ran.

    With the Numba backend and no per-iteration callback the whole epoch runs in one call
    instead (minigd.fused), recording the same history.
    """
    if state.accumulate > 1:
        return _run_epoch_accumulated(state, loss, callbacks, verbose, start)
    if fused.supports(state, loss, callbacks):
        loss_sum, samples, divergence = fused.run_epoch(
            state,
            progress_bar(
                len(state.iterator) - start, f"epoch {state.epoch}/{state.epochs}", verbose == 1
            ),
            start,
        )
        if divergence is not None:
            _mark_divergence(state, *divergence)
        return loss_sum, samples
    kernels = _active_kernels()
    train_kernels = TrainingKernels(kernels)  # the forward product as the fused epoch runs it
    model, optimizer = state.model, state.optimizer
    history, iterator = state.history, state.iterator
    # the products split between threads or whole, as the fused epoch would run them
    scope = contextlib.ExitStack()
    scope.enter_context(fused.training_scope(model, iterator.batch_size, optimizer))
    grad_buffer = _loss_gradient_buffer(state)
    grad_norm = _grad_norm_function(state)
    per_iteration = [cb for cb in callbacks if cb.per_iteration]
    epoch_index = state.epoch - 1
    seeded = [
        (i, layer) for i, layer in enumerate(model.layers) if type(layer).reseed is not Layer.reseed
    ]  # Dropout: masks by (seeds, step)
    loss_sum, samples = 0.0, 0
    bar = progress_bar(len(iterator), f"epoch {state.epoch}/{state.epochs}", verbose == 1)
    try:
        for iteration, (xb, yb) in enumerate(iterator.batches(epoch_index, start), start=start + 1):
            lr = state.lr_at(epoch_index, state.step)
            optimizer.lr = lr
            n = len(yb)
            for i, layer in seeded:
                layer.reseed((model.seed, iterator.seed, state.step, i))
            logits = model.forward_batch(xb, train_kernels)
            dlogits = grad_buffer[:n]
            value = loss_and_grad(loss, logits, yb, dlogits, kernels)
            state.iteration, state.current_lr = iteration, lr
            row = dict(
                epoch=state.epoch,
                iteration=iteration,
                step=state.step + 1,
                batch_size=n,
                lr=lr,
                loss=value,
            )
            momentum = state.momentum_at(epoch_index, state.step)
            if momentum is not None:
                optimizer.set_momentum(momentum)
                row["momentum"] = momentum
            if not math.isfinite(value):
                history.record_iteration(**row, grad_norm=None)
                _mark_divergence(state, iteration, lr, value, "loss")
                break
            model.backward_batch(dlogits, kernels=kernels)
            grads = model.flat_grads
            norm = grad_norm(grads, n)
            if not _update(state, row, grads, norm):
                break
            loss_sum += value * n
            samples += n
            bar.update()
            for cb in per_iteration:
                cb.on_iteration_end(state)
    finally:
        bar.close()
        scope.close()
    return loss_sum, samples


def _groups(sizes, k, drop_last):
    """Micro-batch sizes of an epoch cut into the updates' groups of ``k``; an incomplete last
    group is kept, or dropped with drop_last."""
    groups = [sizes[i : i + k] for i in range(0, len(sizes), k)]
    if groups and drop_last and len(groups[-1]) < k:
        groups.pop()
    return groups


def _accumulate_plan_line(iterator, batch_sizes, k):
    """The plan line of fit(accumulate=k): micro-batch x k = effective batch -> updates."""
    counts = [iterations_per_epoch(iterator.n_samples, b, iterator.drop_last) for b in batch_sizes]
    updates = [len(_groups([b] * c, k, iterator.drop_last)) for b, c in zip(batch_sizes, counts)]
    b = batch_sizes[0]
    text = (
        f"plan: {iterator.n_samples} samples, batch {b} x {k} accumulated = effective "
        f"{b * k} -> {updates[0]} updates per epoch"
    )
    rest = counts[0] % k
    if rest:
        text += (
            f" (last group of {rest} micro-batches "
            f"{'dropped: drop_last' if iterator.drop_last else 'kept as a smaller update'})"
        )
    return text + f"; {len(batch_sizes)} epochs = {sum(updates)} updates"


def _run_epoch_accumulated(state, loss, callbacks, verbose, start=0):
    """One epoch of fit(accumulate=k) from update ``start``: each update sums the gradients of
    up to k micro-batches, each micro-batch's d loss / d outputs scaled by its share of the
    group's samples, so the update follows the mean loss over all of them."""
    kernels = _active_kernels()
    train_kernels = TrainingKernels(kernels)  # the forward product as the fused epoch runs it
    model, optimizer = state.model, state.optimizer
    history, iterator = state.history, state.iterator
    k = state.accumulate
    grad_buffer = _loss_gradient_buffer(state)
    grad_norm = _grad_norm_function(state)
    per_iteration = [cb for cb in callbacks if cb.per_iteration]
    epoch_index = state.epoch - 1
    groups = _groups(iterator.batch_sizes(), k, iterator.drop_last)
    grads = model.flat_grads
    total = np.empty_like(grads)
    loss_sum, samples = 0.0, 0
    bar = progress_bar(len(groups), f"epoch {state.epoch}/{state.epochs}", verbose == 1)
    batches = iterator.batches(epoch_index, start * k)
    try:
        for iteration, group in enumerate(groups[start:], start=start + 1):
            lr = state.lr_at(epoch_index, state.step)
            optimizer.lr = lr
            n_group = sum(group)
            value = 0.0
            finite = True
            for j in range(len(group)):
                xb, yb = next(batches)
                n = len(yb)
                logits = model.forward_batch(xb, train_kernels)
                dlogits = grad_buffer[:n]
                part = loss_and_grad(loss, logits, yb, dlogits, kernels)
                value += part * n
                if not math.isfinite(part):
                    finite = False
                    continue
                dlogits *= dlogits.dtype.type(n / n_group)
                model.backward_batch(dlogits, kernels=kernels)
                if j == 0:
                    total[...] = grads
                else:
                    total += grads
            value /= n_group
            state.iteration, state.current_lr = iteration, lr
            row = dict(
                epoch=state.epoch,
                iteration=iteration,
                step=state.step + 1,
                batch_size=n_group,
                lr=lr,
                loss=value,
                micro_batches=len(group),
            )
            momentum = state.momentum_at(epoch_index, state.step)
            if momentum is not None:
                optimizer.set_momentum(momentum)
                row["momentum"] = momentum
            if not finite or not math.isfinite(value):
                history.record_iteration(**row, grad_norm=None)
                _mark_divergence(state, iteration, lr, value, "loss")
                break
            grads[...] = total
            norm = grad_norm(grads, group[0])
            if not _update(state, row, grads, norm):
                break
            loss_sum += value * n_group
            samples += n_group
            bar.update()
            for cb in per_iteration:
                cb.on_iteration_end(state)
    finally:
        bar.close()
    return loss_sum, samples


def _update(state, row, grads, norm):
    """The end of one update on both per-iteration loops: record the row with the gradient's
    norm, stop on a non-finite norm (False: before any change to the weights), clip, step."""
    state.history.record_iteration(**row, grad_norm=norm)
    if not math.isfinite(norm):
        _mark_divergence(state, row["iteration"], row["lr"], row["loss"], "gradient")
        return False
    if state.grad_clip is not None:
        clip_gradient(grads, norm, state.grad_clip)
    state.optimizer.step()
    state.step += 1
    return True


def clip_gradient(grads, norm, max_norm):
    """torch.nn.utils.clip_grad_norm_ on a flat gradient whose global L2 norm is ``norm``:
    grads *= max_norm / (norm + 1e-6) when that is below 1 (in place)."""
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0:
        grads *= grads.dtype.type(coef)


def _grad_norm_function(state):
    """f(flat grads, batch rows) -> the gradient's global L2 norm (a float; inf or nan when
    the sum of squares overflows in the model dtype). For a model the fused kernel runs, on the
    Numba backend, the sum is the fused kernel's own (same order, same bits)."""
    spec = fused.layer_spec(state.model) if get_backend() == "numba" else None
    if spec is None:
        return lambda grads, n: math.sqrt(float(np.dot(grads, grads)))
    from .kernels import jit_epoch  # here: `import minigd` stays Numba-free
    from .kernels.jit_config import parallel_parts

    dims, w_offsets, b_offsets, _ = spec
    scratch = np.empty(int((dims[:, 0] * dims[:, 1]).max()), dtype=state.model.dtype)
    parts = parallel_parts()
    return lambda grads, n: math.sqrt(
        float(jit_epoch.grad_squares(grads, scratch, dims, w_offsets, b_offsets, n, parts))
    )


def _loss_gradient_buffer(state):
    """The reused d loss / d outputs buffer: rows for the largest batch, the model's dtype."""
    rows = min(state.iterator.batch_size, state.iterator.n_samples)
    if state.batch_schedule is not None:
        rows = min(max(state.batch_schedule.values(state.epochs)), state.iterator.n_samples)
    return np.empty((rows, state.model.n_outputs), dtype=state.model.dtype)


def _plan_line(iterator, batch_sizes):
    updates = sum(
        iterations_per_epoch(iterator.n_samples, b, iterator.drop_last) for b in batch_sizes
    )
    if len(set(batch_sizes)) == 1:
        return f"plan: {iterator.describe()}; {len(batch_sizes)} epochs = {updates} updates"
    runs, first = [], 0
    for e in range(1, len(batch_sizes) + 1):
        if e == len(batch_sizes) or batch_sizes[e] != batch_sizes[first]:
            span = f"epoch {first + 1}" if e == first + 1 else f"epochs {first + 1}-{e}"
            runs.append(f"{batch_sizes[first]} ({span})")
            first = e
    return (
        f"plan: {iterator.n_samples} samples, batch {', '.join(runs)}; "
        f"{len(batch_sizes)} epochs = {updates} updates"
    )


def _mark_divergence(state, iteration, lr, value, cause):
    history = state.history
    history.diverged = True
    history.divergence = {
        "epoch": state.epoch,
        "iteration": iteration,
        "step": state.step + 1,
        "lr": lr,
        "loss": str(value),
        "cause": cause,
        "weights_finite": bool(np.isfinite(state.model.flat_values).all()),
    }


def _report_divergence(history, on_divergence):
    d = history.divergence
    what = "loss is " + d["loss"] if d["cause"] == "loss" else "the gradient overflowed"
    message = (
        f"training diverged: {what} at epoch {d['epoch']}, iteration "
        f"{d['iteration']} (update {d['step']}) with lr {d['lr']:g}; the update was not "
        f"applied and the history up to it is kept. Try a smaller learning rate."
    )
    if not d.get("weights_finite", True):
        message += (
            " Note: an earlier update had already overflowed the weights to inf/NaN "
            "(lr * gradient beyond the largest float)."
        )
    if on_divergence == "raise":
        raise DivergenceError(
            message,
            epoch=d["epoch"],
            iteration=d["iteration"],
            step=d["step"],
            lr=d["lr"],
            loss=float(d["loss"]),
            history=history,
        )
    warnings.warn(message, RuntimeWarning, stacklevel=4)


def _epoch_line(history, epochs):
    e = history.epochs
    text = f"epoch {e['epoch'][-1]}/{epochs}  train_loss {e['train_loss'][-1]:.4f}"
    if e["val_loss"][-1] is not None:
        text += f"  val_loss {e['val_loss'][-1]:.4f}"
        for key in e:
            if key == "val_accuracy":
                text += f"  val_acc {100 * e[key][-1]:.2f}%"
            elif key.startswith("val_") and key != "val_loss":
                text += f"  {key} {e[key][-1]:.4g}"
    return text + f"  {e['seconds'][-1]:.2f} s  {e['samples_per_second'][-1]:,.0f} samples/s"
