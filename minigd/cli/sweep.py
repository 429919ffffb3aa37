"""Command line: ``minigd sweep``, a batch size x learning rate sweep written to --out.

``--storage sweep.db`` commits every finished cell to SQLite, so rerunning the same command
after a kill skips the stored cells ("resuming: k of n cells done"). ``--dask-workers N`` runs
the cells on a local Dask cluster of N one-thread worker processes; ``--dask-scheduler ADDRESS``
on an existing cluster (``dask scheduler`` / ``dask worker ADDRESS``).
"""

import contextlib
import math
import os

from . import args as A
from .common import load_data, n_classes_of, optimizer_options, split_validation

OUTPUTS = "sweep.csv, sweep.json, heatmap.png, curves.png"


def register(subparsers):
    """Add the ``sweep`` subcommand to ``minigd``'s subparsers."""
    p = subparsers.add_parser(
        "sweep",
        help="batch size x learning rate sweep (writes CSV, JSON, heatmap PNG)",
        description="Train one model per (batch size, learning rate, seed) cell, in parallel "
        "with --n-jobs or on a Dask cluster, print the table and the best cell, and "
        "write " + OUTPUTS + " to --out. With --storage, every finished cell is "
        "saved at once and a rerun of the same command resumes.",
    )
    grid = p.add_argument_group("grid")
    grid.add_argument(
        "--batch-sizes",
        type=A.positive_ints,
        default=[32, 128, 512],
        help="comma separated ints >= 1 (default: 32,128,512)",
    )
    grid.add_argument(
        "--lrs",
        type=A.positive_floats,
        default=None,
        help="learning rates > 0, comma separated; every batch size meets every "
        "lr (default: 0.03,0.1,0.3 unless --scaling)",
    )
    grid.add_argument(
        "--scaling",
        choices=("linear", "sqrt"),
        default=None,
        help="instead of --lrs: lr = base_lr * B / base_batch (linear) or "
        "* sqrt(B / base_batch) (sqrt) (default: none, use --lrs)",
    )
    grid.add_argument(
        "--base-lr",
        type=A.positive_float,
        default=None,
        help="lr at --base-batch-size; only with --scaling (default: 0.1)",
    )
    grid.add_argument(
        "--base-batch-size",
        type=A.positive_int,
        default=None,
        help="batch size of --base-lr; only with --scaling (default: the smallest batch size)",
    )
    grid.add_argument(
        "--seeds",
        type=A.nonnegative_ints,
        default=[0],
        help="seeds per cell (ints >= 0), comma separated; the heatmap averages them (default: 0)",
    )
    grid.add_argument(
        "--epochs", type=A.positive_int, default=3, help="epochs per cell (default: 3)"
    )
    A.add_optimizer_arguments(p.add_argument_group("optimizer"), with_lr=False)
    data = A.add_data_arguments(p, validation_split=True)
    data.add_argument(
        "--subset",
        type=A.subset_size,
        default=None,
        help="train on the first N >= 2 training rows only (default: all)",
    )
    A.add_model_arguments(p)
    run = p.add_argument_group("run")
    run.add_argument(
        "--n-jobs",
        type=A.n_jobs,
        default=None,
        help="cells run in parallel, one process and one BLAS thread each; -1: "
        "every core (default 1: serially here; with --dask-*: -1, every "
        "worker thread)",
    )
    run.add_argument(
        "--joblib-backend",
        default=None,
        help="joblib backend for --n-jobs, e.g. loky, threading (default loky "
        "processes; 'dask' is set by --dask-workers or --dask-scheduler)",
    )
    dask = run.add_mutually_exclusive_group()
    dask.add_argument(
        "--dask-workers",
        type=A.positive_int,
        default=None,
        metavar="N",
        help="start a local Dask cluster of N one-thread worker processes and "
        "run the cells on it (default none)",
    )
    dask.add_argument(
        "--dask-scheduler",
        default=None,
        metavar="ADDRESS",
        help="run the cells on the Dask cluster at ADDRESS, e.g. "
        "tcp://10.0.0.5:8786 (default none)",
    )
    run.add_argument(
        "--storage",
        default=None,
        metavar="PATH",
        help="SQLite file that keeps every finished cell; rerunning the same "
        "command resumes (default none: nothing kept)",
    )
    A.add_backend_argument(run)
    run.add_argument(
        "--value",
        default="val_accuracy",
        choices=("val_accuracy", "val_loss", "train_loss", "train_accuracy", "updates", "seconds"),
        help="the column the heatmap shows (default val_accuracy)",
    )
    run.add_argument(
        "--out", default="minigd-sweep", help=f"directory for {OUTPUTS} (default ./minigd-sweep)"
    )
    run.add_argument("--quiet", action="store_true", help="print only the best cell (default off)")
    p.set_defaults(handler=sweep_command)


