"""Deep validation: series on disk, nodule centres inside their volumes, plausible CT values."""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from tunisian_lung.checks import _volume_from_index, deep_validate
from tunisian_lung.dataset import Nodule, Series, open_dataset
from tunisian_lung.io import dicom as dicom_module
from tunisian_lung.io.dicom import index_dicom_folder, load_series
from tunisian_lung.synthetic import write_synthetic_release


@pytest.fixture(autouse=True)
def index_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep the header index that deep validation stores out of the user's cache directory."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("TUNISIAN_LUNG_CACHE", str(folder))
    return folder


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_release(tmp_path_factory.mktemp("release") / "release", patients=2, slices=16, rows=32, seed=3)


def _view(dataset, *, series=None, nodules=None, coordinate_space=None) -> SimpleNamespace:  # type: ignore[no-untyped-def]
    return SimpleNamespace(
        root=dataset.root,
        series=dataset.series if series is None else series,
        nodules=dataset.nodules if nodules is None else nodules,
        coordinate_space=dataset.coordinate_space if coordinate_space is None else coordinate_space,
    )


def test_clean_release_has_no_issues(release: Path) -> None:
    dataset = open_dataset(release)
    assert deep_validate(dataset) == []


def test_nodule_outside_volume_names_line(release: Path) -> None:
    dataset = open_dataset(release)
    moved = replace(dataset.nodules[0], coord_xyz_mm=(0.0, 0.0, 5000.0))
    issues = deep_validate(_view(dataset, nodules=(moved, *dataset.nodules[1:])))
    assert len(issues) == 1
    (issue,) = issues
    assert issue.rule == "nodule_inside_volume"
    assert issue.line == moved.csv_line
    assert issue.file == "annotations.csv"
    assert "outside the volume" in issue.message


def test_voxel_coordinate_space(release: Path) -> None:
    dataset = open_dataset(release)
    series = dataset.series[0]
    inside = Nodule(series.patient_id, series.series_id, (10.0, 12.0, 3.0), 5.0, 1, 2)
    outside = Nodule(series.patient_id, series.series_id, (10.0, 40.0, 3.0), 5.0, 1, 3)
    issues = deep_validate(_view(dataset, series=(series,), nodules=(inside, outside), coordinate_space="voxel"))
    assert [issue.line for issue in issues] == [3]


def test_missing_series_reported(release: Path) -> None:
    dataset = open_dataset(release)
    absent = Series("SYN-9999", "1.2.3.4", None, None)
    ghost = Nodule("SYN-9999", "1.2.3.4", (0.0, 0.0, 0.0), 5.0, 1, 17)
    issues = deep_validate(_view(dataset, series=(*dataset.series, absent), nodules=(*dataset.nodules, ghost)))
    assert [(issue.rule, issue.line, issue.value) for issue in issues] == [("series_on_disk", 17, "1.2.3.4")]


def test_constant_and_non_ct_volumes(release: Path, tmp_path: Path) -> None:
    import numpy as np

    from tunisian_lung.io import Volume
    from tunisian_lung.io.nifti import write_nifti

    dataset = open_dataset(release)
    constant = write_nifti(Volume(np.zeros((4, 8, 8), np.int16), spacing=(1, 1, 1)), tmp_path / "constant.nii.gz")
    bright = np.random.default_rng(0).integers(0, 255, (4, 8, 8)).astype(np.int16)
    not_hu = write_nifti(Volume(bright, spacing=(1, 1, 1)), tmp_path / "bright.nii.gz")
    series = (Series("P1", "constant", None, constant), Series("P2", "bright", None, not_hu))
    issues = deep_validate(_view(dataset, series=series, nodules=()))
    assert [(issue.rule, issue.file) for issue in issues] == [
        ("ct_not_constant", str(constant)),
        ("ct_air_present", str(not_hu)),
    ]


