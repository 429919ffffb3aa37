"""A small, fully deterministic training job for the checkpoint tests, run in-process or as
``python tests/_resume_job.py OUT.npz --epochs 4 [--checkpoint P] [--resume] [--every K]
[--kill-at EPOCH:ITERATION] [--optimizer sgd|adam]``.

It writes the final weights and the history (JSON) to OUT.npz, and the epochs this process ran.
``--kill-at`` SIGKILLs the process itself after that iteration, as a crash would.
"""

import argparse
import json
import os
import signal
import sys

import numpy as np

import minigd as mg

TIMING = ("seconds", "samples_per_second")


def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(750, 20)).astype(np.float32)
    teacher = rng.normal(size=(20, 3))
    y = (X @ teacher + 0.5 * rng.normal(size=(750, 3))).argmax(axis=1)
    return X[:600], y[:600], X[600:], y[600:]


class _KillAt(mg.Callback):
    def __init__(self, epoch, iteration):
        self.epoch, self.iteration = epoch, iteration

    def on_iteration_end(self, state):
        if (state.epoch, state.iteration) == (self.epoch, self.iteration):
            os.kill(os.getpid(), signal.SIGKILL)


class _EpochsRun(mg.Callback):
    def __init__(self):
        self.epochs = []

    def on_epoch_begin(self, state):
        self.epochs.append(state.epoch)


def train(
    epochs,
    optimizer="sgd",
    checkpoint=None,
    resume=False,
    every=None,
    kill_at=None,
    dtype=np.float32,
):
    """Returns (model, history, epochs begun in this call)."""
    X, y, X_val, y_val = data()
    model = mg.Sequential(mg.Dense(20, 16), mg.ReLU(), mg.Dense(16, 3), seed=1, dtype=dtype)
    if optimizer == "sgd":
        opt = mg.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
        schedule = mg.schedules.StepDecay(0.1, step_size=2, gamma=0.5)
    else:
        opt = mg.Adam(model.parameters(), lr=0.01)
        cosine = mg.schedules.CosineAnnealing(0.01, t_max=60, unit="iteration")
        schedule = mg.schedules.Warmup(cosine, warmup_steps=10)
    seen = _EpochsRun()
    callbacks = [
        mg.EarlyStopping(patience=20, restore_best=True),
        mg.ReduceLROnPlateau(patience=0, factor=0.5),
        seen,
    ]
    if kill_at is not None:
        callbacks.append(_KillAt(*kill_at))
    history = mg.fit(
        model,
        X,
        y,
        optimizer=opt,
        epochs=epochs,
        batch_size=32,
        schedule=schedule,
        seed=7,
        validation_data=(X_val, y_val),
        callbacks=callbacks,
        verbose=0,
        checkpoint=checkpoint,
        resume=resume,
        checkpoint_every=every,
    )
    return model, history, seen.epochs


def comparable(history):
    """History as a dict without the timing fields, which differ from run to run."""
    d = history.to_dict()
    d["epochs"] = {k: v for k, v in d["epochs"].items() if k not in TIMING}
    return d


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--optimizer", default="sgd")
    p.add_argument("--checkpoint")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--every", type=int)
    p.add_argument("--kill-at")
    args = p.parse_args(argv)
    kill_at = tuple(int(v) for v in args.kill_at.split(":")) if args.kill_at else None
    model, history, ran = train(
        args.epochs, args.optimizer, args.checkpoint, args.resume, args.every, kill_at
    )
    np.savez(
        args.out,
        weights=model.flat_values,
        history=np.frombuffer(json.dumps(history.to_dict()).encode(), dtype=np.uint8),
        ran=np.asarray(ran, dtype=np.int64),
    )


if __name__ == "__main__":
    sys.exit(main())
