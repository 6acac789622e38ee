"""Fine-tuning loop for MedicalNet 3D ResNets: checkpoints, exact resume, metrics, DDP.

Datasets are ``torch.utils.data.Dataset`` objects whose items are dicts with ``image``
(float32 ``(1, D, H, W)``), ``label`` (int64 scalar, ``0 .. num_classes - 1``), and optionally
``patient_id`` and ``series_id`` (str), as :meth:`DatasetSplit.to_torch` returns them.

Reproducibility: model initialisation, dropout and augmentation inside the trainer draw from
torch's global generator, which :func:`train` seeds with ``config.seed`` inside
``torch.random.fork_rng``, so the caller's generator state is restored afterwards. Shuffling
uses a ``torch.Generator`` seeded from ``(seed, epoch)``, and checkpoints store the global
generator's state, so a resumed run repeats the numbers of an uninterrupted one on the CPU. On CUDA, cuDNN
may pick non-deterministic kernels; call ``torch.use_deterministic_algorithms(True)`` for
bitwise-repeatable GPU runs.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from tunisian_lung.errors import TrainingError
from tunisian_lung.models.resnet import ResNet3d, resnet3d
from tunisian_lung.models.weights import CHECKPOINT_FORMAT, load_pretrained
from tunisian_lung.training import distributed
from tunisian_lung.training._files import save_torch_atomic
from tunisian_lung.training.checkpoints import (
    CHECKPOINT_VERSION,
    RunFiles,
    check_resumable,
    dump_json,
    read_checkpoint,
    restore_rng,
    rng_state,
    weights_only_payload,
    write_history,
)
from tunisian_lung.training.config import TrainConfig, metric_mode
from tunisian_lung.training.inference import write_evaluation
from tunisian_lung.training.loop import (
    gather_epoch_result,
    make_loader,
    metrics_row,
    predict_loader,
    resolve_device,
    train_one_epoch,
)

__all__ = ["TrainResult", "train", "build_model", "training_labels"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train`.

    ``test_metrics`` and ``test_ci`` are ``None`` without a test set and on ranks other than 0.
    """

    run_dir: Path
    config: TrainConfig
    history: list[dict[str, Any]]
    best_epoch: int
    best_value: float
    stopped_early: bool
    test_metrics: dict[str, Any] | None = None
    test_ci: dict[str, tuple[float, float]] | None = None


def training_labels(dataset: Dataset[Any]) -> np.ndarray:
    """Return the labels of a dataset, from a ``labels`` attribute or by reading every item."""
    labels = getattr(dataset, "labels", None)
    if labels is None:
        logger.info("dataset has no 'labels' attribute; reading every item to count classes")
        labels = [int(torch.as_tensor(dataset[i]["label"])) for i in range(len(dataset))]  # type: ignore[arg-type]
    return np.asarray(labels, dtype=np.int64).reshape(-1)


def _check_label_range(name: str, labels: Any, num_classes: int) -> None:
    values = np.asarray(labels, dtype=np.int64).reshape(-1)
    outside = sorted({int(v) for v in values if not 0 <= v < num_classes})
    if outside:
        raise TrainingError(
            f"the {name} dataset has labels {outside[:5]} outside 0..{num_classes - 1} of "
            f"num_classes={num_classes}; set TrainConfig.num_classes to the target's number of "
            "classes (4 for stage)"
        )


def _check_datasets(config: TrainConfig, datasets: Mapping[str, Dataset[Any] | None]) -> None:
    """Check class names and labels that datasets expose without loading images."""
    for name, dataset in datasets.items():
        if dataset is None:
            continue
        names = getattr(dataset, "class_names", None)
        if names is not None and len(names) != config.num_classes:
            raise TrainingError(
                f"the {name} dataset has {len(names)} classes {list(names)} but "
                f"TrainConfig.num_classes is {config.num_classes}; set num_classes={len(names)}"
            )
        labels = getattr(dataset, "labels", None)
        if labels is not None:
            _check_label_range(name, labels, config.num_classes)


def _class_names(
    config: TrainConfig, dataset: Dataset[Any], context: Mapping[str, Any] | None
) -> list[str]:
    """Return the dataset's class names, else those of ``context``, else ``"0" .. "K-1"``."""
    for names in (getattr(dataset, "class_names", None), (context or {}).get("class_names")):
        if names is not None and len(names) == config.num_classes:
            return [str(name) for name in names]
    return [str(index) for index in range(config.num_classes)]