def test_unreadable_series_reported(release: Path, tmp_path: Path) -> None:
    dataset = open_dataset(release)
    series = dataset.series[0]
    broken = tmp_path / "broken"
    shutil.copytree(series.dicom_dir, broken)
    (info,) = index_dicom_folder(broken)
    info.files[len(info.files) // 2].unlink()
    issues = deep_validate(_view(dataset, series=(replace(series, dicom_dir=broken),)))
    assert [issue.rule for issue in issues] == ["series_readable"]
    assert "gap" in issues[0].message


def _count_header_reads(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count, per file, the DICOM reads that stop before the pixel data."""
    header_reads: Counter[str] = Counter()
    original = dicom_module.read_dataset

    def counting_read(path: Path, *, header_only: bool) -> Any:
        if header_only:
            header_reads[str(path)] += 1
        return original(path, header_only=header_only)

    monkeypatch.setattr(dicom_module, "read_dataset", counting_read)
    return header_reads


def test_deep_validation_reads_each_header_once(release: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = open_dataset(release)
    header_reads = _count_header_reads(monkeypatch)

    assert deep_validate(dataset, index_cache=tmp_path / "index") == []
    dicom_files = {str(path) for series in dataset.series for path in series.dicom_dir.rglob("*.dcm")}
    assert set(header_reads) == dicom_files
    assert max(header_reads.values()) == 1

    header_reads.clear()
    assert deep_validate(dataset, index_cache=tmp_path / "index") == []
    assert sum(header_reads.values()) == 0


def test_deep_validation_default_reuses_index(release: Path, index_cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = open_dataset(release)
    header_reads = _count_header_reads(monkeypatch)

    assert deep_validate(dataset) == []
    assert max(header_reads.values()) == 1
    assert not index_cache_dir.exists()

    for series in dataset.series:
        index_dicom_folder(series.dicom_dir, index_cache=True)
    header_reads.clear()
    assert deep_validate(dataset) == []
    assert sum(header_reads.values()) == 0


def test_deep_validation_index_cache_false(release: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = open_dataset(release)
    for series in dataset.series:
        index_dicom_folder(series.dicom_dir, index_cache=True)
    header_reads = _count_header_reads(monkeypatch)

    assert deep_validate(dataset, index_cache=False) == []
    assert max(header_reads.values()) == 1
    assert set(header_reads) == {str(path) for series in dataset.series for path in series.dicom_dir.rglob("*.dcm")}


def test_volume_from_index_matches_load_series(release: Path) -> None:
    dataset = open_dataset(release)
    (info,) = index_dicom_folder(dataset.series[0].dicom_dir)

    built = _volume_from_index(info)
    loaded = load_series(info, lazy=True)

    assert built is not None
    assert built.shape == loaded.shape
    np.testing.assert_allclose(built.spacing, loaded.spacing)
    np.testing.assert_allclose(built.origin, loaded.origin)
    np.testing.assert_allclose(built.direction, loaded.direction)
    assert built.metadata["slice_files"] == loaded.metadata["slice_files"]
    np.testing.assert_array_equal(built.array, loaded.array)


def test_volume_from_index_rejects_problem_series(release: Path) -> None:
    dataset = open_dataset(release)
    (info,) = index_dicom_folder(dataset.series[0].dicom_dir)

    assert _volume_from_index(replace(info, issues=("1 gap(s) of missing slices",))) is None
    assert _volume_from_index(replace(info, modality="MR")) is None
    assert _volume_from_index(replace(info, shape=(1, *info.shape[1:]))) is None
    assert _volume_from_index(replace(info, spacing=None)) is None


@pytest.mark.shared_data
def test_real_series_passes(lidc_0001_dir: Path) -> None:
    series = Series("LIDC-IDRI-0001", "1.3.6.1.4.1.14519.5.2.1.6279.6001.179049373636438705059720603192", lidc_0001_dir, None)
    nodule = Nodule(series.patient_id, series.series_id, (56.20840547, 86.34341278, -115.8675792), 23.35, 1, 2)
    dataset = SimpleNamespace(root=lidc_0001_dir, series=(series,), nodules=(nodule,), coordinate_space="world_lps_mm")
    assert deep_validate(dataset) == []
