"""The Volume type: world/voxel conversions, affine, lazy loading and input checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tunisian_lung.errors import VolumeError
from tunisian_lung.io.volume import Volume


def _rotation(quaternion: tuple[float, float, float, float]) -> np.ndarray:
    w, x, y, z = np.asarray(quaternion) / np.linalg.norm(quaternion)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


quaternions = st.tuples(*[st.floats(-1, 1, allow_nan=False) for _ in range(4)]).filter(lambda q: np.linalg.norm(q) > 0.2)
spacings = st.tuples(*[st.floats(0.1, 10.0) for _ in range(3)])
origins = st.tuples(*[st.floats(-1000, 1000) for _ in range(3)])
indices = arrays(np.float64, (7, 3), elements=st.floats(-5, 600, allow_nan=False))


@settings(max_examples=60, deadline=None)
@given(quaternion=quaternions, spacing=spacings, origin=origins, points_zyx=indices)
def test_voxel_world_round_trip(quaternion, spacing, origin, points_zyx) -> None:  # type: ignore[no-untyped-def]
    volume = Volume(np.zeros((2, 2, 2), np.int16), spacing=spacing, origin=origin, direction=_rotation(quaternion))
    world = volume.voxel_to_world(points_zyx)
    assert world.shape == (7, 3)
    np.testing.assert_allclose(volume.world_to_voxel(world), points_zyx, atol=1e-6)
    homogeneous = np.column_stack([points_zyx[:, ::-1], np.ones(7)])
    np.testing.assert_allclose((volume.affine @ homogeneous.T).T[:, :3], world, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(quaternion=quaternions, spacing=spacings, origin=origins)
def test_single_point_keeps_shape(quaternion, spacing, origin) -> None:  # type: ignore[no-untyped-def]
    volume = Volume(np.zeros((3, 3, 3), np.int16), spacing=spacing, origin=origin, direction=_rotation(quaternion))
    point = volume.voxel_to_world([1.0, 2.0, 0.5])
    assert point.shape == (3,)
    np.testing.assert_allclose(volume.world_to_voxel(point), [1.0, 2.0, 0.5], atol=1e-6)


def test_axes_follow_conventions() -> None:
    volume = Volume(np.zeros((4, 5, 6), np.int16), spacing=(0.5, 0.75, 2.0), origin=(-10.0, 20.0, 30.0))
    # (z, y, x) index (1, 2, 3) is x 3 columns, y 2 rows, z 1 slice from the origin.
    np.testing.assert_allclose(volume.voxel_to_world([1, 2, 3]), [-10.0 + 1.5, 20.0 + 1.5, 32.0])
    assert volume.extent_mm == (3.0, 3.75, 8.0)


def test_contains_world_margins() -> None:
    volume = Volume(np.zeros((2, 2, 2), np.int16), spacing=(1, 1, 1))
    inside = volume.contains_world([[0, 0, 0], [1.4, 1.4, 1.4], [1.6, 0, 0], [-0.6, 0, 0]])
    np.testing.assert_array_equal(inside, [True, True, False, False])
    assert volume.contains_world([1.6, 0.0, 0.0], margin_voxels=1.0)


def test_lazy_loader_called_once() -> None:
    calls = []

    def loader() -> np.ndarray:
        calls.append(1)
        return np.ones((2, 3, 4), np.int16)

    volume = Volume(None, spacing=(1, 1, 1), loader=loader, shape=(2, 3, 4))
    assert volume.shape == (2, 3, 4)
    assert not volume.is_loaded
    assert volume.array.sum() == 24
    assert volume.array.sum() == 24
    assert calls == [1]


def test_lazy_loader_shape_mismatch_raises() -> None:
    volume = Volume(None, spacing=(1, 1, 1), loader=lambda: np.zeros((1, 1, 1)), shape=(2, 2, 2))
    with pytest.raises(VolumeError, match=r"header promised \(2, 2, 2\)"):
        _ = volume.array


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"spacing": (1, 1)}, "3 values"),
        ({"spacing": (1, 0, 1)}, "positive"),
        ({"spacing": (1, 1, 1), "origin": (0, np.nan, 0)}, "finite"),
        ({"spacing": (1, 1, 1), "direction": np.diag([1.0, 2.0, 1.0])}, "orthonormal"),
    ],
)
def test_invalid_geometry_raises(kwargs: dict, message: str) -> None:
    with pytest.raises(VolumeError, match=message):
        Volume(np.zeros((1, 1, 1)), **kwargs)


def test_with_array_keeps_geometry() -> None:
    volume = Volume(np.zeros((2, 2, 2), np.int16), spacing=(1, 2, 3), origin=(4, 5, 6), metadata={"series_uid": "1.2"})
    derived = volume.with_array(np.ones((2, 2, 2), np.float32), window="lung")
    assert derived.same_geometry(volume)
    assert derived.metadata == {"series_uid": "1.2", "window": "lung"}
    with pytest.raises(VolumeError, match="shape"):
        volume.with_array(np.ones((1, 2, 2)))
