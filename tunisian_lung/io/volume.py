"""The :class:`Volume` type: a 3D image array with its world geometry.

Conventions (kept by every module of the library):

* ``array`` has axes ``(z, y, x)``: slices, rows, columns.
* ``spacing``, ``origin`` and ``direction`` are given in the world ``(x, y, z)`` order of
  DICOM and ITK. World coordinates are DICOM patient coordinates (LPS) in millimetres.
* ``direction`` is a 3x3 matrix whose *columns* are the world directions of the x (column),
  y (row) and z (slice) index axes, as in ITK's ``GetDirection()`` reshaped to 3x3.

A world point ``p`` (x, y, z order, mm) and a continuous voxel index ``(i, j, k)``
(``i`` along x/columns, ``j`` along y/rows, ``k`` along z/slices) are related by
``p = origin + direction @ (spacing * (i, j, k))``. Functions that take or return voxel indices
in array order have ``zyx`` in their names.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
import numpy.typing as npt

from tunisian_lung.errors import VolumeError

ArrayLoader = Callable[[], np.ndarray]

_ORTHONORMAL_TOLERANCE = 1e-3


def _as_vector3(name: str, value: Any) -> tuple[float, float, float]:
    vector = np.asarray(value, dtype=np.float64).reshape(-1)
    if vector.shape != (3,):
        raise VolumeError(f"{name} must have 3 values in (x, y, z) order, got {value!r}")
    if not np.all(np.isfinite(vector)):
        raise VolumeError(f"{name} must be finite, got {value!r}")
    return (float(vector[0]), float(vector[1]), float(vector[2]))


def _as_direction(value: Any) -> np.ndarray:
    direction = np.asarray(value, dtype=np.float64)
    if direction.size != 9:
        raise VolumeError(f"direction must be a 3x3 matrix (9 values), got {value!r}")
    direction = direction.reshape(3, 3)
    if not np.allclose(direction.T @ direction, np.eye(3), atol=_ORTHONORMAL_TOLERANCE):
        raise VolumeError(
            f"direction must be orthonormal (columns are unit axis directions), got {direction.tolist()}"
        )
    direction.setflags(write=False)
    return direction


class Volume:
    """A 3D image with axes ``(z, y, x)`` and LPS world geometry in millimetres.

    Parameters
    ----------
    array:
        The voxel array with axes ``(z, y, x)``. Omit it and pass ``loader`` and ``shape`` for a
        lazy volume whose pixels are read on first access of :attr:`array`.
    spacing:
        Voxel size in mm along the x, y and z index axes (columns, rows, slices).
    origin:
        World position (LPS, mm, x/y/z order) of the centre of voxel ``(0, 0, 0)``.
    direction:
        3x3 matrix whose columns are the world directions of the x, y and z index axes.
        Defaults to the identity (axial, LPS-aligned).
    loader:
        Zero-argument callable returning the array, for lazy loading.
    shape:
        The ``(z, y, x)`` shape, required with ``loader``.
    metadata:
        Free-form header metadata (modality, series UID, manufacturer, ...).
    """

    __slots__ = ("_array", "_loader", "_shape", "spacing", "origin", "direction", "metadata")

    def __init__(
        self,
        array: npt.ArrayLike | None = None,
        *,
        spacing: Any,
        origin: Any = (0.0, 0.0, 0.0),
        direction: Any = None,
        loader: ArrayLoader | None = None,
        shape: tuple[int, int, int] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if array is None and loader is None:
            raise VolumeError("a Volume needs either an array or a loader")
        self.spacing = _as_vector3("spacing", spacing)
        if min(self.spacing) <= 0:
            raise VolumeError(f"spacing must be positive in every axis, got {self.spacing}")
        self.origin = _as_vector3("origin", origin)
        self.direction = _as_direction(np.eye(3) if direction is None else direction)
        self.metadata: dict[str, Any] = dict(metadata or {})
        self._loader = loader
        if array is not None:
            data = np.asarray(array)
            if data.ndim != 3:
                raise VolumeError(f"a Volume array must be 3D with axes (z, y, x), got shape {data.shape}")
            self._array: np.ndarray | None = data
            self._shape = tuple(int(n) for n in data.shape)
        else:
            if shape is None or len(shape) != 3:
                raise VolumeError(f"a lazy Volume needs its (z, y, x) shape, got {shape!r}")
            self._array = None
            self._shape = tuple(int(n) for n in shape)

    # --- pixels --------------------------------------------------------------------------

    @property
    def array(self) -> np.ndarray:
        """The voxel array ``(z, y, x)``; reading it loads the pixels of a lazy volume once."""
        if self._array is None:
            assert self._loader is not None
            data = np.asarray(self._loader())
            if tuple(data.shape) != self._shape:
                raise VolumeError(
                    f"lazy loader returned shape {data.shape}, but the header promised {self._shape}"
                )
            self._array = data
        return self._array

    @property
    def is_loaded(self) -> bool:
        """Whether the pixel array is in memory."""
        return self._array is not None

    @property
    def shape(self) -> tuple[int, int, int]:
        """The array shape ``(z, y, x)``, known before the pixels are read."""
        return self._shape  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype:
        """The array's dtype (loads a lazy volume)."""
        return self.array.dtype

    # --- geometry ------------------------------------------------------------------------

    @property
    def affine(self) -> np.ndarray:
        """4x4 matrix mapping a homogeneous voxel index ``(i, j, k, 1)`` in x/y/z index order
        to a homogeneous LPS world point in mm."""
        affine = np.eye(4)
        affine[:3, :3] = self.direction * np.asarray(self.spacing)[np.newaxis, :]
        affine[:3, 3] = self.origin
        return affine

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        """Physical size along the x, y and z index axes in mm (voxel count times spacing)."""
        z, y, x = self.shape
        return (x * self.spacing[0], y * self.spacing[1], z * self.spacing[2])

    def world_to_voxel(self, points_xyz_mm: npt.ArrayLike) -> np.ndarray:
        """Convert world points (LPS, mm, ``(x, y, z)``) to continuous voxel indices ``(z, y, x)``.

        Accepts one point of shape ``(3,)`` or many of shape ``(N, 3)`` and returns the same
        leading shape. Indices are continuous: round them to pick a voxel.
        """
        points = np.asarray(points_xyz_mm, dtype=np.float64)
        single = points.ndim == 1
        points = np.atleast_2d(points)
        if points.shape[-1] != 3:
            raise VolumeError(f"world points must have 3 coordinates (x, y, z), got shape {points.shape}")
        relative = points - np.asarray(self.origin)
        # direction is orthonormal, so its inverse is its transpose.
        index_xyz = (relative @ self.direction) / np.asarray(self.spacing)
        index_zyx = index_xyz[:, ::-1]
        return index_zyx[0] if single else index_zyx

    def voxel_to_world(self, indices_zyx: npt.ArrayLike) -> np.ndarray:
        """Convert voxel indices ``(z, y, x)`` (integer or continuous) to world points (LPS, mm, ``(x, y, z)``)."""
        indices = np.asarray(indices_zyx, dtype=np.float64)
        single = indices.ndim == 1
        indices = np.atleast_2d(indices)
        if indices.shape[-1] != 3:
            raise VolumeError(f"voxel indices must have 3 values (z, y, x), got shape {indices.shape}")
        index_xyz = indices[:, ::-1] * np.asarray(self.spacing)
        points = index_xyz @ self.direction.T + np.asarray(self.origin)
        return points[0] if single else points

    def contains_world(self, points_xyz_mm: npt.ArrayLike, *, margin_voxels: float = 0.5) -> np.ndarray:
        """Return whether each world point lies inside the voxel grid (voxel centres +- ``margin_voxels``)."""
        indices = np.atleast_2d(self.world_to_voxel(points_xyz_mm))
        upper = np.asarray(self.shape, dtype=np.float64) - 1 + margin_voxels
        inside = np.all((indices >= -margin_voxels) & (indices <= upper), axis=1)
        return inside[0] if np.asarray(points_xyz_mm).ndim == 1 else inside

    def same_geometry(self, other: "Volume", *, atol_mm: float = 1e-4) -> bool:
        """Return whether ``other`` has the same shape, spacing, origin and direction."""
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=atol_mm)
            and np.allclose(self.origin, other.origin, atol=atol_mm)
            and np.allclose(self.direction, other.direction, atol=1e-6)
        )

    # --- derived volumes -----------------------------------------------------------------

    def with_array(self, array: npt.ArrayLike, **metadata: Any) -> "Volume":
        """Return a new volume with the same geometry and a new array of the same shape."""
        data = np.asarray(array)
        if tuple(data.shape) != self.shape:
            raise VolumeError(f"with_array needs shape {self.shape}, got {data.shape}")
        return Volume(
            data,
            spacing=self.spacing,
            origin=self.origin,
            direction=self.direction,
            metadata={**self.metadata, **metadata},
        )

    def __repr__(self) -> str:
        state = f"dtype={self._array.dtype}" if self._array is not None else "lazy"
        spacing = ", ".join(f"{s:.4g}" for s in self.spacing)
        origin = ", ".join(f"{o:.4g}" for o in self.origin)
        return f"Volume(shape_zyx={self.shape}, spacing_xyz_mm=({spacing}), origin_xyz_mm=({origin}), {state})"
