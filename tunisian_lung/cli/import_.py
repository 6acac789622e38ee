"""``tunisian-lung import lidc|luna16``: turn LIDC-IDRI or LUNA16 data into a release folder."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

from tunisian_lung.cli import EXIT_OK, UsageError


def register(subparsers: Any) -> None:
    """Add the ``import`` subcommand with its ``lidc`` and ``luna16`` sources."""
    parser = subparsers.add_parser(
        "import",
        help="import LIDC-IDRI or LUNA16 into a release folder",
        description="Import a public collection into a new release folder (DICOM copied, sources only read).",
    )
    parser.set_defaults(handler=run, import_source=None)
    sources = parser.add_subparsers(dest="import_source", metavar="SOURCE")

    lidc = sources.add_parser(
        "lidc",
        help="LIDC-IDRI DICOM series with the readers' XML files",
        description=(
            "Group the LIDC readers' nodule marks, classify each nodule by the median malignancy rating "
            "and write annotations.csv, lidc_nodules.csv, readers.csv and dataset.json."
        ),
    )
    lidc.add_argument("--dicom", type=Path, required=True, metavar="DIR", help="folder searched recursively for DICOM files")
    lidc.add_argument("--xml", type=Path, required=True, metavar="DIR", help="folder searched recursively for LIDC *.xml files")
    lidc.add_argument("--out", type=Path, required=True, metavar="RELEASE", help="release folder to create")
    lidc.add_argument(
        "--group-distance-mm",
        type=float,
        default=5.0,
        help="marks of different readers are one nodule when their centres are at most this far apart, in mm (default 5)",
    )
    lidc.add_argument(
        "--diameter",
        choices=("equivalent_sphere", "max_inplane"),
        default="equivalent_sphere",
        help="per-reader diameter estimate averaged into diameter_mm (default equivalent_sphere)",
    )
    lidc.add_argument(
        "--benign-max",
        type=float,
        default=2.5,
        help="median malignancy rating at or below which a nodule is benign (default 2.5)",
    )
    lidc.add_argument(
        "--malignant-min",
        type=float,
        default=3.5,
        help="median malignancy rating at or above which a nodule is malignant (default 3.5)",
    )
    lidc.add_argument(
        "--include-indeterminate",
        action="store_true",
        help="also write indeterminate and unrated nodules to annotations.csv, with an empty class",
    )
    lidc.add_argument(
        "--lenient",
        action="store_true",
        help="skip (and log) contours whose slice is not in the series instead of failing",
    )
    lidc.add_argument("--overwrite", action="store_true", help="replace RELEASE if it exists")
    lidc.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    lidc.set_defaults(handler=run)

    luna = sources.add_parser(
        "luna16",
        help="LUNA16 CSV files with .mhd/.raw volumes or LIDC DICOM folders",
        description=(
            "Write a release from LUNA16's annotations.csv (and candidates.csv). Series named in the CSV "
            "but absent under --images are listed in missing_series.csv and on stderr."
        ),
    )
    luna.add_argument("--annotations", type=Path, required=True, metavar="CSV", help="LUNA16 annotations.csv")
    luna.add_argument("--candidates", type=Path, default=None, metavar="CSV", help="LUNA16 candidates.csv (optional)")
    luna.add_argument(
        "--images", type=Path, required=True, metavar="DIR", help="folder with <seriesuid>.mhd files or DICOM series"
    )
    luna.add_argument("--out", type=Path, required=True, metavar="RELEASE", help="release folder to create")
    luna.add_argument(
        "--fail-on-missing",
        action="store_true",
        help="fail when a series named in a CSV is not under --images (default: import the rest and report it)",
    )
    luna.add_argument(
        "--include-unannotated",
        action="store_true",
        help="also import CT series under --images that no CSV names, as nodule-free scans",
    )
    luna.add_argument("--overwrite", action="store_true", help="replace RELEASE if it exists")
    luna.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    luna.set_defaults(handler=run)


def _print_unlabelled_hint(release: Path) -> None:
    """Print how to open the release when some of its nodule rows have an empty ``class``."""
    with (release / "annotations.csv").open(encoding="utf-8", newline="") as stream:
        rows = [row for row in csv.DictReader(stream) if row.get("nodule_present") == "1"]
    unlabelled = sum(1 for row in rows if not row.get("class"))
    if unlabelled:
        print(
            f"{unlabelled} of {len(rows)} nodule rows have no malignancy label (empty class): validate the release "
            "with 'tunisian-lung validate --allow-unlabelled' and open it with open_dataset(root, allow_unlabelled=True)"
        )


def _run_lidc(args: argparse.Namespace) -> int:
    from tunisian_lung.errors import SourceImportError
    from tunisian_lung.importers.lidc import LidcImportConfig, MalignancyMapping, import_lidc

    try:
        config = LidcImportConfig(
            group_distance_mm=args.group_distance_mm,
            malignancy=MalignancyMapping(benign_max=args.benign_max, malignant_min=args.malignant_min),
            diameter=args.diameter,
            include_indeterminate=args.include_indeterminate,
            strict=not args.lenient,
        )
    except SourceImportError as error:
        raise UsageError(str(error)) from error
    report = import_lidc(
        args.dicom, args.xml, args.out, config=config, overwrite=args.overwrite, progress=not args.no_progress
    )
    print(
        f"imported {len(report.series_imported)} series with {report.nodules_in_annotations} nodules into {report.out}; "
        f"{report.groups_excluded} indeterminate or unrated nodules and {report.small_nodules} nodules under 3 mm "
        "are listed in lidc_nodules.csv only"
    )
    if report.series_excluded:
        print(f"{len(report.series_excluded)} series left out: their only nodules are indeterminate or unrated")
    if report.series_without_xml:
        print(f"{len(report.series_without_xml)} DICOM series have no LIDC XML file and were not imported")
    if report.xml_without_series:
        print(f"{len(report.xml_without_series)} XML files name a series that is not under {args.dicom}")
    _print_unlabelled_hint(report.out)
    return EXIT_OK


def _run_luna16(args: argparse.Namespace) -> int:
    from tunisian_lung.importers.luna16 import import_luna16

    report = import_luna16(
        args.annotations,
        args.images,
        args.out,
        candidates_csv=args.candidates,
        missing="error" if args.fail_on_missing else "report",
        include_unannotated=args.include_unannotated,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(f"imported {len(report.series_imported)} series with {report.nodules_in_annotations} nodules into {report.out}")
    if report.missing_series:
        print(
            f"{len(report.missing_series)} series named in the CSV files were not found under {args.images}; "
            f"see {report.out / 'missing_series.csv'}"
        )
    if report.series_not_in_csv:
        print(f"{len(report.series_not_in_csv)} CT series under {args.images} are in no CSV and were not imported")
    _print_unlabelled_hint(report.out)
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    """Run the chosen importer and print a summary."""
    if args.import_source == "lidc":
        return _run_lidc(args)
    if args.import_source == "luna16":
        return _run_luna16(args)
    raise UsageError("choose a source: 'tunisian-lung import lidc ...' or 'tunisian-lung import luna16 ...'")
