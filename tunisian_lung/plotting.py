"""Figures of CT volumes: a nodule in axial, coronal and sagittal slices.

matplotlib is imported inside the functions with the non-interactive Agg backend, so importing
this module costs nothing and plotting works on machines without a display.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from tunisian_lung.errors import VolumeError

if TYPE_CHECKING:  # pragma: no cover
    from tunisian_lung.io.volume import Volume

logger = logging.getLogger(__name__)

#: Tolerance on the direction cosines below which a volume counts as axis-aligned.
_AXIS_ALIGNED_TOLERANCE = 1e-3


def to_lps_axes(volume: Volume) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Reorder and flip an axis-aligned volume so its array axes follow world z, y, x upward.

    Returns
    -------
    array:
        View of ``volume.array`` with axes ``(z, y, x)`` where index 0 is the most inferior,
        anterior and right voxel (world coordinates increase with every index, LPS).
    coordinates:
        World coordinates in mm of the voxel centres along x, y and z (three increasing 1-D
        arrays, lengths matching the array axes 2, 1, 0).

    Raises
    ------
    VolumeError
        The volume is oblique (a direction column is not along a world axis).
    """
    direction = np.asarray(volume.direction)
    world_axis_of_index = np.argmax(np.abs(direction), axis=0)  # index axis x/y/z -> world axis
    if sorted(world_axis_of_index.tolist()) != [0, 1, 2] or np.any(
        np.abs(np.abs(direction[world_axis_of_index, [0, 1, 2]]) - 1.0) > _AXIS_ALIGNED_TOLERANCE
    ):
        raise VolumeError(
            f"the volume is oblique (direction {np.round(direction, 4).tolist()}); resample it to "
            "an axis-aligned grid before plotting orthogonal views"
        )
    array = volume.array
    # Index axis a (0 x, 1 y, 2 z) is array axis 2 - a.
    index_axis_of_world = [int(np.where(world_axis_of_index == w)[0][0]) for w in range(3)]
    array = np.transpose(array, [2 - index_axis_of_world[2], 2 - index_axis_of_world[1], 2 - index_axis_of_world[0]])
    coordinates = []
    for world in range(3):
        index_axis = index_axis_of_world[world]
        count = volume.shape[2 - index_axis]
        sign = float(np.sign(direction[world, index_axis]))
        values = volume.origin[world] + sign * volume.spacing[index_axis] * np.arange(count)
        if sign < 0:
            array = np.flip(array, axis=2 - world)
            values = values[::-1]
        coordinates.append(values)
    return array, (coordinates[0], coordinates[1], coordinates[2])


def _edges(centres: np.ndarray) -> tuple[float, float]:
    half = (centres[1] - centres[0]) / 2.0 if len(centres) > 1 else 0.5
    return float(centres[0] - half), float(centres[-1] + half)


def plot_nodule_views(
    volume: Volume,
    center_xyz_mm: Sequence[float],
    diameter_mm: float,
    out_png: str | os.PathLike[str],
    *,
    window_hu: tuple[float, float] = (-1000.0, 400.0),
    title: str | None = None,
    dpi: int = 120,
) -> Path:
    """Draw axial, coronal and sagittal slices through a nodule centre and save a PNG.

    Each panel shows the slice of ``volume`` nearest to the centre, drawn in world millimetres
    so that the aspect ratio follows the voxel spacing. The orientation is radiological: patient
    right on the image left, anterior up in the axial view, superior up in the coronal and
    sagittal views.
    A circle of the annotated diameter marks the nodule, and a cross marks the centre.

    Parameters
    ----------
    volume:
        Axis-aligned CT volume in Hounsfield units, axes ``(z, y, x)``.
    center_xyz_mm:
        Nodule centre in world LPS millimetres, ``(x, y, z)``.
    diameter_mm:
        Annotated nodule diameter in mm.
    out_png:
        Output file; its folder is created. Written through a temporary file and renamed.
    window_hu:
        Display window ``(low, high)`` in HU; the default shows lung and soft tissue.
    title:
        Figure title; default names the centre and diameter.
    dpi:
        Resolution of the PNG.

    Returns
    -------
    pathlib.Path
        The PNG path.

    Raises
    ------
    VolumeError
        The volume is oblique, or the centre lies outside it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    center = np.asarray(center_xyz_mm, dtype=np.float64)
    if center.shape != (3,) or not np.all(np.isfinite(center)):
        raise VolumeError(f"center_xyz_mm must be 3 finite values (x, y, z) in mm, got {center_xyz_mm!r}")
    if not np.isfinite(diameter_mm) or diameter_mm <= 0:
        raise VolumeError(f"diameter_mm must be a positive number of mm, got {diameter_mm!r}")
    if not bool(volume.contains_world(center)):
        raise VolumeError(
            f"nodule centre {center.round(2).tolist()} mm lies outside the volume (shape "
            f"{volume.shape}, origin {np.round(volume.origin, 2).tolist()}); check the coordinate "
            "space of the annotation"
        )

    array, (xs, ys, zs) = to_lps_axes(volume)
    i = int(np.argmin(np.abs(xs - center[0])))
    j = int(np.argmin(np.abs(ys - center[1])))
    k = int(np.argmin(np.abs(zs - center[2])))
    radius = diameter_mm / 2.0
    low, high = window_hu

    views = (
        ("axial", array[k, :, :], xs, ys, (center[0], center[1]), "x (mm, patient left ->)", "y (mm, posterior down)", f"z = {zs[k]:.1f} mm", False),
        ("coronal", array[:, j, :], xs, zs, (center[0], center[2]), "x (mm, patient left ->)", "z (mm, superior ->)", f"y = {ys[j]:.1f} mm", True),
        ("sagittal", array[:, :, i], ys, zs, (center[1], center[2]), "y (mm, posterior ->)", "z (mm, superior ->)", f"x = {xs[i]:.1f} mm", True),
    )
    figure, axes = plt.subplots(1, 3, figsize=(15, 5.4))
    try:
        for axis, (name, image, horizontal, vertical, point, xlabel, ylabel, where, lower) in zip(axes, views):
            left, right = _edges(horizontal)
            bottom, top = _edges(vertical)
            # Row 0 of the image is the smallest vertical coordinate: at the top for the axial
            # view (anterior up), at the bottom for the others (superior up).
            extent = (left, right, bottom, top) if lower else (left, right, top, bottom)
            axis.imshow(
                np.asarray(image, dtype=np.float32), cmap="gray", vmin=low, vmax=high,
                extent=extent, origin="lower" if lower else "upper", interpolation="nearest",
            )
            axis.add_patch(Circle(point, radius, fill=False, edgecolor="red", linewidth=1.5))
            axis.plot([point[0]], [point[1]], marker="+", color="yellow", markersize=8)
            axis.set_aspect("equal")
            axis.set_title(f"{name} ({where})")
            axis.set_xlabel(xlabel)
            axis.set_ylabel(ylabel)
        figure.suptitle(
            title
            or f"nodule at ({center[0]:.1f}, {center[1]:.1f}, {center[2]:.1f}) mm LPS, diameter {diameter_mm:.1f} mm"
        )
        figure.tight_layout()
        out = Path(out_png)
        out.parent.mkdir(parents=True, exist_ok=True)
        temporary = out.with_name(f".{out.name}.tmp")
        figure.savefig(temporary, dpi=dpi, format="png")
        os.replace(temporary, out)
    finally:
        plt.close(figure)
    logger.info("wrote nodule views to %s", out)
    return out
