"""The flags every minigd command shares, defined once, and the argparse ``type=`` functions.

argparse prefixes a failed check with the flag, so ``minigd train --batch-size 0`` ends with
``minigd train: error: argument --batch-size: must be an integer >= 1, got '0'`` and exit code 2,
before any data is loaded. Every subcommand (train, lr-find, noise-scale, sweep) uses these.

Types: positive_int, nonnegative_int, positive_float, nonnegative_float, fraction,
open_fraction, decay_factor, threshold_or_zero, hidden_sizes, data_source, subset_size, n_jobs,
positive_ints, positive_floats, nonnegative_ints, milestones.

Shared flags: add_data_arguments (--data, --data-dir, optionally --validation-split),
add_model_arguments (--hidden, --activation, --init, --dtype, --dropout, --batch-norm),
add_optimizer_arguments (--optimizer, --lr, --momentum, --nesterov, --weight-decay),
add_schedule_arguments (--schedule and the flags of each schedule, SCHEDULE_FLAGS, and
--warmup), add_backend_argument (--backend). check_arguments / check_optimizer_flags reject
flags the choice would ignore.
The optimizer and activation choices are the names in :mod:`minigd.registry`.
"""

import argparse
import math
import os

from .. import registry

DATA_CHOICES = ("sample", "mnist")


