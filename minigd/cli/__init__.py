"""Command line: ``minigd COMMAND`` (also ``python -m minigd COMMAND``).

Commands: train (:mod:`.train`), lr-find and noise-scale (:mod:`.experiments`), sweep
(:mod:`.sweep`), cache (:mod:`.cache`). The flags they share are defined once in :mod:`.args`;
what they build from them (data, model, optimizer, schedule) lives in :mod:`.common`.
"""

import argparse
import sys

from . import cache, experiments, sweep, train
from .args import check_arguments
from .common import load_npz

__all__ = ["build_parser", "check_arguments", "load_npz", "main"]


def build_parser():
    """The ``minigd`` argument parser with every subcommand."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="minigd", description="Mini-batch gradient descent you can see into."
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"minigd {__version__}",
        help="print the version and exit",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in (train, experiments, sweep, cache):
        command.register(sub)
    return parser


def main(argv=None):
    """Parse ``argv`` (default sys.argv[1:]), run the command; returns its exit code.

    Flags that cannot apply exit with code 2 and a message (argparse's convention); a
    ValueError, TypeError or OSError from the command prints ``minigd: error: ...`` and
    returns 2.
    """
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
