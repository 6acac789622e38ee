"""Evaluation and prediction with the checkpoint of a finished run folder."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from tunisian_lung.errors import TrainingError
from tunisian_lung.models.resnet import ResNet3d, resnet3d
from tunisian_lung.training import distributed
from tunisian_lung.training._files import write_text_atomic
from tunisian_lung.training.checkpoints import RunFiles, dump_json, read_checkpoint
from tunisian_lung.training.config import TrainConfig
from tunisian_lung.training.loop import (
    EpochResult,
    autocast,
    make_loader,
    predict_loader,
    resolve_device,
    split_metrics,
)
from tunisian_lung.training.metrics import bootstrap_ci, multiclass_bootstrap

__all__ = [
    "Prediction",
    "evaluate",
    "load_run_model",
    "predict",
    "predict_array",
    "predict_probabilities",
    "predict_probabilities_array",
    "read_run_context",
    "write_evaluation",
]


def _predictions_csv(result: EpochResult, config: TrainConfig) -> str:
    """Return one CSV row per sample.

    Binary runs write the probability of class 1 and the label at the threshold. Runs with
    ``K > 2`` classes write ``probability_0`` .. ``probability_{K-1}`` and the most probable
    class.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    rows = zip(result.patient_ids, result.series_ids, result.labels, result.probabilities)
    if config.num_classes == 2:
        writer.writerow(["patient_id", "series_id", "label", "probability", "predicted"])
        for pid, sid, label, row in rows:
            writer.writerow([pid, sid, label, f"{row[1]:.6f}", int(row[1] >= config.threshold)])
        return buffer.getvalue()
    columns = [f"probability_{index}" for index in range(config.num_classes)]
    writer.writerow(["patient_id", "series_id", "label", *columns, "predicted"])
    for pid, sid, label, row in rows:
        cells = [f"{value:.6f}" for value in row]
        writer.writerow([pid, sid, label, *cells, int(np.argmax(row))])
    return buffer.getvalue()


def write_evaluation(
    metrics_path: Path,
    predictions_path: Path,
    result: EpochResult,
    config: TrainConfig,
    split: str,
    epoch: int,
    *,
    class_names: Sequence[str] | None = None,
) -> tuple[dict[str, Any], dict[str, tuple[float, float]]]:
    """Compute the metrics and bootstrap intervals of a pass and write them with predictions.

    Binary runs write the keys they always had. Runs with more classes replace ``threshold``
    with ``num_classes`` and ``class_names`` (``"0" .. "K-1"`` when ``class_names`` is None) and
    add ``bootstrap_resamples_used``, the number of resamples behind each interval.
    """
    metrics = split_metrics(result, config)
    has_patients = all(result.patient_ids)
    patient_ids = result.patient_ids if has_patients else None
    intervals: dict[str, tuple[float, float]]
    if config.num_classes == 2:
        intervals = bootstrap_ci(
            result.labels,
            result.positive_probabilities,
            patient_ids=patient_ids,
            n_resamples=config.bootstrap_resamples,
            level=config.confidence_level,
            seed=config.seed,
            threshold=config.threshold,
        )
        decision: dict[str, Any] = {"threshold": config.threshold}
        extra: dict[str, Any] = {}
    else:
        intervals, used = multiclass_bootstrap(
            result.labels,
            np.asarray(result.probabilities, dtype=np.float64).reshape(-1, config.num_classes),
            patient_ids=patient_ids,
            n_resamples=config.bootstrap_resamples,
            level=config.confidence_level,
            seed=config.seed,
        )
        names = list(class_names) if class_names is not None else []
        if len(names) != config.num_classes:
            names = [str(index) for index in range(config.num_classes)]
        decision = {"num_classes": config.num_classes, "class_names": names}
        extra = {"bootstrap_resamples_used": used}
    dump_json(
        metrics_path,
        {
            "split": split,
            "checkpoint_epoch": epoch,
            **decision,
            "metrics": metrics,
            "confidence_intervals": {k: list(v) for k, v in intervals.items()},
            "confidence_level": config.confidence_level,
            "bootstrap_resamples": config.bootstrap_resamples,
            "bootstrap_unit": "patient" if has_patients else "scan",
            "patients": len(set(result.patient_ids)) if has_patients else None,
            **extra,
        },
    )
    write_text_atomic(predictions_path, _predictions_csv(result, config))
    return metrics, intervals




