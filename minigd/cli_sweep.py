"""Command line: ``minigd sweep``, a batch size x learning rate sweep written to --out.

``--storage sweep.db`` commits every finished cell to SQLite, so rerunning the same command
after a kill skips the stored cells ("resuming: k of n cells done"). ``--dask-workers N`` runs
the cells on a local Dask cluster of N one-thread worker processes; ``--dask-scheduler ADDRESS``
on an existing cluster (``dask scheduler`` / ``dask worker ADDRESS``).
"""
import argparse
import contextlib
import math
import os

from .cli import ACTIVATIONS, OPTIMIZERS, _hidden, load_data, split_validation

OUTPUTS = "sweep.csv, sweep.json, heatmap.png, curves.png"


# TODO(merge): use minigd.cli_args -- these parse-time validators duplicate its checks until the
# two branches are merged.
def _number(kind, low=None, high=None, low_open=False, high_open=True, nonzero=False):
    """An argparse type: ``kind`` (int or float) within [low, high) (bounds as given)."""
    words = {int: "an int", float: "a number"}[kind]

    def bounds():
        parts = []
        if low is not None:
            parts.append(f"{'>' if low_open else '>='} {low:g}")
        if high is not None:
            parts.append(f"{'<' if high_open else '<='} {high:g}")
        if nonzero:
            parts.append("not 0")
        return " and ".join(parts)

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {words}, got {text!r}") from None
        bad = ((kind is float and not math.isfinite(value))
               or (low is not None and (value <= low if low_open else value < low))
               or (high is not None and (value >= high if high_open else value > high))
               or (nonzero and value == 0))
        if bad:
            raise argparse.ArgumentTypeError(f"must be {words} {bounds()}, got {text!r}")
        return value
    parse.__name__ = words
    return parse


def _list_of(item, name):
    """An argparse type: comma separated values, each parsed by ``item``."""
    def parse(text):
        values = []
        for part in (p.strip() for p in text.split(",")):
            if part:
                try:
                    values.append(item(part))
                except argparse.ArgumentTypeError as error:
                    raise argparse.ArgumentTypeError(f"{name} takes comma-separated values: "
                                                     f"{error}") from None
        if not values:
            raise argparse.ArgumentTypeError(f"{name} needs at least one value")
        if len(set(values)) != len(values):
            raise argparse.ArgumentTypeError(f"{name} has repeated values: {text!r}")
        return values
    return parse


POSITIVE_INT = _number(int, low=1)
POSITIVE = _number(float, low=0, low_open=True)
NON_NEGATIVE = _number(float, low=0)
FRACTION = _number(float, low=0, high=1)


