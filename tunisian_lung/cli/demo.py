"""``tunisian-lung demo``: run the main job end to end on the bundled real CT and phantoms."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tunisian_lung.cli import EXIT_OK, UsageError


def register(subparsers: Any) -> None:
    """Add the ``demo`` subcommand."""
    parser = subparsers.add_parser(
        "demo",
        help="build, validate, preprocess, split, train, evaluate and predict on sample data",
        description=(
            "Run the whole library on data that ship with it: a synthetic cohort of phantom CT "
            "scans and the real LIDC-IDRI-0001 chest CT. Trains a 3D ResNet-10 (from scratch "
            "unless --weights is given), evaluates it, classifies the real CT, draws its nodule "
            "and writes a report. The defaults took about 31 s on an idle 2-core virtual machine."
        ),
    )

    parser.add_argument(
        "--out", type=Path, default=Path("tunisian-lung-demo"), help="output folder (default ./tunisian-lung-demo)"
    )
    parser.add_argument("--epochs", type=int, default=3, help="training epochs (default 3)")
    parser.add_argument(
        "--patients", type=int, default=30, help="synthetic patients, at least 10 (default 30)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of data, split and training (default 0)")
    parser.add_argument(
        "--weights", type=Path, default=None, metavar="FILE",
        help="MedicalNet ResNet-10 checkpoint (resnet_10.pth) to fine-tune from; default: from scratch",
    )
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto",
        help="training device (default auto: CUDA when available, else CPU)",
    )

    parser.add_argument("--batch-size", type=int, default=4, help="scans per training batch (default 4)")
    parser.add_argument("--workers", type=int, default=1, help="preprocessing worker processes (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier demo output in --out")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo and print where every output is."""
    from tunisian_lung.demo import run_demo

    if args.patients < 10:
        raise UsageError(f"--patients must be at least 10 so every split gets both classes, got {args.patients}")
    if args.epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {args.epochs}")
    if args.batch_size < 1 or args.workers < 1:
        raise UsageError("--batch-size and --workers must be at least 1")
    if args.weights is not None and not args.weights.is_file():
        raise UsageError(f"--weights file not found: {args.weights}")

    def echo(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    result = run_demo(
        args.out,
        patients=args.patients,
        epochs=args.epochs,
        seed=args.seed,
        weights=args.weights,
        device=args.device,
        batch_size=args.batch_size,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        echo=echo,
    )
    metrics = result.test_metrics
    print(f"demo finished in {sum(result.seconds.values()):.0f} s")
    print(
        f"test split: accuracy {metrics.get('accuracy', float('nan')):.3f}, "
        f"ROC AUC {metrics.get('roc_auc', float('nan')):.3f} on {metrics.get('n', 0)} scans "
        "(a check that the pipeline runs, not a measure of the model; intervals in the report)"
    )
    print(f"real CT (LIDC-IDRI-0001): probability of cancer {result.real_ct_probability:.3f} (model trained on phantoms only)")
    print("outputs:")
    for name, path in result.outputs.items():
        print(f"  {name}: {path}")
    return EXIT_OK
