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
            "of class 1 and the predicted label at the run's threshold. For a run with more than "
            "two classes (--target stage), print the probability of every class and the most "
            "probable class."
        ),
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="run folder written by `tunisian-lung train`")
    parser.add_argument("path", metavar="SERIES_DIR_OR_NIFTI", type=Path, help="DICOM series folder or NIfTI file")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best", help="checkpoint to use (default best)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="device (default auto)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Predict and print ``probability=... label=...`` (binary) or ``probabilities=...`` (more classes)."""
    from tunisian_lung.training import predict_probabilities

    if not args.run_dir.is_dir():
        raise UsageError(f"run folder {args.run_dir} not found")
    if not args.path.exists():
        raise UsageError(f"scan {args.path} not found")
    prediction = predict_probabilities(args.run_dir, args.path, checkpoint=args.checkpoint, device=args.device)
    label = prediction.label
    label_name = f" ({prediction.class_name})" if prediction.class_name is not None else ""
    if len(prediction.probabilities) == 2:
        print(f"probability={prediction.probabilities[1]:.4f} label={label}{label_name}")
    else:
        values = ",".join(f"{value:.4f}" for value in prediction.probabilities)
        print(f"probabilities={values} label={label}{label_name}")
    return EXIT_OK
