"""``tunisian-lung validate``: check a release folder's tables and manifest, report every issue.

Exit codes: 0 valid, 1 invalid (the report lists every issue), 2 usage error (ROOT is not a
folder). A folder with only ``annotations.csv`` is a valid minimal release.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tunisian_lung.cli import EXIT_OK, EXIT_PROBLEM, UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``validate`` subcommand."""
    parser = subparsers.add_parser(
        "validate",
        help="check annotations.csv, clinical.csv and dataset.json of a release folder",
        description=(
            "Check every rule of the annotation and clinical tables and of dataset.json, and list "
            "every failure with its file, line, column, value and fix. Exit code 0 when valid, "
            "1 when invalid, 2 on a usage error."
        ),
    )
    parser.add_argument("root", metavar="ROOT", type=Path, help="dataset release folder")
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    parser.add_argument(
        "--deep",
        action="store_true",
        help="also check the annotations against the images (reads the DICOM/NIfTI files; slow)",
    )
    parser.add_argument(
        "--collapse-substages",
        action="store_true",
        help="accept sub-stages such as IIIA and count them as their main stage (III)",
    )
    parser.add_argument(
        "--allow-unlabelled",
        action="store_true",
        help="accept nodule rows with an empty class (tables without malignancy labels)",
    )
    parser.add_argument(
        "--allow-extra-columns",
        action="store_true",
        help="keep unknown columns as text instead of reporting them",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Validate the release folder ``args.root`` and print the report."""
    from tunisian_lung import layout
    from tunisian_lung.dataset import TunisianLungDataset
    from tunisian_lung.errors import DatasetLayoutError, ValidationIssue
    from tunisian_lung.manifest import Manifest, read_manifest
    from tunisian_lung.schema import validate_tables

    root: Path = args.root
    if not root.is_dir():
        raise UsageError(f"dataset folder not found: {root}")

    issues: list[ValidationIssue] = []
    manifest_file = str(root / layout.MANIFEST_NAME)
    try:
        manifest = read_manifest(root)
    except DatasetLayoutError as error:
        manifest = Manifest(is_default=True)
        issues.append(
            ValidationIssue(
                file=manifest_file, line=None, column=None, value=None, rule="manifest",
                message=str(error), fix="correct dataset.json (see docs/dataset-layout.md) or delete it to use the defaults",
            )
        )

    annotations_path = root / layout.ANNOTATIONS_NAME
    clinical_path = root / layout.CLINICAL_NAME
    report = None
    if not annotations_path.is_file():
        issues.append(
            ValidationIssue(
                file=str(annotations_path), line=None, column=None, value=None, rule="missing_file",
                message="annotations.csv not found", fix="add the annotation table (one row per nodule) to the folder",
            )
        )
    else:
        report = validate_tables(
            annotations_path,
            clinical_path if clinical_path.is_file() else None,
            collapse_substages=args.collapse_substages,
            allow_unlabelled=args.allow_unlabelled,
            allow_extra_columns=args.allow_extra_columns,
        )
        issues.extend(report.issues)

    deep_note = None
    if args.deep:
        if report is None or report.annotations is None or issues:
            deep_note = "deep checks skipped: fix the issues above first"
        else:
            from tunisian_lung.checks import deep_validate

            dataset = TunisianLungDataset(root, manifest, report.annotations, report.clinical, report)
            issues.extend(deep_validate(dataset))

    ok = not any(issue.severity == "error" for issue in issues)
    if args.json:
        payload = {
            "root": str(root),
            "ok": ok,
            "manifest": "default" if manifest.is_default else manifest_file,
            "annotation_rows": None if report is None or report.annotations is None else len(report.annotations),
            "clinical_rows": None if report is None or report.clinical is None else len(report.clinical),
            "column_mapping": {} if report is None else {name: dict(mapping) for name, mapping in report.column_mapping.items()},
            "deep": bool(args.deep) and deep_note is None,
            "issues": [issue.to_dict() for issue in issues],
        }
        print(json.dumps(payload, indent=2, ensure_ascii=False))
        return EXIT_OK if ok else EXIT_PROBLEM

    counts = []
    if report is not None and report.annotations is not None:
        counts.append(f"{len(report.annotations)} annotation rows")
    if report is not None and report.clinical is not None:
        counts.append(f"{len(report.clinical)} clinical rows")
    summary = ", ".join(counts) or "no table read"
    errors = sum(issue.severity == "error" for issue in issues)
    print(f"{root}: {'valid' if ok else f'invalid, {errors} error(s)'} ({summary})")
    if report is not None:
        for file, mapping in report.column_mapping.items():
            renamed = ", ".join(f"{source!r} -> {target}" for source, target in mapping.items())
            print(f"  columns mapped in {Path(file).name}: {renamed}")
    for issue in issues:
        print(f"  - {issue.format()}")
    if deep_note:
        print(f"  {deep_note}")
    elif args.deep:
        print("  deep checks of the annotations against the images ran")
    sys.stdout.flush()
    return EXIT_OK if ok else EXIT_PROBLEM
