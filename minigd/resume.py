"""fit's checkpoint, resume and checkpoint_every options, built on each object's state_dict.

A save asks the TrainingState (epoch, iteration, step, lr scale, schedule position), the iterator
(seed and batching), the model, the optimizer, the History and every stateful callback for its
``state_dict()`` and writes them with :func:`minigd.save_checkpoint`. A resume checks that the
checkpoint belongs to the same run (architecture, optimizer, data, batching, seed, callbacks,
loss), all before anything changes, and then hands each object its ``load_state_dict``.
"""

import os

from . import _validation as check
from .callbacks import Callback
from .checkpoint import check_path, load_checkpoint, save_checkpoint, stateful_callbacks

POSITION_KEYS = {
    "epochs_done",
    "iteration",
    "step",
    "epochs",
    "lr_scale",
    "current_lr",
    "base_lr",
    "stop_training",
    "iterator",
}
ITERATOR_KEYS = ("seed", "batch_size", "shuffle", "drop_last", "n_samples", "n_features")


class CheckpointSaver(Callback):
    """fit's saver: at the end of every epoch and, with ``every``, after every ``every`` updates.

    Runs after the user's callbacks, so a save holds their state after the epoch. On a resume,
    ``pending`` holds the saved callback states, loaded in ``on_train_begin`` (after the other
    callbacks reset themselves there).

    Parameters
    ----------
    path : str, the checkpoint file (rewritten atomically at every save)
    every : int >= 1 or None, updates between mid-epoch saves (None: only at epoch ends)
    callbacks : list of Callback, whose state every save holds
    """

    def __init__(self, path, every, callbacks):
        self.path, self.every, self.callbacks = path, every, callbacks
        self.pending = None

    @property
    def per_iteration(self):
        return self.every is not None

    def on_train_begin(self, state):
        if self.pending:
            for cb, saved in zip(stateful_callbacks(self.callbacks), self.pending):
                cb.load_state_dict(saved["state"])
        self.pending = None

    def on_iteration_end(self, state):
        if state.step % self.every == 0 and state.iteration < len(state.iterator):
            self.save(state)

    def on_epoch_end(self, state):
        self.save(state)

    def save(self, state):
        """Write the run's state as it is now (its position says how far it got)."""
        training = dict(state.state_dict(), iterator=state.iterator.state_dict())
        save_checkpoint(
            self.path,
            state.model,
            state.optimizer,
            history=state.history,
            training=training,
            callbacks=self.callbacks,
        )


def checkpoint_callback(state, callbacks, path, resume, every, seed, verbose):
    """fit's checkpoint options: check them, resume ``state`` from ``path`` when asked, and
    return the saving callback (None without a path). Nothing changes when a check fails.

    Parameters
    ----------
    state : TrainingState of the new run (fresh: epoch 0)
    callbacks : the run's callbacks (the saver is not among them)
    path : path or None; resume : bool; every : int >= 1 or None
    seed : the seed passed to fit (None accepts the saved one)
    verbose : truthy to print what happened
    """
    resume = check.boolean("resume", resume)
    if every is not None:
        every = check.positive_int("checkpoint_every", every)
    if path is None:
        if resume or every is not None:
            raise ValueError("resume and checkpoint_every need checkpoint=<path>")
        return None
    path = check_path(path)
    saver = CheckpointSaver(path, every, callbacks)
    if not resume:
        return saver
    if not os.path.exists(path):
        if verbose:
            print(f"no checkpoint at {path}: starting from epoch 1")
        return saver
    ckpt = load_checkpoint(path)
    t = ckpt.training
    if not isinstance(t, dict) or not POSITION_KEYS <= set(t) or ckpt.history is None:
        raise ValueError(
            f"checkpoint {path} holds no training position (it was not written by "
            f"fit); load it with mg.load_checkpoint and restore() instead"
        )
    if not (
        isinstance(t["iterator"], dict)
        and set(ITERATOR_KEYS) <= set(t["iterator"])
        and all(_is_int(t[k]) and t[k] >= 0 for k in ("epochs_done", "iteration", "step"))
    ):
        raise ValueError(f"checkpoint {path} holds a malformed training position")
    _check_same_run(path, t, ckpt, state, seed)
    stateful = [type(cb).__name__ for cb in stateful_callbacks(callbacks)]
    if stateful != [c["type"] for c in ckpt.callbacks]:
        raise ValueError(
            f"checkpoint {path} was written with callbacks "
            f"{[c['type'] for c in ckpt.callbacks]}, this call has {stateful}"
        )
    ckpt.restore(state.model, state.optimizer)
    state.history.load_state_dict(ckpt.history.state_dict())
    state.iterator.load_state_dict(t["iterator"])
    state.load_state_dict(t)
    saver.pending = ckpt.callbacks
    if verbose:
        print(
            f"resumed from {path}: {t['epochs_done']} epochs + {t['iteration']} iterations "
            f"done ({t['step']} updates)"
        )
    return saver


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _check_same_run(path, t, ckpt, state, seed):
    saved, now = t["iterator"], state.iterator.state_dict()
    if seed is not None and seed != saved["seed"]:
        raise ValueError(
            f"checkpoint {path} was written with seed={saved['seed']}, this call "
            f"has seed={seed}: pass the same seed (or None) to resume"
        )
    for key in ITERATOR_KEYS[1:]:
        if saved[key] != now[key]:
            raise ValueError(
                f"checkpoint {path} was written with {key}={saved[key]}, this call "
                f"has {key}={now[key]}: resuming needs the same data and batching"
            )
    loss = type(state.loss).__name__
    if t.get("loss", loss) != loss or ckpt.history.metric_names != state.history.metric_names:
        raise ValueError(
            f"checkpoint {path} was written by a run with loss "
            f"{t.get('loss', 'SoftmaxCrossEntropy')}, this call has loss {loss}"
        )
    needed = t["epochs_done"] + (1 if t["iteration"] else 0)
    if state.epochs < needed:
        raise ValueError(
            f"epochs={state.epochs} but checkpoint {path} is already into epoch "
            f"{needed}: epochs is the total number of epochs, pass epochs >= {needed}"
        )
