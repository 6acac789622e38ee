"""Evaluation and prediction with the checkpoint of a finished run folder."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
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
from tunisian_lung.training.loop import EpochResult, autocast, make_loader, predict_loader, resolve_device
from tunisian_lung.training.metrics import binary_metrics, bootstrap_ci

__all__ = [
    "evaluate",
    "load_run_model",
    "predict",
    "predict_array",
    "read_run_context",
    "write_evaluation",
]


def write_evaluation(
    metrics_path: Path,
    predictions_path: Path,
    result: EpochResult,
    config: TrainConfig,
    split: str,
    epoch: int,
) -> tuple[dict[str, Any], dict[str, tuple[float, float]]]:
    metrics = binary_metrics(result.labels, result.probabilities, threshold=config.threshold, loss=result.loss)
    has_patients = all(result.patient_ids)
    intervals = bootstrap_ci(
        result.labels,
        result.probabilities,
        patient_ids=result.patient_ids if has_patients else None,
        n_resamples=config.bootstrap_resamples,
        level=config.confidence_level,
        seed=config.seed,
        threshold=config.threshold,
    )
    dump_json(
        metrics_path,
        {
            "split": split,
            "checkpoint_epoch": epoch,
            "threshold": config.threshold,
            "metrics": metrics,
            "confidence_intervals": {k: list(v) for k, v in intervals.items()},
            "confidence_level": config.confidence_level,
            "bootstrap_resamples": config.bootstrap_resamples,
            "bootstrap_unit": "patient" if has_patients else "scan",
            "patients": len(set(result.patient_ids)) if has_patients else None,
        },
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["patient_id", "series_id", "label", "probability", "predicted"])
    for pid, sid, label, probability in zip(
        result.patient_ids, result.series_ids, result.labels, result.probabilities
    ):
        writer.writerow([pid, sid, label, f"{probability:.6f}", int(probability >= config.threshold)])
    write_text_atomic(predictions_path, buffer.getvalue())
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
        Items as in :func:`train`.
    split
        Name used in the output file names (``evaluation_test.json``,
        ``predictions_test.csv``).
    checkpoint
        ``"best"`` or ``"last"``.

    Returns
    -------
    dict
        ``metrics`` (see :func:`binary_metrics`) and ``confidence_intervals``.
    """
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise TrainingError(f"the {split} dataset is empty; nothing to evaluate")
    model, config, target = load_run_model(run_dir, checkpoint=checkpoint, device=device)
    config = config.replace(device=target.type)
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
    )
    return {"metrics": metrics, "confidence_intervals": intervals}


def predict_array(
    run_dir: str | Path,
    image: np.ndarray | torch.Tensor,
    *,
    checkpoint: str = "best",
    device: str = "auto",
) -> tuple[float, int]:
    """Classify one preprocessed volume.

    Parameters
    ----------
    image
        float32 ``(D, H, W)`` or ``(1, D, H, W)``, preprocessed as the run's training data.

    Returns
    -------
    (probability, label)
        Probability of class 1 and the label at the run's threshold.
    """
    tensor = torch.from_numpy(np.array(image, dtype=np.float32, copy=True))
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 4 or tensor.shape[0] != 1:
        raise TrainingError(f"expected a (D, H, W) or (1, D, H, W) volume, got {tuple(tensor.shape)}")
    model, config, target = load_run_model(run_dir, checkpoint=checkpoint, device=device)
    with torch.no_grad(), autocast(config, target):
        logits = model(tensor.unsqueeze(0).to(target))
    probability = float(torch.softmax(logits.float(), dim=1)[0, 1])
    return probability, int(probability >= config.threshold)


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
    """
    from tunisian_lung.preprocess import PreprocessConfig, preprocess_series

    context = read_run_context(run_dir)
    settings = context.get("preprocess")
    if not isinstance(settings, Mapping):
        raise TrainingError(f"run_context.json of {run_dir} has no 'preprocess' settings")
    volume = preprocess_series(path, PreprocessConfig.from_dict(settings))
    return predict_array(run_dir, np.asarray(volume.array), checkpoint=checkpoint, device=device)
