"""Building the torch datasets of a training run from a release folder, and recording how.

A run folder's ``run_context.json`` stores the dataset root, the preprocessing config, the
target and the split file, so that :func:`tunisian_lung.training.evaluate` and
:func:`tunisian_lung.training.predict` rebuild the same inputs without more arguments.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from tunisian_lung.errors import TrainingError

__all__ = ["RunData", "prepare_run_data", "datasets_from_context", "SPLITS_FILE"]

logger = logging.getLogger(__name__)

SPLITS_FILE = "splits.json"


@dataclass(frozen=True)
class RunData:
    """Torch datasets of the train, val and test splits plus the context to store in the run."""

    train: Any
    val: Any
    test: Any | None
    context: dict[str, Any]


def _preprocess_config(preset_name: str, shape: int | None) -> Any:
    from tunisian_lung.preprocess import preset

    config = preset(preset_name)
    if shape is not None:
        config = config.replace(target_shape_zyx=(shape, shape, shape))
    return config


def prepare_run_data(
    root: str | Path,
    run_dir: str | Path,
    *,
    preset_name: str = "reference",
    shape: int | None = None,
    splits_path: str | Path | None = None,
    seed: int = 0,
    target: str = "cancer",
    augment: bool = False,
    exclude_unlabeled: bool = False,
) -> RunData:
    """Open a release, choose its splits and build scan-level datasets for training.

    Parameters
    ----------
    root
        Release folder.
    run_dir
        Run folder; the splits used are saved there as ``splits.json``.
    preset_name
        Preprocessing preset (``reference``: -1000..400 HU to [-1, 1], resized to 64^3).
    shape
        Cube edge in voxels that replaces the preset's output shape, or ``None``.
    splits_path
        Split file; ``None`` uses ``ROOT/splits.json`` when present, else makes stratified
        70/15/15 patient-level splits with ``seed``.
    seed
        Seed of new splits and of augmentation.
    target
        Scan label: ``cancer`` (healthy 0, cancer 1), ``malignant_nodule`` (0/1) or ``stage``
        (I..IV as 0..3; healthy patients have no stage).
    augment
        Augment the training split with the default augmentation.
    exclude_unlabeled
        Leave out series without a label for ``target`` (for ``stage``: healthy and unstaged
        patients) instead of raising :class:`~tunisian_lung.errors.LabelError`. Stored in the
        run context, so that evaluation leaves out the same series.
    """
    from tunisian_lung.dataset import open_dataset
    from tunisian_lung.splits import load_splits, make_splits

    root = Path(root).resolve()
    dataset = open_dataset(root)
    if splits_path is not None:
        splits = load_splits(dataset, splits_path)
        origin = str(Path(splits_path).resolve())
    elif (root / SPLITS_FILE).is_file():
        splits = load_splits(dataset)
        origin = str(root / SPLITS_FILE)
    else:
        splits = make_splits(dataset, seed=seed)
        origin = f"make_splits(seed={seed})"
    for name in ("train", "val"):
        if name not in splits.names:
            raise TrainingError(
                f"the splits from {origin} have no {name!r} split (names {list(splits.names)}); "
                "training needs 'train' and 'val', and uses 'test' when present"
            )
    # Under torchrun every process builds the same splits; only rank 0 writes them.
    if int(os.environ.get("RANK", "0")) == 0:
        splits.save(Path(run_dir) / SPLITS_FILE)
    logger.info("splits from %s: %s", origin, splits.counts())

    config = _preprocess_config(preset_name, shape)
    options: dict[str, Any] = {"exclude_unlabeled": True} if exclude_unlabeled else {}
    train = splits.split("train").to_torch(
        "scan", config=config, augment=augment, target=target, seed=seed, **options
    )
    val = splits.split("val").to_torch("scan", config=config, target=target, seed=seed, **options)
    test = (
        splits.split("test").to_torch("scan", config=config, target=target, seed=seed, **options)
        if "test" in splits.names
        else None
    )
    for name, split_data in (("train", train), ("val", val), ("test", test)):
        if split_data is not None and len(split_data) == 0:
            raise TrainingError(
                f"the {name} split has no series labelled for target {target!r} after leaving out "
                "unlabelled series; choose another target or other splits"
            )
    context = {
        "dataset_root": str(root),
        "task": "scan",
        "target": target,
        "class_names": list(getattr(train, "class_names", ())),
        "preset": preset_name,
        "preprocess": config.to_dict(),
        "splits_file": SPLITS_FILE,
        "splits_source": origin,
        "augment": augment,
        "exclude_unlabeled": exclude_unlabeled,
    }
    return RunData(train=train, val=val, test=test, context=context)


def datasets_from_context(
    run_dir: str | Path, context: Mapping[str, Any], split: str, *, root: str | Path | None = None
) -> Any:
    """Rebuild the dataset of one split of a finished run from its ``run_context.json``."""
    from tunisian_lung.dataset import open_dataset
    from tunisian_lung.preprocess import PreprocessConfig
    from tunisian_lung.splits import load_splits

    dataset_root = Path(root) if root is not None else Path(str(context.get("dataset_root", "")))
    if not dataset_root.is_dir():
        raise TrainingError(
            f"dataset folder {dataset_root} of run {run_dir} not found; pass --root with the "
            "release folder's current location"
        )
    dataset = open_dataset(dataset_root)
    splits = load_splits(dataset, Path(run_dir) / str(context.get("splits_file", SPLITS_FILE)))
    if split not in splits.names:
        raise TrainingError(f"run {run_dir} has no split {split!r}; its splits are {list(splits.names)}")
    config = PreprocessConfig.from_dict(context["preprocess"])
    options: dict[str, Any] = {"exclude_unlabeled": True} if context.get("exclude_unlabeled") else {}
    return splits.split(split).to_torch(
        str(context.get("task", "scan")),
        config=config,
        target=str(context.get("target", "cancer")),
        **options,
    )
