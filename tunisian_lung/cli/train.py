"""``tunisian-lung train``: fine-tune MedicalNet 3D ResNets on a release and write run folders.

With one ``--model`` the run folder is ``--out``. With ``--models resnet10,resnet18,...`` each
model gets ``OUT/<model>`` and ``OUT/comparison.md`` compares their test metrics. The target
sets the number of classes: 2 for ``cancer`` and ``malignant_nodule``, 4 for ``stage``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

from tunisian_lung.cli import EXIT_OK, UsageError

_MODEL_PATTERN = re.compile(r"^(?:resnet)?(\d+)$")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand."""
    parser = subparsers.add_parser(
        "train",
        help="fine-tune a MedicalNet 3D ResNet on the train split and evaluate it on test",
        description=(
            "Train a scan-level classifier (cancer vs healthy by default, or stages I-IV with "
            "--target stage) on the train split, pick the best epoch on val, and evaluate it once "
            "on test with bootstrap 95% confidence intervals. Writes config, history, "
            "checkpoints, a training-curve PNG and report.md."
        ),
    )
    parser.add_argument("root", metavar="ROOT", type=Path, help="dataset release folder")
    parser.add_argument("--out", required=True, type=Path, metavar="RUN_DIR", help="output run folder")
    parser.add_argument("--model", default="resnet10", help="resnet10, 18, 34, 50, 101, 152 or 200 (default resnet10)")
    parser.add_argument(
        "--models",
        default=None,
        metavar="LIST",
        help="comma-separated models trained one after another, e.g. resnet10,resnet18,resnet34,resnet50",
    )
    parser.add_argument(
        "--weights",
        type=Path,
        default=None,
        metavar="PATH",
        help="pretrained MedicalNet file, or a folder containing resnet_<depth>_23dataset.pth or "
        "resnet_<depth>.pth for each model; without it training starts from random weights",
    )
    parser.add_argument("--config", type=Path, default=None, metavar="JSON", help="TrainConfig JSON file whose values the options below override")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default 10)")
    parser.add_argument("--batch-size", type=int, default=None, help="volumes per step and process (default 8)")
    parser.add_argument("--lr", type=float, default=None, help="backbone learning rate (default 1e-4)")
    parser.add_argument("--head-lr", type=float, default=None, help="learning rate of the new linear head (default 1e-3)")
    parser.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), default=None, help="optimiser (default adamw)")
    parser.add_argument("--scheduler", choices=("none", "cosine", "step"), default=None, help="learning-rate schedule (default cosine)")
    parser.add_argument("--freeze-backbone-epochs", type=int, default=None, metavar="N", help="train only the head for the first N epochs (default 0)")
    parser.add_argument("--patience", type=int, default=None, help="stop after this many epochs without val improvement (default: never)")
    parser.add_argument(
        "--early-stopping-metric",
        default=None,
        choices=("loss", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "roc_auc"),
        help="validation metric that picks the best epoch (default loss); sensitivity and "
        "specificity are for binary targets, roc_auc is the macro one-vs-rest AUC for stage",
    )
    parser.add_argument("--amp", choices=("bfloat16", "float16", "none"), default=None, help="autocast dtype on CUDA (default bfloat16)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="auto picks CUDA when available (default auto)")
    parser.add_argument("--num-workers", type=int, default=None, help="DataLoader worker processes (default 0)")
    parser.add_argument("--seed", type=int, default=None, help="seed of splits, initialisation and shuffling (default 0)")
    parser.add_argument("--preset", default="reference", help="preprocessing preset (default reference: -1000..400 HU to [-1, 1], 64^3)")
    parser.add_argument("--shape", type=int, default=None, metavar="N", help="resize volumes to N^3 voxels instead of the preset's shape")
    parser.add_argument("--splits", type=Path, default=None, metavar="FILE", help="splits.json to use (default ROOT/splits.json, else new 70/15/15 splits)")
    parser.add_argument(
        "--target",
        choices=("cancer", "malignant_nodule", "stage"),
        default="cancer",
        help="scan label: cancer (default) or malignant_nodule (2 classes), or stage (4 classes, "
        "I-IV; needs --exclude-unlabeled because healthy patients have no stage)",
    )
    parser.add_argument(
        "--exclude-unlabeled",
        action="store_true",
        help="leave out series without a label for --target instead of stopping with an error",
    )
    parser.add_argument("--augment", action="store_true", help="augment the training split")
    parser.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from checkpoints/last.pt")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(handler=run)


def parse_depth(name: str) -> int:
    """Return the depth of a model name such as ``resnet18`` or ``18``."""
    match = _MODEL_PATTERN.match(name.strip().lower())
    if match is None:
        raise UsageError(f"invalid model name {name!r}; use resnet10, resnet18, resnet34, resnet50, resnet101, resnet152 or resnet200")
    return int(match.group(1))


def _weights_for(weights: Path | None, depth: int) -> str | None:
    if weights is None:
        return None
    if weights.is_dir():
        for name in (f"resnet_{depth}_23dataset.pth", f"resnet_{depth}.pth"):
            if (weights / name).is_file():
                return str(weights / name)
        raise UsageError(f"no resnet_{depth}_23dataset.pth or resnet_{depth}.pth in {weights}")
    if not weights.is_file():
        raise UsageError(f"weights file {weights} not found")
    return str(weights)


def _base_config(args: argparse.Namespace) -> Any:
    from tunisian_lung.training import TrainConfig

    base = TrainConfig.from_json(args.config) if args.config is not None else TrainConfig()
    overrides = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "head_lr": args.head_lr,
        "optimizer": args.optimizer,
        "scheduler": args.scheduler,
        "freeze_backbone_epochs": args.freeze_backbone_epochs,
        "patience": args.patience,
        "early_stopping_metric": args.early_stopping_metric,
        "amp_dtype": args.amp,
        "device": args.device,
        "num_workers": args.num_workers,
        "seed": args.seed,
    }
    return base.replace(**{k: v for k, v in overrides.items() if v is not None})


