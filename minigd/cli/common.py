"""What the commands build from their parsed flags: data, model, optimizer and lr schedule.

The classes come from :mod:`minigd.registry` by the names the flags give (--activation,
--optimizer, --schedule), so a class added there is reachable here without an edit.
"""

import numpy as np

from .. import registry


def load_npz(path, task="classification"):
    """(X, y, X_test, y_test) from an .npz file with arrays X and y (X_test, y_test optional,
    else None); read with allow_pickle=False. y holds class ids, or real targets (N,) or
    (N, k) for ``task="regression"``. Raises ValueError naming the file and the fix."""
    from .. import _validation as check

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
            raise ValueError(
                f"--data {path}: no array {' or '.join(map(repr, missing))} (it has "
                f"{sorted(keys) or 'no arrays'}); {how}"
            )
        if ("X_test" in keys) != ("y_test" in keys):
            raise ValueError(
                f"--data {path}: has one of X_test and y_test but not the other; "
                f"give both or neither"
            )
        arrays = {}
        for key in ("X", "y", "X_test", "y_test"):
            if key in keys:
                try:
                    arrays[key] = archive[key]
                except ValueError as error:  # object arrays need pickle: refused
                    raise ValueError(
                        f"--data {path}: array {key!r} cannot be read without "
                        f"pickle ({error}); store numbers only"
                    ) from None
    try:
        targets = check.values if task == "regression" else check.labels
        X = check.features(f"{path}: X", arrays["X"])
        y = targets(f"{path}: y", arrays["y"], X.shape[0])
        if "X_test" not in arrays:
            return X, y, None, None
        X_test = check.features(f"{path}: X_test", arrays["X_test"])
        if X_test.shape[1] != X.shape[1]:
            raise ValueError(
                f"{path}: X_test has {X_test.shape[1]} features but X has {X.shape[1]}"
            )
        y_test = targets(
            f"{path}: y_test",
            arrays["y_test"],
            X_test.shape[0],
            *([y.shape[1]] if task == "regression" else []),
        )
    except (TypeError, ValueError) as error:
        raise ValueError(f"--data {error}") from None
    return X, y, X_test, y_test


def load_data(args):
    """(X, y, X_test, y_test) for --data: the bundled sample, full MNIST or the user's .npz."""
    from .. import datasets

    task = getattr(args, "task", "classification")
    if task == "regression":
        if args.data == "sample":
            return regression_sample()
        return load_npz(args.data, task)
    if args.data == "sample":
        return datasets.load_mnist_sample()
    if args.data == "mnist":
        return datasets.load_mnist(data_dir=args.data_dir)
    return load_npz(args.data)


REGRESSION_SAMPLE = dict(n_samples=10000, n_features=16, noise=0.1, seed=0)


def regression_sample():
    """(X, y, X_test, y_test): ``datasets.make_regression(**REGRESSION_SAMPLE)`` split 8000 / 2000,
    what ``minigd train --task regression`` trains on with ``--data sample``."""
    from .. import datasets

    X, y = datasets.make_regression(**REGRESSION_SAMPLE)
    return X[:8000], y[:8000], X[8000:], y[8000:]


def n_outputs_of(task, y, y_test):
    """The model's output width: the number of classes, or of target columns for regression."""
    if task == "regression":
        return 1 if y.ndim == 1 else y.shape[1]
    return n_classes_of(y, y_test)


def n_classes_of(y, y_test):
    """Number of classes: the largest class id in y (and y_test when there is one) plus one."""
    return int(max(y.max(), -1 if y_test is None else y_test.max())) + 1


def split_validation(X, y, fraction):
    """(X_train, y_train, (X_val, y_val) or None): the last ``fraction`` of the rows held out."""
    if not 0 <= fraction < 1:
        raise ValueError(f"--validation-split must be in [0, 1), got {fraction}")
    n_val = int(round(len(X) * fraction))
    if n_val == 0:
        return X, y, None
    return X[:-n_val], y[:-n_val], (X[-n_val:], y[-n_val:])


def make_model(args, n_features, n_classes):
    """The MLP of --hidden, --activation, --init, --dtype, --dropout, --batch-norm, seeded by
    --seed."""
    return registry.build_mlp(
        n_features,
        args.hidden,
        n_classes,
        activation=args.activation,
        init=args.init,
        seed=args.seed,
        dtype=np.dtype(args.dtype),
        dropout=args.dropout,
        batch_norm=args.batch_norm,
    )


def optimizer_options(args):
    """The optimizer hyperparameters the flags give, for the optimizer --optimizer names:
    weight_decay and momentum (0 when not given) when it takes them, nesterov when given."""
    takes = registry.optimizer_arguments(args.optimizer)
    options = {}
    if "weight_decay" in takes or args.weight_decay:
        options["weight_decay"] = args.weight_decay
    if "momentum" in takes:
        options["momentum"] = getattr(args, "momentum", None) or 0.0
    if getattr(args, "nesterov", None):
        options["nesterov"] = True
    return options


def make_optimizer(args, params, lr=None):
    """The --optimizer over ``params`` at ``lr`` (default --lr) with the flags' hyperparameters."""
    return registry.build_optimizer(
        args.optimizer, params, args.lr if lr is None else lr, **optimizer_options(args)
    )


def updates_per_epoch(args, n_samples):
    """Updates in one epoch of ``n_samples`` rows: ceil(N / --batch-size), floor with
    --drop-last, over --accumulate micro-batches per update when that flag exists."""
    from ..data import iterations_per_epoch

    group = args.batch_size * (getattr(args, "accumulate", None) or 1)
    return max(1, iterations_per_epoch(n_samples, group, getattr(args, "drop_last", False)))


def schedule_options(args):
    """The keyword arguments of --schedule that its flags give (the flags not given are left
    to registry.build_schedule's defaults)."""
    from .args import SCHEDULE_FLAGS, SCHEDULE_KEYWORDS

    options = {}
    for dest in SCHEDULE_FLAGS[args.schedule]:
        value = getattr(args, dest, None)
        if value is None:
            continue
        if dest == "no_cycle_momentum":
            value = not value
        options[SCHEDULE_KEYWORDS.get(dest, dest)] = value
    return options


def make_schedule(args, iterations_per_epoch):
    """The --schedule (None for constant without warmup) with --warmup in front of it.

    ``iterations_per_epoch`` is the number of updates per epoch (see :func:`updates_per_epoch`);
    the schedule is ``registry.build_schedule(--schedule, --lr, ...)`` with the flags' options.
    """
    lr, name = args.lr, args.schedule
    if name == "constant":
        schedule = None
    else:
        schedule = registry.build_schedule(
            name,
            lr,
            epochs=args.epochs,
            updates_per_epoch=iterations_per_epoch,
            **schedule_options(args),
        )
    if args.warmup:
        if schedule is None:
            schedule = registry.get("schedule", "constant")(lr)
        steps = args.warmup * (iterations_per_epoch if schedule.unit == "iteration" else 1)
        schedule = registry.get("schedule", "warmup")(schedule, steps)
    return schedule