def load_run_model(
    run_dir: str | Path, *, checkpoint: str = "best", device: str = "auto"
) -> tuple[ResNet3d, TrainConfig, torch.device]:
    """Rebuild a run's model from ``checkpoints/{checkpoint}.pt`` in eval mode.

    Returns
    -------
    (model, config, device)
    """
    files = RunFiles(Path(run_dir))
    if checkpoint not in ("best", "last"):
        raise TrainingError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    path = files.best_checkpoint if checkpoint == "best" else files.last_checkpoint
    saved = read_checkpoint(path)
    config = TrainConfig.from_dict(saved["config"])
    model = resnet3d(
        config.depth,
        num_classes=config.num_classes,
        shortcut_type=config.shortcut_type,
        dropout=config.dropout,
    )
    model.load_state_dict(saved["model"])
    target = resolve_device(device)
    return model.to(target).eval(), config, target


def _run_class_names(run_dir: str | Path, num_classes: int, dataset: Any = None) -> tuple[str, ...]:
    """Return the class names of a dataset or of ``run_context.json``; empty when neither has them."""
    candidates: list[Any] = [getattr(dataset, "class_names", None)]
    path = RunFiles(Path(run_dir)).context
    if path.is_file():
        context = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(context, dict):
            candidates.append(context.get("class_names"))
    for names in candidates:
        if names is not None and len(names) == num_classes:
            return tuple(str(name) for name in names)
    return ()