def _class_count(args: argparse.Namespace, base: Any) -> int:
    """Return the number of classes of ``--target``; a ``--config`` file must not contradict it."""
    from tunisian_lung.labels import CLASS_NAMES

    count = len(CLASS_NAMES[args.target])
    if args.config is not None and base.num_classes != count:
        raise UsageError(
            f"--config {args.config} sets num_classes={base.num_classes}, but --target "
            f"{args.target} has {count} classes; remove num_classes from the file or change --target"
        )
    return count


def run(args: argparse.Namespace) -> int:
    """Train every requested model and print where the results are."""
    from tunisian_lung.errors import ConfigError, LabelError
    from tunisian_lung.training import train, write_comparison
    from tunisian_lung.training.data import prepare_run_data
    from tunisian_lung.training.report import sample_size_warnings

    if not args.root.is_dir():
        raise UsageError(f"dataset folder {args.root} not found")
    names = [n for n in (args.models.split(",") if args.models else [args.model]) if n.strip()]
    depths = [parse_depth(name) for name in names]
    if len(set(depths)) != len(depths):
        raise UsageError(f"--models lists a model twice: {args.models}")
    if args.models and args.resume:
        raise UsageError("--resume continues one run folder; use it with --model, not --models")
    base = _base_config(args)
    num_classes = _class_count(args, base)
    # Under torchrun each process runs this command; only rank 0 prints.
    main_process = int(os.environ.get("RANK", "0")) == 0

    run_dirs: dict[str, Path] = {}
    for depth in depths:
        name = f"resnet{depth}"
        run_dir = args.out / name if args.models else args.out
        try:
            config = base.replace(
                depth=depth, pretrained=_weights_for(args.weights, depth), num_classes=num_classes
            )
        except ConfigError as error:
            raise UsageError(f"--target {args.target}: {error}") from error
        try:
            data = prepare_run_data(
                args.root,
                run_dir,
                preset_name=args.preset,
                shape=args.shape,
                splits_path=args.splits,
                seed=config.seed,
                target=args.target,
                augment=args.augment,
                exclude_unlabeled=args.exclude_unlabeled,
            )
        except LabelError as error:
            if args.exclude_unlabeled:
                raise
            raise UsageError(
                f"{error}\nRerun with --exclude-unlabeled to train on the labelled series only."
            ) from error
        if main_process:
            classes = ""
            if num_classes > 2:
                classes = f" ({num_classes} classes: {', '.join(data.context['class_names'])})"
            print(
                f"training {name} on {len(data.train)} scans{classes}, validating on {len(data.val)}",
                file=sys.stderr,
            )
            source = data.context["splits_source"]
            if str(source).startswith("make_splits("):
                source = (
                    f"new splits, {source} (no --splits given and no splits.json in {args.root}; "
                    "pass --splits FILE to use the file that `tunisian-lung split` wrote)"
                )
            print(f"splits: {source}; saved to {run_dir / 'splits.json'}", file=sys.stderr)
        result = train(
            config,
            data.train,
            data.val,
            out_dir=run_dir,
            test_ds=data.test,
            progress=not args.quiet,
            resume=args.resume,
            context=data.context,
        )
        run_dirs[name] = run_dir
        line = f"{name}: best epoch {result.best_epoch}, val {config.early_stopping_metric} {result.best_value:.4f}"
        if result.test_metrics is not None and result.test_ci is not None:
            low, high = result.test_ci["accuracy"]
            line += f", test accuracy {result.test_metrics['accuracy']:.3f} [{low:.3f}, {high:.3f}]"
        if main_process:
            print(f"{line}; report: {run_dir / 'report.md'}")
            if result.test_metrics is not None:
                class_names = data.context.get("class_names")
                for warning in sample_size_warnings(result.test_metrics, result.test_ci, class_names):
                    print(f"caution: {warning}", file=sys.stderr)
    if args.models and main_process:
        path = write_comparison(run_dirs, args.out / "comparison.md")
        print(f"comparison: {path}")
    return EXIT_OK
