"""Intensity steps: HU windowing to [-1, 1] and MedicalNet-style foreground z-score."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tunisian_lung.errors import PreprocessError
from tunisian_lung.io.volume import Volume


def _check_window(window_hu: Sequence[float]) -> tuple[float, float]:
    lower, upper = (float(v) for v in window_hu)
    if not upper > lower:
        raise PreprocessError(f"HU window must have upper > lower, got {tuple(window_hu)!r}")
    return lower, upper


def clip_to_window(volume: Volume, window_hu: Sequence[float] = (-1000.0, 400.0)) -> Volume:
    """Clip HU values to ``window_hu`` and return them as ``float32`` HU (geometry unchanged)."""
    lower, upper = _check_window(window_hu)
    array = np.clip(volume.array, lower, upper, dtype=np.float32)
    return volume.with_array(array)


def window_and_normalise(volume: Volume, window_hu: Sequence[float] = (-1000.0, 400.0)) -> Volume:
    """Clip HU values to ``window_hu`` and map the window linearly to [-1, 1].

    Parameters
    ----------
    volume:
        Volume in Hounsfield units, axes ``(z, y, x)``.
    window_hu:
        ``(lower, upper)`` in HU; ``lower`` maps to -1 and ``upper`` to 1.

    Returns
    -------
    Volume
        ``float32`` array in [-1, 1], same geometry; ``metadata["window_hu"]`` records the window.
    """
    lower, upper = _check_window(window_hu)
    array = np.clip(volume.array, lower, upper, dtype=np.float32)
    scale = np.float32(2.0 / (upper - lower))
    array -= np.float32(lower)
    array *= scale
    array -= np.float32(1.0)
    # Rounding can leave values a few ULP outside the interval.
    np.clip(array, -1.0, 1.0, out=array)
    return volume.with_array(array, window_hu=[lower, upper], intensity="window [-1, 1]")


def zscore_foreground(
    volume: Volume,
    foreground: np.ndarray,
    *,
    window_hu: Sequence[float] | None = (-1000.0, 400.0),
    series_id: str | None = None,
) -> Volume:
    """Standardise a volume with the mean and standard deviation of its foreground voxels.

    This is the MedicalNet-style normalisation: statistics come from the foreground (body)
    only, so the large air region outside the body does not dominate them. Background voxels
    are set to 0, the foreground mean.

    Parameters
    ----------
    volume:
        Volume in HU, axes ``(z, y, x)``.
    foreground:
        Boolean mask with the volume's shape; ``True`` marks body voxels.
    window_hu:
        Optional window to clip HU values to before computing the statistics.
    series_id:
        Name used in error messages.

    Returns
    -------
    Volume
        ``float32``, zero mean and unit standard deviation over the foreground, 0 outside it.

    Raises
    ------
    PreprocessError
        If the foreground is empty or constant.
    """
    label = series_id or volume.metadata.get("series_id") or volume.metadata.get("series_uid") or "volume"
    if foreground.shape != volume.shape:
        raise PreprocessError(f"{label}: foreground mask shape {foreground.shape} differs from volume shape {volume.shape}")
    if window_hu is not None:
        lower, upper = _check_window(window_hu)
        array = np.clip(volume.array, lower, upper, dtype=np.float32)
    else:
        array = np.asarray(volume.array, dtype=np.float32).copy()
    values = array[foreground]
    if values.size == 0:
        raise PreprocessError(
            f"{label}: the foreground mask is empty, so z-score statistics cannot be computed; "
            "check body_threshold_hu or use normalisation='window'"
        )
    mean = float(values.mean(dtype=np.float64))
    std = float(values.std(dtype=np.float64))
    if std == 0.0:
        raise PreprocessError(
            f"{label}: every foreground voxel has the value {mean:g}, so the z-score is undefined"
        )
    array -= np.float32(mean)
    array /= np.float32(std)
    array[~foreground] = 0.0
    return volume.with_array(array, intensity="zscore_foreground", zscore_mean=mean, zscore_std=std)
