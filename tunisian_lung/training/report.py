"""Run reports: training-curve plot, ``report.md`` and the comparison table of several depths."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tunisian_lung.errors import TrainingError
from tunisian_lung.training._files import save_figure_atomic, write_text_atomic

__all__ = ["plot_training_curves", "write_run_report", "write_comparison"]

logger = logging.getLogger(__name__)

_REPORTED = ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "roc_auc")
_LABELS = {
    "loss": "loss",
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced acc.",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "roc_auc": "ROC AUC",
}


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _number(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    return f"{float(value):.{digits}f}"


def _with_interval(value: Any, interval: Sequence[Any] | None) -> str:
    text = _number(value)
    if interval and all(bound is not None for bound in interval):
        text += f" [{_number(interval[0])}, {_number(interval[1])}]"
    return text


def plot_training_curves(history: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Plot loss, accuracy and ROC AUC per epoch (train and validation) into a PNG file.

    The figure is drawn with matplotlib's Agg renderer without pyplot, so no display is needed
    and the caller's pyplot backend and open figures are left alone.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = [row["epoch"] for row in history]
    figure = Figure(figsize=(13, 3.8))
    axes = figure.subplots(1, 3)
    for axis, metric in zip(axes, ("loss", "accuracy", "roc_auc")):
        for split, style in (("train", "-o"), ("val", "-s")):
            values = [
                math.nan if row.get(f"{split}_{metric}") is None else float(row[f"{split}_{metric}"])
                for row in history
            ]
            axis.plot(epochs, values, style, markersize=3, label=split)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_title(_LABELS[metric])
        axis.grid(alpha=0.3)
        if metric != "loss":
            axis.set_ylim(-0.02, 1.02)
    axes[0].legend()
    figure.tight_layout()
    target = Path(path)
    save_figure_atomic(target, figure)
    return target


def _config_table(config: Mapping[str, Any]) -> list[str]:
    lines = ["| setting | value |", "|---|---|"]
    for key in sorted(config):
        lines.append(f"| {key} | `{json.dumps(config[key])}` |")
    return lines


def _history_table(history: Sequence[Mapping[str, Any]]) -> list[str]:
    header = ["epoch", "lr", "train loss", "train acc.", "val loss", "val acc.", "val bal. acc.", "val AUC"]
    keys = ["epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_balanced_accuracy", "val_roc_auc"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in history:
        cells = [
            f"{row.get(key):.2e}" if key == "lr" and row.get(key) is not None else _number(row.get(key))
            for key in keys
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _test_section(test: Mapping[str, Any]) -> list[str]:
    metrics = test["metrics"]
    intervals = test.get("confidence_intervals", {})
    level = int(round(100 * float(test.get("confidence_level", 0.95))))
    unit = test.get("bootstrap_unit", "scan")
    lines = [
        f"Checkpoint of epoch {test.get('checkpoint_epoch')}, {metrics['n']} scans, threshold "
        f"{test.get('threshold')}. Intervals are {level}% percentile bootstrap intervals over "
        f"{test.get('bootstrap_resamples')} resamples by {unit}.",
        "",
        f"| metric | value [{level}% CI] |",
        "|---|---|",
        f"| loss | {_number(metrics.get('loss'))} |",
    ]
    for name in _REPORTED:
        lines.append(f"| {_LABELS[name]} | {_with_interval(metrics.get(name), intervals.get(name))} |")
    (tn, fp), (fn, tp) = metrics["confusion_matrix"]
    lines += [
        "",
        "Confusion matrix (rows: true class, columns: predicted class):",
        "",
        "| | predicted 0 | predicted 1 |",
        "|---|---|---|",
        f"| true 0 | {tn} | {fp} |",
        f"| true 1 | {fn} | {tp} |",
    ]
    return lines


def write_run_report(run_dir: str | Path) -> Path:
    """Write ``training_curves.png`` and ``report.md`` from the files of a run folder.

    Returns
    -------
    Path
        The path of ``report.md``.
    """
    root = Path(run_dir)
    config = _read_json(root / "config.json")
    history = _read_json(root / "history.json") or []
    if config is None:
        raise TrainingError(f"{root} has no config.json; it is not a training run folder")
    test = _read_json(root / "test_metrics.json")

    lines = [f"# Training report: resnet{config.get('depth')}", ""]
    if history:
        plot_training_curves(history, root / "training_curves.png")
        lines += ["![training curves](training_curves.png)", ""]
        lines += ["## Epochs", ""] + _history_table(history) + [""]
        if test is None:
            lines.append(f"{len(history)} epoch(s) trained; no test set was evaluated.")
            lines.append("")
    if test is not None:
        lines += ["## Test metrics", ""] + _test_section(test) + [""]
    lines += ["## Configuration", ""] + _config_table(config) + [""]
    path = root / "report.md"
    write_text_atomic(path, "\n".join(lines))
    return path


def write_comparison(runs: Mapping[str, str | Path], path: str | Path) -> Path:
    """Write a Markdown table comparing the test metrics of several runs (one per model depth).

    Parameters
    ----------
    runs
        Model name (e.g. ``resnet10``) to run folder; each needs ``test_metrics.json``.
    path
        Output Markdown file.
    """
    header = "| model | best epoch | test scans | accuracy [95% CI] | balanced acc. | sensitivity | specificity | ROC AUC [95% CI] |"
    lines = ["# Model comparison", "", header, "|" + "---|" * 8]
    for name, run_dir in runs.items():
        test = _read_json(Path(run_dir) / "test_metrics.json")
        if test is None:
            lines.append(f"| {name} | n/a | n/a | no test metrics | | | | |")
            continue
        metrics, intervals = test["metrics"], test.get("confidence_intervals", {})
        lines.append(
            f"| {name} | {test.get('checkpoint_epoch')} | {metrics['n']} | "
            f"{_with_interval(metrics['accuracy'], intervals.get('accuracy'))} | "
            f"{_with_interval(metrics['balanced_accuracy'], intervals.get('balanced_accuracy'))} | "
            f"{_with_interval(metrics['sensitivity'], intervals.get('sensitivity'))} | "
            f"{_with_interval(metrics['specificity'], intervals.get('specificity'))} | "
            f"{_with_interval(metrics['roc_auc'], intervals.get('roc_auc'))} |"
        )
    lines += [
        "",
        "Intervals are percentile bootstrap intervals resampled by patient when patient ids are "
        "known. With a test split of about 19 patients, intervals of width 0.2 or more are "
        "expected; differences between depths inside overlapping intervals are not evidence.",
        "",
    ]
    target = Path(path)
    write_text_atomic(target, "\n".join(lines))
    return target