def _int(text, what):
    try:
        return int(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None


def _float(text, what):
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be {what} (finite), got {text!r}")
    return value


def positive_int(text):
    """An integer >= 1 (batch sizes, epochs, iteration counts)."""
    value = _int(text, "an integer >= 1")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def nonnegative_int(text):
    """An integer >= 0 (seeds, warmup epochs, patience with 0 meaning off)."""
    value = _int(text, "an integer >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def positive_float(text):
    """A finite number > 0 (learning rates)."""
    value = _float(text, "a number > 0")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def nonnegative_float(text):
    """A finite number >= 0 (weight decay, lr floors)."""
    value = _float(text, "a number >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def fraction(text):
    """A number in [0, 1) (momentum, smoothing, validation split)."""
    value = _float(text, "a number in [0, 1)")
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}")
    return value


def open_fraction(text):
    """A number in (0, 1) (OneCycle's pct_start)."""
    value = _float(text, "a number in (0, 1)")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1), got {text!r}")
    return value


def milestones(text):
    """Comma-separated strictly increasing integers >= 0: ``"5,8"`` -> [5, 8] (epochs)."""
    values = _values(nonnegative_int, text)
    if values != sorted(values):
        raise argparse.ArgumentTypeError(f"must increase, got {text!r}: sort them")
    return values


def decay_factor(text):
    """A number in (0, 1] (multiplicative lr decay per step)."""
    value = _float(text, "a number in (0, 1]")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {text!r}")
    return value


def threshold_or_zero(text):
    """0 (off) or a number > 1 (a multiple of the best loss)."""
    value = _float(text, "0 or a number > 1")
    if value != 0 and value <= 1:
        raise argparse.ArgumentTypeError(f"must be 0 (off) or a number > 1, got {text!r}")
    return value


def hidden_sizes(text):
    """Comma-separated layer widths, each >= 1: ``"256,128"`` -> [256, 128]."""
    try:
        sizes = [int(part) for part in text.split(",") if part.strip() != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes comma-separated ints, got {text!r}") from None
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be >= 1, got {text!r}")
    return sizes


def data_source(text):
    """'sample', 'mnist', or the path of an existing .npz file holding arrays X and y."""
    if text in DATA_CHOICES:
        return text
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(
            f"takes 'sample', 'mnist' or the path of an .npz file with arrays X and y "
            f"(np.savez(path, X=X, y=y)); {text!r} is neither a choice nor an existing file"
        )
    return text


def subset_size(text):
    """An integer >= 2 (a number of training rows to keep)."""
    value = _int(text, "an integer >= 2")
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be an integer >= 2, got {text!r}")
    return value


def n_jobs(text):
    """An integer >= 1, or -1 for every core (joblib's convention)."""
    value = _int(text, "an integer >= 1, or -1 for every core")
    if value < -1 or value == 0:
        raise argparse.ArgumentTypeError(
            f"must be an integer >= 1, or -1 for every core, got {text!r}"
        )
    return value


def _values(item, text):
    """Comma separated values, each parsed by ``item``; at least one and no repeats."""
    values = []
    for part in (p.strip() for p in text.split(",")):
        if part:
            try:
                values.append(item(part))
            except argparse.ArgumentTypeError as error:
                raise argparse.ArgumentTypeError(f"takes comma-separated values; {error}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"needs at least one value, got {text!r}")
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"has repeated values: {text!r}")
    return values


def positive_ints(text):
    """Comma-separated distinct integers >= 1: ``"32,128"`` -> [32, 128] (batch sizes)."""
    return _values(positive_int, text)


def positive_floats(text):
    """Comma-separated distinct finite numbers > 0 (learning rates)."""
    return _values(positive_float, text)


def nonnegative_ints(text):
    """Comma-separated distinct integers >= 0 (seeds)."""
    return _values(nonnegative_int, text)


# ---- the shared flags ------------------------------------------------------------------------
def add_data_arguments(p, validation_split=False):
    """--data and --data-dir (and --validation-split when asked) in a "data" group; returns it."""
    data = p.add_argument_group("data")
    data.add_argument(
        "--data",
        type=data_source,
        default="sample",
        metavar="{sample,mnist,FILE.npz}",
        help="'sample': the bundled 10k MNIST images split 8000/2000 (offline); "
        "'mnist': the full 60k/10k set (downloaded once, cached); or the path "
        "of an .npz file with arrays X (samples, features) and y (class ids), "
        "optionally X_test and y_test (default: sample)",
    )
    data.add_argument(
        "--data-dir",
        default=None,
        help="cache directory for --data mnist (default: $MINIGD_DATA or ~/.cache)",
    )
    if validation_split:
        data.add_argument(
            "--validation-split",
            type=fraction,
            default=0.1,
            help="fraction of the training rows held out for val loss/accuracy, "
            "in [0, 1); 0 turns validation off (default: 0.1)",
        )
    return data


def add_model_arguments(p):
    """--hidden, --activation, --init, --dtype, --dropout, --batch-norm: the MLP that
    registry.build_mlp builds."""
    model = p.add_argument_group("model")
    model.add_argument(
        "--hidden",
        type=hidden_sizes,
        default=[128],
        help="hidden layer widths, comma separated (default: 128, i.e. 784-128-10)",
    )
    model.add_argument(
        "--activation",
        choices=registry.names("activation"),
        default="relu",
        help="hidden activation (default: relu)",
    )
    model.add_argument(
        "--init",
        choices=("he", "xavier", "torch"),
        default="he",
        help="weight initialisation (default: he)",
    )
    model.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default="float32",
        help="floating point type of weights and batches (default: float32)",
    )
    model.add_argument(
        "--dropout",
        type=fraction,
        default=0.0,
        metavar="P",
        help="Dropout(P) after each hidden activation, P in [0, 1) (default: 0, none)",
    )
    model.add_argument(
        "--batch-norm",
        action="store_true",
        help="BatchNorm between each hidden Dense layer and its activation (default: off)",
    )
    return model


def add_optimizer_arguments(opt, with_lr=True):
    """--optimizer, --lr, --momentum, --nesterov, --weight-decay on the argument group ``opt``.

    --momentum and --nesterov default to None (given or not is checked by
    check_optimizer_flags, then they become 0 and False).
    """
    opt.add_argument(
        "--optimizer",
        choices=registry.names("optimizer"),
        default="sgd",
        help="update rule (default: sgd)",
    )
    if with_lr:
        opt.add_argument(
            "--lr", type=positive_float, default=0.1, help="learning rate (default: 0.1)"
        )
    opt.add_argument(
        "--momentum",
        type=fraction,
        default=None,
        help="momentum in [0, 1); sgd and rmsprop only (default: 0)",
    )
    opt.add_argument(
        "--nesterov",
        action="store_true",
        default=None,
        help="Nesterov momentum; sgd with --momentum > 0 only (default: off)",
    )
    opt.add_argument(
        "--weight-decay",
        type=nonnegative_float,
        default=0.0,
        help="L2 (SGD, Adam) or decoupled (AdamW) weight decay (default: 0)",
    )


# The schedule flags each --schedule reads (registry.build_schedule fills their defaults); any
# other one given is an error. The classes come from registry.get("schedule", name).
SCHEDULE_FLAGS = {
    "constant": (),
    "step": ("step_size", "gamma"),
    "exponential": ("gamma",),
    "cosine": ("min_lr",),
    "cyclic": ("max_lr", "step_size"),
    "onecycle": (
        "pct_start",
        "anneal",
        "div_factor",
        "final_div_factor",
        "three_phase",
        "base_momentum",
        "max_momentum",
        "no_cycle_momentum",
    ),
    "warm-restarts": ("t0", "t_mult", "min_lr"),
    "multistep": ("milestones", "gamma"),
    "poly": ("power",),
}
# Each schedule flag's keyword argument of the schedule class (the same name when not listed).
SCHEDULE_KEYWORDS = {"t0": "t_0", "no_cycle_momentum": "cycle_momentum"}


def add_schedule_arguments(opt):
    """--schedule and the flags each schedule reads (SCHEDULE_FLAGS), and --warmup."""
    opt.add_argument(
        "--schedule",
        choices=tuple(SCHEDULE_FLAGS),
        default="constant",
        help="lr schedule: step (x gamma every --step-size epochs), exponential "
        "(x gamma per epoch), cosine (to --min-lr over all epochs), cyclic "
        "(triangular between --lr and --max-lr, half-cycle --step-size "
        "iterations), onecycle (per update: up to --lr over the first "
        "--pct-start of the run, then down to --lr / div / final-div, "
        "momentum cycled the other way; torch OneCycleLR), warm-restarts "
        "(cosine to --min-lr, restarting every --t0 epochs, periods x "
        "--t-mult), multistep (x gamma at each of --milestones epochs), poly "
        "(lr (1 - t / epochs) ** --power, 0 at the end) (default: constant)",
    )
    opt.add_argument(
        "--step-size",
        type=positive_int,
        default=None,
        help="step and cyclic only. step: epochs per decay (default: 3); cyclic: "
        "iterations per half cycle (default: 2 epochs' worth)",
    )
    opt.add_argument(
        "--gamma",
        type=decay_factor,
        default=None,
        help="step, exponential and multistep only: decay factor in (0, 1] "
        "(default: 0.1 for step and multistep, 0.9 for exponential)",
    )
    opt.add_argument(
        "--min-lr",
        type=nonnegative_float,
        default=None,
        help="cosine and warm-restarts only: the floor the lr anneals to (default: 0)",
    )
    opt.add_argument(
        "--pct-start",
        type=open_fraction,
        default=None,
        help="onecycle only: fraction of the updates spent rising, in (0, 1) (default: 0.3)",
    )
    opt.add_argument(
        "--anneal",
        choices=("cos", "linear"),
        default=None,
        help="onecycle only: the shape of each phase (default: cos)",
    )
    opt.add_argument(
        "--div-factor",
        type=positive_float,
        default=None,
        help="onecycle only: the first lr is --lr / DIV (default: 25)",
    )
    opt.add_argument(
        "--final-div-factor",
        type=positive_float,
        default=None,
        help="onecycle only: the last lr is the first / FINAL_DIV (default: 1e4)",
    )
    opt.add_argument(
        "--three-phase",
        action="store_true",
        default=None,
        help="onecycle only: fall back to the first lr before the final annealing (default: off)",
    )
    opt.add_argument(
        "--base-momentum",
        type=fraction,
        default=None,
        help="onecycle only: the momentum (SGD) or beta1 (Adam) at the lr peak (default: 0.85)",
    )
    opt.add_argument(
        "--max-momentum",
        type=fraction,
        default=None,
        help="onecycle only: the momentum or beta1 at the start and end (default: 0.95)",
    )
    opt.add_argument(
        "--no-cycle-momentum",
        action="store_true",
        default=None,
        help="onecycle only: leave the momentum alone (default: cycle it)",
    )
    opt.add_argument(
        "--t0",
        type=positive_int,
        default=None,
        help="warm-restarts only: epochs of the first period (default: a third "
        "of --epochs, at least 1)",
    )
    opt.add_argument(
        "--t-mult",
        type=positive_int,
        default=None,
        help="warm-restarts only: each period is T_MULT times the one before (default: 1)",
    )
    opt.add_argument(
        "--milestones",
        type=milestones,
        default=None,
        help="multistep only: comma-separated epochs at which the lr is "
        "multiplied by --gamma, increasing, below --epochs (default: half "
        "and three quarters of --epochs)",
    )
    opt.add_argument(
        "--power",
        type=positive_float,
        default=None,
        help="poly only: the exponent of the decay (default: 1, linear)",
    )
    opt.add_argument(
        "--max-lr",
        type=positive_float,
        default=None,
        help="cyclic only: the peak lr (default: 10 x --lr)",
    )
    opt.add_argument(
        "--warmup",
        type=nonnegative_int,
        default=0,
        help="epochs of linear warmup in front of the schedule (default: 0)",
    )


def add_backend_argument(group):
    """--backend numba|numpy."""
    group.add_argument(
        "--backend",
        choices=("numba", "numpy"),
        default=None,
        help="kernels (default: $MINIGD_BACKEND or numba)",
    )


# ---- flags that the chosen optimizer or schedule would ignore ----------------------------------
OPTIMIZER_FLAGS = ("momentum", "nesterov")  # default None: "given" can be told apart


def _flag(dest):
    return "--" + dest.replace("_", "-")


def check_optimizer_flags(args):
    """Reject --momentum / --nesterov when --optimizer does not take them, then fill their
    defaults (momentum 0, nesterov False). Raises ValueError saying why."""
    takes = registry.optimizer_arguments(args.optimizer)
    for dest in OPTIMIZER_FLAGS:
        if getattr(args, dest, None) is not None and dest not in takes:
            users = [
                n for n in registry.names("optimizer") if dest in registry.optimizer_arguments(n)
            ]
            why = (
                "keeps its own moment estimates (betas)"
                if "betas" in takes
                else f"does not take {dest}"
            )
            raise ValueError(
                f"{_flag(dest)} applies to --optimizer {' or '.join(users)} only; "
                f"{args.optimizer} {why}, so {_flag(dest)} would be ignored: "
                f"drop it"
            )
    args.momentum = 0.0 if getattr(args, "momentum", None) is None else args.momentum
    args.nesterov = bool(getattr(args, "nesterov", None))
    if args.nesterov and args.momentum == 0:
        raise ValueError("--nesterov needs --momentum > 0 (e.g. --momentum 0.9)")
    return args


def check_schedule_flags(args):
    """Reject schedule flags that --schedule would ignore, fill --min-lr's default, and check
    --min-lr / --max-lr against --lr. Raises ValueError saying why."""
    schedule = args.schedule
    used = SCHEDULE_FLAGS[schedule]
    every = sorted({dest for flags in SCHEDULE_FLAGS.values() for dest in flags})
    for dest in every:
        if getattr(args, dest, None) is not None and dest not in used:
            users = [s for s, flags in SCHEDULE_FLAGS.items() if dest in flags]
            raise ValueError(
                f"{_flag(dest)} is used by --schedule {' or '.join(users)} only; "
                f"--schedule {schedule} would ignore it: drop it or change "
                f"--schedule"
            )
    if args.min_lr is None:
        args.min_lr = 0.0
    if schedule in ("cosine", "warm-restarts") and args.min_lr > args.lr:
        raise ValueError(f"--min-lr ({args.min_lr:g}) must not exceed --lr ({args.lr:g})")
    if schedule == "onecycle":
        if getattr(args, "warmup", 0):
            raise ValueError(
                "--schedule onecycle warms up by itself (over --pct-start of the "
                "updates): drop --warmup"
            )
        if args.no_cycle_momentum and (
            args.base_momentum is not None or args.max_momentum is not None
        ):
            raise ValueError(
                "--base-momentum and --max-momentum set the momentum cycle, which "
                "--no-cycle-momentum turns off: drop one or the other"
            )
        low = 0.85 if args.base_momentum is None else args.base_momentum
        high = 0.95 if args.max_momentum is None else args.max_momentum
        if low > high:
            raise ValueError(f"--base-momentum ({low:g}) must not exceed --max-momentum ({high:g})")
    epochs = getattr(args, "epochs", None)
    if (
        schedule == "multistep"
        and args.milestones
        and epochs is not None
        and args.milestones[-1] >= epochs
    ):
        raise ValueError(
            f"--milestones {args.milestones[-1]} is not below --epochs {epochs}: "
            f"a milestone at or past the last epoch never changes the lr; drop it "
            f"or raise --epochs"
        )
    if schedule == "cyclic" and args.max_lr is not None and args.max_lr < args.lr:
        raise ValueError(f"--max-lr ({args.max_lr:g}) must not be below --lr ({args.lr:g})")
    return args


def check_task_flags(args):
    """Reject --data mnist with --task regression (MNIST's targets are class ids)."""
    if getattr(args, "task", None) == "regression" and getattr(args, "data", None) == "mnist":
        raise ValueError(
            "--data mnist holds class ids, not real-valued targets: --task "
            "regression takes --data sample (datasets.make_regression) or an .npz "
            "file with real y"
        )
    return args


# Commands whose optimizer and schedule flags are checked at parse time (sweep checks its own
# in its handler, so that its errors return 2 like its other flag conflicts).
CHECKED_COMMANDS = {"train", "lr-find", "noise-scale"}


def check_arguments(args):
    """Reject flags that the chosen --optimizer or --schedule would ignore, then fill their
    defaults (momentum 0, nesterov False, min_lr 0). Raises ValueError saying why.

    Acts on the commands in CHECKED_COMMANDS only (their flags default to None when not given).
    """
    if getattr(args, "command", None) not in CHECKED_COMMANDS:
        return args
    check_task_flags(args)
    if (
        getattr(args, "schedule", None) == "onecycle"
        and getattr(args, "momentum", None) is not None
        and not getattr(args, "no_cycle_momentum", None)
    ):
        raise ValueError(
            "--momentum would be replaced every update by --schedule onecycle's "
            "momentum cycle (--max-momentum 0.95 down to --base-momentum 0.85 and "
            "back): set those instead, or add --no-cycle-momentum to keep "
            "--momentum"
        )
    if getattr(args, "optimizer", None) is not None and hasattr(args, "momentum"):
        check_optimizer_flags(args)
    if getattr(args, "schedule", None) is not None:
        check_schedule_flags(args)
    return args
