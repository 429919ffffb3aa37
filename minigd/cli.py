"""Command line: ``minigd train`` (also ``python -m minigd train``)."""
import argparse
import json
import os
import sys
import time
import warnings

import numpy as np

from . import cli_args as A

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "exponential", "cosine", "cyclic")
ACTIVATIONS = ("relu", "tanh", "sigmoid")


_hidden = A.hidden_sizes          # the name minigd.cli_sweep imports


def add_data_arguments(p):
    """--data and --data-dir: the bundled sample (offline), the full MNIST set, or your .npz."""
    data = p.add_argument_group("data")
    data.add_argument("--data", type=A.data_source, default="sample",
                      metavar="{sample,mnist,FILE.npz}",
                      help="'sample': the bundled 10k MNIST images split 8000/2000 (offline); "
                           "'mnist': the full 60k/10k set (downloaded once, cached); or the path "
                           "of an .npz file with arrays X (samples, features) and y (class ids), "
                           "optionally X_test and y_test (default: sample)")
    data.add_argument("--data-dir", default=None,
                      help="cache directory for --data mnist (default: $MINIGD_DATA or ~/.cache)")
    return data


def add_model_arguments(p):
    """--hidden, --activation, --init, --dtype: the MLP that make_model builds."""
    model = p.add_argument_group("model")
    model.add_argument("--hidden", type=A.hidden_sizes, default=[128],
                       help="hidden layer widths, comma separated (default: 128, i.e. 784-128-10)")
    model.add_argument("--activation", choices=ACTIVATIONS, default="relu",
                       help="hidden activation (default: relu)")
    model.add_argument("--init", choices=("he", "xavier", "torch"), default="he",
                       help="weight initialisation (default: he)")
    model.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                       help="floating point type of weights and batches (default: float32)")
    return model


def add_optimizer_arguments(opt, with_lr=True):
    """--optimizer, --lr, --momentum, --nesterov, --weight-decay on the argument group ``opt``.

    --momentum and --nesterov default to None (given or not is checked by check_arguments,
    then they become 0 and False).
    """
    opt.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd",
                     help="update rule (default: sgd)")
    if with_lr:
        opt.add_argument("--lr", type=A.positive_float, default=0.1,
                         help="learning rate (default: 0.1)")
    opt.add_argument("--momentum", type=A.fraction, default=None,
                     help="SGD momentum in [0, 1); sgd only (default: 0)")
    opt.add_argument("--nesterov", action="store_true", default=None,
                     help="Nesterov momentum; sgd with --momentum > 0 only (default: off)")
    opt.add_argument("--weight-decay", type=A.nonnegative_float, default=0.0,
                     help="L2 (SGD, Adam) or decoupled (AdamW) weight decay (default: 0)")


# The schedule flags each --schedule reads (make_schedule); any other one given is an error.
SCHEDULE_FLAGS = {"constant": (), "step": ("step_size", "gamma"), "exponential": ("gamma",),
                  "cosine": ("min_lr",), "cyclic": ("max_lr", "step_size")}


