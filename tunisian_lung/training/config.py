"""The frozen training configuration and its JSON round trip."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

from tunisian_lung.errors import ConfigError
from tunisian_lung.models.resnet import MEDICALNET_LAYERS

__all__ = ["TrainConfig", "METRIC_NAMES", "MULTICLASS_METRIC_NAMES", "metric_mode", "metric_names"]

Optimizer = Literal["adam", "adamw", "sgd"]
Scheduler = Literal["none", "cosine", "step"]
AmpDtype = Literal["bfloat16", "float16", "none"]
Device = Literal["auto", "cpu", "cuda"]

# Metrics that :func:`tunisian_lung.training.metrics.binary_metrics` reports for a split.
METRIC_NAMES = (
    "loss",
    "accuracy",
    "balanced_accuracy",
    "sensitivity",
    "specificity",
    "roc_auc",
)

# Metrics that :func:`tunisian_lung.training.metrics.multiclass_metrics` reports for a split
# and that can select the best epoch of a run with more than two classes. Sensitivity and
# specificity are per class there, so they are not among them.
MULTICLASS_METRIC_NAMES = (
    "loss",
    "accuracy",
    "balanced_accuracy",
    "roc_auc",
)


def metric_names(num_classes: int) -> tuple[str, ...]:
    """Return the per-split metrics of a run with ``num_classes`` classes."""
    return METRIC_NAMES if num_classes == 2 else MULTICLASS_METRIC_NAMES


def metric_mode(metric: str) -> Literal["min", "max"]:
    """Return whether a lower (``loss``) or higher (every other metric) value is better."""
    return "min" if metric.endswith("loss") else "max"


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Settings of one fine-tuning run; immutable, validated on construction.

    Attributes
    ----------
    depth
        ResNet depth: 10, 18, 34, 50, 101, 152 or 200.
    shortcut_type
        ``"A"``, ``"B"`` or ``None`` for the type of MedicalNet's checkpoint of that depth.
    pretrained
        Local path of the pretrained weights, or ``None`` to train from random initialisation
        (an explicit choice: the trainer never falls back to it when loading fails).
    num_classes
        Output classes, at least 2. With 2 the metrics are binary (sensitivity, specificity,
        ``threshold``). With more, a scan's label is its most probable class, and the metrics
        are accuracy, balanced accuracy, macro one-vs-rest ROC AUC and per-class values.
    dropout
        Dropout probability before the linear head.
    epochs
        Number of training epochs (10 in the reference study).
    batch_size
        Volumes per optimiser step on each process.
    optimizer
        ``"adam"``, ``"adamw"`` or ``"sgd"`` (SGD uses ``momentum``).
    lr, head_lr
        Learning rates of the pretrained backbone and of the new linear head.
    weight_decay
        L2 penalty (decoupled for AdamW).
    momentum
        SGD momentum.
    scheduler
        ``"none"``, ``"cosine"`` (annealed to 0 over ``epochs``) or ``"step"`` (multiply by
        ``step_gamma`` every ``step_size`` epochs); stepped once per epoch.
    freeze_backbone_epochs
        Number of first epochs that train only the head; the backbone's weights and BatchNorm
        statistics stay fixed meanwhile.
    class_weights
        ``"balanced"`` (``n_samples / (n_classes * count)`` from the training labels), a tuple
        with one weight per class, or ``None`` for an unweighted cross-entropy.
    seed
        Seed of model initialisation, shuffling, dropout and data-loader workers.
    early_stopping_metric
        Validation metric that selects the best checkpoint and drives early stopping, one of
        :data:`METRIC_NAMES` (binary) or :data:`MULTICLASS_METRIC_NAMES`; ``loss`` is
        minimised, the others maximised.
    patience
        Stop after this many epochs without improvement; ``None`` trains every epoch.
    amp_dtype
        Autocast dtype on CUDA; ignored on the CPU, where training runs in float32.
    grad_clip
        Maximum global gradient L2 norm, or ``None`` for no clipping.
    device
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
    num_workers
        DataLoader worker processes.
    threshold
        Probability of the positive class at and above which a scan is labelled positive.
        Binary runs only: with more classes it must keep its default of 0.5.
    bootstrap_resamples
        Bootstrap resamples for the test confidence intervals.
    confidence_level
        Coverage of the bootstrap intervals.
    """

    depth: int = 10
    shortcut_type: Literal["A", "B"] | None = None
    pretrained: str | None = None
    num_classes: int = 2
    dropout: float = 0.2
    epochs: int = 10
    batch_size: int = 8
    optimizer: Optimizer = "adamw"
    lr: float = 1e-4
    head_lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    scheduler: Scheduler = "cosine"
    step_size: int = 5
    step_gamma: float = 0.1
    freeze_backbone_epochs: int = 0
    class_weights: str | tuple[float, ...] | None = "balanced"
    seed: int = 0
    early_stopping_metric: str = "loss"
    patience: int | None = None
    amp_dtype: AmpDtype = "bfloat16"
    grad_clip: float | None = 1.0
    device: Device = "auto"
    num_workers: int = 0
    threshold: float = 0.5
    bootstrap_resamples: int = 1000
    confidence_level: float = 0.95

    def __post_init__(self) -> None:
        if isinstance(self.class_weights, list):
            object.__setattr__(self, "class_weights", tuple(float(w) for w in self.class_weights))
        if self.pretrained is not None and not isinstance(self.pretrained, str):
            object.__setattr__(self, "pretrained", str(self.pretrained))
        self._validate()

    def _validate(self) -> None:
        def fail(name: str, fix: str) -> None:
            raise ConfigError(f"TrainConfig.{name}={getattr(self, name)!r} is invalid: {fix}")

        if self.depth not in MEDICALNET_LAYERS:
            fail("depth", f"choose one of {sorted(MEDICALNET_LAYERS)}")
        if self.shortcut_type not in (None, "A", "B"):
            fail("shortcut_type", "use 'A', 'B' or None")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 2:
            fail("num_classes", "use an integer of at least 2 (2 for binary targets, 4 for stage)")
        if not 0.0 <= self.dropout < 1.0:
            fail("dropout", "use a probability in [0, 1)")
        for name in ("epochs", "batch_size", "step_size", "bootstrap_resamples"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                fail(name, "use a positive integer")
        for name in ("freeze_backbone_epochs", "num_workers"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                fail(name, "use a non-negative integer")
        if self.optimizer not in ("adam", "adamw", "sgd"):
            fail("optimizer", "use 'adam', 'adamw' or 'sgd'")
        if self.scheduler not in ("none", "cosine", "step"):
            fail("scheduler", "use 'none', 'cosine' or 'step'")
        for name in ("lr", "head_lr"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                fail(name, "use a positive finite learning rate")
        for name in ("weight_decay", "momentum"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                fail(name, "use a non-negative finite number")
        if not 0.0 < self.step_gamma <= 1.0:
            fail("step_gamma", "use a factor in (0, 1]")
        if isinstance(self.class_weights, str):
            if self.class_weights != "balanced":
                fail("class_weights", "use 'balanced', one weight per class, or None")
        elif self.class_weights is not None:
            weights = self.class_weights
            if len(weights) != self.num_classes or any(
                not math.isfinite(w) or w <= 0 for w in weights
            ):
                fail("class_weights", f"give {self.num_classes} positive finite weights")
        allowed = metric_names(self.num_classes)
        if self.early_stopping_metric not in allowed:
            fail(
                "early_stopping_metric",
                f"choose one of {list(allowed)} for {self.num_classes} classes",
            )
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience < 1):
            fail("patience", "use a positive number of epochs or None")
        if self.amp_dtype not in ("bfloat16", "float16", "none"):
            fail("amp_dtype", "use 'bfloat16', 'float16' or 'none'")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            fail("grad_clip", "use a positive maximum norm or None")
        if self.device not in ("auto", "cpu", "cuda"):
            fail("device", "use 'auto', 'cpu' or 'cuda'")
        if not 0.0 < self.threshold < 1.0:
            fail("threshold", "use a probability strictly between 0 and 1")
        if self.num_classes > 2 and self.threshold != 0.5:
            fail(
                "threshold",
                f"a run with {self.num_classes} classes predicts the most probable class, so "
                "leave threshold at 0.5",
            )
        if not 0.5 <= self.confidence_level < 1.0:
            fail("confidence_level", "use a coverage in [0.5, 1), e.g. 0.95")

    @property
    def model_name(self) -> str:
        """Name of the architecture, e.g. ``resnet10``."""
        return f"resnet{self.depth}"

    def replace(self, **changes: Any) -> "TrainConfig":
        """Return a copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict of every field."""
        data = dataclasses.asdict(self)
        if isinstance(self.class_weights, tuple):
            data["class_weights"] = list(self.class_weights)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        """Build a config from :meth:`to_dict` output; unknown keys raise :class:`ConfigError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown TrainConfig field(s) {unknown}; valid fields are {sorted(known)}"
            )
        return cls(**dict(data))

    def to_json(self, path: str | Path | None = None) -> str:
        """Return the config as JSON text and, when ``path`` is given, write it there atomically."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
        if path is not None:
            from tunisian_lung.training._files import write_text_atomic

            write_text_atomic(Path(path), text)
        return text

    @classmethod
    def from_json(cls, source: str | Path) -> "TrainConfig":
        """Read a config from a JSON file path or a JSON string."""
        text = str(source)
        if not text.lstrip().startswith("{"):
            path = Path(source)
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as error:
                raise ConfigError(f"cannot read training config {path}: {error}") from error
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"training config is not valid JSON: {error}") from error
        if not isinstance(data, dict):
            raise ConfigError(f"training config must be a JSON object, got {type(data).__name__}")
        return cls.from_dict(data)
