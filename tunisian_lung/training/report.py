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

__all__ = ["SMALL_TEST_SCANS", "plot_training_curves", "sample_size_warnings", "write_run_report", "write_comparison"]

logger = logging.getLogger(__name__)

_REPORTED = ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "roc_auc")
_MULTICLASS_REPORTED = ("accuracy", "balanced_accuracy", "roc_auc")
_MULTICLASS_LABELS = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced acc. (mean recall)",
    "roc_auc": "macro ROC AUC (one-vs-rest)",
}
_LABELS = {
    "loss": "loss",
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced acc.",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "roc_auc": "ROC AUC",
}


#: Below this many evaluated scans, reports and the command line warn that the metrics rest on
#: too few scans, because percentile bootstrap intervals tend to be too narrow for small
#: samples. 30 is the usual rule of thumb, not a limit measured for this library.
SMALL_TEST_SCANS = 30


def _defined(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def sample_size_warnings(
    metrics: Mapping[str, Any],
    intervals: Mapping[str, Sequence[Any]] | None = None,
    class_names: Sequence[str] | None = None,
) -> list[str]:
    """Return sentences that warn when test metrics rest on too few scans to be trusted.

    Three cases are reported: fewer than :data:`SMALL_TEST_SCANS` scans, a class without scans
    (so some metrics are undefined or average fewer classes), and bootstrap intervals of zero
    width (every resample gave the same value). An empty list means none applies.

    Parameters
    ----------
    metrics
        Output of :func:`~tunisian_lung.training.binary_metrics` or
        :func:`~tunisian_lung.training.multiclass_metrics` (``n`` and ``confusion_matrix``
        are read).
    intervals
        Metric name to ``(low, high)``, as in ``test_metrics.json``.
    class_names
        Name of each class, index = label; class indices are used when missing.
    """
    messages: list[str] = []
    count = int(metrics.get("n") or 0)
    if count < SMALL_TEST_SCANS:
        messages.append(
            f"Only {count} scans were evaluated, fewer than {SMALL_TEST_SCANS}, so these metrics can "
            "change a lot with a few scans more or less, and percentile bootstrap intervals from "
            "so few scans tend to be too narrow."
        )

    matrix = metrics.get("confusion_matrix") or []
    support = [sum(int(value) for value in row) for row in matrix]
    names = [str(name) for name in class_names or []]
    if len(names) != len(support):
        names = [str(index) for index in range(len(support))]
    missing = [
        f"{index} ({names[index]})" if names[index] != str(index) else str(index)
        for index, size in enumerate(support)
        if size == 0
    ]
    if missing and count:
        listed = ", ".join(missing)
        if len(support) == 2:
            # Without negatives specificity is undefined, and without positives sensitivity is.
            undefined, remaining = ("specificity", "sensitivity") if support[0] == 0 else ("sensitivity", "specificity")
            messages.append(
                f"No scan of class {listed} was evaluated, so {undefined} and ROC AUC are undefined "
                f"(n/a) and balanced accuracy equals {remaining}."
            )
        else:
            subject = "that class" if len(missing) == 1 else "those classes"
            messages.append(
                f"No scan of class {listed} was evaluated, so the recall and ROC AUC of {subject} "
                "are undefined (n/a), and balanced accuracy and macro ROC AUC average only the "
                "classes that were evaluated."
            )

    zero_width = sorted(
        name
        for name, bounds in (intervals or {}).items()
        if bounds and len(bounds) == 2 and all(_defined(bound) for bound in bounds)
        and float(bounds[0]) == float(bounds[1])
    )
    if zero_width:
        messages.append(
            f"The intervals of {', '.join(zero_width)} have zero width because every bootstrap resample "
            "gave the same value. With few scans, that does not mean the value is certain."
        )
    return messages


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

    For runs with more than two classes (history rows with ``val_recall_0``) the last panel is
    the macro one-vs-rest ROC AUC.

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
        multiclass = bool(history) and "val_recall_0" in history[0]
        axis.set_title("macro ROC AUC" if metric == "roc_auc" and multiclass else _LABELS[metric])
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


def _history_table(history: Sequence[Mapping[str, Any]], multiclass: bool) -> list[str]:
    auc = "val macro AUC" if multiclass else "val AUC"
    header = ["epoch", "lr", "train loss", "train acc.", "val loss", "val acc.", "val bal. acc.", auc]
    keys = ["epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_balanced_accuracy", "val_roc_auc"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in history:
        cells = [
            f"{row.get(key):.2e}" if key == "lr" and row.get(key) is not None else _number(row.get(key))
            for key in keys
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _is_multiclass(test: Mapping[str, Any]) -> bool:
    return int(test.get("num_classes") or 2) > 2


def _resamples_used(test: Mapping[str, Any]) -> str:
    used = test.get("bootstrap_resamples_used")
    if not used:
        return ""
    return (
        f" ({used.get('balanced_accuracy')} and {used.get('roc_auc')} of "
        f"{test.get('bootstrap_resamples')} resamples here)"
    )


def _multiclass_test_section(test: Mapping[str, Any]) -> list[str]:
    metrics = test["metrics"]
    intervals = test.get("confidence_intervals", {})
    level = int(round(100 * float(test.get("confidence_level", 0.95))))
    unit = test.get("bootstrap_unit", "scan")
    count = int(test["num_classes"])
    names = [str(name) for name in test.get("class_names") or range(count)]
    lines = _caution_lines(test) + [
        f"Checkpoint of epoch {test.get('checkpoint_epoch')}, {metrics['n']} scans, {count} classes; "
        f"each scan is labelled with its most probable class. Intervals are {level}% percentile "
        f"bootstrap intervals over {test.get('bootstrap_resamples')} resamples by {unit}. "
        "Balanced accuracy and macro ROC AUC use only the resamples that contain every class of "
        "the split" + _resamples_used(test) + ".",
        "",
        f"| metric | value [{level}% CI] |",
        "|---|---|",
        f"| loss | {_number(metrics.get('loss'))} |",
    ]

    for name in _MULTICLASS_REPORTED:
        lines.append(
            f"| {_MULTICLASS_LABELS[name]} | {_with_interval(metrics.get(name), intervals.get(name))} |"
        )

    per_class = metrics["per_class"]
    lines += [
        "",
        "Per class (one class against the rest; n/a where a class has no scans or no predictions):",
        "",
        "| class | scans | recall | specificity | precision | ROC AUC |",
        "|---|---|---|---|---|---|",
    ]
    for index, name in enumerate(names):
        cells = [
            _number(per_class[key][index])
            for key in ("support", "recall", "specificity", "precision", "roc_auc")
        ]
        lines.append(f"| {index} ({name}) | " + " | ".join(cells) + " |")

    lines += [
        "",
        "Confusion matrix (rows: true class, columns: predicted class):",
        "",
        "| | " + " | ".join(f"predicted {name}" for name in names) + " |",
        "|---|" + "---|" * count,
    ]
    for name, row in zip(names, metrics["confusion_matrix"]):
        lines.append(f"| true {name} | " + " | ".join(str(value) for value in row) + " |")
    return lines


def _caution_lines(test: Mapping[str, Any]) -> list[str]:
    messages = sample_size_warnings(
        test["metrics"], test.get("confidence_intervals"), test.get("class_names")
    )
    if not messages:
        return []
    return ["**Caution:** " + " ".join(messages), ""]


def _test_section(test: Mapping[str, Any]) -> list[str]:
    if _is_multiclass(test):
        return _multiclass_test_section(test)
    metrics = test["metrics"]
    intervals = test.get("confidence_intervals", {})
    level = int(round(100 * float(test.get("confidence_level", 0.95))))
    unit = test.get("bootstrap_unit", "scan")
    lines = _caution_lines(test) + [
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
    test = _with_class_names(_read_json(root / "test_metrics.json"), root)

    lines = [f"# Training report: resnet{config.get('depth')}", ""]
    if history:
        plot_training_curves(history, root / "training_curves.png")
        lines += ["![training curves](training_curves.png)", ""]
        multiclass = int(config.get("num_classes") or 2) > 2
        lines += ["## Epochs", ""] + _history_table(history, multiclass) + [""]
        if test is None:
            lines.append(f"{len(history)} epoch(s) trained; no test set was evaluated.")
            lines.append("")
    if test is not None:
        lines += ["## Test metrics", ""] + _test_section(test) + [""]
    lines += ["## Configuration", ""] + _config_table(config) + [""]
    path = root / "report.md"
    write_text_atomic(path, "\n".join(lines))
    return path


def _with_class_names(test: dict[str, Any] | None, root: Path) -> dict[str, Any] | None:
    """Add the class names of ``run_context.json`` to binary test metrics, which lack them."""
    if test is None or test.get("class_names"):
        return test
    context = _read_json(root / "run_context.json")
    if isinstance(context, dict) and context.get("class_names"):
        return {**test, "class_names": context["class_names"]}
    return test


def _comparison_rows(runs: Mapping[str, str | Path]) -> list[tuple[str, dict[str, Any] | None]]:
    return [
        (name, _with_class_names(_read_json(Path(run_dir) / "test_metrics.json"), Path(run_dir)))
        for name, run_dir in runs.items()
    ]


def write_comparison(runs: Mapping[str, str | Path], path: str | Path) -> Path:
    """Write a Markdown table comparing the test metrics of several runs (one per model depth).

    Binary runs get accuracy, balanced accuracy, sensitivity, specificity and ROC AUC. When any
    run has more than two classes, the table shows accuracy, balanced accuracy and macro ROC
    AUC, the metrics that every run has.

    Parameters
    ----------
    runs
        Model name (e.g. ``resnet10``) to run folder; each needs ``test_metrics.json``.
    path
        Output Markdown file.
    """
    rows = _comparison_rows(runs)
    tests = [test for _, test in rows if test is not None]
    multiclass = any(_is_multiclass(test) for test in tests)
    level = int(round(100 * float(tests[0].get("confidence_level", 0.95)))) if tests else 95
    if multiclass:
        header = (
            f"| model | best epoch | test scans | accuracy [{level}% CI] | balanced acc. [{level}% CI] "
            f"| macro ROC AUC [{level}% CI] |"
        )
        reported: tuple[str, ...] = _MULTICLASS_REPORTED
    else:
        header = (
            f"| model | best epoch | test scans | accuracy [{level}% CI] | balanced acc. | sensitivity "
            f"| specificity | ROC AUC [{level}% CI] |"
        )
        reported = _REPORTED
    lines = ["# Model comparison", "", header, "|" + "---|" * (3 + len(reported))]
    for name, test in rows:
        if test is None:
            lines.append(f"| {name} | n/a | n/a | no test metrics |" + " |" * (len(reported) - 1))
            continue
        metrics, intervals = test["metrics"], test.get("confidence_intervals", {})
        cells = [_with_interval(metrics.get(metric), intervals.get(metric)) for metric in reported]
        lines.append(
            f"| {name} | {test.get('checkpoint_epoch')} | {metrics['n']} | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        "Intervals are percentile bootstrap intervals resampled by patient when patient ids are "
        "known. With about 20 test patients, intervals of width 0.2 or more are expected. "
        "Differences between depths inside overlapping intervals are not evidence.",
        "",
    ]
    if tests:
        # The runs of one `train --models` call share their test split, so the first run stands
        # for all of them.
        messages = sample_size_warnings(tests[0]["metrics"], None, tests[0].get("class_names"))
        if messages:
            lines += ["**Caution:** " + " ".join(messages), ""]
    target = Path(path)
    write_text_atomic(target, "\n".join(lines))
    return target
