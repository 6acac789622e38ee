"""Nodule-centred patch extraction in world coordinates."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from tunisian_lung.errors import PreprocessError
from tunisian_lung.io.volume import Volume

#: Fill value for patch voxels outside the scan: air in HU.
AIR_HU = -1000.0


def extract_patch(
    volume: Volume,
    center_xyz_mm: npt.ArrayLike,
    size_mm: float | Sequence[float],
    shape_zyx: Sequence[int],
    *,
    order: int = 1,
    fill_value: float = AIR_HU,
) -> Volume:
    """Sample a patch of fixed physical size around a world point onto a fixed voxel grid.

    Parameters
    ----------
    volume:
        Source volume, axes ``(z, y, x)``, in HU (or already normalised: then pass the window
        minimum, e.g. ``-1.0``, as ``fill_value``).
    center_xyz_mm:
        Patch centre in world coordinates (LPS, mm, ``(x, y, z)``), e.g. a LUNA16 nodule centre.
    size_mm:
        Physical edge length of the patch in mm: one number for a cube or ``(x, y, z)``.
    shape_zyx:
        Output array shape ``(z, y, x)``.
    order:
        Spline interpolation order.
    fill_value:
        Value of voxels outside the source volume (default -1000 HU, air).

    Returns
    -------
    Volume
        ``float32`` array of shape ``shape_zyx`` with spacing ``size_mm / shape`` per axis and
        the source's direction. The patch centre (between the two middle voxels for an even
        shape) is ``center_xyz_mm``, so ``patch.world_to_voxel(center)`` is
        ``(shape_zyx - 1) / 2``.
    """
    center = np.asarray(center_xyz_mm, dtype=np.float64).reshape(-1)
    if center.shape != (3,) or not np.all(np.isfinite(center)):
        raise PreprocessError(f"patch centre must be 3 finite world coordinates (x, y, z) in mm, got {center_xyz_mm!r}")
    size_xyz = np.broadcast_to(np.asarray(size_mm, dtype=np.float64), (3,))
    if not np.all(np.isfinite(size_xyz)) or np.any(size_xyz <= 0):
        raise PreprocessError(f"patch size must be positive and finite (mm), got {size_mm!r}")
    shape = tuple(int(n) for n in shape_zyx)
    if len(shape) != 3 or min(shape) <= 0:
        raise PreprocessError(f"patch shape must be 3 positive integers (z, y, x), got {tuple(shape_zyx)!r}")

    shape_xyz = np.asarray(shape[::-1], dtype=np.float64)
    spacing_xyz = size_xyz / shape_xyz
    origin = center - volume.direction @ (spacing_xyz * (shape_xyz - 1) / 2.0)

    # Both grids share the source's direction, so the output-to-input index map is a per-axis
    # scale plus an offset: input_index = offset + output_index * spacing_out / spacing_in.
    source_spacing_xyz = np.asarray(volume.spacing)
    offset_xyz = ((origin - np.asarray(volume.origin)) @ volume.direction) / source_spacing_xyz
    scale_xyz = spacing_xyz / source_spacing_xyz
    source = volume.array
    if source.dtype not in (np.float32, np.float64):
        source = source.astype(np.float32)
    array = ndimage.affine_transform(
        source,
        scale_xyz[::-1],
        offset=offset_xyz[::-1],
        output_shape=shape,
        output=np.float32,
        order=order,
        mode="constant",
        cval=float(fill_value),
        prefilter=order > 1,
    )
    return Volume(
        array,
        spacing=tuple(spacing_xyz),
        origin=tuple(origin),
        direction=volume.direction,
        metadata={**volume.metadata, "patch_center_xyz_mm": center.tolist()},
    )
