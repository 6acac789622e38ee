"""LUNA16 import: CSV checks, DICOM and MetaImage sources, and series missing on disk."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tunisian_lung.cli import EXIT_OK, EXIT_PROBLEM, main
from tunisian_lung.errors import SourceImportError
from tunisian_lung.importers.luna16 import import_luna16, read_luna16_csv
from tunisian_lung.io.metaimage import write_metaimage
from tunisian_lung.io.volume import Volume
from tunisian_lung.manifest import read_manifest, verify_files

SERIES_UID = "1.3.6.1.4.1.14519.5.2.1.6279.6001.179049373636438705059720603192"


@pytest.fixture(scope="module")
def luna16_release(
    luna16_annotations_csv: Path, lidc_0001_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The real partial annotations.csv imported against the LIDC-IDRI-0001 DICOM, through the CLI."""
    out = tmp_path_factory.mktemp("luna16") / "release"
    code = main(
        ["import", "luna16", "--annotations", str(luna16_annotations_csv), "--images", str(lidc_0001_dir), "--out", str(out)]
    )
    assert code == EXIT_OK
    return out


def test_real_csv_one_series_found(luna16_release: Path, luna16_annotations_csv: Path) -> None:
    annotations = pd.read_csv(luna16_release / "annotations.csv", dtype={"patient_id": str, "series_id": str})
    assert annotations["series_id"].tolist() == [SERIES_UID]
    assert annotations["patient_id"].tolist() == ["LIDC-IDRI-0001"]
    source = pd.read_csv(luna16_annotations_csv, dtype={"seriesuid": str})
    expected = source[source["seriesuid"] == SERIES_UID].iloc[0]
    row = annotations.iloc[0]
    for column in ("coordX", "coordY", "coordZ", "diameter_mm"):
        assert row[column] == pytest.approx(expected[column])
    assert row["nodule_present"] == 1
    assert pd.isna(row["class"])
    copied = list((luna16_release / "dicom" / "LIDC-IDRI-0001" / SERIES_UID).iterdir())
    assert len(copied) == 133


def test_real_csv_missing_series_listed(luna16_release: Path, luna16_annotations_csv: Path) -> None:
    source = pd.read_csv(luna16_annotations_csv, dtype={"seriesuid": str})
    missing = pd.read_csv(luna16_release / "missing_series.csv", dtype={"seriesuid": str})
    assert set(missing["seriesuid"]) == set(source["seriesuid"]) - {SERIES_UID}
    # The file names 568 distinct series, so 567 are missing here.
    assert len(missing) == 567
    assert missing["annotation_rows"].sum() == len(source) - 1


def test_real_release_manifest(luna16_release: Path) -> None:
    manifest = read_manifest(luna16_release)
    assert manifest.license == "CC-BY-3.0"
    assert manifest.citation is not None
    assert "Setio" in manifest.citation
    assert "LIDC-IDRI" in manifest.citation
    assert manifest.source is not None
    assert manifest.source["missing_series"] == 567
    assert verify_files(luna16_release, manifest).ok


