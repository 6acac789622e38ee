"""Loading pretrained weights into :class:`~tunisian_lung.models.resnet.ResNet3d` from local files.

Three file layouts are accepted:

* MedicalNet checkpoints: a dict whose ``state_dict`` entry contains the weights, with keys
  prefixed ``module.`` (saved from ``nn.DataParallel``) and a segmentation head ``conv_seg.*``.
* Plain state dicts (``torch.save(model.state_dict(), path)``), with or without ``module.``.
* Checkpoints written by this library's trainer (``format == "tunisian_lung-checkpoint"``).

The library never downloads weights. MedicalNet publishes ``resnet_{10,18,34,50,101,152,200}.pth``
and ``resnet_{10,18,34,50}_23dataset.pth``; docs/training.md lists where they are published.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunisian_lung.errors import WeightLoadError
from tunisian_lung.models.resnet import HEAD_PREFIX, MEDICALNET_LAYERS

__all__ = ["LoadReport", "CHECKPOINT_FORMAT", "load_pretrained", "read_state_dict"]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "tunisian_lung-checkpoint"

# Prefixes added by nn.DataParallel / DistributedDataParallel and by torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# MedicalNet's segmentation decoder, which the classification head replaces.
_SEGMENTATION_HEAD_PREFIX = "conv_seg."
# BatchNorm's batch counter; only momentum=None uses it, and PyTorch < 0.4.1 did not save it.
_OPTIONAL_SUFFIX = ".num_batches_tracked"
_EXAMPLES = 5


@dataclass(frozen=True)
class LoadReport:
    """Outcome of :func:`load_pretrained`.

    Attributes
    ----------
    matched
        Model keys whose tensors were copied from the file.
    missing
        Backbone keys of the model that the file lacks or stores with another shape (the shapes
        are in ``mismatched``).
    unexpected
        Keys of the file that the model does not have, after prefixes were stripped.
    skipped_head
        Keys of the file that belong to a head and were not loaded (MedicalNet's ``conv_seg.*``,
        or ``fc.*`` unless ``load_head=True``).
    mismatched
        ``key: file shape != model shape`` descriptions, a subset of ``missing``.
    source_format
        ``"medicalnet"``, ``"state_dict"`` or ``"tunisian_lung"``.
    """

    matched: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    skipped_head: tuple[str, ...]
    mismatched: tuple[str, ...] = ()
    source_format: str = "state_dict"

    @property
    def complete(self) -> bool:
        """True when every backbone tensor loaded and the file had no foreign keys."""
        return not self.missing and not self.unexpected

    def summary(self) -> str:
        """Return a one-line description of the counts."""
        return (
            f"{len(self.matched)} tensors loaded, {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected, {len(self.skipped_head)} head tensors skipped "
            f"({self.source_format} file)"
        )


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                changed = True
    return key


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """Read the weights of a checkpoint file into a flat state dict with prefixes stripped.

    Parameters
    ----------
    path
        Local ``.pth``/``.pt`` file.

    Returns
    -------
    (state_dict, source_format)
        Tensors on the CPU keyed by parameter name without ``module.``; the format is
        ``"medicalnet"``, ``"state_dict"`` or ``"tunisian_lung"``.

    Raises
    ------
    WeightLoadError
        If the file is missing, cannot be unpickled with ``weights_only=True``, or contains
        no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightLoadError(
            f"weights file not found: {path}. Download the MedicalNet file for this depth "
            "(see docs/training.md) and pass its local path"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
        raise WeightLoadError(
            f"cannot read {path} as a PyTorch checkpoint with weights_only=True: {error}. "
            "The file may be truncated, not a checkpoint, or contain arbitrary Python objects; "
            "re-save only its state_dict with torch.save(model.state_dict(), path)"
        ) from error

    source_format = "state_dict"
    state: Any = payload
    if isinstance(payload, Mapping) and payload.get("format") == CHECKPOINT_FORMAT:
        state, source_format = payload.get("model"), "tunisian_lung"
    elif isinstance(payload, Mapping) and "state_dict" in payload:
        state, source_format = payload["state_dict"], "medicalnet"
    if not isinstance(state, Mapping):
        raise WeightLoadError(
            f"{path} contains a {type(state).__name__}, not a state dict of tensors; expected a "
            "MedicalNet checkpoint, a plain state dict or a tunisian_lung checkpoint"
        )

    tensors: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            tensors[_strip_prefixes(str(key))] = value
    if not tensors:
        raise WeightLoadError(f"{path} contains no tensors; it is not a weights file")
    return tensors, source_format


def describe_architecture(state: Mapping[str, torch.Tensor]) -> str:
    """Guess the ResNet depth, block and shortcut type of a state dict, for error messages."""
    blocks = []
    for stage in range(1, 5):
        pattern = re.compile(rf"^layer{stage}\.(\d+)\.")
        indices = {int(m.group(1)) for key in state if (m := pattern.match(key))}
        blocks.append(max(indices) + 1 if indices else 0)
    bottleneck = any(re.match(r"^layer1\.0\.conv3\.", key) for key in state)
    shortcut = "B" if any(".downsample." in key for key in state) else "A"
    depth = None
    for candidate, layers in MEDICALNET_LAYERS.items():
        if tuple(blocks) == layers and (candidate >= 50) == bottleneck:
            depth = candidate
    conv1 = state.get("conv1.weight")
    channels = f", {conv1.shape[1]} input channel(s)" if conv1 is not None and conv1.ndim == 5 else ""
    name = f"ResNet{depth}" if depth is not None else "an unknown ResNet"
    block = "Bottleneck" if bottleneck else "BasicBlock"
    return f"{name} ({block}, blocks per stage {blocks}, shortcut type {shortcut}{channels})"


def _examples(keys: list[str] | tuple[str, ...]) -> str:
    shown = ", ".join(keys[:_EXAMPLES])
    more = f" and {len(keys) - _EXAMPLES} more" if len(keys) > _EXAMPLES else ""
    return shown + more


def load_pretrained(
    model: nn.Module,
    path: str | Path,
    *,
    strict_backbone: bool = True,
    load_head: bool = False,
) -> LoadReport:
    """Copy backbone weights from a local checkpoint into ``model``.

    Parameters
    ----------
    model
        A :class:`~tunisian_lung.models.resnet.ResNet3d` (or a DDP/DataParallel wrapper).
    path
        Local checkpoint file; nothing is downloaded.
    strict_backbone
        When true (the default), raise unless every backbone tensor of the model loads and the
        file has no backbone keys the model lacks. Set false only to fine-tune a partly matching
        file on purpose; the report then lists what did not load.
    load_head
        Also load ``fc.*`` when the file has it with matching shapes (this library's own
        checkpoints with the same class count). By default the head keeps its fresh
        initialisation.

    Returns
    -------
    LoadReport
        Matched, missing, unexpected and skipped head keys.

    Raises
    ------
    WeightLoadError
        If the file cannot be read, or ``strict_backbone`` is true and the file does not cover
        the backbone exactly (wrong depth, wrong shortcut type, a 3-channel first convolution,
        other shape mismatches). The message names example keys and the architecture the file
        appears to hold.
    """
    wrapped = getattr(model, "module", None)
    target: nn.Module = wrapped if isinstance(wrapped, nn.Module) else model
    file_state, source_format = read_state_dict(path)
    model_state = target.state_dict()

    to_load: dict[str, torch.Tensor] = {}
    matched: list[str] = []
    missing: list[str] = []
    mismatched: list[str] = []
    skipped_head: list[str] = []

    for key, value in file_state.items():
        is_head = key.startswith(_SEGMENTATION_HEAD_PREFIX) or key.startswith(HEAD_PREFIX)
        if is_head and not (load_head and key.startswith(HEAD_PREFIX)):
            skipped_head.append(key)
    unexpected = [
        key for key in file_state if key not in model_state and key not in skipped_head
    ]

    for key, expected in model_state.items():
        is_head = key.startswith(HEAD_PREFIX)
        if is_head and not load_head:
            continue
        if key not in file_state:
            if key.endswith(_OPTIONAL_SUFFIX) or is_head:
                continue
            missing.append(key)
            continue
        value = file_state[key]
        if tuple(value.shape) != tuple(expected.shape):
            mismatched.append(f"{key}: file {tuple(value.shape)} != model {tuple(expected.shape)}")
            if is_head:
                skipped_head.append(key)
            else:
                missing.append(key)
        else:
            to_load[key] = value.to(dtype=expected.dtype)
            matched.append(key)

    report = LoadReport(
        matched=tuple(matched),
        missing=tuple(missing),
        unexpected=tuple(unexpected),
        skipped_head=tuple(skipped_head),
        mismatched=tuple(mismatched),
        source_format=source_format,
    )

    if strict_backbone and not report.complete:
        raise WeightLoadError(_mismatch_message(Path(path), file_state, target, report))
    if not report.complete:
        logger.warning(
            "partial weight load from %s (strict_backbone=False): %s; missing e.g. %s; "
            "unexpected e.g. %s",
            path,
            report.summary(),
            _examples(report.missing),
            _examples(report.unexpected),
        )
    target.load_state_dict(to_load, strict=False)
    logger.info("loaded weights from %s: %s", path, report.summary())
    return report


def _mismatch_message(
    path: Path, file_state: Mapping[str, torch.Tensor], model: nn.Module, report: LoadReport
) -> str:
    lines = [
        f"{path} does not match the model: {report.summary()}.",
        f"The file looks like {describe_architecture(file_state)}; the model is "
        f"{describe_architecture(model.state_dict())}.",
    ]
    if report.mismatched:
        lines.append(f"Shape mismatches: {_examples(report.mismatched)}.")
    absent = [key for key in report.missing if key not in file_state]
    if absent:
        lines.append(f"Missing from the file: {_examples(absent)}.")
    if report.unexpected:
        lines.append(f"Not in the model: {_examples(list(report.unexpected))}.")
    conv1 = file_state.get("conv1.weight")
    if conv1 is not None and conv1.ndim == 5 and conv1.shape[1] != 1:
        lines.append(
            f"The first convolution takes {conv1.shape[1]} channels but CT input has 1; use a "
            "single-channel MedicalNet checkpoint."
        )
    lines.append(
        "Fix: pick the model depth and shortcut type that match the file (MedicalNet: "
        "resnet_10 B, resnet_18 A, resnet_34 A, resnet_50/101/152/200 B), or pass "
        "strict_backbone=False to load the matching part on purpose."
    )
    return " ".join(lines)
