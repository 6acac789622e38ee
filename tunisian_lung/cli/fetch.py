"""``tunisian-lung fetch``: download a file with resume and retries, check it, and extract it."""

from __future__ import annotations

import argparse
import re

from tunisian_lung.cli import EXIT_OK, UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``fetch`` subcommand."""
    parser = subparsers.add_parser(
        "fetch",
        help="download a release or archive with resume, retries and a sha256 check",
        description=(
            "Stream URL to DEST (a file, or a folder that keeps the URL's file name), resuming an "
            "interrupted download and retrying connection errors and server errors. With --sha256 "
            "the file is checked before it is moved into place. With --extract, DEST is a folder "
            "and zip or tar members that would land outside it are rejected."
        ),
    )
    parser.add_argument("url", metavar="URL", help="HTTP or HTTPS address of the file")
    parser.add_argument(
        "dest", metavar="DEST", help="target file, or folder (an existing one, or a name ending with '/', which is created)"
    )
    parser.add_argument("--sha256", metavar="HEX", help="expected SHA-256 of the file (64 hexadecimal characters)")
    parser.add_argument("--extract", action="store_true", help="extract a zip or tar archive into DEST")
    parser.add_argument("--retries", type=int, default=5, help="retries after a failed attempt (default 5)")
    parser.add_argument("--timeout", type=float, default=30.0, help="connection and read timeout in seconds (default 30)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Download (and extract) and print where the result is."""
    from tunisian_lung.packaging.fetch import fetch

    if not args.url.startswith(("http://", "https://")):
        raise UsageError(f"URL must start with http:// or https://, got {args.url!r}")
    if args.sha256 is not None and re.fullmatch(r"[0-9a-fA-F]{64}", args.sha256) is None:
        raise UsageError(f"--sha256 must be 64 hexadecimal characters, got {args.sha256!r}")
    if args.retries < 0:
        raise UsageError(f"--retries must be >= 0, got {args.retries}")
    path = fetch(
        args.url,
        args.dest,
        sha256=args.sha256,
        extract=args.extract,
        retries=args.retries,
        timeout=args.timeout,
        progress=not args.no_progress,
    )
    print(path)
    return EXIT_OK
