"""The real LIDC-IDRI-0001 series: equality with SimpleITK, the LUNA16 nodule centre, file-order independence."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tunisian_lung.errors import SliceGapError
from tunisian_lung.io import Volume, load_volume
from tunisian_lung.io.dicom import index_dicom_folder, load_series

pytestmark = pytest.mark.shared_data

SERIES_UID = "1.3.6.1.4.1.14519.5.2.1.6279.6001.179049373636438705059720603192"


@pytest.fixture(scope="module")
def lidc_volume(lidc_0001_dir: Path) -> Volume:
    return load_series(lidc_0001_dir)


@pytest.fixture(scope="module")
def sitk_image(lidc_0001_dir: Path):  # type: ignore[no-untyped-def]
    sitk = pytest.importorskip("SimpleITK")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(lidc_0001_dir)))
    return reader.Execute()


def test_array_equals_simpleitk(lidc_volume: Volume, sitk_image) -> None:  # type: ignore[no-untyped-def]
    import SimpleITK as sitk

    expected = sitk.GetArrayFromImage(sitk_image)
    assert lidc_volume.shape == expected.shape == (133, 512, 512)
    assert lidc_volume.dtype == np.int16
    np.testing.assert_array_equal(lidc_volume.array, expected)


def test_geometry_equals_simpleitk(lidc_volume: Volume, sitk_image) -> None:  # type: ignore[no-untyped-def]
    np.testing.assert_allclose(lidc_volume.spacing, sitk_image.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(lidc_volume.origin, sitk_image.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(lidc_volume.direction.reshape(-1), sitk_image.GetDirection(), atol=1e-9)
    corner_zyx = np.array([132, 511, 511])
    expected_corner = sitk_image.TransformIndexToPhysicalPoint([int(v) for v in corner_zyx[::-1]])
    np.testing.assert_allclose(lidc_volume.voxel_to_world(corner_zyx), expected_corner, atol=1e-4)


def test_hu_statistics(lidc_volume: Volume) -> None:
    array = lidc_volume.array
    assert array.min() == -2048
    assert array.max() == 3071
    assert np.mean(array == -2048) == pytest.approx(0.213, abs=0.001)


def test_luna16_centre_on_soft_tissue(lidc_volume: Volume, lidc_0001_dir: Path) -> None:
    with open(lidc_0001_dir / "annotations_luna16.csv", newline="") as handle:
        row = next(csv.DictReader(handle))
    assert row["seriesuid"] == SERIES_UID
    centre_xyz = [float(row["coordX"]), float(row["coordY"]), float(row["coordZ"])]
    z, y, x = lidc_volume.world_to_voxel(centre_xyz)
    assert x == pytest.approx(316.0, abs=0.05)
    assert y == pytest.approx(367.0, abs=0.05)
    assert z == pytest.approx(89.65, abs=0.01)
    assert lidc_volume.contains_world(centre_xyz)
    k, j, i = int(round(z)), int(round(y)), int(round(x))
    assert lidc_volume.array[k, j, i] == 91
    block = lidc_volume.array[k - 1 : k + 2, j - 2 : j + 3, i - 2 : i + 3]
    assert block.mean() == pytest.approx(84.9, abs=0.1)


def test_metadata_from_headers(lidc_volume: Volume) -> None:
    metadata = lidc_volume.metadata
    assert metadata["patient_id"] == "LIDC-IDRI-0001"
    assert metadata["series_uid"] == SERIES_UID
    assert metadata["modality"] == "CT"
    assert metadata["manufacturer"] == "GE MEDICAL SYSTEMS"
    assert metadata["convolution_kernel"] == "STANDARD"
    assert metadata["slice_thickness"] == 2.5
    assert metadata["corrections"] == []


def test_index_real_series(lidc_0001_dir: Path) -> None:
    (info,) = index_dicom_folder(lidc_0001_dir, workers=2)
    assert info.series_uid == SERIES_UID
    assert info.shape == (133, 512, 512)
    assert info.spacing == pytest.approx((0.703125, 0.703125, 2.5))
    assert info.origin == pytest.approx((-166.0, -171.7, -340.0), abs=1e-5)
    assert info.model == "LightSpeed Plus"
    assert info.kvp == 120.0
    assert info.tube_current == 400.0
    assert info.pixel_spacing == pytest.approx((0.703125, 0.703125))
    assert info.acquisition_date == "20000101"
    assert info.issues == ()
    assert info.excluded == ()
    # Files are in slice order (z ascending), not in file-name order.
    assert info.files[0].name != "000000.dcm" or info.files[1].name != "000001.dcm"
    json.dumps(info.to_dict())


def test_shuffled_copies_give_identical_volume(lidc_volume: Volume, lidc_0001_dir: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(20261204)
    sources = sorted(lidc_0001_dir.glob("*.dcm"))
    names = rng.permutation(len(sources))
    for source, number in zip(sources, names):
        target = tmp_path / f"sub{number % 3}" / f"IMG{number:05d}"
        target.parent.mkdir(exist_ok=True)
        shutil.copyfile(source, target)
    (tmp_path / "notes.txt").write_text("not a DICOM file\n")
    copied = load_series(tmp_path)
    np.testing.assert_array_equal(copied.array, lidc_volume.array)
    assert copied.same_geometry(lidc_volume, atol_mm=0.0)


def test_missing_middle_slice_raises_gap(lidc_volume: Volume, lidc_0001_dir: Path, tmp_path: Path) -> None:
    (info,) = index_dicom_folder(lidc_0001_dir)
    middle = info.files[66]
    kept = [path for path in info.files if path != middle]
    for path in kept:
        shutil.copyfile(path, tmp_path / path.name)
    with pytest.raises(SliceGapError, match=middle.name.replace(".", r"\.") + "|gap") as raised:
        load_series(tmp_path)
    assert "on_gap='resample'" in str(raised.value)

    repaired = load_series(tmp_path, on_gap="resample")
    assert repaired.shape == lidc_volume.shape
    assert repaired.dtype == np.float32
    np.testing.assert_array_equal(repaired.array[65], lidc_volume.array[65])
    expected_middle = (lidc_volume.array[65].astype(np.float32) + lidc_volume.array[67]) / 2
    np.testing.assert_allclose(repaired.array[66], expected_middle, atol=1e-3)
    assert repaired.metadata["corrections"]


def test_lazy_load_reads_pixels_on_access(lidc_volume: Volume, lidc_0001_dir: Path) -> None:
    lazy = load_volume(lidc_0001_dir, lazy=True)
    assert not lazy.is_loaded
    assert lazy.shape == (133, 512, 512)
    assert lazy.same_geometry(lidc_volume, atol_mm=0.0)
    np.testing.assert_array_equal(lazy.array, lidc_volume.array)
    assert lazy.is_loaded


def test_load_volume_single_file_needs_volume(lidc_0001_dir: Path) -> None:
    single = load_volume(lidc_0001_dir / "000000.dcm", min_slices=1)
    assert single.shape == (1, 512, 512)
    assert single.spacing[2] == 2.5
