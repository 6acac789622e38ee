"""The typed dataset object: records, lookups, subsets, summary and the image delegates."""

from __future__ import annotations

import json
import logging
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from tunisian_lung import TunisianLungDataset, open_dataset
from tunisian_lung.dataset import Nodule, Patient, Series
from tunisian_lung.errors import DatasetLayoutError, MultipleSeriesError, ValidationError

ANNOTATIONS = """patient_id,series_id,coordX,coordY,coordZ,diameter_mm,class,nodule_present,stage
P002,S2a,-50.5,20,-100,12,1,1,III
P002,S2a,40,10,-120,5,0,1,III
P002,S2b,41,11,-121,7,1,1,III
P001,S1,,,,,,0,
P003,S3,10,20,30,35,1,1,II
"""

CLINICAL = """patient_id,sex,age,health_status,histology,stage,smoking_status
P001,F,50,healthy,,,never
P002,M,64,cancer,adenocarcinoma,III,current
P003,M,71,cancer,squamous cell carcinoma,II,former
"""


def make_release(root: Path, *, clinical: bool = True, manifest: dict[str, Any] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "annotations.csv").write_text(ANNOTATIONS, encoding="utf-8")
    if clinical:
        (root / "clinical.csv").write_text(CLINICAL, encoding="utf-8")
    if manifest is not None:
        (root / "dataset.json").write_text(json.dumps(manifest), encoding="utf-8")
    # Opening must not read pixel data, so these image files need not be valid DICOM.
    for patient, series in (("P002", "S2a"), ("P001", "S1")):
        folder = root / "dicom" / patient / series
        folder.mkdir(parents=True)
        (folder / "1.dcm").write_bytes(b"not a dicom file")
    nifti = root / "nifti" / "P002"
    nifti.mkdir(parents=True)
    (nifti / "S2b.nii.gz").write_bytes(b"not a nifti file")
    return root


@pytest.fixture
def release(tmp_path: Path) -> Path:
    return make_release(tmp_path / "release")


def test_open_builds_typed_records(release: Path) -> None:
    ds = open_dataset(release)

    assert len(ds) == 3
    assert [patient.patient_id for patient in ds] == ["P001", "P002", "P003"]
    patient = ds["P002"]
    assert isinstance(patient, Patient)
    assert patient.health_status == "cancer"
    assert patient.stage == "III"
    assert patient.histology == "adenocarcinoma"
    assert patient.sex == "M"
    assert patient.age == 64.0
    assert patient.series_ids == ("S2a", "S2b")
    assert patient.clinical["smoking_status"] == "current"
    assert "P001" in ds
    assert ds.coordinate_space == "world_lps_mm"
    assert ds.manifest.is_default


def test_series_records_point_to_images(release: Path) -> None:
    ds = open_dataset(release)

    assert [series.series_id for series in ds.series] == ["S2a", "S2b", "S1", "S3"]
    s2a = ds.series_by_id("S2a")
    assert isinstance(s2a, Series)
    assert s2a.dicom_dir == release / "dicom" / "P002" / "S2a"
    assert s2a.nifti_path is None
    assert s2a.nodule_count == 2
    s2b = ds.series_by_id("S2b")
    assert s2b.dicom_dir is None
    assert s2b.nifti_path == release / "nifti" / "P002" / "S2b.nii.gz"
    s3 = ds.series_by_id("S3")
    assert s3.dicom_dir is None
    assert s3.nifti_path is None


def test_nodule_records(release: Path) -> None:
    ds = open_dataset(release)

    assert len(ds.nodules) == 4
    first = ds.nodules_of("S2a")[0]
    assert first == Nodule("P002", "S2a", (-50.5, 20.0, -100.0), 12.0, 1, 2)
    assert ds.nodules_of("S1") == ()
    assert isinstance(first.coord_xyz_mm[0], float)


def test_unknown_ids_raise_key_error(release: Path) -> None:
    ds = open_dataset(release)

    with pytest.raises(KeyError, match="patient 'P999' is not in the dataset"):
        ds["P999"]
    with pytest.raises(KeyError, match="series 'nope' is not in annotations.csv"):
        ds.series_by_id("nope")
    with pytest.raises(KeyError, match="P998, P999"):
        ds.subset(["P001", "P998", "P999"])


