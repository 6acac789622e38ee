"""Slice ordering and grid checks for a stack of 2D DICOM images.

Slices are ordered by ImagePositionPatient projected on the slice normal (the cross product of
the row and column directions of ImageOrientationPatient), never by file name or InstanceNumber.
The regular slice spacing is the median distance between consecutive slices, so the result
does not depend on the order the files were listed in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from tunisian_lung.errors import (
    DuplicateSliceError,
    GantryTiltError,
    NonUniformSpacingError,
    SliceGapError,
)

logger = logging.getLogger(__name__)

GapPolicy = Literal["raise", "resample"]
NonUniformPolicy = Literal["raise", "resample"]
TiltPolicy = Literal["raise", "resample"]
DuplicatePolicy = Literal["raise", "first"]

#: Relative tolerance on the distance between consecutive slices: rounding jitter in
#: ImagePositionPatient below this fraction of the regular spacing is accepted.
DEFAULT_SPACING_RTOL = 0.01
#: Absolute floor of the spacing tolerance in mm, for very thin slices.
_SPACING_ATOL_MM = 1e-3
#: In-plane drift of a slice origin, as a fraction of the smallest pixel spacing, above which
#: a series counts as tilted (sheared).
_TILT_PIXEL_FRACTION = 0.05


def slice_normal(orientation: Sequence[float]) -> np.ndarray:
    """Return the unit slice normal (row direction x column direction) of an ImageOrientationPatient."""
    row_direction = np.asarray(orientation[:3], dtype=np.float64)
    column_direction = np.asarray(orientation[3:6], dtype=np.float64)
    normal = np.cross(row_direction, column_direction)
    return normal / np.linalg.norm(normal)


def direction_matrix(orientation: Sequence[float]) -> np.ndarray:
    """Return the 3x3 direction matrix (columns: x index, y index, slice axes) of an orientation.

    The row and column cosines are re-orthonormalised, because exported ImageOrientationPatient
    values are rounded to a few decimals.
    """
    row_direction = np.asarray(orientation[:3], dtype=np.float64)
    column_direction = np.asarray(orientation[3:6], dtype=np.float64)
    row_direction = row_direction / np.linalg.norm(row_direction)
    column_direction = column_direction - (column_direction @ row_direction) * row_direction
    column_direction = column_direction / np.linalg.norm(column_direction)
    normal = np.cross(row_direction, column_direction)
    return np.column_stack([row_direction, column_direction, normal])


def orientations_match(first: Sequence[float], second: Sequence[float], *, atol: float = 1e-3) -> bool:
    """Return whether two ImageOrientationPatient values describe the same plane orientation."""
    return bool(np.allclose(np.asarray(first, dtype=float), np.asarray(second, dtype=float), atol=atol))


def sort_order(positions_xyz_mm: np.ndarray, orientation: Sequence[float], tie_breakers: Sequence[float]) -> np.ndarray:
    """Return the indices that sort slices by position along the slice normal.

    ``tie_breakers`` (for example InstanceNumber) only order slices at the same position, so that
    duplicates are reported in a stable order.
    """
    normal = slice_normal(orientation)
    along_normal = np.asarray(positions_xyz_mm, dtype=np.float64) @ normal
    return np.lexsort((np.asarray(tie_breakers, dtype=np.float64), along_normal))


@dataclass(frozen=True)
class StackGeometry:
    """Geometry of slices sorted along their normal.

    Attributes
    ----------
    direction:
        3x3 matrix, columns are the world directions of the x index, y index and slice axes.
    origin_xyz_mm:
        ImagePositionPatient of the first sorted slice (LPS, mm).
    positions_mm:
        Position of each sorted slice along the normal, relative to the first slice, shape ``(N,)``.
    in_plane_offsets_mm:
        Drift of each slice origin across the slice plane relative to the first slice, shape
        ``(N, 2)`` along the x index and y index directions. It is non-zero for a tilted gantry.
    spacing_z_mm:
        Regular slice spacing: the median distance between consecutive slices, or ``None`` for
        a single slice.
    """

    direction: np.ndarray
    origin_xyz_mm: tuple[float, float, float]
    positions_mm: np.ndarray
    in_plane_offsets_mm: np.ndarray
    spacing_z_mm: float | None

    @property
    def steps_mm(self) -> np.ndarray:
        """Distances between consecutive slices along the normal, shape ``(N - 1,)``."""
        return np.diff(self.positions_mm)

    @property
    def max_in_plane_offset_mm(self) -> float:
        """Largest in-plane drift of a slice origin from the first one, in mm."""
        if len(self.in_plane_offsets_mm) == 0:
            return 0.0
        return float(np.max(np.linalg.norm(self.in_plane_offsets_mm, axis=1)))

    @property
    def tilt_degrees(self) -> float:
        """Angle between the slice normal and the line through the first and last slice origins."""
        if len(self.positions_mm) < 2 or self.positions_mm[-1] == self.positions_mm[0]:
            return 0.0
        drift = float(np.linalg.norm(self.in_plane_offsets_mm[-1]))
        return float(np.degrees(np.arctan2(drift, self.positions_mm[-1] - self.positions_mm[0])))


def measure_stack(sorted_positions_xyz_mm: np.ndarray, orientation: Sequence[float]) -> StackGeometry:
    """Measure the geometry of slices already sorted along the normal of ``orientation``."""
    direction = direction_matrix(orientation)
    positions = np.asarray(sorted_positions_xyz_mm, dtype=np.float64).reshape(-1, 3)
    relative = positions - positions[0]
    along_normal = relative @ direction[:, 2]
    in_plane = relative @ direction[:, :2]
    steps = np.diff(along_normal)
    spacing = float(np.median(steps)) if len(steps) else None
    origin = (float(positions[0, 0]), float(positions[0, 1]), float(positions[0, 2]))
    return StackGeometry(direction, origin, along_normal, in_plane, spacing)


@dataclass(frozen=True)
class SpacingProblems:
    """Slice steps that break the regular grid, as indices into the sorted slices.

    Each entry ``i`` refers to the step between sorted slices ``i`` and ``i + 1``.
    """

    duplicates: tuple[int, ...]
    gaps: tuple[int, ...]
    non_uniform: tuple[int, ...]
    tilted: bool

    @property
    def any(self) -> bool:
        """Whether any problem was found."""
        return bool(self.duplicates or self.gaps or self.non_uniform or self.tilted)


def spacing_tolerance_mm(spacing_mm: float, rtol: float) -> float:
    """Return the accepted deviation of a slice step from the regular spacing, in mm."""
    return max(_SPACING_ATOL_MM, rtol * abs(spacing_mm))


def find_problems(geometry: StackGeometry, pixel_spacing_mm: float, *, rtol: float = DEFAULT_SPACING_RTOL) -> SpacingProblems:
    """Classify every slice step as regular, duplicate, gap or non-uniform, and detect tilt.

    A step shorter than the tolerance is a duplicate position. A step close to an integer
    multiple (2 or more) of the regular spacing is a gap of missing slices. Any other step that
    differs from the regular spacing by more than the tolerance is non-uniform spacing. The
    series is tilted when a slice origin drifts across the slice plane by more than 5 % of the
    smallest pixel spacing.
    """
    steps = geometry.steps_mm
    duplicates: list[int] = []
    gaps: list[int] = []
    non_uniform: list[int] = []
    if len(steps):
        nonzero_steps = steps[steps > _SPACING_ATOL_MM]
        regular = float(np.median(nonzero_steps)) if len(nonzero_steps) else 0.0
        tolerance = spacing_tolerance_mm(regular, rtol)
        for index, step in enumerate(steps):
            if step <= tolerance:
                duplicates.append(index)
                continue
            if abs(step - regular) <= tolerance:
                continue
            multiple = round(step / regular) if regular > 0 else 0
            if multiple >= 2 and abs(step - multiple * regular) <= tolerance * multiple:
                gaps.append(index)
            else:
                non_uniform.append(index)
    tilt_tolerance = _TILT_PIXEL_FRACTION * pixel_spacing_mm
    tilted = geometry.max_in_plane_offset_mm > tilt_tolerance
    return SpacingProblems(tuple(duplicates), tuple(gaps), tuple(non_uniform), tilted)


def _describe_step(geometry: StackGeometry, index: int, labels: Sequence[str]) -> str:
    start = geometry.positions_mm[index]
    end = geometry.positions_mm[index + 1]
    return f"{labels[index]} -> {labels[index + 1]} ({end - start:.4g} mm, at {start:.4g}..{end:.4g} mm along the normal)"


def raise_for_problems(
    problems: SpacingProblems,
    geometry: StackGeometry,
    labels: Sequence[str],
    *,
    series: str,
    on_gap: GapPolicy,
    on_nonuniform: NonUniformPolicy,
    on_tilt: TiltPolicy,
    on_duplicate: DuplicatePolicy,
) -> None:
    """Raise the specific error of the first problem that its policy does not tolerate.

    ``labels`` names each sorted slice (file name, with the frame number for multi-frame files)
    so that messages point at the files involved.
    """
    regular = geometry.spacing_z_mm or 0.0
    if problems.duplicates and on_duplicate == "raise":
        steps = "; ".join(_describe_step(geometry, i, labels) for i in problems.duplicates[:5])
        raise DuplicateSliceError(
            f"series {series}: {len(problems.duplicates)} pair(s) of slices share one position along the "
            f"slice normal: {steps}. Remove the duplicate files, select one acquisition with "
            "index_dicom_folder(), or pass on_duplicate='first' to keep the first slice of each position"
        )
    if problems.gaps and on_gap == "raise":
        steps = "; ".join(_describe_step(geometry, i, labels) for i in problems.gaps[:5])
        raise SliceGapError(
            f"series {series}: {len(problems.gaps)} gap(s) of missing slices where the regular spacing is "
            f"{regular:.4g} mm: {steps}. Restore the missing files, or pass on_gap='resample' to "
            "interpolate the missing slices (the volume becomes float32)"
        )
    if problems.non_uniform and on_nonuniform == "raise":
        steps = "; ".join(_describe_step(geometry, i, labels) for i in problems.non_uniform[:5])
        raise NonUniformSpacingError(
            f"series {series}: slice spacing is not uniform (regular spacing {regular:.4g} mm): {steps}. "
            "Pass on_nonuniform='resample' to interpolate onto the smallest spacing (the volume becomes float32)"
        )
    if problems.tilted and on_tilt == "raise":
        raise GantryTiltError(
            f"series {series}: slice origins drift {geometry.max_in_plane_offset_mm:.4g} mm across the slice "
            f"plane ({labels[0]} to {labels[-1]}), a gantry tilt of about {geometry.tilt_degrees:.3g} degrees; "
            "the slices do not form a rectangular grid. Pass on_tilt='resample' to shift each slice back onto "
            "the grid of the first slice (the volume becomes float32)"
        )


def keep_first_of_duplicates(problems: SpacingProblems, count: int) -> np.ndarray:
    """Return the sorted-slice indices to keep when only the first slice of each position is kept."""
    drop = {index + 1 for index in problems.duplicates}
    return np.asarray([i for i in range(count) if i not in drop], dtype=np.int64)


def correct_tilt(stack: np.ndarray, geometry: StackGeometry, spacing_xy_mm: tuple[float, float]) -> np.ndarray:
    """Shift each slice in-plane so that its origin lies on the normal through the first slice.

    Linear interpolation; pixels shifted in from outside the slice take the slice's minimum
    value (air or padding). Returns a float32 array of the same shape ``(z, y, x)``.
    """
    from scipy import ndimage

    corrected = np.empty(stack.shape, dtype=np.float32)
    for index in range(stack.shape[0]):
        offset_x_mm, offset_y_mm = geometry.in_plane_offsets_mm[index]
        # ndimage.shift returns input[index - shift]. A slice whose origin moved by +d mm along
        # an index axis stores the content of grid index k at its own index k - d / spacing.
        shift_rows = offset_y_mm / spacing_xy_mm[1]
        shift_columns = offset_x_mm / spacing_xy_mm[0]
        slice_values = stack[index].astype(np.float32)
        corrected[index] = ndimage.shift(
            slice_values,
            (shift_rows, shift_columns),
            order=1,
            mode="constant",
            cval=float(slice_values.min()),
        )
    return corrected


def resample_along_normal(stack: np.ndarray, positions_mm: np.ndarray, spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Linearly interpolate sorted slices onto a uniform grid along the normal.

    Parameters
    ----------
    stack:
        Slices ``(z, y, x)`` sorted by ``positions_mm``.
    positions_mm:
        Strictly increasing slice positions along the normal, relative to the first slice.
    spacing_mm:
        Spacing of the output grid, which starts at the first slice.

    Returns
    -------
    (array, new_positions_mm):
        The float32 array ``(z', y, x)`` and the output slice positions.
    """
    span = float(positions_mm[-1] - positions_mm[0])
    count = int(np.floor(span / spacing_mm + 1e-6)) + 1
    targets = positions_mm[0] + spacing_mm * np.arange(count)
    upper = np.clip(np.searchsorted(positions_mm, targets, side="right"), 1, len(positions_mm) - 1)
    lower = upper - 1
    width = positions_mm[upper] - positions_mm[lower]
    weights = np.clip((targets - positions_mm[lower]) / width, 0.0, 1.0)
    out = np.empty((count,) + stack.shape[1:], dtype=np.float32)
    for index in range(count):
        weight = float(weights[index])
        below = stack[lower[index]].astype(np.float32)
        if weight == 0.0:
            out[index] = below
        else:
            above = stack[upper[index]].astype(np.float32)
            out[index] = below + weight * (above - below)
    return out, targets
