"""``tunisian-lung merge RELEASE... --out RELEASE``: combine releases from several sites."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tunisian_lung.cli import EXIT_OK, UsageError


def register(subparsers: Any) -> None:
    """Add the ``merge`` subcommand."""
    parser = subparsers.add_parser(
        "merge",
        help="merge releases from several sites into one, with a site column",
        description=(
            "Copy two or more releases into a new one. Tables with a patient_id column get a site column; "
            "ids that appear in two sites are an error unless each release gets a --prefix."
        ),
    )
    parser.add_argument("releases", type=Path, nargs="+", metavar="RELEASE", help="release folders to merge")
    parser.add_argument("--out", type=Path, required=True, metavar="RELEASE", help="merged release folder to create")
    parser.add_argument(
        "--prefix",
        action="append",
        default=None,
        metavar="P",
        help="prefix for the patient and series ids of one release; give it once per release, in order ('' for none)",
    )
    parser.add_argument(
        "--site",
        action="append",
        default=None,
        metavar="NAME",
        help="site name of one release; give it once per release, in order (default: each dataset.json name)",
    )
    parser.add_argument("--name", default="merged", help="name written to the merged dataset.json (default merged)")
    parser.add_argument("--version", dest="release_version", default="1.0", metavar="VERSION", help="version of the merged release (default 1.0)")
    parser.add_argument(
        "--drop-partial-clinical",
        action="store_true",
        help="when only some releases have clinical.csv, merge without it (default: fail)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace the output folder if it exists")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Merge the releases and print a summary."""
    from tunisian_lung.importers.merge import merge_releases

    count = len(args.releases)
    if count < 2:
        raise UsageError(f"merge needs at least two releases, got {count}")
    for option, values in (("--prefix", args.prefix), ("--site", args.site)):
        if values is not None and len(values) != count:
            raise UsageError(f"give {option} once per release: {count} releases, {len(values)} values")
    report = merge_releases(
        args.releases,
        args.out,
        prefixes=args.prefix,
        site_names=args.site,
        name=args.name,
        version=args.release_version,
        drop_partial_clinical=args.drop_partial_clinical,
        overwrite=args.overwrite,
    )
    print(
        f"merged {len(report.sites)} sites ({', '.join(report.sites)}) into {report.out}: "
        f"{report.patients} patients, {report.series} series"
    )
    if report.files_not_merged:
        print(f"not carried over: {', '.join(report.files_not_merged)}")
    return EXIT_OK
