"""Command line experiments: ``minigd lr-find`` and ``minigd noise-scale``."""

import json
import os
import warnings

from . import args as A
from .common import load_data, make_model, make_optimizer, n_classes_of


def register(subparsers):
    """Add the ``lr-find`` and ``noise-scale`` subcommands to ``minigd``'s subparsers."""
    lr_find = subparsers.add_parser(
        "lr-find",
        help="LR range test: find a learning rate (writes CSV, JSON, PNG)",
        description="Train a copy of the model for --num-iter updates while the learning rate "
        "grows from --start-lr to --end-lr; print the suggested learning rates "
        "(steepest, min_div_10, valley) and write lr_range.csv, lr_range.json and "
        "lr_range.png to --out.",
    )
    _add_data_and_model_arguments(lr_find)
    _add_optimizer_arguments(lr_find, with_lr=False)
    ramp = lr_find.add_argument_group("range test")
    ramp.add_argument(
        "--start-lr", type=A.positive_float, default=1e-6, help="first lr (default: 1e-6)"
    )
    ramp.add_argument("--end-lr", type=A.positive_float, default=10.0, help="last lr (default: 10)")
    ramp.add_argument(
        "--num-iter",
        type=A.positive_int,
        default=100,
        help="updates, one lr each; epochs are cycled if needed (default: 100)",
    )
    ramp.add_argument(
        "--mode",
        choices=("exp", "linear"),
        default="exp",
        help="exponential or linear lr ramp (default: exp)",
    )
    ramp.add_argument(
        "--batch-size", type=A.positive_int, default=64, help="samples per update (default: 64)"
    )
    ramp.add_argument(
        "--smooth",
        type=A.fraction,
        default=0.98,
        help="exponential smoothing of the loss, in [0, 1) (default: 0.98)",
    )
    ramp.add_argument(
        "--diverge-threshold",
        type=A.threshold_or_zero,
        default=4.0,
        help="stop when the smoothed loss exceeds this multiple (> 1) of its best; "
        "0 never stops early (default: 4)",
    )
    _add_run_arguments(lr_find, "minigd-lr-find", "lr_range.csv, lr_range.json, lr_range.png")
    lr_find.set_defaults(handler=lr_find_command)

    noise = subparsers.add_parser(
        "noise-scale",
        help="gradient noise scale B_simple (critical batch size) during training",
        description="Estimate the gradient noise scale B_simple = tr(Sigma) / |G|^2 "
        "(McCandlish et al. 2018) from gradient norms at --small-batch and "
        "--big-batch, at initialisation and after each of --epochs epochs of "
        "training; write noise_scale.csv, noise_scale.json and noise_scale.png "
        "to --out.",
    )
    _add_data_and_model_arguments(noise)
    _add_optimizer_arguments(noise, with_lr=True)
    est = noise.add_argument_group("noise scale")
    est.add_argument(
        "--small-batch", type=A.positive_int, default=32, help="small batch size (default: 32)"
    )
    est.add_argument(
        "--big-batch",
        type=A.positive_int,
        default=1024,
        help="big batch size, larger than --small-batch (default: 1024)",
    )
    est.add_argument(
        "--n-pairs",
        type=A.positive_int,
        default=20,
        help="(small, big) batch pairs per measurement (default: 20)",
    )
    est.add_argument(
        "--epochs",
        type=A.nonnegative_int,
        default=1,
        help="training epochs, one measurement after each; 0 measures at "
        "initialisation only (default: 1)",
    )
    est.add_argument(
        "--batch-size", type=A.positive_int, default=64, help="training batch size (default: 64)"
    )
    _add_run_arguments(
        noise, "minigd-noise-scale", "noise_scale.csv, noise_scale.json, noise_scale.png"
    )
    noise.set_defaults(handler=noise_scale_command)


def _add_data_and_model_arguments(p):
    A.add_data_arguments(p)
    A.add_model_arguments(p)


def _add_optimizer_arguments(p, with_lr):
    A.add_optimizer_arguments(p.add_argument_group("optimizer"), with_lr=with_lr)


def _add_run_arguments(p, out, files):
    run = p.add_argument_group("run")
    run.add_argument(
        "--seed",
        type=A.nonnegative_int,
        default=0,
        help="seeds the weights and the batch draws (default: 0)",
    )
    A.add_backend_argument(run)
    run.add_argument("--out", default=out, help=f"directory for {files} (default: ./{out})")
    run.add_argument("--quiet", action="store_true", help="print only the result (default: off)")


