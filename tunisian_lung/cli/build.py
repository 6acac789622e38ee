"""``tunisian-lung build``: build a release folder from a raw DICOM export and its tables."""

from __future__ import annotations

import argparse
from pathlib import Path

from tunisian_lung.cli import EXIT_OK, UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``build`` subcommand."""
    parser = subparsers.add_parser(
        "build",
        help="build a checksummed, optionally de-identified release from a raw DICOM export",
        description=(
            "Copy the raw DICOM export into the release layout (the export is never changed), "
            "validate the tables and images, optionally de-identify with the DICOM Basic "
            "Application Level Confidentiality Profile and convert to NIfTI, and write "
            "dataset.json and the dataset card. The release appears only when complete."
        ),
    )
    parser.add_argument("raw_dir", metavar="RAW_DIR", type=Path, help="folder of the raw DICOM export (read only)")
    parser.add_argument("--annotations", required=True, type=Path, metavar="CSV", help="annotation table, one row per nodule")
    parser.add_argument("--clinical", type=Path, metavar="CSV", help="clinical table, one row per patient")
    parser.add_argument("--out", required=True, type=Path, metavar="RELEASE", help="release folder to create or replace")
    parser.add_argument(
        "--deidentify",
        action="store_true",
        help="apply the Basic Profile with the options retain modified dates, patient characteristics, "
        "device identity, clean descriptors, retain safe private",
    )
    parser.add_argument("--nifti", action="store_true", help="also write nifti/<patient>/<series>.nii.gz")
    parser.add_argument(
        "--pseudonym-map",
        type=Path,
        metavar="FILE",
        help="pseudonym map CSV, outside the release (default RELEASE.pseudonyms.csv); reused when present",
    )
    parser.add_argument(
        "--allow-burned-in",
        action="store_true",
        help="keep images flagged with burned-in annotations and secondary captures (excluded by default)",
    )
    parser.add_argument("--name", default="tunisian_lung", help="dataset name in dataset.json (default tunisian_lung)")
    parser.add_argument("--release-version", default="1.0.0", help="release version in dataset.json (default 1.0.0)")
    parser.add_argument("--license", default="CC-BY-4.0", help="licence, an SPDX identifier (default CC-BY-4.0)")
    parser.add_argument("--citation", help="how to cite the dataset")
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Build the release and print a summary; return the exit code."""
    from tunisian_lung.packaging.build import build_release

    if not args.raw_dir.is_dir():
        raise UsageError(f"raw export folder {args.raw_dir} not found")
    if not args.annotations.is_file():
        raise UsageError(f"annotation table {args.annotations} not found")
    if args.clinical is not None and not args.clinical.is_file():
        raise UsageError(f"clinical table {args.clinical} not found")
    result = build_release(
        args.raw_dir,
        args.annotations,
        clinical=args.clinical,
        out=args.out,
        deidentify=args.deidentify,
        nifti=args.nifti,
        pseudonym_map=args.pseudonym_map,
        allow_burned_in=args.allow_burned_in,
        progress=args.progress,
        name=args.name,
        version=args.release_version,
        license=args.license,
        citation=args.citation,
    )
    counts = result.counts
    print(
        f"built {result.root}: {counts['patients']} patient(s), {counts['series']} series, "
        f"{counts['nodules']} nodule(s), {counts['dicom_files']} DICOM file(s)"
    )
    for item in result.excluded:
        print(f"excluded {item.file}: {item.reason}")
    for issue in result.issues:
        print(f"warning: {issue.format()}")
    if result.skipped_series:
        print(f"{len(result.skipped_series)} raw series without annotation rows were not copied")
    if result.pseudonym_map is not None:
        print(f"pseudonym map: {result.pseudonym_map} (keep it private, outside the release)")
    return EXIT_OK