def register(subparsers):
    """Add the ``sweep`` subcommand to ``minigd``'s subparsers."""
    p = subparsers.add_parser(
        "sweep", help="batch size x learning rate sweep (writes CSV, JSON, heatmap PNG)",
        description="Train one model per (batch size, learning rate, seed) cell, in parallel "
                    "with --n-jobs or on a Dask cluster, print the table and the best cell, and "
                    "write " + OUTPUTS + " to --out. With --storage, every finished cell is "
                    "saved at once and a rerun of the same command resumes.")
    grid = p.add_argument_group("grid")
    grid.add_argument("--batch-sizes", type=_list_of(POSITIVE_INT, "--batch-sizes"),
                      default=[32, 128, 512], help="comma separated ints >= 1 "
                                                   "(default 32,128,512)")
    grid.add_argument("--lrs", type=_list_of(POSITIVE, "--lrs"), default=None,
                      help="learning rates > 0, comma separated; every batch size meets every "
                           "lr (default 0.03,0.1,0.3 unless --scaling)")
    grid.add_argument("--scaling", choices=("linear", "sqrt"), default=None,
                      help="instead of --lrs: lr = base_lr * B / base_batch (linear) or "
                           "* sqrt(B / base_batch) (sqrt) (default none: use --lrs)")
    grid.add_argument("--base-lr", type=POSITIVE, default=None,
                      help="lr at --base-batch-size; only with --scaling (default 0.1)")
    grid.add_argument("--base-batch-size", type=POSITIVE_INT, default=None,
                      help="batch size of --base-lr; only with --scaling (default the smallest "
                           "batch size)")
    grid.add_argument("--seeds", type=_list_of(_number(int, low=0), "--seeds"), default=[0],
                      help="seeds per cell (ints >= 0), comma separated; the heatmap averages "
                           "them (default 0)")
    grid.add_argument("--epochs", type=POSITIVE_INT, default=3,
                      help="epochs per cell (default 3)")
    opt = p.add_argument_group("optimizer")
    opt.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd",
                     help="optimizer of every cell (default sgd)")
    opt.add_argument("--momentum", type=_number(float, low=0, high=1), default=None,
                     help="SGD momentum in [0, 1); --optimizer sgd only (default 0)")
    opt.add_argument("--weight-decay", type=NON_NEGATIVE, default=0.0,
                     help="L2 (sgd, adam) or decoupled (adamw) weight decay >= 0 (default 0)")
    data = p.add_argument_group("data and model")
    data.add_argument("--data", choices=("sample", "mnist"), default="sample",
                      help="'sample': the bundled MNIST sample (default); 'mnist': the full set")
    data.add_argument("--data-dir", default=None,
                      help="cache directory for --data mnist (default $MINIGD_DATA or ~/.cache)")
    data.add_argument("--subset", type=_number(int, low=2), default=None,
                      help="train on the first N >= 2 training rows only (default all)")
    data.add_argument("--validation-split", type=FRACTION, default=0.1,
                      help="fraction in [0, 1) of the training rows held out for val "
                           "loss/accuracy (default 0.1; 0 turns validation off)")
    data.add_argument("--hidden", type=_hidden, default=[128],
                      help="hidden layer widths, comma separated (default 128)")
    data.add_argument("--activation", choices=ACTIVATIONS, default="relu",
                      help="hidden activation (default relu)")
    data.add_argument("--init", choices=("he", "xavier", "torch"), default="he",
                      help="weight initialisation (default he)")
    data.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                      help="floating point type of weights and batches (default float32)")
    run = p.add_argument_group("run")
    run.add_argument("--n-jobs", type=_number(int, low=-1, nonzero=True), default=None,
                     help="cells run in parallel, one process and one BLAS thread each; -1: "
                          "every core (default 1: serially here; with --dask-*: -1, every "
                          "worker thread)")
    run.add_argument("--joblib-backend", default=None,
                     help="joblib backend for --n-jobs, e.g. loky, threading (default loky "
                          "processes; 'dask' is set by --dask-workers or --dask-scheduler)")
    dask = run.add_mutually_exclusive_group()
    dask.add_argument("--dask-workers", type=POSITIVE_INT, default=None, metavar="N",
                      help="start a local Dask cluster of N one-thread worker processes and "
                           "run the cells on it (default none)")
    dask.add_argument("--dask-scheduler", default=None, metavar="ADDRESS",
                      help="run the cells on the Dask cluster at ADDRESS, e.g. "
                           "tcp://10.0.0.5:8786 (default none)")
    run.add_argument("--storage", default=None, metavar="PATH",
                     help="SQLite file that keeps every finished cell; rerunning the same "
                          "command resumes (default none: nothing kept)")
    run.add_argument("--backend", choices=("numba", "numpy"), default=None,
                     help="kernels (default $MINIGD_BACKEND or the library default)")
    run.add_argument("--value", default="val_accuracy",
                     choices=("val_accuracy", "val_loss", "train_loss", "train_accuracy",
                              "updates", "seconds"),
                     help="the column the heatmap shows (default val_accuracy)")
    run.add_argument("--out", default="minigd-sweep",
                     help=f"directory for {OUTPUTS} (default ./minigd-sweep)")
    run.add_argument("--quiet", action="store_true",
                     help="print only the best cell (default off)")
    p.set_defaults(handler=sweep_command)


def check_flags(args):
    """Errors for flags that do not apply to the others given (each says why)."""
    if args.lrs is not None and args.scaling is not None:
        raise ValueError("give --lrs or --scaling, not both")
    for flag, value in (("--base-lr", args.base_lr), ("--base-batch-size",
                                                      args.base_batch_size)):
        if value is not None and args.scaling is None:
            raise ValueError(f"{flag} only applies with --scaling linear|sqrt (it anchors the "
                             f"lr rule); with a fixed grid give the rates with --lrs")
    if args.momentum is not None and args.optimizer != "sgd":
        raise ValueError(f"--momentum only applies to --optimizer sgd; {args.optimizer} keeps "
                         f"its own moving averages")
    dask = args.dask_workers is not None or args.dask_scheduler is not None
    if dask and args.joblib_backend not in (None, "dask"):
        raise ValueError(f"--dask-workers/--dask-scheduler run the cells on Dask; drop "
                         f"--joblib-backend {args.joblib_backend}")
    if args.joblib_backend == "dask" and not dask:
        raise ValueError("--joblib-backend dask needs a cluster: --dask-workers N starts a "
                         "local one, --dask-scheduler ADDRESS connects to a running one")