def _class_weights(config: TrainConfig, dataset: Dataset[Any]) -> torch.Tensor | None:
    if config.class_weights is None:
        return None
    if isinstance(config.class_weights, tuple):
        return torch.tensor(config.class_weights, dtype=torch.float32)
    labels = training_labels(dataset)
    _check_label_range("train", labels, config.num_classes)
    counts = np.bincount(labels, minlength=config.num_classes)[: config.num_classes]
    if (counts == 0).any():
        absent = [int(c) for c in np.flatnonzero(counts == 0)]
        raise TrainingError(
            f"class_weights='balanced' needs every class in the training set, but class(es) "
            f"{absent} have no samples; check the split or set class_weights to None"
        )
    weights = labels.size / (config.num_classes * counts)
    return torch.tensor(weights, dtype=torch.float32)


def build_model(config: TrainConfig) -> ResNet3d:
    """Build the model of a config and load its pretrained weights (strictly) when set."""
    model = resnet3d(
        config.depth,
        num_classes=config.num_classes,
        shortcut_type=config.shortcut_type,
        dropout=config.dropout,
    )
    if config.pretrained is not None:
        report = load_pretrained(model, config.pretrained)
        logger.info("pretrained weights %s: %s", config.pretrained, report.summary())
    else:
        logger.warning(
            "no pretrained weights given: %s starts from random initialisation",
            config.model_name,
        )
    return model


def _optimizer(config: TrainConfig, model: ResNet3d) -> torch.optim.Optimizer:
    groups = [
        {"params": list(model.backbone_parameters()), "lr": config.lr, "name": "backbone"},
        {"params": list(model.head_parameters()), "lr": config.head_lr, "name": "head"},
    ]
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    return torch.optim.SGD(groups, momentum=config.momentum, weight_decay=config.weight_decay)


