"""MetaImage reader and writer: geometry against SimpleITK, data layouts and header errors."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from tunisian_lung.io.metaimage import MetaImageError, read_metaimage, read_metaimage_header, write_metaimage
from tunisian_lung.io.volume import Volume


def _rotation_about_z(degrees: float) -> np.ndarray:
    angle = np.deg2rad(degrees)
    return np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])


def _array() -> np.ndarray:
    return (np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6) * 7 - 1000).astype(np.int16)


def test_read_matches_simpleitk(tmp_path: Path) -> None:
    sitk = pytest.importorskip("SimpleITK")
    array = _array()
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 0.8, 2.5))
    image.SetOrigin((-10.0, 20.0, -300.0))
    image.SetDirection(_rotation_about_z(30.0).reshape(-1).tolist())
    sitk.WriteImage(image, str(tmp_path / "rotated.mhd"))

    volume = read_metaimage(tmp_path / "rotated.mhd")

    np.testing.assert_array_equal(volume.array, array)
    assert volume.spacing == pytest.approx((0.7, 0.8, 2.5))
    assert volume.origin == pytest.approx((-10.0, 20.0, -300.0))
    np.testing.assert_allclose(volume.direction, _rotation_about_z(30.0), atol=1e-12)
    for index_xyz in [(0, 0, 0), (5, 4, 3), (2, 1, 3)]:
        expected = image.TransformIndexToPhysicalPoint(index_xyz)
        actual = volume.voxel_to_world(index_xyz[::-1])
        np.testing.assert_allclose(actual, expected, atol=1e-9)


def test_written_file_reads_in_simpleitk(tmp_path: Path) -> None:
    sitk = pytest.importorskip("SimpleITK")
    volume = Volume(_array(), spacing=(0.6, 0.6, 1.25), origin=(1.5, -2.0, 30.0), direction=_rotation_about_z(-45.0))

    header = write_metaimage(volume, tmp_path / "out.mhd")

    image = sitk.ReadImage(str(header))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), volume.array)
    np.testing.assert_allclose(np.asarray(image.GetDirection()).reshape(3, 3), volume.direction, atol=1e-12)
    assert image.GetOrigin() == pytest.approx(volume.origin)
    assert image.GetSpacing() == pytest.approx(volume.spacing)


def test_round_trip_float32(tmp_path: Path) -> None:
    array = np.linspace(-1.0, 1.0, 60, dtype=np.float32).reshape(3, 4, 5)
    volume = Volume(array, spacing=(1.0, 2.0, 3.0), origin=(4.0, 5.0, 6.0))
    back = read_metaimage(write_metaimage(volume, tmp_path / "f.mhd"))
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back.array, array)
    assert back.same_geometry(volume)


def _header(**overrides: str) -> str:
    keys = {
        "ObjectType": "Image",
        "NDims": "3",
        "DimSize": "3 2 2",
        "ElementType": "MET_SHORT",
        "ElementSpacing": "1 1 2",
        "Offset": "-1 -2 -3",
        "ElementDataFile": "LOCAL",
    }
    keys.update(overrides)
    data_file = keys.pop("ElementDataFile")
    lines = [f"{key} = {value}" for key, value in keys.items() if value] + [f"ElementDataFile = {data_file}"]
    return "\n".join(lines) + "\n"


def test_local_data_in_mha(tmp_path: Path) -> None:
    array = np.arange(12, dtype=np.int16).reshape(2, 2, 3)
    path = tmp_path / "local.mha"
    path.write_bytes(_header().encode() + array.astype("<i2").tobytes())
    np.testing.assert_array_equal(read_metaimage(path).array, array)


def test_big_endian_and_compressed(tmp_path: Path) -> None:
    array = np.arange(12, dtype=np.int16).reshape(2, 2, 3) - 6
    (tmp_path / "data.zraw").write_bytes(zlib.compress(array.astype(">i2").tobytes()))
    path = tmp_path / "packed.mhd"
    path.write_text(_header(ElementByteOrderMSB="True", CompressedData="True", ElementDataFile="data.zraw"))
    volume = read_metaimage(path)
    assert volume.dtype == np.dtype("int16")
    np.testing.assert_array_equal(volume.array, array)


def test_missing_spacing_rejected(tmp_path: Path) -> None:
    path = tmp_path / "nospacing.mhd"
    path.write_text(_header(ElementSpacing=""))
    with pytest.raises(MetaImageError, match="neither ElementSpacing nor ElementSize"):
        read_metaimage(path)


def test_truncated_raw_rejected(tmp_path: Path) -> None:
    (tmp_path / "short.raw").write_bytes(b"\x00" * 10)
    path = tmp_path / "short.mhd"
    path.write_text(_header(ElementDataFile="short.raw"))
    with pytest.raises(MetaImageError, match="expected 24 bytes"):
        read_metaimage(path)


def test_missing_raw_rejected(tmp_path: Path) -> None:
    path = tmp_path / "alone.mhd"
    path.write_text(_header(ElementDataFile="alone.raw"))
    with pytest.raises(MetaImageError, match="not found"):
        read_metaimage(path)


def test_two_dimensional_rejected(tmp_path: Path) -> None:
    path = tmp_path / "flat.mhd"
    path.write_text(_header(NDims="2", DimSize="3 2"))
    with pytest.raises(MetaImageError, match="NDims = 2"):
        read_metaimage(path)


def test_unknown_element_type_rejected(tmp_path: Path) -> None:
    path = tmp_path / "odd.mhd"
    path.write_text(_header(ElementType="MET_FLOAT_ARRAY"))
    with pytest.raises(MetaImageError, match="ElementType 'MET_FLOAT_ARRAY'"):
        read_metaimage(path)


def test_header_without_data_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.mhd"
    path.write_text("NDims = 3\nDimSize = 1 1 1\n")
    with pytest.raises(MetaImageError, match="no ElementDataFile"):
        read_metaimage_header(path)