def test_missing_error_mode(luna16_annotations_csv: Path, lidc_0001_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "release"
    with caplog.at_level(logging.WARNING, logger="tunisian_lung.importers.luna16"):
        with pytest.raises(SourceImportError, match="567 series named"):
            import_luna16(luna16_annotations_csv, lidc_0001_dir, out, missing="error")
    assert "567 of 568 series" in caplog.text
    assert not out.exists()


def _write_volume(folder: Path, uid: str) -> Volume:
    array = (np.arange(6 * 7 * 8, dtype=np.int16).reshape(6, 7, 8) - 1000).astype(np.int16)
    volume = Volume(array, spacing=(0.8, 0.8, 2.0), origin=(-20.0, -30.0, -100.0))
    write_metaimage(volume, folder / "subset0" / f"{uid}.mhd")
    return volume


def _write_csvs(folder: Path) -> tuple[Path, Path]:
    annotations = folder / "annotations.csv"
    annotations.write_text(
        "seriesuid,coordX,coordY,coordZ,diameter_mm\n"
        "1.2.840.1,-17.0,-27.0,-96.0,4.5\n"
        "1.2.840.9,10.0,10.0,10.0,6.0\n"
    )
    candidates = folder / "candidates.csv"
    candidates.write_text(
        "seriesuid,coordX,coordY,coordZ,class\n"
        "1.2.840.1,-17.0,-27.0,-96.0,1\n"
        "1.2.840.1,-18.0,-25.0,-94.0,0\n"
        "1.2.840.2,-18.0,-25.0,-94.0,0\n"
    )
    return annotations, candidates


def test_metaimage_source(tmp_path: Path) -> None:
    nifti = pytest.importorskip("tunisian_lung.io.nifti", reason="tunisian_lung.io.nifti writes the converted volumes")
    images = tmp_path / "images"
    volume = _write_volume(images, "1.2.840.1")
    _write_volume(images, "1.2.840.2")
    annotations_csv, candidates_csv = _write_csvs(tmp_path)

    report = import_luna16(annotations_csv, images, tmp_path / "release", candidates_csv=candidates_csv)

    assert report.series_imported == ["1.2.840.1", "1.2.840.2"]
    assert report.missing_series == ["1.2.840.9"]
    assert report.source_format == {"1.2.840.1": "metaimage", "1.2.840.2": "metaimage"}
    release = tmp_path / "release"
    annotations = pd.read_csv(release / "annotations.csv", dtype={"patient_id": str, "series_id": str})
    assert annotations["series_id"].tolist() == ["1.2.840.1", "1.2.840.2"]
    assert annotations["patient_id"].tolist() == ["1.2.840.1", "1.2.840.2"]
    assert annotations["nodule_present"].tolist() == [1, 0]
    candidates = pd.read_csv(release / "candidates.csv", dtype={"patient_id": str, "series_id": str})
    assert len(candidates) == 3
    assert candidates["class"].tolist() == [1, 0, 0]
    converted = nifti.read_nifti(release / "nifti" / "1.2.840.1" / "1.2.840.1.nii.gz")
    assert converted.same_geometry(volume)
    np.testing.assert_array_equal(converted.array, volume.array)


def test_unannotated_series_skipped_by_default(tmp_path: Path) -> None:
    pytest.importorskip("tunisian_lung.io.nifti", reason="tunisian_lung.io.nifti writes the converted volumes")
    images = tmp_path / "images"
    _write_volume(images, "1.2.840.1")
    _write_volume(images, "1.2.840.7")
    annotations_csv, _ = _write_csvs(tmp_path)
    report = import_luna16(annotations_csv, images, tmp_path / "default")
    assert report.series_imported == ["1.2.840.1"]
    assert report.series_not_in_csv == ["1.2.840.7"]
    report = import_luna16(annotations_csv, images, tmp_path / "all", include_unannotated=True)
    assert report.series_imported == ["1.2.840.1", "1.2.840.7"]


def test_csv_invalid_rows_listed(tmp_path: Path) -> None:
    path = tmp_path / "annotations.csv"
    path.write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n1.2,1,2,3,4\n1.3,1,x,3,-2\n")
    with pytest.raises(SourceImportError) as error:
        read_luna16_csv(path, ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"))
    message = str(error.value)
    assert "line 3, column coordY" in message
    assert "line 3, column diameter_mm" in message
    assert "line 2" not in message


def test_csv_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "annotations.csv"
    path.write_text("seriesuid,coordX,coordY,coordZ\n1.2,1,2,3\n")
    with pytest.raises(SourceImportError, match=r"missing column\(s\) \['diameter_mm'\]"):
        read_luna16_csv(path, ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"))


def test_nothing_found_on_disk(tmp_path: Path) -> None:
    annotations_csv, _ = _write_csvs(tmp_path)
    images = tmp_path / "empty"
    images.mkdir()
    with pytest.raises(SourceImportError, match="no series named"):
        import_luna16(annotations_csv, images, tmp_path / "release")
    assert not (tmp_path / "release").exists()


def test_cli_names_allow_unlabelled(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # LUNA16 has no malignancy labels, so plain `validate` rejects the release it imports.
    pytest.importorskip("tunisian_lung.io.nifti", reason="tunisian_lung.io.nifti writes the converted volumes")
    images = tmp_path / "images"
    _write_volume(images, "1.2.840.1")
    annotations_csv, _ = _write_csvs(tmp_path)
    out = tmp_path / "release"
    assert main(["import", "luna16", "--annotations", str(annotations_csv), "--images", str(images), "--out", str(out), "--no-progress"]) == EXIT_OK
    assert "1 of 1 nodule rows have no malignancy label" in capsys.readouterr().out
    assert main(["validate", str(out)]) == EXIT_PROBLEM
    assert main(["validate", str(out), "--allow-unlabelled"]) == EXIT_OK
