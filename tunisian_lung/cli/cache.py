"""``tunisian-lung cache``: show the size of the preprocessing cache or clear it."""

from __future__ import annotations

import argparse
from pathlib import Path

from tunisian_lung.cli import EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``cache`` subcommand with its ``info`` and ``clear`` actions."""
    parser = subparsers.add_parser(
        "cache",
        help="show the size of the preprocessing cache or clear it",
        description=(
            "info prints the cache directory, its number of entries and their size on disk. "
            "clear deletes every cache entry; other files in the directory are left alone."
        ),
    )
    parser.add_argument("action", choices=("info", "clear"), help="what to do")
    parser.add_argument(
        "--cache-dir", type=Path, metavar="DIR",
        help="cache directory (default: $TUNISIAN_LUNG_CACHE, else the user cache directory)",
    )
    parser.set_defaults(handler=run)


def _format_bytes(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    size = count / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def run(args: argparse.Namespace) -> int:
    """Print the cache summary, or clear the cache and print how many entries were deleted."""
    from tunisian_lung.preprocess import PreprocessCache

    cache = PreprocessCache(args.cache_dir)
    if args.action == "clear":
        removed = cache.clear()
        print(f"deleted {removed} cache entries from {cache.directory}")
        return EXIT_OK
    info = cache.info()
    print(f"cache directory: {info.path}")
    print(f"entries: {info.entries}")
    print(f"size: {_format_bytes(info.bytes)}")
    return EXIT_OK
