"""The bundled LIDC-IDRI-0001 sample: lossless re-encoding, headers, nodule, sample release."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEGLSLossless

from tunisian_lung import layout, sample


@pytest.fixture(scope="module")
def bundled_slices() -> list[pydicom.Dataset]:
    """Every bundled slice, read once and sorted by z."""
    slices = [pydicom.dcmread(path) for path in sample.sample_series_dir().glob("*.dcm")]
    return sorted(slices, key=lambda ds: float(ds.ImagePositionPatient[2]))


def _hu(ds: pydicom.Dataset) -> np.ndarray:
    return ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)


def test_sample_series_has_every_slice() -> None:
    files = sorted(sample.sample_series_dir().glob("*.dcm"))
    assert len(files) == sample.SAMPLE_SLICES
    header = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert header.file_meta.TransferSyntaxUID == JPEGLSLossless
    assert header.SeriesInstanceUID == sample.SAMPLE_SERIES_UID
    assert header.PatientID == sample.SAMPLE_PATIENT_ID


def test_sample_keeps_attribution() -> None:
    folder = sample.sample_dir()
    provenance = (folder / "PROVENANCE.md").read_text(encoding="utf-8")
    assert "CC BY 3.0" in provenance
    assert "10.7937/K9/TCIA.2015.LO9QL9SX" in provenance
    assert "Creative Commons Attribution 3.0" in (folder / "LICENSE").read_text(encoding="utf-8")


def test_sample_nodule_matches_luna16_row() -> None:
    nodule = sample.sample_nodule()
    assert nodule["series_id"] == sample.SAMPLE_SERIES_UID
    assert nodule["center_xyz_mm"] == pytest.approx((56.20840547, 86.34341278, -115.8675792))
    assert nodule["diameter_mm"] == pytest.approx(23.35064438)
    assert nodule["class"] == 1


def test_sample_nodule_centre_is_soft_tissue(bundled_slices: list[pydicom.Dataset]) -> None:
    hu = np.stack([_hu(ds) for ds in bundled_slices])
    origin = np.asarray(bundled_slices[0].ImagePositionPatient, dtype=float)
    dz = float(bundled_slices[1].ImagePositionPatient[2]) - origin[2]
    row_spacing, column_spacing = (float(v) for v in bundled_slices[0].PixelSpacing)
    spacing = np.array([column_spacing, row_spacing, dz])
    centre = np.asarray(sample.sample_nodule()["center_xyz_mm"])
    column, row, slice_index = np.rint((centre - origin) / spacing).astype(int)
    block = hu[slice_index - 1 : slice_index + 2, row - 2 : row + 3, column - 2 : column + 3]
    assert hu.shape == (133, 512, 512)
    assert block.mean() > -100, f"mean HU {block.mean()} around the nodule centre"


@pytest.mark.shared_data
def test_sample_pixels_equal_original(lidc_0001_dir: Path, bundled_slices: list[pydicom.Dataset]) -> None:
    bundled = {ds.SOPInstanceUID: ds for ds in bundled_slices}
    originals = [pydicom.dcmread(path) for path in lidc_0001_dir.glob("*.dcm")]
    assert {ds.SOPInstanceUID for ds in originals} == set(bundled)
    for original in originals:
        assert np.array_equal(_hu(bundled[original.SOPInstanceUID]), _hu(original)), f"slice {original.SOPInstanceUID} differs"


@pytest.mark.shared_data
def test_sample_headers_equal_original(lidc_0001_dir: Path) -> None:
    originals = {
        path.name: pydicom.dcmread(path, stop_before_pixels=True) for path in lidc_0001_dir.glob("*.dcm")
    }
    for path in sample.sample_series_dir().glob("*.dcm"):
        bundled = pydicom.dcmread(path, stop_before_pixels=True)
        original = originals[path.name]
        assert [element.tag for element in bundled] == [element.tag for element in original]
        for element in original:
            assert bundled[element.tag].value == element.value, f"{path.name} {element.keyword}"


def test_sample_release_is_valid(tmp_path: Path) -> None:
    from tunisian_lung.manifest import read_manifest, verify_files

    root = sample.write_sample_release(tmp_path / "sample")
    series = layout.series_dicom_dir(root, sample.SAMPLE_PATIENT_ID, sample.SAMPLE_SERIES_UID)
    assert len(list(series.glob("*.dcm"))) == sample.SAMPLE_SLICES
    manifest = read_manifest(root)
    assert manifest.license == "CC-BY-3.0"
    assert verify_files(root, manifest).ok
    schema = pytest.importorskip("tunisian_lung.schema")
    report = schema.validate_tables(root / layout.ANNOTATIONS_NAME)
    assert report.ok, [issue.format() for issue in report.issues]
