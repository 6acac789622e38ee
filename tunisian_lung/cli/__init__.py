"""The ``tunisian-lung`` command line.

Each subcommand lives in its own module of this package and defines two functions::

    def register(subparsers) -> None:      # adds its parser with ``subparsers.add_parser``
    def run(args: argparse.Namespace) -> int:   # returns the process exit code

``register`` must set ``parser.set_defaults(handler=run)``. Modules import heavy dependencies
(torch, pydicom) inside ``run`` so that ``tunisian-lung --help`` stays fast.

Exit codes: 0 success, 1 the job ran and found a problem (invalid data, failed check),
2 usage error (bad arguments, missing folder).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys
from typing import Sequence

from tunisian_lung import __version__
from tunisian_lung.errors import TunisianLungError

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2
#: 128 + SIGPIPE, the status a shell reports for a writer whose pipe reader exited.
EXIT_PIPE_CLOSED = 141


def _command_modules() -> list[str]:
    return sorted(
        info.name
        for info in pkgutil.iter_modules(__path__)
        if not info.name.startswith("_")
    )


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every subcommand module of this package."""
    parser = argparse.ArgumentParser(
        prog="tunisian-lung",
        description="Validate, load, preprocess, split, train on and package a lung-cancer CT dataset.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more detail (-v info, -vv debug)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _command_modules():
        module = importlib.import_module(f"{__name__}.{name}")
        module.register(subparsers)
    return parser


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING
    if verbosity == 1:
        level = logging.INFO
    elif verbosity >= 2:
        level = logging.DEBUG
    package_logger = logging.getLogger("tunisian_lung")
    package_logger.setLevel(level)
    # main() may run many times in one process (tests, notebooks): add the handler only once.
    for handler in package_logger.handlers:
        if getattr(handler, "_tunisian_lung_cli", False):
            return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler._tunisian_lung_cli = True  # type: ignore[attr-defined]
    package_logger.addHandler(handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    _configure_logging(args.verbose)
    try:
        return int(args.handler(args))
    except UsageError as error:
        print(f"tunisian-lung {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except TunisianLungError as error:
        print(f"tunisian-lung {args.command}: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_PROBLEM
    except KeyboardInterrupt:
        print(f"tunisian-lung {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (`tunisian-lung info ROOT | head`). Point stdout at
        # devnull so that the interpreter's final flush does not raise a second time.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_PIPE_CLOSED


class UsageError(Exception):
    """A command-line argument is invalid (exit code 2): a missing folder, a bad value."""


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
