"""``minigd train``: train an MLP, print one line per epoch, write the history and a plot."""

import json
import os
import sys
import time
import warnings

import numpy as np

from . import args as A
from .common import (
    load_data,
    make_model,
    make_optimizer,
    make_schedule,
    n_outputs_of,
    split_validation,
    updates_per_epoch,
)

TASKS = ("classification", "regression")

OUTPUTS = ("history.csv", "epochs.csv", "history.json", "history.png", "model.npz", "run.json")


def add_train_arguments(p):
    """Every flag of ``minigd train``."""
    data = A.add_data_arguments(p, validation_split=True)
    data.add_argument(
        "--task",
        choices=TASKS,
        default="classification",
        help="classification: softmax cross-entropy on class ids, reports "
        "accuracy; regression: mean squared error (mg.MSELoss) on real "
        "targets, reports R² and MSE, with --data sample the synthetic "
        "datasets.make_regression set (10000 rows, 16 features, split "
        "8000/2000) or an .npz with real-valued y (default: classification)",
    )
    A.add_model_arguments(p)
    opt = p.add_argument_group("optimisation")
    opt.add_argument(
        "--epochs", type=A.positive_int, default=10, help="passes over the data (default: 10)"
    )
    opt.add_argument(
        "--batch-size",
        type=A.positive_int,
        default=64,
        help="samples per update; iterations per epoch = ceil(N / batch) (default: 64)",
    )
    A.add_optimizer_arguments(opt)
    A.add_schedule_arguments(opt)
    opt.add_argument(
        "--early-stopping",
        type=A.nonnegative_int,
        default=0,
        metavar="PATIENCE",
        help="stop when val loss has not improved for PATIENCE epochs and restore "
        "the best weights (default: 0, off)",
    )
    opt.add_argument(
        "--drop-last", action="store_true", help="skip the short last batch (default: off)"
    )
    opt.add_argument(
        "--no-shuffle",
        action="store_true",
        help="keep the data order (default: off, shuffle every epoch)",
    )
    opt.add_argument(
        "--grad-clip",
        type=A.positive_float,
        default=None,
        metavar="MAX_NORM",
        help="clip the global gradient norm to MAX_NORM before each update, as "
        "torch's clip_grad_norm_ (default: off)",
    )
    opt.add_argument(
        "--accumulate",
        type=A.positive_int,
        default=1,
        metavar="K",
        help="K micro-batches of --batch-size make one update (gradient "
        "accumulation: effective batch K x batch size) (default: 1)",
    )
    run = p.add_argument_group("run")
    run.add_argument(
        "--seed", type=A.nonnegative_int, default=0, help="seeds weights and shuffling (default: 0)"
    )
    A.add_backend_argument(run)
    run.add_argument(
        "--out",
        default="minigd-run",
        help="directory for history.csv, epochs.csv, history.json, history.png, "
        "model.npz, run.json (default: ./minigd-run)",
    )
    run.add_argument(
        "--quiet",
        action="store_true",
        help="print only the final accuracy (R² for regression) (default: off)",
    )
    run.add_argument(
        "--checkpoint",
        default=None,
        metavar="PATH",
        help="save model, optimizer, history and position to PATH (.npz) after "
        "every epoch (atomic writes) (default: none)",
    )
    run.add_argument(
        "--checkpoint-every",
        type=A.positive_int,
        default=None,
        metavar="N",
        help="also save every N updates, so a kill mid-epoch loses little "
        "(default: only at epoch ends)",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue from --checkpoint if it exists (bit-identical to an "
        "uninterrupted run); --epochs is the total (default: off)",
    )


def register(subparsers):
    """Add the ``train`` subcommand to ``minigd``'s subparsers."""
    train = subparsers.add_parser(
        "train",
        help="train an MLP and write its history",
        description="Train a dense ReLU network on MNIST (or your own .npz data) with "
        "mini-batch gradient descent; print the plan and one line per epoch; "
        "write the history and a plot to --out.",
    )
    add_train_arguments(train)
    train.set_defaults(handler=train_command)


def write_outputs(out, history, model, config, test_accuracy, test_metrics=None):
    """Write OUTPUTS (history tables, model weights, run.json, the plot) to ``out``.

    run.json holds the config, test_accuracy (None for regression), the test metrics
    (regression: test_mse and test_r2) and whether training diverged."""
    import minigd as mg

    from .._io import atomic_open

    os.makedirs(out, exist_ok=True)
    history.to_csv(os.path.join(out, "history.csv"))
    history.to_csv(os.path.join(out, "epochs.csv"), table="epochs")
    history.to_json(os.path.join(out, "history.json"))
    with atomic_open(os.path.join(out, "model.npz"), "wb") as handle:
        np.savez(handle, **model.state_dict())
    with atomic_open(os.path.join(out, "run.json"), "w") as handle:
        json.dump(
            {
                "config": config,
                "test_accuracy": test_accuracy,
                **(test_metrics or {}),
                "diverged": history.diverged,
            },
            handle,
            indent=2,
        )
    import matplotlib

    matplotlib.use("Agg")
    fig = mg.plot.history(history)
    mg.plot.save(fig, os.path.join(out, "history.png"))


def make_loss(args):
    """The loss of --task: SoftmaxCrossEntropy for classification, MSELoss for regression."""
    import minigd as mg

    return mg.MSELoss() if getattr(args, "task", None) == "regression" else mg.SoftmaxCrossEntropy()


def compile_kernels(args, X, y, n_outputs):
    """Run the kernels this configuration uses once on a few rows; returns the seconds taken."""
    import minigd as mg

    started = time.perf_counter()
    rows = min(len(X), 2 * args.batch_size)
    model = make_model(args, X.shape[1], n_outputs)
    mg.fit(
        model,
        X[:rows],
        y[:rows],
        optimizer=make_optimizer(args, model.parameters()),
        epochs=1,
        batch_size=args.batch_size,
        validation_data=(X[:rows], y[:rows]),
        loss=make_loss(args),
        verbose=0,
    )
    return time.perf_counter() - started


def train_command(args):
    """Run ``minigd train``; returns the exit code (0, or 3 when training diverged)."""
    import minigd as mg

    say = (lambda *a, **k: None) if args.quiet else print
    if args.backend:
        mg.set_backend(args.backend)
    # no backend chosen: the first run trains on NumPy while Numba compiles in the background
    from ..kernels.warm_start import WarmStart

    warm = None if args.backend or os.environ.get("MINIGD_BACKEND") else WarmStart(say)
    compile_first = warm is None and mg.backend.announce_compilation(say)
    X, y, X_test, y_test = load_data(args)
    X, y, validation = split_validation(X, y, args.validation_split)
    regression = args.task == "regression"
    n_outputs = n_outputs_of(args.task, y, y_test)
    loss = make_loss(args)
    if compile_first:
        seconds = compile_kernels(args, X, y, n_outputs)
        say(f"compiled in {seconds:.1f} s (not counted in epoch times)")
    model = make_model(args, X.shape[1], n_outputs)
    optimizer = make_optimizer(args, model.parameters())
    if warm is not None:
        warm.begin(model, optimizer, X, y, args.batch_size, loss=loss)
    schedule = make_schedule(args, updates_per_epoch(args, len(X)))
    callbacks = [] if warm is None else [warm]
    if args.early_stopping:
        if validation is None:
            raise ValueError("--early-stopping needs --validation-split > 0")
        callbacks.append(mg.EarlyStopping(patience=args.early_stopping))
    say(
        f"data: {args.data}, {len(X)} train / "
        f"{0 if validation is None else len(validation[0])} validation / "
        f"{0 if X_test is None else len(X_test)} test; "
        f"model {'-'.join(map(str, [X.shape[1]] + args.hidden + [model.n_outputs]))} "
        f"{args.activation}; {type(loss).__name__}; {optimizer!r}; backend "
        f"{mg.get_backend()}"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        history = mg.fit(
            model,
            X,
            y,
            optimizer=optimizer,
            epochs=args.epochs,
            batch_size=args.batch_size,
            schedule=schedule,
            loss=loss,
            shuffle=not args.no_shuffle,
            drop_last=args.drop_last,
            seed=args.seed,
            validation_data=validation,
            callbacks=callbacks,
            verbose=0 if args.quiet else 1,
            checkpoint=args.checkpoint,
            resume=args.resume,
            checkpoint_every=args.checkpoint_every,
            grad_clip=args.grad_clip,
            accumulate=args.accumulate,
        )
    test_accuracy, test_metrics = None, None
    if X_test is not None:
        with np.errstate(over="ignore", invalid="ignore"):
            if regression:
                result = mg.evaluate(model, X_test, y_test, loss=loss)
                test_metrics = {"test_mse": result["mse"], "test_r2": result["r2"]}
            else:
                test_accuracy = mg.accuracy(model, X_test, y_test)
    if history.diverged:
        d = history.divergence
        print(
            f"diverged: loss {d['loss']} at epoch {d['epoch']}, iteration {d['iteration']}, "
            f"lr {d['lr']:g}; history up to there is saved",
            file=sys.stderr,
        )
    if X_test is None:
        print(
            f"test {'R²' if regression else 'accuracy'}: none ({args.data} has no X_test and "
            f"y_test)"
        )
    elif regression:
        print(
            f"test R²: {test_metrics['test_r2']:.4f}, MSE {test_metrics['test_mse']:.4g} "
            f"({len(X_test)} held-out samples)"
        )
    else:
        print(f"test accuracy: {100 * test_accuracy:.2f}% ({len(X_test)} held-out samples)")
    config = {k: v for k, v in vars(args).items() if k != "handler"}
    write_outputs(args.out, history, model, config, test_accuracy, test_metrics)
    say(f"wrote {', '.join(OUTPUTS)} to {args.out}/")
    return 3 if history.diverged else 0
