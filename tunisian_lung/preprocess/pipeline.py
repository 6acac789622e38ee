"""The whole preprocessing recipe of a :class:`PreprocessConfig` applied to one volume."""

from __future__ import annotations

import logging

import numpy as np

from tunisian_lung.errors import PreprocessError
from tunisian_lung.io.volume import Volume
from tunisian_lung.preprocess.config import PreprocessConfig
from tunisian_lung.preprocess.intensity import clip_to_window, window_and_normalise, zscore_foreground
from tunisian_lung.preprocess.masks import body_mask, lung_mask
from tunisian_lung.preprocess.spatial import crop_to_mask_bbox, resample_to_spacing, resize_to_shape

logger = logging.getLogger(__name__)


def _series_name(volume: Volume, series_id: str | None) -> str:
    name = series_id or volume.metadata.get("series_id") or volume.metadata.get("series_uid")
    return f"series {name}" if name else "volume (no series id in its metadata)"


def check_volume(volume: Volume, *, series_id: str | None = None) -> None:
    """Raise :class:`PreprocessError` for NaN or infinite values, a constant array or a degenerate shape."""
    label = _series_name(volume, series_id)
    array = volume.array
    if min(array.shape) < 2:
        raise PreprocessError(f"{label}: shape {array.shape} (z, y, x) has an axis with fewer than 2 voxels; a 3D CT volume is needed")
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all():
            bad = int(array.size - np.count_nonzero(finite))
            raise PreprocessError(
                f"{label}: {bad} voxel(s) are NaN or infinite; fix the source file or replace them before preprocessing"
            )
    # The middle slice is enough to show that a real scan varies, which avoids two full passes.
    middle = array[array.shape[0] // 2]
    if middle.min() != middle.max():
        return
    lowest = array.min()
    if lowest == array.max():
        raise PreprocessError(f"{label}: every voxel has the value {lowest.item():g}; the volume is constant, so it carries no image")


def preprocess_volume(volume: Volume, config: PreprocessConfig, *, series_id: str | None = None) -> Volume:
    """Apply the preprocessing recipe of ``config`` to a CT volume in HU.

    Steps, in order: check values, crop to the body or lung mask (``config.crop``), clip to
    ``config.window_hu``, resample to ``config.target_spacing_mm``, resize to
    ``config.target_shape_zyx``, then normalise (``config.normalisation``).

    Parameters
    ----------
    volume:
        CT volume in Hounsfield units, axes ``(z, y, x)``, any integer or float dtype.
    config:
        The recipe.
    series_id:
        Name used in error messages; defaults to ``volume.metadata["series_id"]`` or
        ``["series_uid"]``.

    Returns
    -------
    Volume
        ``float32`` array, in [-1, 1] for ``normalisation="window"``; spacing and origin give
        the world position of every output voxel. ``metadata`` gains ``preprocess_config``
        (the config as JSON) and ``source_shape_zyx``.

    Raises
    ------
    PreprocessError
        NaN or infinite values, a constant volume, an empty body or lung mask, or a crop box
        smaller than the target shape would need (each message names the series).
    """
    label = _series_name(volume, series_id)
    check_volume(volume, series_id=series_id)
    source_shape = volume.shape
    current = volume

    if config.crop != "none":
        if config.crop == "lung":
            mask = lung_mask(current, threshold_hu=config.lung_threshold_hu)
            mask_name = "lung"
        else:
            mask = body_mask(current, threshold_hu=config.body_threshold_hu)
            mask_name = "body"
        if not mask.any():
            threshold = config.lung_threshold_hu if config.crop == "lung" else config.body_threshold_hu
            raise PreprocessError(
                f"{label}: the {mask_name} mask is empty (threshold {threshold:g} HU); the scan may not be a chest CT "
                "in HU, or use crop='none'"
            )
        current = crop_to_mask_bbox(current, mask, margin_mm=config.crop_margin_mm, series_id=series_id)
        if min(current.shape) < 2:
            raise PreprocessError(
                f"{label}: the {mask_name} crop box has shape {current.shape} (z, y, x), too thin to resample; "
                "the volume is smaller than the crop needs"
            )
        logger.debug("%s: cropped %s to the %s box %s", label, source_shape, mask_name, current.shape)

    if config.target_spacing_mm is not None:
        current = clip_to_window(current, config.window_hu)
        current = resample_to_spacing(current, config.target_spacing_mm, order=config.interpolation_order)
        if config.target_shape_zyx is not None:
            current = resize_to_shape(current, config.target_shape_zyx, order=config.interpolation_order)
    elif config.target_shape_zyx is not None:
        # Clipping inside the resize reads only the voxels the interpolation needs.
        current = resize_to_shape(
            current, config.target_shape_zyx, order=config.interpolation_order, clip_range=config.window_hu
        )
    else:
        current = clip_to_window(current, config.window_hu)

    if config.normalisation == "window":
        current = window_and_normalise(current, config.window_hu)
    else:
        foreground = body_mask(current, threshold_hu=config.body_threshold_hu)
        current = zscore_foreground(current, foreground, window_hu=config.window_hu, series_id=series_id)

    array = np.ascontiguousarray(current.array, dtype=np.float32)
    return Volume(
        array,
        spacing=current.spacing,
        origin=current.origin,
        direction=current.direction,
        metadata={
            **current.metadata,
            "preprocess_config": config.to_json(),
            "source_shape_zyx": list(source_shape),
        },
    )
