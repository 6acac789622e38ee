"""``tunisian-lung synth OUT``: write a synthetic release for tests, demos and benchmarks."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tunisian_lung.cli import EXIT_OK, UsageError


def register(subparsers: Any) -> None:
    """Add the ``synth`` subcommand."""
    parser = subparsers.add_parser(
        "synth",
        help="write a synthetic release (phantom CT series with known nodules)",
        description=(
            "Write a release folder of synthetic chest CT series (DICOM), annotations.csv, "
            "clinical.csv and dataset.json. The same arguments always give identical files."
        ),
    )
    parser.add_argument("out", type=Path, metavar="OUT", help="folder to create (must not exist or be empty)")
    parser.add_argument("--patients", type=int, default=10, help="number of patients (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--slices", type=int, default=None, help="slices per series (default: 40-80, drawn per patient)"
    )
    parser.add_argument(
        "--rows", type=int, default=None, help="rows and columns per slice (default 64; 512 for full resolution)"
    )
    parser.add_argument(
        "--healthy-fraction", type=float, default=0.2, help="fraction of healthy patients (default 0.2)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Write the release and print its path."""
    from tunisian_lung.synthetic import write_synthetic_release

    if args.patients < 1:
        raise UsageError(f"--patients must be at least 1, got {args.patients}")
    if args.seed < 0:
        raise UsageError(f"--seed must be non-negative, got {args.seed}")
    if not 0.0 <= args.healthy_fraction <= 1.0:
        raise UsageError(f"--healthy-fraction must be in [0, 1], got {args.healthy_fraction}")
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        raise UsageError(f"{args.out} already exists and is not empty; choose a new folder")
    try:
        out = write_synthetic_release(
            args.out,
            patients=args.patients,
            seed=args.seed,
            slices=args.slices,
            rows=args.rows,
            healthy_fraction=args.healthy_fraction,
            progress=not args.no_progress,
        )
    except ValueError as error:
        raise UsageError(str(error)) from error
    print(f"synthetic release written to {out}")
    return EXIT_OK
