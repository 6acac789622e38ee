"""Geometry-keeping spatial steps: resample to a spacing, resize to a shape, crop to a box.

Every function returns a new :class:`~tunisian_lung.io.volume.Volume` whose ``spacing`` and
``origin`` describe the output grid exactly, so ``output.voxel_to_world`` and
``source.world_to_voxel`` map any output voxel back to the source voxel it was sampled from.

Convention (as in ITK): ``origin`` is the world position of the *centre* of voxel ``(0, 0, 0)``
and a voxel covers half a spacing on each side of its centre. Resizing keeps the physical
extent (outer voxel edges) of the input, so the first output voxel centre moves by half the
difference of the spacings.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from tunisian_lung.errors import PreprocessError
from tunisian_lung.io.volume import Volume

logger = logging.getLogger(__name__)


def _series_label(volume: Volume, series_id: str | None) -> str:
    label = series_id or volume.metadata.get("series_id") or volume.metadata.get("series_uid")
    return f"series {label}" if label else "volume"


def _float_array(volume: Volume) -> np.ndarray:
    array = volume.array
    if array.dtype == np.float32 or array.dtype == np.float64:
        return array
    return array.astype(np.float32)


def _derived(volume: Volume, array: np.ndarray, spacing_xyz: Sequence[float], origin_xyz: Any, **metadata: Any) -> Volume:
    return Volume(
        array,
        spacing=tuple(float(s) for s in spacing_xyz),
        origin=tuple(float(o) for o in origin_xyz),
        direction=volume.direction,
        metadata={**volume.metadata, **metadata},
    )


def _linear_axis_samples(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the two neighbour indices and the weight of the second for each output position."""
    # Edge-aligned sampling positions, clamped to the outer voxel centres (edge repeat).
    position = (np.arange(size_out, dtype=np.float64) + 0.5) * (size_in / size_out) - 0.5
    position = np.clip(position, 0.0, size_in - 1)
    lower = np.floor(position).astype(np.intp)
    upper = np.minimum(lower + 1, size_in - 1)
    return lower, upper, position - lower


def _resize_linear_clipped(array: np.ndarray, target: tuple[int, int, int], clip_range: tuple[float, float] | None) -> np.ndarray:
    """Trilinear, edge-aligned resize that reads (and clips) only the input voxels it needs.

    Equal to ``ndimage.zoom(clip(array), ..., order=1, mode="nearest", grid_mode=True)`` up to
    float32 rounding, but a 512x512x133 to 64^3 resize touches about 2 million input voxels
    instead of converting all 35 million.
    """
    samples = [_linear_axis_samples(n_in, n_out) for n_in, n_out in zip(array.shape, target)]
    needed = [np.union1d(lower, upper) for lower, upper, _ in samples]
    block = array[np.ix_(*needed)].astype(np.float32)
    if clip_range is not None:
        np.clip(block, clip_range[0], clip_range[1], out=block)
    for axis, ((lower, upper, weight), needed_indices) in enumerate(zip(samples, needed)):
        lower_local = np.searchsorted(needed_indices, lower)
        upper_local = np.searchsorted(needed_indices, upper)
        shape = [1, 1, 1]
        shape[axis] = -1
        weight_axis = weight.astype(np.float32).reshape(shape)
        low_values = np.take(block, lower_local, axis=axis)
        high_values = np.take(block, upper_local, axis=axis)
        block = low_values + (high_values - low_values) * weight_axis
    return np.ascontiguousarray(block, dtype=np.float32)


def resize_to_shape(
    volume: Volume, shape_zyx: Sequence[int], *, order: int = 1, clip_range: Sequence[float] | None = None
) -> Volume:
    """Resize a volume to ``shape_zyx`` over the same physical extent.

    Parameters
    ----------
    volume:
        Input volume, any real dtype, axes ``(z, y, x)``.
    shape_zyx:
        Output shape ``(z, y, x)``; every entry must be positive.
    order:
        Spline interpolation order (0 nearest, 1 linear, 3 cubic).
    clip_range:
        Optional ``(low, high)`` to clip values to before interpolating, e.g. the HU window.
        The result equals clipping the whole volume first; with ``order=1`` only the input
        voxels the interpolation reads are clipped, which is much faster for downsampling.

    Returns
    -------
    Volume
        ``float32`` for integer input (``float64`` input stays ``float64``), shape ``shape_zyx``.
        Spacing along each axis is ``spacing * n_in / n_out``; the outer voxel edges coincide
        with the input's, and samples outside the input's voxel centres repeat the edge voxel.

    Notes
    -----
    There is no anti-aliasing filter: a 512 to 64 downsampling with ``order=1`` takes a
    weighted mean of the two nearest input voxels, as MONAI's ``Resize`` does by default.
    """
    target = tuple(int(n) for n in shape_zyx)
    if len(target) != 3 or min(target) <= 0:
        raise PreprocessError(f"resize target shape must be 3 positive integers (z, y, x), got {tuple(shape_zyx)!r}")
    bounds: tuple[float, float] | None = None
    if clip_range is not None:
        low, high = (float(v) for v in clip_range)
        if not high > low:
            raise PreprocessError(f"resize clip_range must be (low, high) with high > low, got {tuple(clip_range)!r}")
        bounds = (low, high)
    source = volume.shape

    if order == 1 and target != source:
        array = _resize_linear_clipped(volume.array, target, bounds)
    else:
        data = _float_array(volume)
        if bounds is not None:
            data = np.clip(data, bounds[0], bounds[1], dtype=np.float32)
        if target == source:
            return _derived(volume, data, volume.spacing, volume.origin)
        zoom_zyx = [t / s for t, s in zip(target, source)]
        # grid_mode=True aligns the outer voxel edges, which is the half-voxel convention above.
        array = ndimage.zoom(data, zoom_zyx, order=order, mode="nearest", grid_mode=True, prefilter=order > 1)
        if array.shape != target:  # scipy rounds the output shape; zoom factors are exact ratios
            raise PreprocessError(f"internal resize error: expected shape {target}, got {array.shape}")

    old_spacing = np.asarray(volume.spacing)
    new_spacing = old_spacing * np.asarray(source[::-1]) / np.asarray(target[::-1])
    # Edge alignment: the first voxel centre sits half a new voxel inside the old outer edge.
    shift_xyz = (new_spacing - old_spacing) / 2.0
    new_origin = np.asarray(volume.origin) + volume.direction @ shift_xyz
    return _derived(volume, array, new_spacing, new_origin)


