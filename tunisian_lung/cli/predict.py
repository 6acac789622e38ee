"""``tunisian-lung predict``: classify one CT series with a trained run."""

from __future__ import annotations

import argparse
from pathlib import Path

from tunisian_lung.cli import EXIT_OK, UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``predict`` subcommand."""
    parser = subparsers.add_parser(
        "predict",
        help="print the probability and label of one scan (DICOM folder or NIfTI file)",
        description=(
            "Preprocess the scan with the run's recorded preprocessing and print the probability "
            "of class 1 and the predicted label at the run's threshold."
        ),
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="run folder written by `tunisian-lung train`")
    parser.add_argument("path", metavar="SERIES_DIR_OR_NIFTI", type=Path, help="DICOM series folder or NIfTI file")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best", help="checkpoint to use (default best)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="device (default auto)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Predict and print ``probability=... label=...``."""
    from tunisian_lung.training import predict
    from tunisian_lung.training.inference import read_run_context

    if not args.run_dir.is_dir():
        raise UsageError(f"run folder {args.run_dir} not found")
    if not args.path.exists():
        raise UsageError(f"scan {args.path} not found")
    probability, label = predict(args.run_dir, args.path, checkpoint=args.checkpoint, device=args.device)
    names = read_run_context(args.run_dir).get("class_names") or []
    label_name = f" ({names[label]})" if label < len(names) else ""
    print(f"probability={probability:.4f} label={label}{label_name}")
    return EXIT_OK