def test_subset_keeps_only_given_patients(release: Path) -> None:
    ds = open_dataset(release)

    part = ds.subset(["P003", "P001"])

    assert isinstance(part, TunisianLungDataset)
    assert sorted(part.patients) == ["P001", "P003"]
    assert [series.series_id for series in part.series] == ["S1", "S3"]
    assert len(part.nodules) == 1
    assert part.clinical is not None
    assert part.clinical["patient_id"].tolist() == ["P001", "P003"]
    assert part.root == ds.root


def test_describe_counts(release: Path) -> None:
    summary = open_dataset(release).describe()

    assert summary["patients"] == 3
    assert summary["series"] == 4
    assert summary["nodules"] == 4
    assert summary["health_status"] == {"cancer": 2, "healthy": 1}
    assert summary["histology"] == {"adenocarcinoma": 1, "squamous cell carcinoma": 1}
    assert summary["stage"] == {"II": 1, "III": 1}
    assert summary["sex"] == {"M": 2, "F": 1}
    assert summary["age_years"] == {"known": 3, "min": 50.0, "max": 71.0, "mean": pytest.approx(61.6667, abs=1e-3)}
    assert summary["nodule_labels"] == {"malignant": 3, "benign": 1, "unlabelled": 0}
    assert summary["nodules_per_patient"]["counts"] == {"0": 1, "1": 1, "3": 1}
    assert summary["nodules_per_patient"]["mean"] == pytest.approx(4 / 3)
    assert summary["nodules_per_patient"]["max"] == 3
    diameter = summary["diameter_mm"]
    assert diameter["min"] == 5.0
    assert diameter["max"] == 35.0
    assert diameter["median"] == 9.5
    assert diameter["bins"] == {"0-4": 0, "4-6": 1, "6-8": 1, "8-15": 1, "15-30": 0, "30-100": 1}
    json.dumps(summary)


def test_without_clinical_table_status_is_derived(tmp_path: Path) -> None:
    ds = open_dataset(make_release(tmp_path / "r", clinical=False))

    assert ds.clinical is None
    assert ds["P002"].health_status == "cancer"  # stage and malignant nodules
    assert ds["P003"].health_status == "cancer"
    assert ds["P001"].health_status is None  # no nodule does not mean healthy
    assert ds["P001"].clinical == {}
    assert ds.describe()["health_status"] == {"cancer": 2, "unknown": 1}


def test_manifest_sets_coordinate_space(tmp_path: Path) -> None:
    manifest = {"format_version": "1.0", "name": "r", "version": "1", "license": "CC0-1.0", "coordinate_space": "voxel"}

    ds = open_dataset(make_release(tmp_path / "r", manifest=manifest))

    assert ds.coordinate_space == "voxel"
    assert ds.manifest.name == "r"


def test_invalid_tables_raise_unless_validate_false(release: Path, caplog: pytest.LogCaptureFixture) -> None:
    text = ANNOTATIONS.replace("P003,S3,10,20,30,35,1,1,II", "P003,S3,10,20,30,350,1,1,II")
    (release / "annotations.csv").write_text(text, encoding="utf-8")

    with pytest.raises(ValidationError) as raised:
        open_dataset(release)
    assert "line 6, column 'diameter_mm'" in str(raised.value)

    with caplog.at_level(logging.WARNING, logger="tunisian_lung.dataset"):
        ds = TunisianLungDataset.open(release, validate=False)
    assert len(ds) == 3
    assert ds.validation_report is not None
    assert [issue.rule for issue in ds.validation_report.issues] == ["diameter_range"]
    assert "without validation: 1 table error(s)" in caplog.text


def test_missing_folder_and_table(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match="dataset folder not found"):
        open_dataset(tmp_path / "absent")
    with pytest.raises(DatasetLayoutError, match="annotations.csv not found"):
        open_dataset(tmp_path)


def test_open_with_only_annotations(tmp_path: Path) -> None:
    root = tmp_path / "minimal"
    root.mkdir()
    (root / "annotations.csv").write_text(ANNOTATIONS, encoding="utf-8")

    ds = open_dataset(root)

    assert len(ds) == 3
    assert all(series.dicom_dir is None for series in ds.series)