def evaluate(
    run_dir: str | Path,
    dataset: Dataset[Any],
    *,
    split: str = "test",
    checkpoint: str = "best",
    device: str = "auto",
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate a trained run on a dataset and write ``evaluation_{split}.json`` and predictions.

    Parameters
    ----------
    run_dir
        Folder written by :func:`train`.
    dataset
        Items as in :func:`train`, labelled with the run's classes.
    split
        Name used in the output file names (``evaluation_test.json``,
        ``predictions_test.csv``).
    checkpoint
        ``"best"`` or ``"last"``.

    Returns
    -------
    dict
        ``metrics`` (see :func:`binary_metrics`, or :func:`multiclass_metrics` for runs with
        more than two classes) and ``confidence_intervals``.
    """
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise TrainingError(f"the {split} dataset is empty; nothing to evaluate")
    model, config, target = load_run_model(run_dir, checkpoint=checkpoint, device=device)
    config = config.replace(device=target.type)
    names = getattr(dataset, "class_names", None)
    if names is not None and len(names) != config.num_classes:
        raise TrainingError(
            f"the {split} dataset has {len(names)} classes {list(names)} but run {run_dir} was "
            f"trained with {config.num_classes}; build the dataset with the run's target"
        )
    loader = make_loader(dataset, config, shuffle=False, epoch=0, context=distributed.DistributedContext(), device=target)
    result = predict_loader(model, loader, config, target, None, progress, split)
    root = Path(run_dir)
    saved = read_checkpoint(RunFiles(root).best_checkpoint if checkpoint == "best" else RunFiles(root).last_checkpoint)
    metrics, intervals = write_evaluation(
        root / f"evaluation_{split}.json",
        root / f"predictions_{split}.csv",
        result,
        config,
        split,
        int(saved["epoch"]),
        class_names=_run_class_names(run_dir, config.num_classes, dataset) or None,
    )
    return {"metrics": metrics, "confidence_intervals": intervals}


@dataclass(frozen=True)
class Prediction:
    """Class probabilities and predicted label of one scan.

    Attributes
    ----------
    probabilities
        Softmax probability of each class, index = label; they sum to 1 (float32 precision).
    label
        Predicted class: for binary runs 1 when ``probabilities[1]`` reaches the run's
        threshold, else 0; with more classes the most probable one.
    class_names
        Names of the classes from the dataset or ``run_context.json``; empty when the run
        recorded none.
    """

    probabilities: tuple[float, ...]
    label: int
    class_names: tuple[str, ...] = ()

    @property
    def class_name(self) -> str | None:
        """Name of the predicted class, or ``None`` when the run recorded no class names."""
        return self.class_names[self.label] if self.label < len(self.class_names) else None


def predict_probabilities_array(
    run_dir: str | Path,
    image: np.ndarray | torch.Tensor,
    *,
    checkpoint: str = "best",
    device: str = "auto",
) -> Prediction:
    """Classify one preprocessed volume with a run of any number of classes.

    Parameters
    ----------
    image
        float32 ``(D, H, W)`` or ``(1, D, H, W)``, preprocessed as the run's training data.

    Returns
    -------
    Prediction
        Probability of every class and the predicted label.
    """
    tensor = torch.from_numpy(np.array(image, dtype=np.float32, copy=True))
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 4 or tensor.shape[0] != 1:
        raise TrainingError(f"expected a (D, H, W) or (1, D, H, W) volume, got {tuple(tensor.shape)}")
    model, config, target = load_run_model(run_dir, checkpoint=checkpoint, device=device)
    with torch.no_grad(), autocast(config, target):
        logits = model(tensor.unsqueeze(0).to(target))
    probabilities = tuple(float(v) for v in torch.softmax(logits.float(), dim=1)[0].cpu().tolist())
    if config.num_classes == 2:
        label = int(probabilities[1] >= config.threshold)
    else:
        label = int(np.argmax(probabilities))
    return Prediction(probabilities, label, _run_class_names(run_dir, config.num_classes))


def _binary_pair(prediction: Prediction, run_dir: str | Path, function: str) -> tuple[float, int]:
    if len(prediction.probabilities) != 2:
        raise TrainingError(
            f"run {run_dir} has {len(prediction.probabilities)} classes, but {function} returns "
            f"the probability of class 1 of binary runs; use {function.replace('predict', 'predict_probabilities')}"
        )
    return prediction.probabilities[1], prediction.label


def predict_array(
    run_dir: str | Path,
    image: np.ndarray | torch.Tensor,
    *,
    checkpoint: str = "best",
    device: str = "auto",
) -> tuple[float, int]:
    """Classify one preprocessed volume with a binary run.

    Parameters
    ----------
    image
        float32 ``(D, H, W)`` or ``(1, D, H, W)``, preprocessed as the run's training data.

    Returns
    -------
    (probability, label)
        Probability of class 1 and the label at the run's threshold.

    Raises
    ------
    TrainingError
        If the run has more than two classes; use :func:`predict_probabilities_array`.
    """
    prediction = predict_probabilities_array(run_dir, image, checkpoint=checkpoint, device=device)
    return _binary_pair(prediction, run_dir, "predict_array")


def read_run_context(run_dir: str | Path) -> dict[str, Any]:
    """Return ``run_context.json`` of a run folder (dataset root, preprocessing, splits)."""
    path = RunFiles(Path(run_dir)).context
    if not path.is_file():
        raise TrainingError(
            f"{path} not found; this run was trained without a dataset context (not through "
            "`tunisian-lung train`), so pass the dataset and preprocessing explicitly"
        )
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise TrainingError(f"{path} must contain a JSON object")
    return data


def predict_probabilities(
    run_dir: str | Path,
    path: str | Path,
    *,
    checkpoint: str = "best",
    device: str = "auto",
) -> Prediction:
    """Preprocess one CT series (DICOM folder or NIfTI) as in training and classify it.

    Returns
    -------
    Prediction
        Probability of every class and the predicted label.
    """
    from tunisian_lung.preprocess import PreprocessConfig, preprocess_series

    context = read_run_context(run_dir)
    settings = context.get("preprocess")
    if not isinstance(settings, Mapping):
        raise TrainingError(f"run_context.json of {run_dir} has no 'preprocess' settings")
    volume = preprocess_series(path, PreprocessConfig.from_dict(settings))
    return predict_probabilities_array(
        run_dir, np.asarray(volume.array), checkpoint=checkpoint, device=device
    )


def predict(
    run_dir: str | Path,
    path: str | Path,
    *,
    checkpoint: str = "best",
    device: str = "auto",
) -> tuple[float, int]:
    """Preprocess one CT series (DICOM folder or NIfTI) as in training and classify it.

    Returns
    -------
    (probability, label)
        Probability of class 1 and the label at the run's threshold.

    Raises
    ------
    TrainingError
        If the run has more than two classes; use :func:`predict_probabilities`.
    """
    prediction = predict_probabilities(run_dir, path, checkpoint=checkpoint, device=device)
    return _binary_pair(prediction, run_dir, "predict")
