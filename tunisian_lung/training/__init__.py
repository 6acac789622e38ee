"""Fine-tuning MedicalNet 3D ResNets: configuration, trainer, metrics, reports, DDP helpers."""

from tunisian_lung.training.config import METRIC_NAMES, MULTICLASS_METRIC_NAMES, TrainConfig
from tunisian_lung.training.metrics import (
    binary_metrics,
    bootstrap_ci,
    confusion_matrix,
    multiclass_bootstrap,
    multiclass_bootstrap_ci,
    multiclass_metrics,
    one_vs_rest_roc_auc,
    roc_auc,
)
from tunisian_lung.training.report import write_comparison, write_run_report
from tunisian_lung.training.checkpoints import RunFiles
from tunisian_lung.training.inference import (
    Prediction,
    evaluate,
    load_run_model,
    predict,
    predict_array,
    predict_probabilities,
    predict_probabilities_array,
)
from tunisian_lung.training.loop import resolve_device
from tunisian_lung.training.trainer import TrainResult, train

__all__ = [
    "METRIC_NAMES",
    "MULTICLASS_METRIC_NAMES",
    "Prediction",
    "RunFiles",
    "TrainConfig",
    "TrainResult",
    "binary_metrics",
    "bootstrap_ci",
    "confusion_matrix",
    "evaluate",
    "load_run_model",
    "multiclass_bootstrap",
    "multiclass_bootstrap_ci",
    "multiclass_metrics",
    "one_vs_rest_roc_auc",
    "predict",
    "predict_array",
    "predict_probabilities",
    "predict_probabilities_array",
    "resolve_device",
    "roc_auc",
    "train",
    "write_comparison",
    "write_run_report",
]
