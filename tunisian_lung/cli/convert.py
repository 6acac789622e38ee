"""``tunisian-lung convert``: DICOM series to NIfTI, one series or every series of a dataset.

``tunisian-lung convert SERIES_DIR OUT.nii.gz [--series UID]`` converts one series. A folder with
several series fails with the list of them unless ``--series`` picks one.
``tunisian-lung convert --dataset ROOT --out OUTDIR`` converts every series of a release into
``OUTDIR/nifti/<patient_id>/<series_id>.nii.gz``. The source folder is only read.

Exit codes: 0 every series converted, 1 a series failed (each failure is listed), 2 usage error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tunisian_lung.cli import EXIT_OK, EXIT_PROBLEM, UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``convert`` subcommand."""
    parser = subparsers.add_parser(
        "convert",
        help="convert a DICOM series, or every series of a dataset, to NIfTI (.nii.gz)",
        description=(
            "Convert a DICOM series folder to one NIfTI file (RAS affine, Hounsfield units), or with "
            "--dataset every series of a release into OUTDIR/nifti/<patient_id>/<series_id>.nii.gz. "
            "The source folders are only read."
        ),
    )
    parser.add_argument("series_dir", metavar="SERIES_DIR", type=Path, nargs="?", help="folder (or file) of one DICOM series")
    parser.add_argument("output", metavar="OUT", type=Path, nargs="?", help="output NIfTI path ending in .nii or .nii.gz")
    parser.add_argument("--series", metavar="UID", help="SeriesInstanceUID to convert when SERIES_DIR contains several series")
    parser.add_argument("--dataset", metavar="ROOT", type=Path, help="convert every series of this release folder")
    parser.add_argument("--out", metavar="OUTDIR", type=Path, help="new or empty output folder for --dataset")
    parser.add_argument(
        "--on-gap",
        choices=("raise", "resample"),
        default="raise",
        help="a series with missing slices fails (raise, the default) or gets them interpolated (resample, float32 output)",
    )
    parser.add_argument(
        "--on-nonuniform",
        choices=("raise", "resample"),
        default="raise",
        help="a series with uneven slice spacing fails (raise) or is interpolated onto its smallest spacing (resample, float32)",
    )
    parser.add_argument(
        "--on-tilt",
        choices=("raise", "resample"),
        default="raise",
        help="a gantry-tilted series fails (raise) or has its slices shifted onto a rectangular grid (resample, float32)",
    )
    parser.set_defaults(handler=run)


def _load_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"on_gap": args.on_gap, "on_nonuniform": args.on_nonuniform, "on_tilt": args.on_tilt}


def _convert_one(args: argparse.Namespace) -> int:
    from tunisian_lung.io.dicom import load_series
    from tunisian_lung.io.nifti import write_nifti

    if args.series_dir is None or args.output is None:
        raise UsageError("give SERIES_DIR and OUT.nii.gz, or --dataset ROOT --out OUTDIR")
    if not args.series_dir.exists():
        raise UsageError(f"DICOM series not found: {args.series_dir}")
    if not args.output.name.lower().endswith((".nii", ".nii.gz")):
        raise UsageError(f"output must end with .nii or .nii.gz, got {args.output}")
    source = args.series_dir.resolve()
    if source.is_dir() and args.output.resolve().is_relative_to(source):
        raise UsageError(f"output {args.output} is inside the source folder {args.series_dir}; write it elsewhere")
    volume = load_series(args.series_dir, series_uid=args.series, **_load_options(args))
    write_nifti(volume, args.output)
    print(f"wrote {args.output}: shape (z, y, x) {volume.shape}, spacing (x, y, z) {tuple(round(s, 4) for s in volume.spacing)} mm, dtype {volume.dtype}")
    return EXIT_OK


def _convert_dataset(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from tunisian_lung import layout
    from tunisian_lung.dataset import open_dataset
    from tunisian_lung.errors import MultipleSeriesError, TunisianLungError
    from tunisian_lung.io.dicom import load_series
    from tunisian_lung.io.nifti import write_nifti

    root: Path = args.dataset
    if args.out is None:
        raise UsageError("--dataset needs --out OUTDIR, a new or empty folder")
    if args.series_dir is not None or args.output is not None:
        raise UsageError("give either SERIES_DIR OUT or --dataset ROOT --out OUTDIR, not both")
    if not root.is_dir():
        raise UsageError(f"dataset folder not found: {root}")
    out_dir: Path = args.out
    if out_dir.resolve().is_relative_to(root.resolve()):
        raise UsageError(f"--out {out_dir} is inside the dataset folder {root}; the source is never written to, pick another folder")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UsageError(f"--out {out_dir} is not empty; pass a new or empty folder")

    dataset = open_dataset(root)
    failures: list[str] = []
    converted = 0
    for series in tqdm(dataset.series, desc="convert", unit="series"):
        target = layout.series_nifti_path(out_dir, series.patient_id, series.series_id)
        if series.dicom_dir is None:
            failures.append(f"{series.patient_id}/{series.series_id}: no DICOM folder at {layout.series_dicom_dir(root, series.patient_id, series.series_id)}")
            continue
        try:
            try:
                volume = load_series(series.dicom_dir, **_load_options(args))
            except MultipleSeriesError:
                volume = load_series(series.dicom_dir, series_uid=series.series_id, **_load_options(args))
            write_nifti(volume, target)
            converted += 1
        except TunisianLungError as error:
            failures.append(f"{series.patient_id}/{series.series_id}: {type(error).__name__}: {error}")
    print(f"converted {converted} of {len(dataset.series)} series into {out_dir / layout.NIFTI_DIR}")
    for failure in failures:
        print(f"  failed: {failure}", file=sys.stderr)
    return EXIT_PROBLEM if failures else EXIT_OK


def run(args: argparse.Namespace) -> int:
    """Convert one series or a whole dataset, as the arguments ask."""
    if args.dataset is not None:
        return _convert_dataset(args)
    if args.out is not None:
        raise UsageError("--out is only used with --dataset; for one series give OUT.nii.gz as the second argument")
    return _convert_one(args)
