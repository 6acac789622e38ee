"""Preprocessing: a frozen config, pure steps that keep geometry, augmentation, and a cache.

``preprocess_volume(volume, preset("reference"))`` gives the reference study's input: the
volume clipped to -1000..400 HU, scaled to [-1, 1] and resized to 64x64x64 (``float32``).
:func:`preprocess_dataset` runs it over a dataset into a :class:`PreprocessCache`, and
:func:`load_preprocessed` reads one series back (memory-mapped).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tunisian_lung.preprocess.cache import CacheInfo, PreprocessCache, default_cache_dir, make_cache_key
from tunisian_lung.preprocess.config import PreprocessConfig, list_presets, preset
from tunisian_lung.preprocess.intensity import clip_to_window, window_and_normalise, zscore_foreground
from tunisian_lung.preprocess.masks import body_mask, lung_mask
from tunisian_lung.preprocess.patches import extract_patch
from tunisian_lung.preprocess.pipeline import check_volume, preprocess_volume
from tunisian_lung.preprocess.runner import (
    PreprocessResult,
    SeriesFailure,
    load_preprocessed,
    preprocess_dataset,
    preprocess_series,
    source_identity,
)
from tunisian_lung.preprocess.spatial import crop_to_box, crop_to_mask_bbox, resample_to_spacing, resize_to_shape

if TYPE_CHECKING:  # pragma: no cover
    from tunisian_lung.preprocess.augmentation import Augmentation, augment

# Importing torch takes seconds, and worker processes of preprocess_dataset never need it, so
# the augmentation names load on first access. The module is not called ``augment`` because
# importing it would then replace the ``augment`` function on this package.
_LAZY_AUGMENT_NAMES = ("Augmentation", "augment")


def __getattr__(name: str) -> Any:
    if name in _LAZY_AUGMENT_NAMES:
        augmentation = importlib.import_module("tunisian_lung.preprocess.augmentation")
        value = getattr(augmentation, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tunisian_lung.preprocess' has no attribute {name!r}")


__all__ = [
    "Augmentation",
    "CacheInfo",
    "PreprocessCache",
    "PreprocessConfig",
    "PreprocessResult",
    "SeriesFailure",
    "augment",
    "body_mask",
    "check_volume",
    "clip_to_window",
    "crop_to_box",
    "crop_to_mask_bbox",
    "default_cache_dir",
    "extract_patch",
    "list_presets",
    "load_preprocessed",
    "lung_mask",
    "make_cache_key",
    "preprocess_dataset",
    "preprocess_series",
    "preprocess_volume",
    "preset",
    "resample_to_spacing",
    "resize_to_shape",
    "source_identity",
    "window_and_normalise",
    "zscore_foreground",
]
