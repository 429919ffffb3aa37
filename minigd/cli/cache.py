"""``minigd cache info`` and ``minigd cache clear``: where the compiled Numba kernels live.

The kernels are cached per user, never inside the installed package (see
:mod:`minigd.kernels.jit_config`): ``$MINIGD_CACHE_DIR``, else the platform's user cache
directory (``~/.cache/minigd`` on Linux), in its ``kernels`` subfolder, one folder per minigd
source location.
"""


def _megabytes(n_bytes):
    return f"{n_bytes / 1e6:.1f} MB"


def info_command(args):
    """Print where the kernel cache is, its size, and whether the kernels are compiled here."""
    from ..kernels import jit_config

    info = jit_config.cache_info()
    if info["directory"] is None:
        print(f"kernel cache: off ({info['disabled_reason']})")
        print(
            "  the kernels are compiled again in every process; set "
            f"{jit_config.CACHE_ENV} to a writable directory to keep them"
        )
    else:
        print(f"kernel cache: {info['directory']}")
        print(f"  this install: {info['files']} files, {_megabytes(info['bytes'])}")
    if info["root"] is not None:
        print(
            f"  all installs: {info['installs']} folders, {info['all_files']} files, "
            f"{_megabytes(info['all_bytes'])} under {info['root']}"
        )
    if info["compiled"]:
        print(f"compiled for this CPU ({info['cpu']}): yes, {len(info['kernels'])} kernels")
    else:
        print(
            f"compiled for this CPU ({info['cpu']}): no, the next training run compiles "
            "them (about a minute)"
        )
    from ..kernels import autotune

    choices = autotune.cached_choices()
    print(
        f"matrix products and epoch modes measured for this machine "
        f"({autotune.machine_key()}): "
        f"{len(choices)} in {autotune.cache_path()}"
    )
    for key, choice in choices.items():
        print(f"  {key}: {choice}")
    print(f"set {jit_config.CACHE_ENV} to move the cache; `minigd cache clear` empties it")
    return 0


def clear_command(args):
    """Delete every compiled minigd kernel of this user (only Numba's cache files) and the
    measured product choices."""
    from ..kernels import jit_config

    root = jit_config.kernels_root()
    if root is None:
        print("kernel cache: no home directory, nothing to clear")
        return 0
    removed, freed = jit_config.clear_cache()
    print(f"removed {removed} files ({_megabytes(freed)}) from {root}")
    from ..kernels import autotune

    choices = autotune.clear_choices()
    if choices:
        print(
            f"removed {choices} measured product choices ({autotune.cache_path()}): the next "
            "run measures them again (best on an otherwise idle machine)"
        )
    return 0


def register(subparsers):
    """Add the ``cache`` subcommand (``info``, ``clear``) to ``minigd``'s subparsers."""
    p = subparsers.add_parser(
        "cache",
        help="show or empty the cache of compiled Numba kernels",
        description="The Numba kernels are compiled on the first run and cached in "
        "$MINIGD_CACHE_DIR/kernels (default: the user cache directory, "
        "~/.cache/minigd/kernels on Linux), never inside the installed package.",
    )
    actions = p.add_subparsers(dest="cache_command", metavar="ACTION")
    actions.required = True
    info = actions.add_parser(
        "info",
        help="where the cache is, its size, and whether the kernels are compiled for this CPU",
    )
    info.set_defaults(handler=info_command)
    clear = actions.add_parser(
        "clear",
        help="delete the compiled kernels of every minigd install (only Numba's *.nbi/*.nbc files)",
    )
    clear.set_defaults(handler=clear_command)