def add_train_arguments(p):
    data = add_data_arguments(p)
    data.add_argument("--validation-split", type=A.fraction, default=0.1,
                      help="fraction of the training rows held out for val loss/accuracy, in "
                           "[0, 1); 0 turns validation off (default: 0.1)")
    add_model_arguments(p)
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=A.positive_int, default=10,
                     help="passes over the data (default: 10)")
    opt.add_argument("--batch-size", type=A.positive_int, default=64,
                     help="samples per update; iterations per epoch = ceil(N / batch) "
                          "(default: 64)")
    add_optimizer_arguments(opt)
    opt.add_argument("--schedule", choices=SCHEDULES, default="constant",
                     help="lr schedule: step (x gamma every --step-size epochs), exponential "
                          "(x gamma per epoch), cosine (to --min-lr over all epochs), cyclic "
                          "(triangular between --lr and --max-lr, half-cycle --step-size "
                          "iterations) (default: constant)")
    opt.add_argument("--step-size", type=A.positive_int, default=None,
                     help="step and cyclic only. step: epochs per decay (default: 3); cyclic: "
                          "iterations per half cycle (default: 2 epochs' worth)")
    opt.add_argument("--gamma", type=A.decay_factor, default=None,
                     help="step and exponential only: decay factor in (0, 1] (default: 0.1 for "
                          "step, 0.9 for exponential)")
    opt.add_argument("--min-lr", type=A.nonnegative_float, default=None,
                     help="cosine only: the floor the lr anneals to (default: 0)")
    opt.add_argument("--max-lr", type=A.positive_float, default=None,
                     help="cyclic only: the peak lr (default: 10 x --lr)")
    opt.add_argument("--warmup", type=A.nonnegative_int, default=0,
                     help="epochs of linear warmup in front of the schedule (default: 0)")
    opt.add_argument("--early-stopping", type=A.nonnegative_int, default=0, metavar="PATIENCE",
                     help="stop when val loss has not improved for PATIENCE epochs and restore "
                          "the best weights (default: 0, off)")
    opt.add_argument("--drop-last", action="store_true",
                     help="skip the short last batch (default: off)")
    opt.add_argument("--no-shuffle", action="store_true",
                     help="keep the data order (default: off, shuffle every epoch)")
    run = p.add_argument_group("run")
    run.add_argument("--seed", type=A.nonnegative_int, default=0,
                     help="seeds weights and shuffling (default: 0)")
    run.add_argument("--backend", choices=("numba", "numpy"), default=None,
                     help="kernels (default: $MINIGD_BACKEND or numba)")
    run.add_argument("--out", default="minigd-run",
                     help="directory for history.csv, epochs.csv, history.json, history.png, "
                          "model.npz, run.json (default: ./minigd-run)")
    run.add_argument("--quiet", action="store_true",
                     help="print only the final accuracy (default: off)")
    run.add_argument("--checkpoint", default=None, metavar="PATH",
                     help="save model, optimizer, history and position to PATH (.npz) after "
                          "every epoch (atomic writes) (default: none)")
    run.add_argument("--checkpoint-every", type=A.positive_int, default=None, metavar="N",
                     help="also save every N updates, so a kill mid-epoch loses little "
                          "(default: only at epoch ends)")
    run.add_argument("--resume", action="store_true",
                     help="continue from --checkpoint if it exists (bit-identical to an "
                          "uninterrupted run); --epochs is the total (default: off)")


def _flag(dest):
    return "--" + dest.replace("_", "-")


# Commands whose optimizer and schedule flags default to None, so "given" can be told apart.
CHECKED_COMMANDS = {"train", "lr-find", "noise-scale"}


def check_arguments(args):
    """Reject flags that the chosen --optimizer or --schedule would ignore, then fill their
    defaults (momentum 0, nesterov False, min_lr 0). Raises ValueError saying why.

    Acts on the commands in CHECKED_COMMANDS only (their flags default to None when not given).
    """
    if getattr(args, "command", None) not in CHECKED_COMMANDS:
        return args
    optimizer = getattr(args, "optimizer", None)
    if optimizer is not None and hasattr(args, "momentum"):
        if optimizer != "sgd":
            for dest in ("momentum", "nesterov"):
                if getattr(args, dest) is not None:
                    raise ValueError(f"{_flag(dest)} applies to --optimizer sgd only; "
                                     f"{optimizer} keeps its own moment estimates (betas), so "
                                     f"{_flag(dest)} would be ignored: drop it")
        args.momentum = 0.0 if args.momentum is None else args.momentum
        args.nesterov = bool(args.nesterov)
        if args.nesterov and args.momentum == 0:
            raise ValueError("--nesterov needs --momentum > 0 (e.g. --momentum 0.9)")
    schedule = getattr(args, "schedule", None)
    if schedule is not None:
        used = SCHEDULE_FLAGS[schedule]
        for dest in ("step_size", "gamma", "min_lr", "max_lr"):
            if getattr(args, dest) is not None and dest not in used:
                users = [s for s, flags in SCHEDULE_FLAGS.items() if dest in flags]
                raise ValueError(f"{_flag(dest)} is used by --schedule {' or '.join(users)} only; "
                                 f"--schedule {schedule} would ignore it: drop it or change "
                                 f"--schedule")
        if args.min_lr is None:
            args.min_lr = 0.0
        if schedule == "cosine" and args.min_lr > args.lr:
            raise ValueError(f"--min-lr ({args.min_lr:g}) must not exceed --lr ({args.lr:g})")
        if schedule == "cyclic" and args.max_lr is not None and args.max_lr < args.lr:
            raise ValueError(f"--max-lr ({args.max_lr:g}) must not be below --lr ({args.lr:g})")
    return args


def build_parser():
    from minigd import __version__
    parser = argparse.ArgumentParser(
        prog="minigd", description="Mini-batch gradient descent you can see into.")
    parser.add_argument("--version", action="version", version=f"minigd {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    train = sub.add_parser("train", help="train an MLP and write its history",
                           description="Train a dense ReLU network on MNIST (or your own "
                                       ".npz data) with mini-batch gradient descent; print the "
                                       "plan and one line per epoch; write the history and a "
                                       "plot to --out.")
    add_train_arguments(train)
    train.set_defaults(handler=train_command)
    from . import cli_cache, cli_experiments, cli_sweep
    cli_experiments.register(sub)
    cli_sweep.register(sub)
    cli_cache.register(sub)
    return parser