def resample_to_spacing(volume: Volume, spacing_mm: float | Sequence[float], *, order: int = 1) -> Volume:
    """Resample a volume to a new voxel spacing, keeping the centre of voxel ``(0, 0, 0)``.

    Parameters
    ----------
    volume:
        Input volume, axes ``(z, y, x)``.
    spacing_mm:
        New spacing in mm: one number for isotropic voxels, or ``(x, y, z)``.
    order:
        Spline interpolation order.

    Returns
    -------
    Volume
        ``origin`` is unchanged. The shape along each axis is
        ``floor((n - 1) * old / new) + 1``, so every output voxel centre lies inside the span
        of the input voxel centres (no extrapolation).
    """
    spacing = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (3,)).copy()
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise PreprocessError(f"resample spacing must be positive and finite (mm), got {spacing_mm!r}")
    old_spacing = np.asarray(volume.spacing)
    if np.allclose(spacing, old_spacing, rtol=0, atol=1e-9):
        return _derived(volume, _float_array(volume), volume.spacing, volume.origin)

    ratio_xyz = spacing / old_spacing
    extent_xyz = (np.asarray(volume.shape[::-1]) - 1) * old_spacing
    # The small tolerance keeps an exact multiple of the new spacing from losing its last voxel.
    shape_xyz = np.floor(extent_xyz / spacing + 1e-6).astype(int) + 1
    shape_zyx = tuple(int(n) for n in shape_xyz[::-1])
    ratio_zyx = ratio_xyz[::-1]
    array = ndimage.affine_transform(
        _float_array(volume),
        ratio_zyx,
        offset=0.0,
        output_shape=shape_zyx,
        order=order,
        mode="nearest",
        prefilter=order > 1,
    )
    return _derived(volume, array, spacing, volume.origin)


def mask_bounding_box(mask: np.ndarray) -> tuple[slice, slice, slice] | None:
    """Return the tight ``(z, y, x)`` slices around the true voxels, or ``None`` if none are true."""
    if mask.ndim != 3:
        raise PreprocessError(f"mask must be 3D (z, y, x), got shape {mask.shape}")
    bounds = []
    for axis in range(3):
        other_axes = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(np.any(mask, axis=other_axes))
        if present.size == 0:
            return None
        bounds.append(slice(int(present[0]), int(present[-1]) + 1))
    return (bounds[0], bounds[1], bounds[2])


def crop_to_box(volume: Volume, box_zyx: Sequence[slice]) -> Volume:
    """Crop a volume to integer ``(z, y, x)`` slices, moving ``origin`` to the new first voxel.

    The array is a view of the input's array (no copy).
    """
    box = tuple(box_zyx)
    start_zyx = []
    for axis, (item, size) in enumerate(zip(box, volume.shape)):
        start, stop, step = item.indices(size)
        if step != 1 or stop <= start:
            raise PreprocessError(f"crop box must be non-empty unit-step slices, got {item!r} on axis {axis} (size {size})")
        start_zyx.append(start)
    array = volume.array[box]
    new_origin = volume.voxel_to_world(np.asarray(start_zyx, dtype=np.float64))
    return _derived(volume, array, volume.spacing, new_origin)


def crop_to_mask_bbox(
    volume: Volume, mask: np.ndarray, *, margin_mm: float = 0.0, series_id: str | None = None
) -> Volume:
    """Crop a volume to the bounding box of ``mask`` grown by ``margin_mm`` on every side.

    Parameters
    ----------
    volume:
        The volume to crop, axes ``(z, y, x)``.
    mask:
        Boolean array with the volume's shape.
    margin_mm:
        Margin in mm, converted to whole voxels per axis (rounded up) and clipped at the
        volume border.
    series_id:
        Name used in error messages (defaults to the volume's metadata).

    Raises
    ------
    PreprocessError
        If the mask is empty or its shape differs from the volume's.
    """
    if mask.shape != volume.shape:
        raise PreprocessError(
            f"{_series_label(volume, series_id)}: mask shape {mask.shape} differs from volume shape {volume.shape}"
        )
    if margin_mm < 0 or not math.isfinite(margin_mm):
        raise PreprocessError(f"crop margin must be a finite number of mm >= 0, got {margin_mm!r}")
    box = mask_bounding_box(mask)
    if box is None:
        raise PreprocessError(
            f"{_series_label(volume, series_id)}: the crop mask is empty, so there is no box to crop to; "
            "check the HU thresholds or use crop='none'"
        )
    margin_zyx = [math.ceil(margin_mm / s - 1e-9) for s in volume.spacing[::-1]]
    grown = tuple(
        slice(max(0, item.start - margin), min(size, item.stop + margin))
        for item, margin, size in zip(box, margin_zyx, volume.shape)
    )
    return crop_to_box(volume, grown)
