"""One pass of a model over a DataLoader: devices, autocast, loaders, batches, metrics rows."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from tunisian_lung.errors import TrainingError
from tunisian_lung.models.resnet import ResNet3d
from tunisian_lung.training import distributed
from tunisian_lung.training.config import METRIC_NAMES, MULTICLASS_METRIC_NAMES, TrainConfig
from tunisian_lung.training.metrics import binary_metrics, multiclass_metrics

__all__ = [
    "EpochResult",
    "autocast",
    "gather_epoch_result",
    "make_loader",
    "metrics_row",
    "predict_loader",
    "resolve_device",
    "set_backbone_frozen",
    "split_metrics",
    "train_one_epoch",
]


def resolve_device(name: str) -> torch.device:
    """Map ``"auto"``, ``"cpu"`` or ``"cuda"`` to a device; ``auto`` picks CUDA when present."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError(
            "device 'cuda' was requested but torch reports no CUDA device; use --device cpu or "
            "install a CUDA build of torch"
        )
    if name not in ("cpu", "cuda"):
        raise TrainingError(f"unknown device {name!r}; use 'auto', 'cpu' or 'cuda'")
    return torch.device(name)


def autocast(config: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if device.type != "cuda" or config.amp_dtype == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if config.amp_dtype == "bfloat16" else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2**63 - 1)


def _worker_init(worker_id: int) -> None:
    # Runs inside the worker process: derive numpy's and random's seeds from the seed that the
    # DataLoader gave this worker's torch generator, so augmentations repeat.
    import random

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(
    dataset: Dataset[Any],
    config: TrainConfig,
    *,
    shuffle: bool,
    epoch: int,
    context: distributed.DistributedContext,
    device: torch.device,
) -> DataLoader[Any]:
    generator = torch.Generator()
    generator.manual_seed(_epoch_seed(config.seed, epoch))
    sampler: DistributedSampler[Any] | None = None
    if shuffle and context.enabled:
        sampler = DistributedSampler(
            dataset,
            num_replicas=context.world_size,
            rank=context.rank,
            shuffle=True,
            seed=config.seed,
        )
        sampler.set_epoch(epoch)
    return DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=config.num_workers,
        generator=generator,
        worker_init_fn=_worker_init if config.num_workers else None,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )


