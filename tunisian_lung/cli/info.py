"""``tunisian-lung info``: print the cohort summary of a release folder as a table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Mapping

from tunisian_lung.cli import EXIT_OK, UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``info`` subcommand."""
    parser = subparsers.add_parser(
        "info",
        help="summarise a release: patients, histology, stage, sex, age, nodules",
        description="Open a release folder (tables only, no pixel data) and print its describe() summary.",
    )
    parser.add_argument("root", metavar="ROOT", type=Path, help="dataset release folder")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument(
        "--no-validate",
        action="store_true",
        help="summarise even when the tables break rules (cells that fail to parse count as unknown)",
    )
    # The lenient keywords of `validate`, so that a release it accepts with them opens here too.
    parser.add_argument(
        "--collapse-substages",
        action="store_true",
        help="accept sub-stages such as IIIA and count them as their main stage (III)",
    )
    parser.add_argument(
        "--allow-unlabelled",
        action="store_true",
        help="accept nodule rows with an empty class (tables without malignancy labels, such as LUNA16)",
    )
    parser.add_argument(
        "--allow-extra-columns",
        action="store_true",
        help="keep unknown columns as text instead of reporting them",
    )
    parser.set_defaults(handler=run)


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def format_summary(summary: Mapping[str, Any], title: str) -> str:
    """Render a :meth:`TunisianLungDataset.describe` dict as an aligned two-column table."""
    rows: list[tuple[str, str]] = [
        ("patients", str(summary["patients"])),
        ("series", str(summary["series"])),
        ("nodules", str(summary["nodules"])),
    ]
    for section in ("health_status", "histology", "stage", "sex"):
        rows.append((section.replace("_", " "), ""))
        counts: Mapping[str, int] = summary[section]
        rows.extend((f"  {key}", str(value)) for key, value in counts.items())
        if not counts:
            rows.append(("  (none)", ""))
    age = summary["age_years"]
    rows.append(("age (years)", f"{_number(age['min'])} - {_number(age['max'])}, mean {_number(age['mean'])}, known for {age['known']}"))
    labels = summary["nodule_labels"]
    rows.append(("nodule labels", f"{labels['malignant']} malignant, {labels['benign']} benign, {labels['unlabelled']} unlabelled"))
    per_patient = summary["nodules_per_patient"]
    rows.append(("nodules per patient", f"mean {_number(per_patient['mean'])}, max {_number(per_patient['max'])}"))
    rows.extend((f"  {key} nodule(s)", f"{value} patient(s)") for key, value in per_patient["counts"].items())
    diameter = summary["diameter_mm"]
    rows.append(
        (
            "diameter (mm)",
            f"{_number(diameter['min'])} - {_number(diameter['max'])}, median {_number(diameter['median'])}, mean {_number(diameter['mean'])}",
        )
    )
    rows.extend((f"  ({key}] mm", f"{value} nodule(s)") for key, value in diameter["bins"].items())

    width = max(len(label) for label, _ in rows)
    lines = [title, "-" * len(title)]
    lines.extend(f"{label:<{width}}  {value}".rstrip() for label, value in rows)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the summary of the release folder ``args.root``."""
    from tunisian_lung.dataset import open_dataset

    root: Path = args.root
    if not root.is_dir():
        raise UsageError(f"dataset folder not found: {root}")
    dataset = open_dataset(
        root,
        validate=not args.no_validate,
        collapse_substages=args.collapse_substages,
        allow_unlabelled=args.allow_unlabelled,
        allow_extra_columns=args.allow_extra_columns,
    )
    summary = dataset.describe()
    if args.json:
        print(json.dumps(summary, indent=2))
        return EXIT_OK
    manifest = dataset.manifest
    if manifest.is_default:
        title = f"{root} (no dataset.json; coordinate space {manifest.coordinate_space})"
    else:
        title = f"{manifest.name} {manifest.version} ({manifest.license}; coordinate space {manifest.coordinate_space})"
    print(format_summary(summary, title))
    return EXIT_OK
