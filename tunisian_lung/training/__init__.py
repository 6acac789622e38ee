"""Fine-tuning MedicalNet 3D ResNets: configuration, trainer, metrics, reports, DDP helpers."""

from tunisian_lung.training.config import METRIC_NAMES, TrainConfig
from tunisian_lung.training.metrics import binary_metrics, bootstrap_ci, confusion_matrix, roc_auc
from tunisian_lung.training.report import write_comparison, write_run_report
from tunisian_lung.training.checkpoints import RunFiles
from tunisian_lung.training.inference import evaluate, load_run_model, predict, predict_array
from tunisian_lung.training.loop import resolve_device
from tunisian_lung.training.trainer import TrainResult, train

__all__ = [
    "METRIC_NAMES",
    "RunFiles",
    "TrainConfig",
    "TrainResult",
    "binary_metrics",
    "bootstrap_ci",
    "confusion_matrix",
    "evaluate",
    "load_run_model",
    "predict",
    "predict_array",
    "resolve_device",
    "roc_auc",
    "train",
    "write_comparison",
    "write_run_report",
]
