"""Command line: ``minigd sweep``, a batch size x learning rate sweep written to --out."""
import argparse
import math
import os

from .cli import ACTIVATIONS, OPTIMIZERS, _hidden, load_data, split_validation

OUTPUTS = "sweep.csv, sweep.json, heatmap.png, curves.png"


def _list_of(kind, name):
    def parse(text):
        try:
            values = [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} takes comma-separated "
                                             f"{kind.__name__}s, got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError(f"{name} needs at least one value")
        return values
    return parse


def register(subparsers):
    """Add the ``sweep`` subcommand to ``minigd``'s subparsers."""
    p = subparsers.add_parser(
        "sweep", help="batch size x learning rate sweep (writes CSV, JSON, heatmap PNG)",
        description="Train one model per (batch size, learning rate, seed) cell, in parallel "
                    "with --n-jobs, print the table and the best cell, and write " + OUTPUTS +
                    " to --out.")
    grid = p.add_argument_group("grid")
    grid.add_argument("--batch-sizes", type=_list_of(int, "--batch-sizes"),
                      default=[32, 128, 512], help="comma separated (default 32,128,512)")
    grid.add_argument("--lrs", type=_list_of(float, "--lrs"), default=None,
                      help="learning rates, comma separated; every batch size meets every lr "
                           "(default 0.03,0.1,0.3 unless --scaling)")
    grid.add_argument("--scaling", choices=("linear", "sqrt"), default=None,
                      help="instead of --lrs: lr = base_lr * B / base_batch (linear) or "
                           "* sqrt(B / base_batch) (sqrt)")
    grid.add_argument("--base-lr", type=float, default=0.1,
                      help="lr at --base-batch-size for --scaling (default 0.1)")
    grid.add_argument("--base-batch-size", type=int, default=None,
                      help="batch size of --base-lr (default the smallest batch size)")
    grid.add_argument("--seeds", type=_list_of(int, "--seeds"), default=[0],
                      help="seeds per cell, comma separated; the heatmap averages them "
                           "(default 0)")
    grid.add_argument("--epochs", type=int, default=3, help="epochs per cell (default 3)")
    grid.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd", help="default sgd")
    data = p.add_argument_group("data and model")
    data.add_argument("--data", choices=("sample", "mnist"), default="sample",
                      help="'sample': the bundled MNIST sample (default); 'mnist': the full set")
    data.add_argument("--data-dir", default=None, help="cache directory for --data mnist")
    data.add_argument("--subset", type=int, default=None,
                      help="train on the first N training rows only (default all)")
    data.add_argument("--validation-split", type=float, default=0.1,
                      help="fraction of the training rows held out for val loss/accuracy "
                           "(default 0.1; 0 turns validation off)")
    data.add_argument("--hidden", type=_hidden, default=[128],
                      help="hidden layer widths, comma separated (default 128)")
    data.add_argument("--activation", choices=ACTIVATIONS, default="relu")
    data.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    run = p.add_argument_group("run")
    run.add_argument("--n-jobs", type=int, default=1,
                     help="cells run in parallel, one process and one BLAS thread each "
                          "(default 1: serially here; -1: every core)")
    run.add_argument("--joblib-backend", default=None,
                     help="joblib backend for --n-jobs (default loky processes; 'dask' or "
                          "'ray' need their own cluster set up)")
    run.add_argument("--backend", choices=("numba", "numpy"), default=None,
                     help="kernels (default $MINIGD_BACKEND or the library default)")
    run.add_argument("--value", default="val_accuracy",
                     choices=("val_accuracy", "val_loss", "train_loss", "train_accuracy",
                              "updates", "seconds"),
                     help="the column the heatmap shows (default val_accuracy)")
    run.add_argument("--out", default="minigd-sweep",
                     help=f"directory for {OUTPUTS} (default ./minigd-sweep)")
    run.add_argument("--quiet", action="store_true", help="print only the best cell")
    p.set_defaults(handler=sweep_command)


def sweep_command(args):
    import matplotlib
    matplotlib.use("Agg")
    import minigd as mg
    say = (lambda *a, **k: None) if args.quiet else print
    if args.backend:
        mg.set_backend(args.backend)
    if args.lrs is not None and args.scaling is not None:
        raise ValueError("give --lrs or --scaling, not both")
    X, y, _, y_test = load_data(args)
    n_classes = int(max(y.max(), y_test.max())) + 1
    if args.subset is not None:
        if args.subset < 2:
            raise ValueError(f"--subset must be >= 2, got {args.subset}")
        X, y = X[:args.subset], y[:args.subset]
    X, y, validation = split_validation(X, y, args.validation_split)
    if args.value.startswith("val_") and validation is None:
        raise ValueError(f"--value {args.value} needs --validation-split > 0")
    build = mg.MLPBuilder([X.shape[1]] + args.hidden + [n_classes], activation=args.activation,
                          dtype=args.dtype)
    grid = (dict(scaling=args.scaling, base_lr=args.base_lr,
                 base_batch_size=args.base_batch_size) if args.scaling
            else dict(lrs=args.lrs or [0.03, 0.1, 0.3]))
    n_lrs = 1 if args.scaling else len(grid["lrs"])
    cells = len(args.batch_sizes) * n_lrs * len(args.seeds)
    say(f"sweep: {cells} cells ({len(args.batch_sizes)} batch sizes x {n_lrs} lrs x "
        f"{len(args.seeds)} seeds), {args.epochs} epochs each, {len(X)} training samples, "
        f"model {build.widths}, n_jobs {args.n_jobs}")
    result = mg.sweep(build, X, y, batch_sizes=args.batch_sizes, epochs=args.epochs,
                      seeds=args.seeds, optimizer=args.optimizer, validation_data=validation,
                      n_jobs=args.n_jobs, backend=args.joblib_backend,
                      verbose=0 if args.quiet else 1, **grid)
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
    import minigd as mg
    os.makedirs(out, exist_ok=True)
    result.to_csv(os.path.join(out, "sweep.csv"))
    result.to_json(os.path.join(out, "sweep.json"))
    ax = mg.plot.sweep_heatmap(result, value=value)
    mg.plot.save(ax.figure, os.path.join(out, "heatmap.png"))
    ax = mg.plot.sweep_curves(result, x="update")
    mg.plot.save(ax.figure, os.path.join(out, "curves.png"))


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
