"""NIfTI reading and writing: RAS on disk, LPS in memory, exact int16 round trips."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunisian_lung.errors import NiftiError
from tunisian_lung.io import Volume, load_volume
from tunisian_lung.io.nifti import read_nifti, write_nifti


def _rotation_from_angles(alpha: float, beta: float, gamma: float) -> np.ndarray:
    ca, sa, cb, sb, cg, sg = np.cos(alpha), np.sin(alpha), np.cos(beta), np.sin(beta), np.cos(gamma), np.sin(gamma)
    rz = np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1]])
    ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    rx = np.array([[1, 0, 0], [0, cg, -sg], [0, sg, cg]])
    return rz @ ry @ rx


angles = st.floats(-np.pi, np.pi, allow_nan=False)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    spacing=st.tuples(*[st.floats(0.2, 5.0) for _ in range(3)]),
    origin=st.tuples(*[st.floats(-500, 500) for _ in range(3)]),
    rotation_angles=st.tuples(angles, angles, angles),
    flip=st.booleans(),
)
def test_round_trip_geometry_and_int16(
    tmp_path_factory: pytest.TempPathFactory,
    spacing: tuple[float, float, float],
    origin: tuple[float, float, float],
    rotation_angles: tuple[float, float, float],
    flip: bool,
) -> None:
    direction = _rotation_from_angles(*rotation_angles)
    if flip:
        direction[:, 2] *= -1  # a left-handed grid must survive the qform's qfac too
    rng = np.random.default_rng(7)
    array = rng.integers(-2048, 3072, size=(3, 4, 5)).astype(np.int16)
    volume = Volume(array, spacing=spacing, origin=origin, direction=direction)
    path = write_nifti(volume, tmp_path_factory.mktemp("nifti") / "volume.nii.gz")
    loaded = read_nifti(path)
    assert loaded.dtype == np.int16
    np.testing.assert_array_equal(loaded.array, array)
    np.testing.assert_allclose(loaded.spacing, spacing, atol=1e-4)
    np.testing.assert_allclose(loaded.origin, origin, atol=1e-4)
    np.testing.assert_allclose(loaded.direction, direction, atol=1e-5)
    corner = [2, 3, 4]
    np.testing.assert_allclose(loaded.voxel_to_world(corner), volume.voxel_to_world(corner), atol=1e-4)


def test_file_is_ras_with_qform_and_sform(tmp_path: Path) -> None:
    volume = Volume(np.zeros((2, 3, 4), np.int16), spacing=(0.5, 0.6, 2.0), origin=(10.0, 20.0, -30.0))
    path = write_nifti(volume, tmp_path / "axial.nii")
    image = nib.load(path)
    assert int(image.header["qform_code"]) == 1
    assert int(image.header["sform_code"]) == 1
    assert image.shape == (4, 3, 2)
    expected = np.diag([-0.5, -0.6, 2.0, 1.0])
    expected[:3, 3] = (-10.0, -20.0, -30.0)
    np.testing.assert_allclose(image.header.get_sform(), expected, atol=1e-6)
    np.testing.assert_allclose(image.header.get_qform(), expected, atol=1e-5)
    assert nib.aff2axcodes(image.affine) == ("L", "P", "S")


def test_matches_simpleitk_reader(tmp_path: Path) -> None:
    sitk = pytest.importorskip("SimpleITK")
    direction = _rotation_from_angles(0.3, -0.2, 0.1)
    volume = Volume(np.arange(60, dtype=np.int16).reshape(3, 4, 5), spacing=(0.7, 0.8, 2.5), origin=(1.0, -2.0, 3.0), direction=direction)
    path = write_nifti(volume, tmp_path / "oblique.nii.gz")
    image = sitk.ReadImage(str(path))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), volume.array)
    np.testing.assert_allclose(image.GetOrigin(), volume.origin, atol=1e-4)
    np.testing.assert_allclose(image.GetSpacing(), volume.spacing, atol=1e-5)
    np.testing.assert_allclose(np.reshape(image.GetDirection(), (3, 3)), direction, atol=1e-5)


def test_float32_and_lazy_read(tmp_path: Path) -> None:
    array = np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4)
    path = write_nifti(Volume(array, spacing=(1, 1, 1)), tmp_path / "float.nii.gz")
    lazy = read_nifti(path, lazy=True)
    assert not lazy.is_loaded
    assert lazy.shape == (2, 3, 4)
    np.testing.assert_array_equal(lazy.array, array)
    assert lazy.dtype == np.float32


@pytest.mark.parametrize("lazy", [False, True])
def test_scaled_file_reads_float32(tmp_path: Path, lazy: bool) -> None:
    # A CT stored as unsigned values plus scl_inter -1024, as some converters write it.
    stored = np.array([0, 24, 1024, 3000], dtype=np.int16).reshape(4, 1, 1) * np.ones((1, 2, 3), np.int16)
    image = nib.Nifti1Image(stored, np.eye(4))
    image.header.set_slope_inter(0.5, -1024.0)
    path = tmp_path / "scaled.nii.gz"
    nib.save(image, str(path))
    volume = read_nifti(path, lazy=lazy)
    assert volume.dtype == np.float32
    # The file's first axis is x, the last axis of the (z, y, x) array.
    np.testing.assert_array_equal(volume.array[0, 0, :], [-1024.0, -1012.0, -512.0, 476.0])


def test_load_volume_dispatches_nifti(tmp_path: Path) -> None:
    volume = Volume(np.ones((2, 2, 2), np.int16), spacing=(1, 2, 3))
    path = write_nifti(volume, tmp_path / "sub" / "v.nii.gz")
    assert load_volume(path).spacing == pytest.approx((1, 2, 3))


def test_write_is_atomic_and_leaves_no_temporary(tmp_path: Path) -> None:
    volume = Volume(np.ones((2, 2, 2), np.int16), spacing=(1, 1, 1))
    write_nifti(volume, tmp_path / "v.nii.gz")
    write_nifti(volume.with_array(np.zeros((2, 2, 2), np.int16)), tmp_path / "v.nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.nii.gz"]
    assert read_nifti(tmp_path / "v.nii.gz").array.max() == 0


def test_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(NiftiError, match="not found"):
        read_nifti(tmp_path / "missing.nii.gz")
    with pytest.raises(NiftiError, match=r"\.nii or \.nii\.gz"):
        write_nifti(Volume(np.zeros((1, 1, 1)), spacing=(1, 1, 1)), tmp_path / "volume.img")
    four_d = nib.Nifti1Image(np.zeros((2, 2, 2, 3), np.int16), np.eye(4))
    nib.save(four_d, tmp_path / "four_d.nii")
    with pytest.raises(NiftiError, match="3D"):
        read_nifti(tmp_path / "four_d.nii")
    sheared = np.eye(4)
    sheared[0, 1] = 0.5
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.int16), sheared), tmp_path / "sheared.nii")
    with pytest.raises(NiftiError, match="shear"):
        read_nifti(tmp_path / "sheared.nii")


@pytest.mark.shared_data
def test_real_series_round_trip(lidc_0001_dir: Path, tmp_path: Path) -> None:
    volume = load_volume(lidc_0001_dir)
    loaded = read_nifti(write_nifti(volume, tmp_path / "lidc.nii"))
    np.testing.assert_array_equal(loaded.array, volume.array)
    assert loaded.same_geometry(volume, atol_mm=1e-4)


def test_written_file_has_default_permissions(tmp_path: Path) -> None:
    import os

    umask = os.umask(0)
    os.umask(umask)
    path = write_nifti(Volume(np.ones((1, 1, 1), np.int16), spacing=(1, 1, 1)), tmp_path / "v.nii")
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
