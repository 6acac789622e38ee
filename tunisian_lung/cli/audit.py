"""``tunisian-lung audit``: list identifying DICOM attributes left in a folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from tunisian_lung.cli import EXIT_OK, EXIT_PROBLEM, UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``audit`` subcommand."""
    parser = subparsers.add_parser(
        "audit",
        help="list identifying attributes left in DICOM files (exit 1 when any is found)",
        description=(
            "Read every DICOM header under ROOT and list, per file, the person names, birth dates, "
            "addresses, institution names, other patient IDs and accession numbers, free-text "
            "descriptions, private attributes and burned-in annotation flags that remain. "
            "Pixel data are not inspected."
        ),
    )
    parser.add_argument("root", metavar="ROOT", type=Path, help="release folder, raw export or DICOM file")
    parser.add_argument("--progress", action="store_true", help="show a progress bar over the files")
    parser.add_argument(
        "--summary",
        action="store_true",
        help="print only the number of files per attribute, not one line per attribute and file",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the audit report; return 1 when anything identifying was found."""
    from tunisian_lung.packaging.audit import audit

    if not args.root.exists():
        raise UsageError(f"{args.root} not found")
    report = audit(args.root, progress=args.progress)
    print(report.format(summary_only=args.summary))
    return EXIT_OK if report.clean else EXIT_PROBLEM