def _setup(args):
    import matplotlib

    matplotlib.use("Agg")
    import minigd as mg

    say = (lambda *a, **k: None) if args.quiet else print
    if args.backend:
        mg.set_backend(args.backend)
    mg.backend.announce_compilation(say)
    X, y, _, y_test = load_data(args)
    model = make_model(args, X.shape[1], n_classes_of(y, y_test))
    say(
        f"data: {args.data}, {len(X)} training images; model "
        f"{'-'.join(map(str, [X.shape[1]] + args.hidden + [model.n_outputs]))} "
        f"{args.activation}; backend {mg.get_backend()}"
    )
    return mg, say, X, y, model


def _write_json(path, data):
    from .._io import atomic_open

    with atomic_open(path, "w") as handle:
        json.dump(data, handle, indent=1)


def lr_find_command(args):
    mg, say, X, y, model = _setup(args)

    def optimizer(params):
        return make_optimizer(args, params, lr=args.start_lr)

    say(
        f"lr range test: {args.num_iter} updates, lr {args.start_lr:g} -> {args.end_lr:g} "
        f"({args.mode}), batch {args.batch_size}, {args.optimizer}"
    )
    result = mg.lr_range_test(
        model,
        X,
        y,
        optimizer=optimizer,
        start_lr=args.start_lr,
        end_lr=args.end_lr,
        num_iter=args.num_iter,
        batch_size=args.batch_size,
        mode=args.mode,
        smooth=args.smooth,
        diverge_threshold=args.diverge_threshold or None,
        seed=args.seed,
        progress=not args.quiet,
    )
    say(
        f"{result.n_iterations} iterations, stopped: {result.stop_reason} at lr {result.lr[-1]:.3g}"
    )
    for rule, lr in result.suggestions.items():
        print(f"  {rule:<11} {lr:.4g}")
    print(f"suggested lr (min_div_10): {result.suggestion:.3g}")
    os.makedirs(args.out, exist_ok=True)
    result.to_csv(os.path.join(args.out, "lr_range.csv"))
    result.to_json(os.path.join(args.out, "lr_range.json"))
    ax = mg.plot.lr_range_test(result)
    mg.plot.save(ax.figure, os.path.join(args.out, "lr_range.png"))
    say(f"wrote lr_range.csv, lr_range.json, lr_range.png to {args.out}/")
    return 0


def noise_scale_command(args):
    mg, say, X, y, model = _setup(args)
    tracker = mg.GradientNoiseScale(
        args.small_batch,
        args.big_batch,
        n_pairs=args.n_pairs,
        seed=args.seed,
        progress=not args.quiet,
    )
    say(
        f"noise scale: {args.n_pairs} pairs of batches {args.small_batch} / {args.big_batch} "
        f"per measurement, at start and after each of {args.epochs} epochs "
        f"(batch {args.batch_size}, {args.optimizer} lr {args.lr:g})"
    )
    diverged = False
    if args.epochs == 0:
        tracker.start(model, X, y)
        tracker.measure(model, epoch=0, step=0)
    else:
        optimizer = make_optimizer(args, model.parameters())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            history = mg.fit(
                model,
                X,
                y,
                optimizer=optimizer,
                epochs=args.epochs,
                batch_size=args.batch_size,
                seed=args.seed,
                callbacks=[tracker],
                verbose=0 if args.quiet else 1,
            )
        diverged = history.diverged
    r = tracker.records
    print(
        f"{'epoch':>5} {'step':>6} {'loss':>8} {'B_simple':>9} {'+-':>7} {'|G|^2':>9} "
        f"{'tr(Sigma)':>10}"
    )
    for row in zip(
        *(
            r[k]
            for k in ("epoch", "step", "loss", "b_simple", "b_simple_stderr", "grad_sq", "trace")
        )
    ):
        print("{:>5} {:>6} {:>8.4f} {:>9.1f} {:>7.1f} {:>9.4g} {:>10.4g}".format(*row))
    os.makedirs(args.out, exist_ok=True)
    tracker.to_csv(os.path.join(args.out, "noise_scale.csv"))
    config = {k: v for k, v in vars(args).items() if k != "handler"}
    _write_json(
        os.path.join(args.out, "noise_scale.json"),
        {"config": config, "records": tracker.to_dict(), "diverged": diverged},
    )
    fig = mg.plot.noise_scale(tracker)
    mg.plot.save(fig, os.path.join(args.out, "noise_scale.png"))
    say(f"wrote noise_scale.csv, noise_scale.json, noise_scale.png to {args.out}/")
    return 3 if diverged else 0