def test_open_thousand_patients(tmp_path: Path) -> None:
    root = tmp_path / "large"
    root.mkdir()
    lines = ["patient_id,series_id,coordX,coordY,coordZ,diameter_mm,class,nodule_present,stage"]
    for number in range(1000):
        lines.append(f"P{number:04d},S{number:04d},{number}.5,1,2,{4 + number % 20},{number % 2},1,{'I' if number % 2 else ''}")
    (root / "annotations.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")

    ds = open_dataset(root)

    assert len(ds) == 1000
    assert len(ds.nodules) == 1000
    assert ds["P0001"].health_status == "cancer"
    assert ds["P0002"].health_status is None


# --- delegates to the loaders and splits -----------------------------------------------------


def test_load_volume_prefers_dicom_then_nifti(release: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tunisian_lung.io as io_module

    calls: list[tuple[Path, dict[str, Any]]] = []

    def fake_load_volume(path: Path, **kwargs: Any) -> str:
        calls.append((Path(path), kwargs))
        return "volume"

    monkeypatch.setattr(io_module, "load_volume", fake_load_volume, raising=False)
    ds = open_dataset(release)

    assert ds.load_volume("S2a") == "volume"
    assert ds.load_volume("S2b", lazy=True) == "volume"
    assert calls == [
        (release / "dicom" / "P002" / "S2a", {}),
        (release / "nifti" / "P002" / "S2b.nii.gz", {"lazy": True}),
    ]
    with pytest.raises(DatasetLayoutError, match="series S3 of patient P003 has no image"):
        ds.load_volume("S3")


def test_series_header_picks_matching_series(release: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    infos = [types.SimpleNamespace(series_uid="other"), types.SimpleNamespace(series_uid="S2a")]
    fake = types.ModuleType("tunisian_lung.io.dicom")
    options: list[dict[str, Any]] = []

    def index_dicom_folder(folder: Path, **keywords: Any) -> list[Any]:
        options.append(keywords)
        return infos

    fake.index_dicom_folder = index_dicom_folder  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tunisian_lung.io.dicom", fake)
    ds = open_dataset(release)

    assert ds.series_header("S2a") is infos[1]
    assert options == [{"index_cache": True}]
    with pytest.raises(MultipleSeriesError, match="none has SeriesInstanceUID S1"):
        ds.series_header("S1")
    with pytest.raises(DatasetLayoutError, match="has no DICOM folder"):
        ds.series_header("S2b")


def test_series_header_reuses_stored_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tunisian_lung.io import dicom
    from tunisian_lung.synthetic import write_synthetic_release

    monkeypatch.setenv("TUNISIAN_LUNG_CACHE", str(tmp_path / "cache"))
    root = write_synthetic_release(tmp_path / "release", patients=1, slices=8, rows=16, seed=0)
    header_reads: list[Path] = []
    original = dicom.read_dataset

    def counting_read(path: Path, *, header_only: bool) -> Any:
        header_reads.append(path)
        return original(path, header_only=header_only)

    monkeypatch.setattr(dicom, "read_dataset", counting_read)
    series_id = open_dataset(root).series[0].series_id

    first = open_dataset(root).series_header(series_id)
    assert len(header_reads) == 8
    header_reads.clear()
    reopened = open_dataset(root).series_header(series_id)

    assert header_reads == []
    assert reopened == first


def test_split_delegates_to_splits_module(release: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    class FakeSplits:
        def split(self, name: str) -> str:
            return f"split {name}"

    def fake_load_splits(dataset: Any, path: Any = None) -> FakeSplits:
        seen["dataset"], seen["path"] = dataset, path
        return FakeSplits()

    fake = types.ModuleType("tunisian_lung.splits")
    fake.load_splits = fake_load_splits  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tunisian_lung.splits", fake)
    ds = open_dataset(release)

    assert ds.split("train", path="custom.json") == "split train"
    assert seen == {"dataset": ds, "path": "custom.json"}


@pytest.mark.shared_data
def test_load_real_series_from_release(lidc_0001_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("tunisian_lung.io.dicom")
    root = tmp_path / "real"
    (root / "dicom" / "LIDC-IDRI-0001").mkdir(parents=True)
    (root / "dicom" / "LIDC-IDRI-0001" / "S1").symlink_to(lidc_0001_dir, target_is_directory=True)
    (root / "annotations.csv").write_text(
        "patient_id,series_id,coordX,coordY,coordZ,diameter_mm,class,nodule_present,stage\n"
        "LIDC-IDRI-0001,S1,,,,,,0,\n",
        encoding="utf-8",
    )

    ds = open_dataset(root)
    volume = ds.load_volume("S1", lazy=True)

    assert volume.shape[0] == 133
