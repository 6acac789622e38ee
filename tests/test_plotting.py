"""Orthogonal nodule views: reorientation to LPS axes and the PNG figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tunisian_lung.errors import VolumeError
from tunisian_lung.io.volume import Volume
from tunisian_lung.plotting import plot_nodule_views, to_lps_axes


def _ramp_volume() -> Volume:
    array = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    return Volume(array, spacing=(0.5, 0.8, 2.0), origin=(-10.0, 20.0, 30.0))


def test_lps_axes_identity_unchanged() -> None:
    volume = _ramp_volume()
    array, (xs, ys, zs) = to_lps_axes(volume)
    assert np.array_equal(array, volume.array)
    assert xs == pytest.approx(-10.0 + 0.5 * np.arange(6))
    assert ys == pytest.approx(20.0 + 0.8 * np.arange(5))
    assert zs == pytest.approx(30.0 + 2.0 * np.arange(4))


def test_lps_axes_undo_flipped_axes() -> None:
    reference = _ramp_volume()
    flipped_array = reference.array[::-1, :, ::-1]
    # Same voxels: the x and z index axes now run the other way from the far corner.
    flipped = Volume(
        flipped_array,
        spacing=reference.spacing,
        origin=(-10.0 + 0.5 * 5, 20.0, 30.0 + 2.0 * 3),
        direction=np.diag([-1.0, 1.0, -1.0]),
    )
    array, (xs, _, zs) = to_lps_axes(flipped)
    assert np.array_equal(array, reference.array)
    assert xs == pytest.approx(-10.0 + 0.5 * np.arange(6))
    assert zs == pytest.approx(30.0 + 2.0 * np.arange(4))


def test_lps_axes_undo_permuted_axes() -> None:
    reference = _ramp_volume()
    # Index axes x and y swapped: columns run along world y, rows along world x.
    swapped = Volume(
        np.swapaxes(reference.array, 1, 2),
        spacing=(0.8, 0.5, 2.0),
        origin=reference.origin,
        direction=np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
    )
    array, _ = to_lps_axes(swapped)
    assert np.array_equal(array, reference.array)


def test_lps_axes_reject_oblique() -> None:
    angle = np.deg2rad(20.0)
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]]
    )
    volume = Volume(np.zeros((2, 3, 4), dtype=np.int16), spacing=(1, 1, 1), origin=(0, 0, 0), direction=rotation)
    with pytest.raises(VolumeError, match="oblique"):
        to_lps_axes(volume)


def test_plot_nodule_views_writes_png(tmp_path: Path) -> None:
    z, y, x = np.mgrid[0:20, 0:40, 0:40]
    array = np.where((x - 20) ** 2 + (y - 20) ** 2 + ((z - 10) * 2.5) ** 2 <= 36, 40, -850).astype(np.int16)
    volume = Volume(array, spacing=(1.0, 1.0, 2.5), origin=(0.0, 0.0, 0.0))
    out = plot_nodule_views(volume, (20.0, 20.0, 25.0), 12.0, tmp_path / "figures" / "nodule.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.parent.glob(".*.tmp"))


def test_plot_nodule_views_rejects_outside_centre(tmp_path: Path) -> None:
    volume = Volume(np.zeros((5, 5, 5), dtype=np.int16), spacing=(1, 1, 1), origin=(0, 0, 0))
    with pytest.raises(VolumeError, match="outside the volume"):
        plot_nodule_views(volume, (100.0, 0.0, 0.0), 5.0, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
