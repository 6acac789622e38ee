"""``tunisian-lung convert``: one series, a folder of several series, a whole dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tunisian_lung.cli import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, main
from tunisian_lung.dataset import open_dataset
from tunisian_lung.io.dicom import load_series
from tunisian_lung.io.nifti import read_nifti
from tunisian_lung.synthetic import write_synthetic_release

FIRST_UID = "1.3.6.1.4.1.14519.5.2.1.7009.2401.264410460039008685576999729346"
SECOND_UID = "1.3.6.1.4.1.14519.5.2.1.7009.2401.307437172854557023978824805941"


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.mark.shared_data
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_folder_with_two_series_lists_them(quirks_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = quirks_dir / "two_series_one_folder"
    assert main(["convert", str(folder), str(tmp_path / "out.nii.gz")]) == EXIT_PROBLEM
    error = capsys.readouterr().err
    assert "MultipleSeriesError" in error
    assert FIRST_UID in error
    assert SECOND_UID in error
    assert not (tmp_path / "out.nii.gz").exists()

    assert main(["convert", str(folder), str(tmp_path / "out.nii.gz"), "--series", SECOND_UID]) == EXIT_OK
    converted = read_nifti(tmp_path / "out.nii.gz")
    expected = load_series(folder, series_uid=SECOND_UID)
    np.testing.assert_array_equal(converted.array, expected.array)
    assert converted.same_geometry(expected)


def test_dataset_conversion_leaves_source_untouched(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_synthetic_release(tmp_path / "release", patients=2, slices=8, rows=16, seed=5)
    before = _snapshot(root)
    out = tmp_path / "converted"
    assert main(["convert", "--dataset", str(root), "--out", str(out)]) == EXIT_OK
    assert _snapshot(root) == before
    dataset = open_dataset(root)
    for series in dataset.series:
        path = out / "nifti" / series.patient_id / f"{series.series_id}.nii.gz"
        volume = read_nifti(path)
        assert volume.same_geometry(dataset.load_volume(series.series_id), atol_mm=1e-4)
    assert "converted 2 of 2 series" in capsys.readouterr().out


def test_dataset_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "release"
    root.mkdir()
    assert main(["convert", "--dataset", str(root), "--out", str(root / "nifti_out")]) == EXIT_USAGE
    assert "inside the dataset folder" in capsys.readouterr().err
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "file").write_text("x")
    assert main(["convert", "--dataset", str(root), "--out", str(occupied)]) == EXIT_USAGE
    assert main(["convert", "--dataset", str(root)]) == EXIT_USAGE
    assert main(["convert", str(tmp_path / "missing"), str(tmp_path / "a.nii.gz")]) == EXIT_USAGE
    assert main(["convert", str(root), str(tmp_path / "a.mhd")]) == EXIT_USAGE
