"""Awkward real DICOM files: every case of shared/data/quirks with the values its README states."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from tunisian_lung.errors import DuplicateSliceError, MultipleSeriesError, NotAVolumeError
from tunisian_lung.io.dicom import index_dicom_folder, load_series, read_frames

pytestmark = [
    pytest.mark.shared_data,
    # Some quirk files carry invalid UIDs and VR UN elements on purpose; pydicom warns about them.
    pytest.mark.filterwarnings("ignore::UserWarning"),
]


def test_ct_small_baseline(quirks_dir: Path) -> None:
    volume = load_series(quirks_dir / "ct_small_baseline" / "CT_small.dcm", min_slices=1)
    assert volume.shape == (1, 128, 128)
    assert volume.dtype == np.int16
    assert volume.spacing == pytest.approx((0.661468, 0.661468, 5.0))
    assert volume.array[0, 64, 64] == 904
    assert volume.array[0, 10, 10] == -800
    assert volume.array.min() == -896
    assert volume.array.max() == 1167


def test_single_slice_rejected_by_default(quirks_dir: Path) -> None:
    path = quirks_dir / "ct_small_baseline" / "CT_small.dcm"
    with pytest.raises(NotAVolumeError, match="CT_small.dcm.*1 slice"):
        load_series(path)


def test_oblique_j2k_pixel_representation_mismatch(quirks_dir: Path) -> None:
    volume = load_series(
        quirks_dir / "oblique_gantry_tilt_j2k_pixelrep_mismatch" / "J2K_pixelrep_mismatch.dcm", min_slices=1
    )
    array = volume.array[0]
    assert volume.shape == (1, 512, 512)
    assert volume.dtype == np.int16
    assert array[0, 0] == -2000
    assert array[256, 256] == 27
    assert array.min() == -2000
    assert array.max() == 1896
    assert np.mean(array == -2000) == pytest.approx(0.215, abs=0.001)
    assert volume.spacing == pytest.approx((0.431, 0.431, 5.0))
    # The direction columns are the row and column cosines of the oblique ImageOrientationPatient.
    row_direction = np.array([1.0, 0.0, 0.0])
    column_direction = np.array([0.0, 0.9272, -0.3746])
    column_direction /= np.linalg.norm(column_direction)
    np.testing.assert_allclose(volume.direction[:, 0], row_direction, atol=1e-6)
    np.testing.assert_allclose(volume.direction[:, 1], column_direction, atol=1e-6)
    np.testing.assert_allclose(volume.direction[:, 2], np.cross(row_direction, column_direction), atol=1e-6)


def test_flipped_y_orientation(quirks_dir: Path) -> None:
    path = quirks_dir / "flipped_y_orientation_j2k" / "explicit_VR-UN.dcm"
    volume = load_series(path, min_slices=1, slice_spacing_mm=1.0)
    array = volume.array[0]
    assert volume.shape == (1, 512, 512)
    assert array[0, 0] == -1024
    assert array[256, 256] == -27
    assert array[100, 256] == -940
    assert array.min() == -1024
    assert array.max() == 1186
    assert volume.spacing[:2] == pytest.approx((0.859375, 0.859375))
    np.testing.assert_allclose(volume.direction[:, 1], [0.0, -1.0, 0.0])
    # Row index 10 lies 10 rows towards -y (anterior) from the first row.
    world = volume.voxel_to_world([0, 10, 0])
    assert world[1] == pytest.approx(volume.origin[1] - 10 * 0.859375)


def test_jpeg_lossless_unsigned_negative_intercept(quirks_dir: Path) -> None:
    volume = load_series(quirks_dir / "jpeg_lossless_unsigned_ct" / "bad_sequence.dcm", min_slices=1)
    array = volume.array[0]
    assert volume.dtype == np.int16
    assert array[256, 256] == 202
    assert array[0, 0] == 58
    assert array.min() == -1011
    assert array.max() == 1243
    assert volume.spacing == pytest.approx((0.287109, 0.287109, 1.0), abs=1e-6)


def test_enhanced_ct_multiframe(quirks_dir: Path) -> None:
    volume = load_series(quirks_dir / "enhanced_ct_multiframe" / "eCT_Supplemental.dcm")
    assert volume.shape == (2, 512, 512)
    assert volume.spacing == pytest.approx((0.388672, 0.388672, 10.0))
    np.testing.assert_allclose(volume.direction[:, 0], [-1.0, 0.0, 0.0])
    # Frames are ordered along the slice normal (0, 0, -1): frame 2 (z -149) comes first.
    positions = volume.voxel_to_world([[0, 0, 0], [1, 0, 0]])
    np.testing.assert_allclose(positions[:, 2], [-149.0, -159.0])
    frame_at = {round(float(z)): index for index, z in enumerate(positions[:, 2])}
    assert volume.array[frame_at[-159], 256, 256] == 81
    assert volume.array[frame_at[-149], 256, 256] == -2


def test_modality_lut_sequence(quirks_dir: Path) -> None:
    path = quirks_dir / "modality_lut_sequence" / "mlut_18.dcm"
    values = read_frames(path)
    assert values.shape == (1, 512, 512)
    assert values[0, 256, 256] == 31447
    assert values.min() == 0
    assert values.max() == 65535
    # The LUT output exceeds the int16 range, so the documented rule gives float32.
    assert values.dtype == np.float32
    with pytest.raises(NotAVolumeError, match="OT"):
        load_series(path, min_slices=1)


def test_deflated_transfer_syntax(quirks_dir: Path) -> None:
    values = read_frames(quirks_dir / "deflated_transfer_syntax" / "image_dfl.dcm")
    assert values.shape == (1, 512, 512)
    assert values[0, 256, 256] == 65
    assert values.min() == 0
    assert values.max() == 255


def test_monochrome1_radiograph_rejected(quirks_dir: Path) -> None:
    path = quirks_dir / "monochrome1_cr_j2k" / "RG3_J2KR.dcm"
    with pytest.raises(NotAVolumeError, match=r"RG3_J2KR\.dcm: modality CR"):
        load_series(path)
    with pytest.raises(NotAVolumeError, match="without patient geometry"):
        load_series(path, modalities=None, min_slices=1)
    values = read_frames(path)
    assert values.shape == (1, 1760, 1760)
    assert values[0, 0, 0] == 0
    assert values[0, 880, 880] == 306
    assert values.mean() == pytest.approx(332.7, abs=0.05)
    assert values.max() == 1023


@pytest.mark.parametrize("name", ["1.dcm", "2.dcm", "3.dcm", "4.dcm", "5.dcm", "7.dcm", "9.dcm"])
def test_transfer_syntaxes_decode_identically(quirks_dir: Path, name: str) -> None:
    values = read_frames(quirks_dir / "transfer_syntaxes_same_image" / name)[0]
    assert values.shape == (384, 384)
    assert int(values.sum(dtype=np.int64)) == 38036663
    assert values.max() == 2362
    assert np.unravel_index(np.argmax(values), values.shape) == (331, 44)
    assert values[200, 150] == 32


def test_transfer_syntaxes_folder_is_duplicates(quirks_dir: Path) -> None:
    folder = quirks_dir / "transfer_syntaxes_same_image"
    (info,) = index_dicom_folder(folder)
    assert info.num_slices == 7
    assert info.pixel_spacing == pytest.approx((3.25, 3.25))
    assert any("duplicate" in issue for issue in info.issues)
    with pytest.raises(DuplicateSliceError, match="share one position"):
        load_series(folder, modalities=None)


def test_dicomdir_file_set(quirks_dir: Path) -> None:
    folder = quirks_dir / "dicomdir"
    for use_dicomdir in (True, False):
        infos = index_dicom_folder(folder, use_dicomdir=use_dicomdir)
        files = {path for info in infos for path in info.files} | {path for info in infos for path, _ in info.excluded}
        assert len(files) == 31
        assert all(path.name != "DICOMDIR" for path in files)
        assert len({info.series_uid for info in infos}) == 13
        by_patient: dict[str, set[str]] = {}
        for info in infos:
            by_patient.setdefault(info.patient_id, set()).add(info.modality)
        assert by_patient["77654033"] == {"CR", "CT"}
        assert by_patient["98890234"] == {"CT", "MR"}


def test_dicomdir_series_contents(quirks_dir: Path) -> None:
    infos = index_dicom_folder(quirks_dir / "dicomdir")
    ct_series = {info.series_uid: info for info in infos if info.modality == "CT" and not info.is_localizer}
    sizes = sorted(info.num_slices for info in ct_series.values())
    assert sizes == [4, 5]
    four = next(info for info in ct_series.values() if info.num_slices == 4)
    # Slices at z -99.48, 103.02, 104.27, 105.52: the big step is reported, not stacked.
    assert any("non-uniform" in issue or "gap" in issue for issue in four.issues)
    localizers = [info for info in infos if info.is_localizer and info.modality == "CT"]
    assert sum(info.num_slices for info in localizers) == 2
    # One MR series mixes three orientations and is split into one group per orientation.
    mixed = [info for info in infos if info.series_uid.endswith(".136")]
    assert len(mixed) == 3
    assert sum(info.num_slices for info in mixed) == 3


def test_two_series_one_folder(quirks_dir: Path) -> None:
    folder = quirks_dir / "two_series_one_folder"
    first_uid = "1.3.6.1.4.1.14519.5.2.1.7009.2401.264410460039008685576999729346"
    second_uid = "1.3.6.1.4.1.14519.5.2.1.7009.2401.307437172854557023978824805941"
    infos = {info.series_uid: info for info in index_dicom_folder(folder)}
    assert set(infos) == {first_uid, second_uid}
    assert infos[first_uid].num_slices == 2
    assert infos[second_uid].num_slices == 2
    assert infos[first_uid].frame_of_reference_uid != infos[second_uid].frame_of_reference_uid

    with pytest.raises(MultipleSeriesError) as raised:
        load_series(folder)
    assert set(raised.value.series_uids) == {first_uid, second_uid}

    expected = {first_uid: {-166.75: 103, -162.5: 46}, second_uid: {-638.0: -84, -633.75: -68}}
    for uid, hu_at_z in expected.items():
        volume = load_series(folder, series_uid=uid)
        assert volume.shape == (2, 512, 512)
        assert volume.spacing == pytest.approx((0.976562, 0.976562, 4.25))
        assert volume.array.min() == -3024
        for index in range(2):
            z = float(volume.voxel_to_world([index, 0, 0])[2])
            assert volume.array[index, 256, 256] == hu_at_z[round(z, 2)]
        assert volume.metadata["series_uid"] == uid


def test_series_info_loads_directly(quirks_dir: Path) -> None:
    infos = index_dicom_folder(quirks_dir / "two_series_one_folder")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        volume = load_series(infos[0])
    assert volume.shape == infos[0].shape
    assert volume.origin == pytest.approx(infos[0].origin)
