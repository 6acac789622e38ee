"""Run folders: file names, JSON and CSV outputs, checkpoints and their resume checks."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunisian_lung.errors import TrainingError
from tunisian_lung.models.weights import CHECKPOINT_FORMAT
from tunisian_lung.training._files import write_text_atomic
from tunisian_lung.training.config import TrainConfig

CHECKPOINT_VERSION = 1
# Config fields that may change between an interrupted run and its resumption.
_RESUMABLE_CHANGES = frozenset({"device", "num_workers"})

__all__ = [
    "CHECKPOINT_VERSION",
    "RunFiles",
    "check_resumable",
    "dump_json",
    "read_checkpoint",
    "restore_rng",
    "rng_state",
    "weights_only_payload",
    "write_history",
]


@dataclass(frozen=True)
class RunFiles:
    """Paths of the files in a run folder."""

    root: Path

    @property
    def config(self) -> Path:
        """``config.json``: the :class:`TrainConfig` of the run."""
        return self.root / "config.json"

    @property
    def context(self) -> Path:
        """``run_context.json``: dataset root, preprocessing and splits, for evaluate/predict."""
        return self.root / "run_context.json"

    @property
    def history_csv(self) -> Path:
        """``history.csv``: one row per epoch."""
        return self.root / "history.csv"

    @property
    def history_json(self) -> Path:
        """``history.json``: the same rows as JSON."""
        return self.root / "history.json"

    @property
    def best_checkpoint(self) -> Path:
        """``checkpoints/best.pt``: the epoch with the best validation metric."""
        return self.root / "checkpoints" / "best.pt"

    @property
    def last_checkpoint(self) -> Path:
        """``checkpoints/last.pt``: the latest epoch, for resuming."""
        return self.root / "checkpoints" / "last.pt"

    @property
    def test_metrics(self) -> Path:
        """``test_metrics.json``: metrics and bootstrap intervals on the test split."""
        return self.root / "test_metrics.json"

    @property
    def test_predictions(self) -> Path:
        """``test_predictions.csv``: probability and label per test scan."""
        return self.root / "test_predictions.csv"

    @property
    def curves(self) -> Path:
        """``training_curves.png``: loss and metrics per epoch."""
        return self.root / "training_curves.png"

    @property
    def report(self) -> Path:
        """``report.md``: the human-readable summary."""
        return self.root / "report.md"


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")


def dump_json(path: Path, data: Any) -> None:
    # NaN is written as the JSON-compatible null so that other tools can read the file.
    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, Mapping):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    text = json.dumps(clean(data), indent=2, default=_json_default, allow_nan=False) + "\n"
    write_text_atomic(path, text)


def write_history(files: RunFiles, history: Sequence[Mapping[str, Any]]) -> None:
    dump_json(files.history_json, list(history))
    buffer = io.StringIO()
    if history:
        columns = list(history[0])
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in history:
            writer.writerow({key: row.get(key) for key in columns})
    write_text_atomic(files.history_csv, buffer.getvalue())


def rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def read_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TrainingError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a corrupt file
        raise TrainingError(f"cannot read checkpoint {path}: {error}") from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path} is not a tunisian_lung training checkpoint")
    return payload


def weights_only_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("format", "version", "epoch", "model", "best_value", "best_epoch", "config")
    return {key: payload[key] for key in keys}


def check_resumable(saved: Mapping[str, Any], config: TrainConfig, path: Path) -> None:
    previous = TrainConfig.from_dict(saved["config"]).to_dict()
    current = config.to_dict()
    changed = sorted(k for k in current if current[k] != previous[k] and k not in _RESUMABLE_CHANGES)
    if changed:
        details = ", ".join(f"{k}: {previous[k]!r} -> {current[k]!r}" for k in changed)
        raise TrainingError(
            f"cannot resume from {path}: the config differs ({details}); resume with the saved "
            "config.json or start a new run folder"
        )