class _LrFactor:
    """Closed-form learning-rate factor of epoch ``e`` (0-based) for LambdaLR."""

    def __init__(self, config: TrainConfig) -> None:
        self.kind = config.scheduler
        self.epochs = config.epochs
        self.step_size = config.step_size
        self.gamma = config.step_gamma

    def __call__(self, epoch: int) -> float:
        if self.kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(epoch, self.epochs) / self.epochs))
        if self.kind == "step":
            return float(self.gamma ** (epoch // self.step_size))
        return 1.0


def _scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    factor = _LrFactor(config)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=[factor, factor])


# --- training --------------------------------------------------------------------------------


def _is_better(value: float, best: float, mode: str) -> bool:
    if math.isnan(value):
        return False
    if math.isnan(best):
        return True
    return value < best if mode == "min" else value > best


def train(
    config: TrainConfig,
    train_ds: Dataset[Any],
    val_ds: Dataset[Any],
    *,
    out_dir: str | Path,
    test_ds: Dataset[Any] | None = None,
    progress: bool = False,
    resume: bool = False,
    context: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Fine-tune a 3D ResNet and write a run folder.

    Parameters
    ----------
    config
        The run's settings.
    train_ds, val_ds
        Datasets of dicts with ``image`` float32 ``(1, D, H, W)`` and ``label`` (int64,
        ``0 .. config.num_classes - 1``); the validation set picks the best epoch and drives
        early stopping. A dataset's ``class_names`` and ``labels`` attributes, when present,
        are checked against ``config.num_classes`` before training.
    out_dir
        Run folder; created if needed. Under DDP only rank 0 writes to it.
    test_ds
        Evaluated once with the best checkpoint; metrics get bootstrap confidence intervals,
        resampled by patient when items carry ``patient_id``.
    progress
        Show a tqdm bar per epoch (rank 0 only).
    resume
        Continue from ``checkpoints/last.pt`` of ``out_dir``; the config must equal the saved
        one except ``device`` and ``num_workers``.
    context
        JSON-serialisable facts that :func:`evaluate` and :func:`predict` need later (dataset
        root, preprocessing config, splits, ``class_names``), written to ``run_context.json``.

    Returns
    -------
    TrainResult
        History, best epoch and, on rank 0, test metrics.

    Raises
    ------
    TrainingError
        On an empty dataset, labels or class names that do not match ``config.num_classes``,
        a missing CUDA device, bad batches or a non-resumable folder.
    WeightLoadError
        If ``config.pretrained`` does not match the model.
    """
    files = RunFiles(Path(out_dir))
    device = resolve_device(config.device)
    if device.type == "cuda" and config.amp_dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        raise TrainingError(
            "amp_dtype 'bfloat16' is not supported on this GPU; set amp_dtype to 'float16'"
        )
    for name, dataset in (("train", train_ds), ("validation", val_ds)):
        if len(dataset) == 0:  # type: ignore[arg-type]
            raise TrainingError(f"the {name} dataset is empty; check the split file")
    _check_datasets(config, {"train": train_ds, "validation": val_ds, "test": test_ds})
    dist_context = distributed.init_from_env(device.type)
    if dist_context.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_context.local_rank)

    fork_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(config.seed)
        return _train_seeded(
            config, train_ds, val_ds, files, test_ds, progress, resume, context, device, dist_context
        )


@dataclass
class _RunState:
    """Training progress that a checkpoint restores besides the model and optimiser."""

    history: list[dict[str, Any]]
    best_value: float = math.nan
    best_epoch: int = 0
    bad_epochs: int = 0
    start_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None


def _cpu_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().to("cpu", copy=True) for key, value in model.state_dict().items()}


def _resume(
    files: RunFiles,
    config: TrainConfig,
    core: ResNet3d,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    scaler: torch.amp.GradScaler | None,
    device: torch.device,
) -> _RunState:
    saved = read_checkpoint(files.last_checkpoint)
    check_resumable(saved, config, files.last_checkpoint)
    core.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    if scaler is not None and saved.get("scaler"):
        scaler.load_state_dict(saved["scaler"])
    restore_rng(saved["rng"], device)
    state = _RunState(
        history=list(saved["history"]),
        best_value=float(saved["best_value"]),
        best_epoch=int(saved["best_epoch"]),
        bad_epochs=int(saved["bad_epochs"]),
        start_epoch=int(saved["epoch"]),
    )
    if files.best_checkpoint.is_file():
        state.best_state = read_checkpoint(files.best_checkpoint)["model"]
    logger.info("resuming %s after epoch %d", files.root, state.start_epoch)
    return state


def _save_epoch(
    files: RunFiles,
    config: TrainConfig,
    core: ResNet3d,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    scaler: torch.amp.GradScaler | None,
    device: torch.device,
    state: _RunState,
    improved: bool,
) -> None:
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "epoch": len(state.history),
        "model": core.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "history": state.history,
        "best_value": state.best_value,
        "best_epoch": state.best_epoch,
        "bad_epochs": state.bad_epochs,
        "rng": rng_state(device),
        "config": config.to_dict(),
    }
    save_torch_atomic(files.last_checkpoint, payload)
    if improved:
        # The best checkpoint serves evaluation and prediction, so it leaves out the
        # optimiser state, which is twice the size of the weights with Adam.
        save_torch_atomic(files.best_checkpoint, weights_only_payload(payload))
    write_history(files, state.history)


def _train_seeded(
    config: TrainConfig,
    train_ds: Dataset[Any],
    val_ds: Dataset[Any],
    files: RunFiles,
    test_ds: Dataset[Any] | None,
    progress: bool,
    resume: bool,
    context: Mapping[str, Any] | None,
    device: torch.device,
    dist_context: distributed.DistributedContext,
) -> TrainResult:
    main = dist_context.is_main
    core = build_model(config).to(device)
    weights = _class_weights(config, train_ds)
    weights = weights.to(device) if weights is not None else None
    optimizer = _optimizer(config, core)
    scheduler = _scheduler(config, optimizer)
    scaler = (
        torch.amp.GradScaler("cuda")
        if device.type == "cuda" and config.amp_dtype == "float16"
        else None
    )
    mode = metric_mode(config.early_stopping_metric)

    if resume:
        state = _resume(files, config, core, optimizer, scheduler, scaler, device)
    elif files.last_checkpoint.exists():
        # Every rank checks, so that no rank waits in a collective for one that raised.
        raise TrainingError(
            f"{files.root} already contains a run (checkpoints/last.pt); pass resume=True "
            "(--resume) to continue it or choose another output folder"
        )
    else:
        state = _RunState(history=[])

    if main:
        files.root.mkdir(parents=True, exist_ok=True)
        config.to_json(files.config)
        if context is not None:
            dump_json(files.context, dict(context))

    model: nn.Module = core
    if dist_context.enabled:
        model = nn.parallel.DistributedDataParallel(
            core, device_ids=[device.index] if device.type == "cuda" else None
        )

    stopped_early = False
    for epoch in range(state.start_epoch, config.epochs):
        if config.patience is not None and state.bad_epochs >= config.patience:
            stopped_early = True
            break
        started = time.perf_counter()
        frozen = epoch < config.freeze_backbone_epochs
        learning_rates = [group["lr"] for group in optimizer.param_groups]
        set_epoch = getattr(train_ds, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)  # per-epoch augmentation seeds of ScanDataset / NoduleDataset

        train_loader = make_loader(train_ds, config, shuffle=True, epoch=epoch, context=dist_context, device=device)
        description = f"epoch {epoch + 1}/{config.epochs}"
        train_pass = train_one_epoch(
            model, core, train_loader, optimizer, scaler, config, device, weights, frozen,
            progress and main, description,
        )
        scheduler.step()
        train_pass = gather_epoch_result(train_pass)
        val_loader = make_loader(val_ds, config, shuffle=False, epoch=epoch, context=dist_context, device=device)
        val_pass = predict_loader(core, val_loader, config, device, weights)

        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "lr": learning_rates[0],
            "head_lr": learning_rates[1],
            "frozen_backbone": frozen,
        }
        row.update(metrics_row("train", train_pass, config))
        row.update(metrics_row("val", val_pass, config))
        row["seconds"] = round(time.perf_counter() - started, 3)
        state.history.append(row)

        value = float(row[f"val_{config.early_stopping_metric}"])
        improved = _is_better(value, state.best_value, mode)
        if improved:
            state.best_value, state.best_epoch, state.bad_epochs = value, epoch + 1, 0
            state.best_state = _cpu_copy(core)
        else:
            state.bad_epochs += 1
        logger.info(
            "epoch %d/%d: train loss %.4f, val loss %.4f, val %s %.4f%s",
            epoch + 1, config.epochs, row["train_loss"], row["val_loss"],
            config.early_stopping_metric, value, " (best)" if improved else "",
        )
        if main:
            _save_epoch(files, config, core, optimizer, scheduler, scaler, device, state, improved)
        distributed.barrier()

    if stopped_early:
        logger.info(
            "early stopping after epoch %d: val %s did not improve for %d epochs",
            len(state.history), config.early_stopping_metric, state.bad_epochs,
        )
    if state.best_state is None:
        # Every validation value was NaN (e.g. ROC AUC with one class); keep the last epoch.
        logger.warning(
            "val %s was undefined in every epoch; the last epoch is used as the best",
            config.early_stopping_metric,
        )
        state.best_state = _cpu_copy(core)
        state.best_epoch = len(state.history)
        if main and files.last_checkpoint.is_file():
            save_torch_atomic(files.best_checkpoint, weights_only_payload(read_checkpoint(files.last_checkpoint)))

    test_metrics: dict[str, Any] | None = None
    test_ci: dict[str, tuple[float, float]] | None = None
    if test_ds is not None and main:
        core.load_state_dict(state.best_state)
        loader = make_loader(test_ds, config, shuffle=False, epoch=0, context=distributed.DistributedContext(), device=device)
        test_pass = predict_loader(core, loader, config, device, weights, progress, "test")
        test_metrics, test_ci = write_evaluation(
            files.test_metrics,
            files.test_predictions,
            test_pass,
            config,
            "test",
            state.best_epoch,
            class_names=_class_names(config, test_ds, context),
        )
    if main:
        from tunisian_lung.training.report import write_run_report

        write_run_report(files.root)
    distributed.barrier()
    return TrainResult(
        run_dir=files.root,
        config=config,
        history=state.history,
        best_epoch=state.best_epoch,
        best_value=state.best_value,
        stopped_early=stopped_early,
        test_metrics=test_metrics,
        test_ci=test_ci,
    )