def check_flags(args):
    """Errors for flags that do not apply to the others given (each says why)."""
    if args.lrs is not None and args.scaling is not None:
        raise ValueError("give --lrs or --scaling, not both")
    for flag, value in (("--base-lr", args.base_lr), ("--base-batch-size", args.base_batch_size)):
        if value is not None and args.scaling is None:
            raise ValueError(
                f"{flag} only applies with --scaling linear|sqrt (it anchors the "
                f"lr rule); with a fixed grid give the rates with --lrs"
            )
    A.check_optimizer_flags(args)
    dask = args.dask_workers is not None or args.dask_scheduler is not None
    if dask and args.joblib_backend not in (None, "dask"):
        raise ValueError(
            f"--dask-workers/--dask-scheduler run the cells on Dask; drop "
            f"--joblib-backend {args.joblib_backend}"
        )
    if args.joblib_backend == "dask" and not dask:
        raise ValueError(
            "--joblib-backend dask needs a cluster: --dask-workers N starts a "
            "local one, --dask-scheduler ADDRESS connects to a running one"
        )


@contextlib.contextmanager
def dask_cluster(args, say):
    """Yield (joblib backend, n_jobs) for the run; start or connect to Dask if asked."""
    if args.dask_workers is None and args.dask_scheduler is None:
        yield args.joblib_backend, 1 if args.n_jobs is None else args.n_jobs
        return
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise ValueError(
            "--dask-workers/--dask-scheduler need Dask: pip install 'dask[distributed]'"
        ) from None
    with contextlib.ExitStack() as stack:
        if args.dask_workers is not None:
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=args.dask_workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                )
            )
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
    n_classes = n_classes_of(y, y_test)
    if args.subset is not None:
        X, y = X[: args.subset], y[: args.subset]
    X, y, validation = split_validation(X, y, args.validation_split)
    if args.value.startswith("val_") and validation is None:
        raise ValueError(f"--value {args.value} needs --validation-split > 0")
    build = mg.MLPBuilder(
        [X.shape[1]] + args.hidden + [n_classes],
        activation=args.activation,
        dtype=args.dtype,
        init=args.init,
        dropout=args.dropout,
        batch_norm=args.batch_norm,
    )
    grid = (
        dict(
            scaling=args.scaling,
            base_lr=0.1 if args.base_lr is None else args.base_lr,
            base_batch_size=args.base_batch_size,
        )
        if args.scaling
        else dict(lrs=args.lrs or [0.03, 0.1, 0.3])
    )
    options = optimizer_options(args)
    n_lrs = 1 if args.scaling else len(grid["lrs"])
    cells = len(args.batch_sizes) * n_lrs * len(args.seeds)
    with dask_cluster(args, say) as (backend, n_jobs):
        say(
            f"sweep: {cells} cells ({len(args.batch_sizes)} batch sizes x {n_lrs} lrs x "
            f"{len(args.seeds)} seeds), {args.epochs} epochs each, {len(X)} training samples, "
            f"model {build.widths}, n_jobs {n_jobs}"
            + (f", storage {args.storage}" if args.storage else "")
        )
        result = mg.sweep(
            build,
            X,
            y,
            batch_sizes=args.batch_sizes,
            epochs=args.epochs,
            seeds=args.seeds,
            optimizer=args.optimizer,
            optimizer_kwargs=options,
            validation_data=validation,
            n_jobs=n_jobs,
            backend=backend,
            storage=args.storage,
            verbose=0 if args.quiet else 1,
            **grid,
        )
    say(format_table(result))
    best = result.best(args.value)
    if best is None:
        print("every cell diverged")
    else:
        print(
            f"best {args.value}: {_fmt(best[args.value])} at batch {best['batch_size']}, "
            f"lr {best['lr']:g}, seed {best['seed']}"
        )
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
    for name, draw in (
        ("heatmap.png", lambda: mg.plot.sweep_heatmap(result, value=value)),
        ("curves.png", lambda: mg.plot.sweep_curves(result, x="update")),
    ):
        figure = draw().figure
        try:
            mg.plot.save(figure, os.path.join(out, name))
        finally:
            plt.close(figure)


def format_table(result):
    """The table as aligned text, one line per cell."""
    columns = (
        "batch_size",
        "lr",
        "seed",
        "train_loss",
        "val_loss",
        "val_accuracy",
        "updates",
        "seconds",
        "diverged",
    )
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