@contextlib.contextmanager
def dask_cluster(args, say):
    """Yield (joblib backend, n_jobs) for the run; start or connect to Dask if asked."""
    if args.dask_workers is None and args.dask_scheduler is None:
        yield args.joblib_backend, 1 if args.n_jobs is None else args.n_jobs
        return
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise ValueError("--dask-workers/--dask-scheduler need Dask: "
                         "pip install 'dask[distributed]'") from None
    with contextlib.ExitStack() as stack:
        if args.dask_workers is not None:
            cluster = stack.enter_context(LocalCluster(
                n_workers=args.dask_workers, threads_per_worker=1, processes=True,
                dashboard_address=None))
            client = stack.enter_context(Client(cluster))
        else:
            client = stack.enter_context(Client(args.dask_scheduler, timeout="30s"))
        workers = len(client.scheduler_info().get("workers", {}))
        say(f"dask: {workers} workers, scheduler {client.scheduler.address}")
        yield "dask", -1 if args.n_jobs is None else args.n_jobs


def sweep_command(args):
    import matplotlib
    matplotlib.use("Agg")
    import minigd as mg
    say = (lambda *a, **k: None) if args.quiet else print
    check_flags(args)
    if args.backend:
        mg.set_backend(args.backend)
    X, y, _, y_test = load_data(args)
    n_classes = int(max(y.max(), y_test.max())) + 1
    if args.subset is not None:
        X, y = X[:args.subset], y[:args.subset]
    X, y, validation = split_validation(X, y, args.validation_split)
    if args.value.startswith("val_") and validation is None:
        raise ValueError(f"--value {args.value} needs --validation-split > 0")
    build = mg.MLPBuilder([X.shape[1]] + args.hidden + [n_classes], activation=args.activation,
                          dtype=args.dtype, init=args.init)
    grid = (dict(scaling=args.scaling, base_lr=0.1 if args.base_lr is None else args.base_lr,
                 base_batch_size=args.base_batch_size) if args.scaling
            else dict(lrs=args.lrs or [0.03, 0.1, 0.3]))
    options = {"weight_decay": args.weight_decay}
    if args.optimizer == "sgd":
        options["momentum"] = args.momentum or 0.0
    n_lrs = 1 if args.scaling else len(grid["lrs"])
    cells = len(args.batch_sizes) * n_lrs * len(args.seeds)
    with dask_cluster(args, say) as (backend, n_jobs):
        say(f"sweep: {cells} cells ({len(args.batch_sizes)} batch sizes x {n_lrs} lrs x "
            f"{len(args.seeds)} seeds), {args.epochs} epochs each, {len(X)} training samples, "
            f"model {build.widths}, n_jobs {n_jobs}"
            + (f", storage {args.storage}" if args.storage else ""))
        result = mg.sweep(build, X, y, batch_sizes=args.batch_sizes, epochs=args.epochs,
                          seeds=args.seeds, optimizer=args.optimizer, optimizer_kwargs=options,
                          validation_data=validation, n_jobs=n_jobs, backend=backend,
                          storage=args.storage, verbose=0 if args.quiet else 1, **grid)
    say(format_table(result))
    best = result.best(args.value)
    if best is None:
        print("every cell diverged")
    else:
        print(f"best {args.value}: {_fmt(best[args.value])} at batch {best['batch_size']}, "
              f"lr {best['lr']:g}, seed {best['seed']}")
    write_outputs(args.out, result, args.value)
    say(f"wrote {OUTPUTS} to {args.out}/")
    return 3 if best is None else 0


def write_outputs(out, result, value):
    """Write sweep.csv, sweep.json, heatmap.png and curves.png to ``out``; close the figures."""
    import matplotlib.pyplot as plt
    import minigd as mg
    os.makedirs(out, exist_ok=True)
    result.to_csv(os.path.join(out, "sweep.csv"))
    result.to_json(os.path.join(out, "sweep.json"))
    for name, draw in (("heatmap.png", lambda: mg.plot.sweep_heatmap(result, value=value)),
                       ("curves.png", lambda: mg.plot.sweep_curves(result, x="update"))):
        figure = draw().figure
        try:
            mg.plot.save(figure, os.path.join(out, name))
        finally:
            plt.close(figure)


def format_table(result):
    """The table as aligned text, one line per cell."""
    columns = ("batch_size", "lr", "seed", "train_loss", "val_loss", "val_accuracy", "updates",
               "seconds", "diverged")
    lines = ["  ".join(f"{c:>12}" for c in columns)]
    for row in result.table:
        lines.append("  ".join(f"{_fmt(row[c]):>12}" for c in columns))
    return "\n".join(lines)


def _fmt(value):
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)
