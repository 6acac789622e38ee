"""``tunisian-lung evaluate``: evaluate a trained run on one split of its dataset."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from tunisian_lung.cli import EXIT_OK, UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` subcommand."""
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a trained run on a split, with bootstrap 95%% confidence intervals",
        description=(
            "Rebuild the split's dataset from the run folder (dataset root, preprocessing, "
            "splits.json), evaluate the best checkpoint, print the metrics and write "
            "evaluation_<split>.json and predictions_<split>.csv into the run folder."
        ),
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="run folder written by `tunisian-lung train`")
    parser.add_argument("--split", default="test", help="split name in the run's splits.json (default test)")
    parser.add_argument("--root", type=Path, default=None, help="dataset folder, when it moved since training")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best", help="checkpoint to evaluate (default best)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="device (default auto)")
    parser.set_defaults(handler=run)


def _format(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def run(args: argparse.Namespace) -> int:
    """Evaluate and print one line per metric."""
    from tunisian_lung.training import evaluate
    from tunisian_lung.training.data import datasets_from_context
    from tunisian_lung.training.inference import read_run_context
    from tunisian_lung.training.report import sample_size_warnings

    if not args.run_dir.is_dir():
        raise UsageError(f"run folder {args.run_dir} not found")
    context = read_run_context(args.run_dir)
    dataset = datasets_from_context(args.run_dir, context, args.split, root=args.root)
    result = evaluate(args.run_dir, dataset, split=args.split, checkpoint=args.checkpoint, device=args.device)
    metrics, intervals = result["metrics"], result["confidence_intervals"]
    names = list(getattr(dataset, "class_names", None) or context.get("class_names") or [])
    written = json.loads((args.run_dir / f"evaluation_{args.split}.json").read_text(encoding="utf-8"))
    level = f"{round(100 * float(written.get('confidence_level', 0.95)))}% CI"
    print(f"{args.split}: {metrics['n']} scans, {args.checkpoint} checkpoint")
    print(f"  loss               {_format(metrics['loss'])}")
    if "per_class" in metrics:
        _print_multiclass(metrics, intervals, names, level)
    else:
        for name in ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "roc_auc"):
            low, high = intervals[name]
            print(f"  {name:<18} {_format(metrics[name])}  {level} [{_format(low)}, {_format(high)}]")
        (tn, fp), (fn, tp) = metrics["confusion_matrix"]
        print(f"  confusion matrix   tn={tn} fp={fp} fn={fn} tp={tp}")
    for warning in sample_size_warnings(metrics, intervals, names):
        print(f"caution: {warning}", file=sys.stderr)
    return EXIT_OK


def _print_multiclass(
    metrics: dict[str, Any], intervals: dict[str, tuple[float, float]], names: list[str], level: str
) -> None:
    """Print the summary metrics, the recall of each class and the K x K confusion matrix."""
    count = int(metrics["num_classes"])
    if len(names) != count:
        names = [str(index) for index in range(count)]
    for name in ("accuracy", "balanced_accuracy", "roc_auc"):
        low, high = intervals[name]
        label = "macro_roc_auc" if name == "roc_auc" else name
        print(f"  {label:<18} {_format(metrics[name])}  {level} [{_format(low)}, {_format(high)}]")
    per_class = metrics["per_class"]
    for index, name in enumerate(names):
        print(
            f"  class {index} ({name}): {per_class['support'][index]} scans, "
            f"recall {_format(per_class['recall'][index])}, "
            f"ROC AUC {_format(per_class['roc_auc'][index])}"
        )
    print("  confusion matrix (rows true, columns predicted): " + " ".join(names))
    for name, row in zip(names, metrics["confusion_matrix"]):
        print(f"    {name:<6} " + " ".join(f"{value:>4d}" for value in row))
