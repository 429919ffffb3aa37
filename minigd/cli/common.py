"""What the commands build from their parsed flags: data, model, optimizer and lr schedule.

The classes come from :mod:`minigd.registry` by the names the flags give (--activation,
--optimizer, --schedule), so a class added there is reachable here without an edit.
"""
import numpy as np

from .. import registry


def load_npz(path):
    """(X, y, X_test, y_test) from an .npz file with arrays X and y (X_test, y_test optional,
    else None); read with allow_pickle=False. Raises ValueError naming the file and the fix."""
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
    """(X, y, X_test, y_test) for --data: the bundled sample, full MNIST or the user's .npz."""
    from .. import datasets
    if args.data == "sample":
        return datasets.load_mnist_sample()
    if args.data == "mnist":
        return datasets.load_mnist(data_dir=args.data_dir)
    return load_npz(args.data)


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
    return registry.build_mlp(n_features, args.hidden, n_classes, activation=args.activation,
                              init=args.init, seed=args.seed, dtype=np.dtype(args.dtype),
                              dropout=args.dropout, batch_norm=args.batch_norm)


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
    return registry.build_optimizer(args.optimizer, params, args.lr if lr is None else lr,
                                    **optimizer_options(args))


def make_schedule(args, iterations_per_epoch):
    """The --schedule (None for constant without warmup) with --warmup in front of it."""
    lr, name = args.lr, args.schedule
    if name == "constant":
        schedule = None
    else:
        arguments = {
            "step": lambda: dict(lr=lr, step_size=args.step_size or 3, gamma=args.gamma or 0.1),
            "exponential": lambda: dict(lr=lr, gamma=args.gamma or 0.9),
            "cosine": lambda: dict(lr=lr, t_max=args.epochs, min_lr=args.min_lr or 0.0),
            "cyclic": lambda: dict(base_lr=lr, max_lr=args.max_lr or 10 * lr,
                                   step_size=args.step_size or 2 * iterations_per_epoch),
        }[name]()
        schedule = registry.get("schedule", name)(**arguments)
    if args.warmup:
        if schedule is None:
            schedule = registry.get("schedule", "constant")(lr)
        steps = args.warmup * (iterations_per_epoch if schedule.unit == "iteration" else 1)
        schedule = registry.get("schedule", "warmup")(schedule, steps)
    return schedule
