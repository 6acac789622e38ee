"""``tunisian-lung verify``: check every file of a release against dataset.json."""

from __future__ import annotations

import argparse
from pathlib import Path

from tunisian_lung.cli import EXIT_OK, EXIT_PROBLEM, UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``verify`` subcommand."""
    parser = subparsers.add_parser(
        "verify",
        help="recompute sha256 checksums and report missing, changed and extra files (exit 1 on any)",
        description="Recompute the sha256 and size of every file of a release and compare them with dataset.json.",
    )
    parser.add_argument("root", metavar="ROOT", type=Path, help="release folder with dataset.json")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the differences; return 1 when any file is missing, changed or extra."""
    from tunisian_lung.packaging.verify import verify

    if not args.root.is_dir():
        raise UsageError(f"release folder {args.root} not found")
    result = verify(args.root)
    for label, paths in (("missing", result.missing), ("changed", result.changed), ("extra", result.extra)):
        for path in paths:
            print(f"{label}: {path}")
    if result.ok:
        print(f"{args.root}: every file matches dataset.json")
        return EXIT_OK
    print(
        f"{args.root}: {len(result.missing)} missing, {len(result.changed)} changed, {len(result.extra)} extra file(s)"
    )
    return EXIT_PROBLEM