def load_npz(path):
    """(X, y, X_test, y_test) from an .npz file with arrays X and y (X_test, y_test optional,
    else None); read with allow_pickle=False. Raises ValueError naming the file and the fix."""
    from . import _validation as check
    how = "save your data with np.savez(path, X=X, y=y) (optionally X_test=..., y_test=...)"
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(f"--data {path}: cannot read it as .npz ({error}); {how}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"--data {path}: is a single .npy array, not an .npz archive; {how}")
    with archive:
        keys = set(archive.files)
        missing = [k for k in ("X", "y") if k not in keys]
        if missing:
            raise ValueError(f"--data {path}: no array {' or '.join(map(repr, missing))} (it has "
                             f"{sorted(keys) or 'no arrays'}); {how}")
        if ("X_test" in keys) != ("y_test" in keys):
            raise ValueError(f"--data {path}: has one of X_test and y_test but not the other; "
                             f"give both or neither")
        arrays = {}
        for key in ("X", "y", "X_test", "y_test"):
            if key in keys:
                try:
                    arrays[key] = archive[key]
                except ValueError as error:     # object arrays need pickle: refused
                    raise ValueError(f"--data {path}: array {key!r} cannot be read without "
                                     f"pickle ({error}); store numbers only") from None
    try:
        X = check.features(f"{path}: X", arrays["X"])
        y = check.labels(f"{path}: y", arrays["y"], X.shape[0])
        if "X_test" not in arrays:
            return X, y, None, None
        X_test = check.features(f"{path}: X_test", arrays["X_test"])
        if X_test.shape[1] != X.shape[1]:
            raise ValueError(f"{path}: X_test has {X_test.shape[1]} features but X has "
                             f"{X.shape[1]}")
        y_test = check.labels(f"{path}: y_test", arrays["y_test"], X_test.shape[0])
    except (TypeError, ValueError) as error:
        raise ValueError(f"--data {error}") from None
    return X, y, X_test, y_test


def load_data(args):
    import minigd as mg
    if args.data == "sample":
        return mg.datasets.load_mnist_sample()
    if args.data == "mnist":
        return mg.datasets.load_mnist(data_dir=args.data_dir)
    return load_npz(args.data)


def n_classes_of(y, y_test):
    """Number of classes: the largest class id in y (and y_test when there is one) plus one."""
    return int(max(y.max(), -1 if y_test is None else y_test.max())) + 1


def make_schedule(args, iterations_per_epoch):
    from minigd import schedules as S
    if args.schedule == "constant":
        schedule = None
    elif args.schedule == "step":
        schedule = S.StepDecay(args.lr, args.step_size or 3, args.gamma or 0.1)
    elif args.schedule == "exponential":
        schedule = S.ExponentialDecay(args.lr, args.gamma or 0.9)
    elif args.schedule == "cosine":
        schedule = S.CosineAnnealing(args.lr, args.epochs, args.min_lr or 0.0)
    else:
        schedule = S.CyclicLR(args.lr, args.max_lr or 10 * args.lr,
                              args.step_size or 2 * iterations_per_epoch)
    if args.warmup:
        if schedule is None:
            schedule = S.Constant(args.lr)
        if schedule.unit == "iteration":
            schedule = S.Warmup(schedule, args.warmup * iterations_per_epoch)
        else:
            schedule = S.Warmup(schedule, args.warmup)
    return schedule


def make_model(args, n_features, n_classes):
    import minigd as mg
    activation = {"relu": mg.ReLU, "tanh": mg.Tanh, "sigmoid": mg.Sigmoid}[args.activation]
    widths = [n_features] + args.hidden + [n_classes]
    layers = []
    for i in range(len(widths) - 1):
        layers.append(mg.Dense(widths[i], widths[i + 1], init=args.init))
        if i < len(widths) - 2:
            layers.append(activation())
    return mg.Sequential(*layers, seed=args.seed, dtype=np.dtype(args.dtype))


def make_optimizer(args, model):
    import minigd as mg
    if args.optimizer == "sgd":
        return mg.SGD(model.parameters(), lr=args.lr, momentum=args.momentum or 0.0,
                      nesterov=bool(args.nesterov), weight_decay=args.weight_decay)
    cls = mg.Adam if args.optimizer == "adam" else mg.AdamW
    return cls(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)


def split_validation(X, y, fraction):
    if not 0 <= fraction < 1:
        raise ValueError(f"--validation-split must be in [0, 1), got {fraction}")
    n_val = int(round(len(X) * fraction))
    if n_val == 0:
        return X, y, None
    return X[:-n_val], y[:-n_val], (X[-n_val:], y[-n_val:])


def write_outputs(out, history, model, config, test_accuracy):
    import minigd as mg
    from minigd._io import atomic_open
    os.makedirs(out, exist_ok=True)
    history.to_csv(os.path.join(out, "history.csv"))
    history.to_csv(os.path.join(out, "epochs.csv"), table="epochs")
    history.to_json(os.path.join(out, "history.json"))
    with atomic_open(os.path.join(out, "model.npz"), "wb") as handle:
        np.savez(handle, **model.state_dict())
    with atomic_open(os.path.join(out, "run.json"), "w") as handle:
        json.dump({"config": config, "test_accuracy": test_accuracy,
                   "diverged": history.diverged}, handle, indent=2)
    import matplotlib
    matplotlib.use("Agg")
    fig = mg.plot.history(history)
    mg.plot.save(fig, os.path.join(out, "history.png"))


def compile_kernels(args, X, y, n_classes):
    """Run the kernels this configuration uses once on a few rows; returns the seconds taken."""
    import minigd as mg
    started = time.perf_counter()
    rows = min(len(X), 2 * args.batch_size)
    model = make_model(args, X.shape[1], n_classes)
    mg.fit(model, X[:rows], y[:rows], optimizer=make_optimizer(args, model), epochs=1,
           batch_size=args.batch_size, validation_data=(X[:rows], y[:rows]), verbose=0)
    return time.perf_counter() - started


def train_command(args):
    import minigd as mg
    say = (lambda *a, **k: None) if args.quiet else print
    if args.backend:
        mg.set_backend(args.backend)
    # no backend chosen: the first run trains on NumPy while Numba compiles in the background
    from .kernels.warm_start import WarmStart
    warm = None if args.backend or os.environ.get("MINIGD_BACKEND") else WarmStart(say)
    compile_first = warm is None and mg.backend.announce_compilation(say)
    X, y, X_test, y_test = load_data(args)
    X, y, validation = split_validation(X, y, args.validation_split)
    n_classes = n_classes_of(y, y_test)
    if compile_first:
        say(f"compiled in {compile_kernels(args, X, y, n_classes):.1f} s (not counted in epoch times)")
    model = make_model(args, X.shape[1], n_classes)
    optimizer = make_optimizer(args, model)
    if warm is not None:
        warm.begin(model, optimizer, X, y, args.batch_size)
    iterator_length = -(-len(X) // args.batch_size)
    schedule = make_schedule(args, iterator_length)
    callbacks = [] if warm is None else [warm]
    if args.early_stopping:
        if validation is None:
            raise ValueError("--early-stopping needs --validation-split > 0")
        callbacks.append(mg.EarlyStopping(patience=args.early_stopping))
    say(f"data: {args.data}, {len(X)} train / "
        f"{0 if validation is None else len(validation[0])} validation / "
        f"{0 if X_test is None else len(X_test)} test; "
        f"model {'-'.join(map(str, [X.shape[1]] + args.hidden + [model.n_outputs]))} "
        f"{args.activation}; {optimizer!r}; backend {mg.get_backend()}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        history = mg.fit(model, X, y, optimizer=optimizer, epochs=args.epochs,
                         batch_size=args.batch_size, schedule=schedule,
                         shuffle=not args.no_shuffle, drop_last=args.drop_last, seed=args.seed,
                         validation_data=validation, callbacks=callbacks,
                         verbose=0 if args.quiet else 1, checkpoint=args.checkpoint,
                         resume=args.resume, checkpoint_every=args.checkpoint_every)
    test_accuracy = None
    if X_test is not None:
        with np.errstate(over="ignore", invalid="ignore"):
            test_accuracy = mg.accuracy(model, X_test, y_test)
    if history.diverged:
        d = history.divergence
        print(f"diverged: loss {d['loss']} at epoch {d['epoch']}, iteration {d['iteration']}, "
              f"lr {d['lr']:g}; history up to there is saved", file=sys.stderr)
    if test_accuracy is None:
        print(f"test accuracy: none ({args.data} has no X_test and y_test)")
    else:
        print(f"test accuracy: {100 * test_accuracy:.2f}% ({len(X_test)} held-out samples)")
    config = {k: v for k, v in vars(args).items() if k != "handler"}
    write_outputs(args.out, history, model, config, test_accuracy)
    say(f"wrote {', '.join(['history.csv', 'epochs.csv', 'history.json', 'history.png', 'model.npz', 'run.json'])} to {args.out}/")
    return 3 if history.diverged else 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_arguments(args)
    except ValueError as error:
        parser.exit(2, f"minigd {args.command}: error: {error}\n")
    try:
        return args.handler(args)
    except (ValueError, TypeError, OSError) as error:
        print(f"minigd: error: {error}", file=sys.stderr)
        return 2