def _batch_tensors(batch: Mapping[str, Any], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    if "image" not in batch or "label" not in batch:
        raise TrainingError(
            f"dataset items must be dicts with 'image' and 'label', got keys {sorted(batch)}"
        )
    images = batch["image"]
    if not isinstance(images, torch.Tensor) or images.ndim != 5 or images.shape[1] != 1:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise TrainingError(
            f"batch 'image' must be a float tensor of shape (N, 1, D, H, W), got {shape}"
        )
    labels = torch.as_tensor(batch["label"]).reshape(-1).long()
    return images.to(device, dtype=torch.float32, non_blocking=True), labels.to(device)


def _ids(batch: Mapping[str, Any], key: str, count: int) -> list[str]:
    values = batch.get(key)
    if values is None:
        return [""] * count
    return [str(v) for v in values]




def set_backbone_frozen(model: ResNet3d, frozen: bool) -> None:
    # Frozen backbone: BatchNorm layers use and keep their running statistics. The gradients
    # are still computed (so DDP's reducer registers every parameter) but dropped before the step.
    for module in model.backbone_modules():
        module.train(not frozen)


@dataclass
class EpochResult:
    """Predictions of one pass: a softmax row of ``K`` class probabilities per sample."""

    probabilities: list[list[float]]
    labels: list[int]
    patient_ids: list[str]
    series_ids: list[str]
    loss_sum: float = 0.0
    weight_sum: float = 0.0

    @property
    def loss(self) -> float:
        return self.loss_sum / self.weight_sum if self.weight_sum else math.nan

    @property
    def positive_probabilities(self) -> list[float]:
        """Probability of class 1 of every sample, the score of the binary metrics."""
        return [row[1] for row in self.probabilities]


def _sample_losses(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    per_sample = nn.functional.cross_entropy(logits.float(), labels, weight=weights, reduction="none")
    sample_weights = weights[labels] if weights is not None else torch.ones_like(per_sample)
    return per_sample, sample_weights


def _progress(iterable: Any, enabled: bool, description: str, total: int) -> Any:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=description, total=total, leave=False, dynamic_ncols=True)


def train_one_epoch(
    model: nn.Module,
    core: ResNet3d,
    loader: DataLoader[Any],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    config: TrainConfig,
    device: torch.device,
    weights: torch.Tensor | None,
    frozen: bool,
    progress: bool,
    description: str,
) -> EpochResult:
    model.train()
    set_backbone_frozen(core, frozen)
    result = EpochResult([], [], [], [])
    head_ids = {id(p) for p in core.head_parameters()}
    trainable = [p for p in core.parameters() if not frozen or id(p) in head_ids]
    for batch in _progress(loader, progress, description, len(loader)):
        images, labels = _batch_tensors(batch, device)
        optimizer.zero_grad(set_to_none=True)
        with autocast(config, device):
            logits = model(images)
        per_sample, sample_weights = _sample_losses(logits, labels, weights)
        loss = per_sample.sum() / sample_weights.sum()
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if frozen:
            for parameter in core.backbone_parameters():
                parameter.grad = None
        if config.grad_clip is not None:
            nn.utils.clip_grad_norm_(trainable, config.grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()

        probabilities = torch.softmax(logits.detach().float(), dim=1)
        result.probabilities.extend(probabilities.cpu().tolist())
        result.labels.extend(labels.cpu().tolist())
        result.patient_ids.extend(_ids(batch, "patient_id", labels.numel()))
        result.series_ids.extend(_ids(batch, "series_id", labels.numel()))
        result.loss_sum += float(per_sample.detach().sum())
        result.weight_sum += float(sample_weights.sum())
    return result


@torch.no_grad()
def predict_loader(
    model: nn.Module,
    loader: DataLoader[Any],
    config: TrainConfig,
    device: torch.device,
    weights: torch.Tensor | None,
    progress: bool = False,
    description: str = "evaluate",
) -> EpochResult:
    model.eval()
    result = EpochResult([], [], [], [])
    for batch in _progress(loader, progress, description, len(loader)):
        images, labels = _batch_tensors(batch, device)
        with autocast(config, device):
            logits = model(images)
        per_sample, sample_weights = _sample_losses(logits, labels, weights)
        result.probabilities.extend(torch.softmax(logits.float(), dim=1).cpu().tolist())
        result.labels.extend(labels.cpu().tolist())
        result.patient_ids.extend(_ids(batch, "patient_id", labels.numel()))
        result.series_ids.extend(_ids(batch, "series_id", labels.numel()))
        result.loss_sum += float(per_sample.sum())
        result.weight_sum += float(sample_weights.sum())
    return result


def gather_epoch_result(local: EpochResult) -> EpochResult:
    """Concatenate the per-rank results of a distributed training pass."""
    parts = distributed.gather_objects(local)
    if len(parts) == 1:
        return local
    merged = EpochResult([], [], [], [])
    for part in parts:
        merged.probabilities.extend(part.probabilities)
        merged.labels.extend(part.labels)
        merged.patient_ids.extend(part.patient_ids)
        merged.series_ids.extend(part.series_ids)
        merged.loss_sum += part.loss_sum
        merged.weight_sum += part.weight_sum
    return merged


def split_metrics(result: EpochResult, config: TrainConfig) -> dict[str, Any]:
    """Return :func:`binary_metrics` of a binary run, else :func:`multiclass_metrics`."""
    if config.num_classes == 2:
        return binary_metrics(
            result.labels, result.positive_probabilities, threshold=config.threshold, loss=result.loss
        )
    probabilities = np.asarray(result.probabilities, dtype=np.float64).reshape(-1, config.num_classes)
    return multiclass_metrics(result.labels, probabilities, loss=result.loss)


def metrics_row(prefix: str, result: EpochResult, config: TrainConfig) -> dict[str, Any]:
    """Return the history columns of one split.

    Binary runs get the :data:`METRIC_NAMES` and the counts ``tn``, ``fp``, ``fn``, ``tp``.
    Runs with ``K > 2`` classes get the :data:`MULTICLASS_METRIC_NAMES` and ``recall_0`` to
    ``recall_{K-1}``, the recall of each class.
    """
    values = split_metrics(result, config)
    if config.num_classes == 2:
        row: dict[str, Any] = {f"{prefix}_{name}": values[name] for name in METRIC_NAMES}
        (tn, fp), (fn, tp) = values["confusion_matrix"]
        row.update({f"{prefix}_tn": tn, f"{prefix}_fp": fp, f"{prefix}_fn": fn, f"{prefix}_tp": tp})
        return row
    row = {f"{prefix}_{name}": values[name] for name in MULTICLASS_METRIC_NAMES}
    for index, recall in enumerate(values["per_class"]["recall"]):
        row[f"{prefix}_recall_{index}"] = recall
    return row
