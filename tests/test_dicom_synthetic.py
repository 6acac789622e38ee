"""Synthetic DICOM series written with pydicom: geometry round trips and every grid error."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Sequence

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from tunisian_lung.errors import (
    DuplicateSliceError,
    GantryTiltError,
    InconsistentSlicesError,
    NonUniformSpacingError,
    SliceGapError,
)
from tunisian_lung.io.dicom import index_dicom_folder, load_series

ROWS, COLUMNS = 4, 5
_uid_counter = itertools.count()


def _stored_slice(index: int) -> np.ndarray:
    """Distinct stored values per slice so that a wrong order is visible."""
    base = np.arange(ROWS * COLUMNS, dtype=np.int32).reshape(ROWS, COLUMNS)
    return base + 100 * index


def write_series(
    folder: Path,
    *,
    positions: Sequence[Sequence[float]],
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    pixel_spacing: tuple[float, float] = (0.8, 0.7),
    slopes: Sequence[float] | None = None,
    intercepts: Sequence[float] | None = None,
    unsigned: bool = False,
    file_order: Sequence[int] | None = None,
    series_uid: str | None = None,
    image_types: Sequence[Sequence[str]] | None = None,
    acquisition_numbers: Sequence[int] | None = None,
    rows: Sequence[int] | None = None,
) -> list[Path]:
    """Write one CT slice per position, slice ``k`` storing ``_stored_slice(k)``, and return the paths by slice."""
    folder.mkdir(parents=True, exist_ok=True)
    series = series_uid or generate_uid()
    study = generate_uid()
    frame_of_reference = generate_uid()
    count = len(positions)
    order = list(file_order) if file_order is not None else list(range(count))
    paths: list[Path] = [Path()] * count
    for file_number, index in enumerate(order):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"file{file_number:03d}_{next(_uid_counter)}"
        dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        dataset.SOPClassUID = CTImageStorage
        dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        dataset.SeriesInstanceUID = series
        dataset.StudyInstanceUID = study
        dataset.FrameOfReferenceUID = frame_of_reference
        dataset.PatientID = "SYN-001"
        dataset.Modality = "CT"
        dataset.ImageType = list(image_types[index]) if image_types else ["ORIGINAL", "PRIMARY", "AXIAL"]
        dataset.InstanceNumber = count - index
        if acquisition_numbers is not None:
            dataset.AcquisitionNumber = acquisition_numbers[index]
        dataset.ImagePositionPatient = [f"{value:.6f}" for value in positions[index]]
        dataset.ImageOrientationPatient = [f"{value:.8f}" for value in orientation]
        dataset.PixelSpacing = [f"{value}" for value in pixel_spacing]
        dataset.SliceThickness = "1.0"
        slice_rows = rows[index] if rows is not None else ROWS
        dataset.Rows = slice_rows
        dataset.Columns = COLUMNS
        dataset.SamplesPerPixel = 1
        dataset.PhotometricInterpretation = "MONOCHROME2"
        dataset.BitsAllocated = 16
        dataset.BitsStored = 16
        dataset.HighBit = 15
        dataset.PixelRepresentation = 0 if unsigned else 1
        dataset.RescaleSlope = f"{slopes[index] if slopes else 1}"
        dataset.RescaleIntercept = f"{intercepts[index] if intercepts else -1024}"
        stored = np.resize(_stored_slice(index), (slice_rows, COLUMNS))
        if unsigned:
            stored = stored + 60000 - 100 * count
        dataset.PixelData = stored.astype("<u2" if unsigned else "<i2").tobytes()
        dataset.save_as(path, enforce_file_format=True)
        paths[index] = path
    return paths


def axial_positions(count: int, spacing: float = 2.0, start: float = -10.0) -> list[list[float]]:
    return [[-50.0, -60.0, start + spacing * k] for k in range(count)]


def _rotation(quaternion: Sequence[float]) -> np.ndarray:
    w, x, y, z = np.asarray(quaternion, dtype=float) / np.linalg.norm(quaternion)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


quaternions = st.tuples(*[st.floats(-1, 1, allow_nan=False) for _ in range(4)]).filter(
    lambda q: np.linalg.norm(q) > 0.2
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    quaternion=quaternions,
    slice_spacing=st.floats(0.5, 5.0),
    pixel_spacing=st.tuples(st.floats(0.3, 2.0), st.floats(0.3, 2.0)),
    count=st.integers(2, 6),
    data=st.data(),
)
def test_geometry_round_trip(
    tmp_path_factory: pytest.TempPathFactory,
    quaternion: Sequence[float],
    slice_spacing: float,
    pixel_spacing: tuple[float, float],
    count: int,
    data: st.DataObject,
) -> None:
    rotation = _rotation(quaternion)
    # PixelSpacing is a DS value of at most 16 characters, so keep 6 decimals.
    pixel_spacing = (round(pixel_spacing[0], 6), round(pixel_spacing[1], 6))
    row_direction, column_direction, normal = rotation[:, 0], rotation[:, 1], rotation[:, 2]
    origin = np.array([12.5, -40.25, 101.0])
    # Positions rounded as ImagePositionPatient is written (6 decimals).
    positions = [np.round(origin + k * slice_spacing * normal, 6) for k in range(count)]
    file_order = data.draw(st.permutations(range(count)))
    intercepts = data.draw(st.lists(st.integers(-2048, 0), min_size=count, max_size=count))
    folder = tmp_path_factory.mktemp("series")
    write_series(
        folder,
        positions=positions,
        orientation=[*row_direction, *column_direction],
        pixel_spacing=pixel_spacing,
        intercepts=intercepts,
        file_order=file_order,
    )
    volume = load_series(folder)

    assert volume.shape == (count, ROWS, COLUMNS)
    assert volume.dtype == np.int16
    np.testing.assert_allclose(volume.spacing, (pixel_spacing[1], pixel_spacing[0], slice_spacing), atol=1e-5)
    np.testing.assert_allclose(volume.direction, rotation, atol=1e-6)
    for k in range(count):
        np.testing.assert_array_equal(volume.array[k], _stored_slice(k) + intercepts[k])
        np.testing.assert_allclose(volume.voxel_to_world([k, 0, 0]), positions[k], atol=1e-4)
    # Pixel (row 1, column 2) of slice k lies 2 columns along the row direction and 1 row down.
    expected = positions[-1] + 2 * pixel_spacing[1] * row_direction + 1 * pixel_spacing[0] * column_direction
    np.testing.assert_allclose(volume.voxel_to_world([count - 1, 1, 2]), expected, atol=1e-4)
    indices = np.array([[0, 0, 0], [count - 1, ROWS - 1, COLUMNS - 1], [0.5, 1.25, 3.75]])
    np.testing.assert_allclose(volume.world_to_voxel(volume.voxel_to_world(indices)), indices, atol=1e-6)


def test_reversed_positions_sorted_along_normal(tmp_path: Path) -> None:
    paths = write_series(tmp_path, positions=axial_positions(4), file_order=[3, 1, 0, 2])
    (info,) = index_dicom_folder(tmp_path)
    assert list(info.files) == paths
    volume = load_series(info)
    assert volume.origin == pytest.approx((-50.0, -60.0, -10.0))
    np.testing.assert_array_equal(volume.array[:, 0, 0], [-1024, -924, -824, -724])


def test_unsigned_with_negative_intercept(tmp_path: Path) -> None:
    write_series(tmp_path, positions=axial_positions(3), unsigned=True, intercepts=[-32768] * 3)
    volume = load_series(tmp_path)
    expected_first = _stored_slice(0) + 60000 - 300 - 32768
    assert volume.dtype == np.int16
    np.testing.assert_array_equal(volume.array[0], expected_first)


def test_per_slice_rescale_varies(tmp_path: Path) -> None:
    write_series(tmp_path, positions=axial_positions(3), slopes=[1, 2, 0.5], intercepts=[-1024, -1000, -10.5])
    volume = load_series(tmp_path)
    assert volume.dtype == np.float32
    np.testing.assert_allclose(volume.array[1], _stored_slice(1) * 2 - 1000)
    np.testing.assert_allclose(volume.array[2], _stored_slice(2) * 0.5 - 10.5)


def test_out_of_int16_range_gives_float32(tmp_path: Path) -> None:
    write_series(tmp_path, positions=axial_positions(2), intercepts=[32760, 32760])
    volume = load_series(tmp_path)
    assert volume.dtype == np.float32
    assert volume.array.max() == pytest.approx(32760 + 100 + ROWS * COLUMNS - 1)


def test_gap_raises_and_resamples(tmp_path: Path) -> None:
    positions = axial_positions(6)
    del positions[3]
    write_series(tmp_path, positions=positions)
    with pytest.raises(SliceGapError, match=r"1 gap\(s\).*2 mm"):
        load_series(tmp_path)
    volume = load_series(tmp_path, on_gap="resample")
    assert volume.shape == (6, ROWS, COLUMNS)
    assert volume.spacing[2] == pytest.approx(2.0)
    np.testing.assert_allclose(volume.array[3], (volume.array[2] + volume.array[4]) / 2)


def test_duplicate_raises_and_keeps_first(tmp_path: Path) -> None:
    positions = axial_positions(4)
    positions.insert(2, list(positions[2]))
    write_series(tmp_path, positions=positions)
    with pytest.raises(DuplicateSliceError, match="share one position"):
        load_series(tmp_path)
    volume = load_series(tmp_path, on_duplicate="first")
    assert volume.shape == (4, ROWS, COLUMNS)


def test_nonuniform_raises_and_resamples(tmp_path: Path) -> None:
    positions = [[0.0, 0.0, z] for z in (0.0, 1.0, 2.0, 5.5, 9.0)]
    write_series(tmp_path, positions=positions)
    with pytest.raises(NonUniformSpacingError, match="not uniform"):
        load_series(tmp_path)
    volume = load_series(tmp_path, on_nonuniform="resample")
    assert volume.spacing[2] == pytest.approx(1.0)
    assert volume.shape[0] == 10
    assert volume.dtype == np.float32


def test_jitter_is_tolerated(tmp_path: Path) -> None:
    positions = [[0.0, 0.0, 2.5 * k + (0.004 if k % 2 else -0.003)] for k in range(5)]
    write_series(tmp_path, positions=positions)
    volume = load_series(tmp_path)
    assert volume.spacing[2] == pytest.approx(2.5, abs=0.01)
    assert volume.dtype == np.int16


def test_tilt_raises_and_corrects(tmp_path: Path) -> None:
    # Each slice origin moves 0.7 mm (one column) along +x per slice: a sheared stack.
    positions = [[0.7 * k, 0.0, 2.0 * k] for k in range(4)]
    write_series(tmp_path, positions=positions, pixel_spacing=(0.8, 0.7))
    with pytest.raises(GantryTiltError, match="gantry tilt"):
        load_series(tmp_path)
    volume = load_series(tmp_path, on_tilt="resample")
    assert volume.dtype == np.float32
    assert volume.origin == pytest.approx((0.0, 0.0, 0.0))
    # Column c of slice k in the corrected grid is column c - k of the stored slice.
    np.testing.assert_allclose(volume.array[2, :, 2:], (_stored_slice(2) - 1024)[:, :-2])


def test_inconsistent_rows_raise(tmp_path: Path) -> None:
    paths = write_series(tmp_path, positions=axial_positions(4), rows=[ROWS, ROWS, ROWS + 1, ROWS])
    with pytest.raises(InconsistentSlicesError, match=paths[2].name):
        load_series(tmp_path)


def test_localizer_and_acquisitions_split(tmp_path: Path) -> None:
    series_uid = generate_uid()
    image_types = [["ORIGINAL", "PRIMARY", "AXIAL"]] * 6 + [["ORIGINAL", "PRIMARY", "LOCALIZER"]]
    positions = axial_positions(3) + axial_positions(3) + [[0.0, 0.0, 0.0]]
    write_series(
        tmp_path,
        positions=positions,
        series_uid=series_uid,
        image_types=image_types,
        acquisition_numbers=[1, 1, 1, 2, 2, 2, 3],
    )
    infos = index_dicom_folder(tmp_path)
    assert [info.acquisition_number for info in infos] == [1, 2]
    assert all(info.num_slices == 3 for info in infos)
    for info in infos:
        (excluded_path, reason), = info.excluded
        assert "localizer" in reason
    volume = load_series(infos[1])
    assert volume.shape == (3, ROWS, COLUMNS)


def test_non_dicom_files_skipped(tmp_path: Path) -> None:
    write_series(tmp_path / "a", positions=axial_positions(3))
    (tmp_path / "a" / "README").write_text("export notes")
    (tmp_path / "a" / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    (info,) = index_dicom_folder(tmp_path)
    assert info.num_slices == 3
    assert pydicom.dcmread(info.files[0]).Modality == "CT"


def test_index_cache_reused_and_invalidated(tmp_path: Path) -> None:
    from tunisian_lung.io import dicom as dicom_module

    folder = tmp_path / "export"
    cache = tmp_path / "cache"
    paths = write_series(folder, positions=axial_positions(3))
    first = index_dicom_folder(folder, index_cache=cache)
    assert len(list(cache.glob("*.json"))) == 1
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in paths)

    # For an unchanged folder the records come from the cache, and no DICOM file is read.
    def fail_read(*args: object, **kwargs: object) -> None:
        raise AssertionError("DICOM files were read although the cache entry is valid")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dicom_module, "_read_files", fail_read)
        cached = index_dicom_folder(folder, index_cache=cache)
    assert cached == first

    write_series(folder, positions=axial_positions(1, start=50.0), series_uid=first[0].series_uid)
    refreshed = index_dicom_folder(folder, index_cache=cache)
    assert refreshed[0].num_slices == 4
    assert any("non-uniform" in issue or "gap" in issue for issue in refreshed[0].issues)


def test_series_info_dict_round_trip(tmp_path: Path) -> None:
    write_series(tmp_path, positions=axial_positions(3))
    (info,) = index_dicom_folder(tmp_path)
    assert type(info).from_dict(info.to_dict()) == info
