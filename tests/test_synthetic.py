"""Synthetic releases: determinism, cohort mix, DICOM headers, nodule positions, validation."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pydicom
import pytest

from tunisian_lung import layout
from tunisian_lung.cli import main
from tunisian_lung.errors import DatasetLayoutError
from tunisian_lung.schema.columns import ANNOTATION_COLUMN_NAMES
from tunisian_lung.synthetic import (
    CLINICAL_COLUMNS,
    HISTOLOGIES,
    HU_LUNG,
    HU_SOFT_TISSUE,
    STAGES,
    make_synthetic_cohort,
    render_slice,
    write_synthetic_release,
)


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_release(tmp_path_factory.mktemp("synthetic") / "release", patients=6, seed=3)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _digests(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _stack_series(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stack a series with pydicom only; return HU (z, y, x), origin, axes matrix, spacing."""
    slices = [pydicom.dcmread(path) for path in folder.glob("*.dcm")]
    orientation = np.asarray(slices[0].ImageOrientationPatient, dtype=float)
    row_direction, column_direction = orientation[:3], orientation[3:]
    normal = np.cross(row_direction, column_direction)
    slices.sort(key=lambda ds: float(np.dot(np.asarray(ds.ImagePositionPatient, dtype=float), normal)))
    hu = np.stack(
        [ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in slices]
    )
    origin = np.asarray(slices[0].ImagePositionPatient, dtype=float)
    last = np.asarray(slices[-1].ImagePositionPatient, dtype=float)
    slice_step = float(np.dot(last - origin, normal)) / (len(slices) - 1)
    row_spacing, column_spacing = (float(v) for v in slices[0].PixelSpacing)
    axes = np.column_stack([row_direction, column_direction, normal])
    spacing = np.array([column_spacing, row_spacing, slice_step])
    return hu, origin, axes, spacing


def _world_to_index_zyx(point_xyz: np.ndarray, origin: np.ndarray, axes: np.ndarray, spacing: np.ndarray) -> tuple[int, int, int]:
    continuous = np.linalg.solve(axes, point_xyz - origin) / spacing
    column, row, slice_index = np.rint(continuous).astype(int)
    return int(slice_index), int(row), int(column)


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    first = write_synthetic_release(tmp_path / "a", patients=3, seed=7)
    second = write_synthetic_release(tmp_path / "b", patients=3, seed=7)
    assert _digests(first) == _digests(second)


def test_other_seed_gives_other_release(tmp_path: Path) -> None:
    first = write_synthetic_release(tmp_path / "a", patients=2, seed=1)
    second = write_synthetic_release(tmp_path / "b", patients=2, seed=2)
    assert _read_csv(first / layout.ANNOTATIONS_NAME) != _read_csv(second / layout.ANNOTATIONS_NAME)


def test_cohort_mix_matches_reference() -> None:
    cohort = make_synthetic_cohort(40, seed=0, slices=20, rows=48)
    healthy = [p for p in cohort if p.clinical["health_status"] == "healthy"]
    cancer = [p for p in cohort if p.clinical["health_status"] == "cancer"]
    assert len(healthy) == 8
    assert len(cancer) == 32
    assert {p.clinical["histology"] for p in cancer} == set(HISTOLOGIES)
    assert {p.clinical["stage"] for p in cancer} == set(STAGES)
    for patient in healthy:
        assert patient.clinical["stage"] == ""
        assert patient.series.nodules == ()
    for patient in cancer:
        assert sum(n.malignant for n in patient.series.nodules) == 1, patient.patient_id


def test_cohort_varies_scanner_geometry() -> None:
    series = [p.series for p in make_synthetic_cohort(40, seed=0, rows=48)]
    assert {s.model for s in series} == {"SOMATOM go.Up", "Revolution EVO"}
    assert {s.signed_storage for s in series} == {True, False}
    assert {s.instance_numbers_ascending for s in series} == {True, False}
    assert {float(s.normal[2]) for s in series} == {1.0, -1.0}
    assert {s.row_direction[0] for s in series} == {1.0, -1.0}
    assert len({s.slice_spacing_mm for s in series}) >= 4
    assert all(1.0 <= s.slice_spacing_mm <= 5.0 for s in series)


def test_tables_have_release_columns(release: Path) -> None:
    annotations = _read_csv(release / layout.ANNOTATIONS_NAME)
    clinical = _read_csv(release / layout.CLINICAL_NAME)
    assert tuple(annotations[0]) == ANNOTATION_COLUMN_NAMES
    assert tuple(clinical[0]) == CLINICAL_COLUMNS
    assert len(clinical) == 6
    assert {row["patient_id"] for row in annotations} == {row["patient_id"] for row in clinical}


def test_healthy_series_has_one_empty_row(release: Path) -> None:
    annotations = _read_csv(release / layout.ANNOTATIONS_NAME)
    clinical = {row["patient_id"]: row for row in _read_csv(release / layout.CLINICAL_NAME)}
    healthy = [pid for pid, row in clinical.items() if row["health_status"] == "healthy"]
    assert healthy, "the fixture release has no healthy patient"
    for patient_id in healthy:
        rows = [row for row in annotations if row["patient_id"] == patient_id]
        assert len(rows) == 1
        assert rows[0]["nodule_present"] == "0"
        for column in ("coordX", "coordY", "coordZ", "diameter_mm", "class", "stage"):
            assert rows[0][column] == "", f"{patient_id} column {column}"


def test_dicom_headers_are_realistic(release: Path) -> None:
    annotations = _read_csv(release / layout.ANNOTATIONS_NAME)
    for row in {r["series_id"]: r for r in annotations}.values():
        folder = layout.series_dicom_dir(release, row["patient_id"], row["series_id"])
        files = sorted(folder.glob("*.dcm"))
        assert len(files) >= 40
        ds = pydicom.dcmread(files[0])
        assert ds.Modality == "CT"
        assert ds.SeriesInstanceUID == row["series_id"]
        assert ds.PatientID == row["patient_id"]
        assert float(ds.KVP) == 120.0
        assert float(ds.RescaleIntercept) == -1024.0
        assert ds.Manufacturer in ("SIEMENS", "GE MEDICAL SYSTEMS")
        assert 1.0 <= float(ds.SliceThickness) <= 5.0
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert len(ds.SeriesInstanceUID) <= 64


def test_render_slice_tissue_values() -> None:
    series = make_synthetic_cohort(1, seed=5, rows=128, slices=40, healthy_fraction=1.0)[0].series
    lung_center = np.asarray(series.chest.lung_centers[0])
    index = int(round(np.dot(lung_center - np.asarray(series.first_position), series.normal) / series.slice_spacing_mm))
    image = render_slice(series, index)
    column = int(round((lung_center[0] - series.first_position[0]) / (series.row_direction[0] * series.pixel_spacing_mm)))
    row = int(round((lung_center[1] - series.first_position[1]) / (series.column_direction[1] * series.pixel_spacing_mm)))
    assert image.dtype == np.int16
    assert image[row, column] == HU_LUNG
    assert image[0, 0] == -1000
    assert (image == HU_SOFT_TISSUE).sum() > 100


def test_nodule_coordinates_hit_nodule_pydicom(release: Path) -> None:
    annotations = [r for r in _read_csv(release / layout.ANNOTATIONS_NAME) if r["nodule_present"] == "1"]
    assert annotations, "the fixture release has no nodule"
    for row in annotations:
        folder = layout.series_dicom_dir(release, row["patient_id"], row["series_id"])
        hu, origin, axes, spacing = _stack_series(folder)
        center = np.array([float(row["coordX"]), float(row["coordY"]), float(row["coordZ"])])
        k, j, i = _world_to_index_zyx(center, origin, axes, spacing)
        assert hu[k, j, i] > -700, f"{row['patient_id']} nodule at {center}: HU {hu[k, j, i]}"
        # Just outside the sphere along x lies lung on at least one side (the other side may
        # touch another structure), so the bright voxel is the nodule and not the chest wall.
        radius = float(row["diameter_mm"]) / 2.0
        step = radius + 1.5 * spacing[0]
        ring = [
            _world_to_index_zyx(center + np.array([sign * step, 0.0, 0.0]), origin, axes, spacing)
            for sign in (1.0, -1.0)
        ]
        assert any(hu[index] < -700 for index in ring if all(0 <= v < s for v, s in zip(index, hu.shape)))


def test_nodule_coordinates_hit_nodule_loader(release: Path) -> None:
    dicom_io = pytest.importorskip("tunisian_lung.io.dicom")
    annotations = [r for r in _read_csv(release / layout.ANNOTATIONS_NAME) if r["nodule_present"] == "1"]
    for row in annotations:
        volume = dicom_io.load_series(layout.series_dicom_dir(release, row["patient_id"], row["series_id"]))
        center = [float(row["coordX"]), float(row["coordY"]), float(row["coordZ"])]
        index = tuple(int(v) for v in np.rint(volume.world_to_voxel(center)).reshape(-1))
        assert volume.array[index] > -700, f"{row['patient_id']} nodule at {center}"


def test_release_validates_tables(release: Path) -> None:
    schema = pytest.importorskip("tunisian_lung.schema")
    report = schema.validate_tables(release / layout.ANNOTATIONS_NAME, release / layout.CLINICAL_NAME)
    assert report.ok, [issue.format() for issue in report.issues]


def test_release_validates_deep(release: Path) -> None:
    dataset_module = pytest.importorskip("tunisian_lung.dataset")
    checks = pytest.importorskip("tunisian_lung.checks")
    dataset = dataset_module.open_dataset(release)
    assert len(dataset) == 6
    issues = checks.deep_validate(dataset)
    errors = [issue.format() for issue in issues if issue.severity == "error"]
    assert errors == []


def test_manifest_lists_every_file(release: Path) -> None:
    from tunisian_lung.manifest import read_manifest, verify_files

    manifest = read_manifest(release)
    assert manifest.coordinate_space == "world_lps_mm"
    assert manifest.counts["patients"] == 6
    assert verify_files(release, manifest).ok


def test_non_empty_output_rejected(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("user file")
    with pytest.raises(DatasetLayoutError, match="not empty"):
        write_synthetic_release(tmp_path, patients=1)
    assert (tmp_path / "keep.txt").read_text() == "user file"


@pytest.mark.parametrize(
    "arguments",
    [{"patients": 0}, {"seed": -1}, {"rows": 4}, {"slices": 2}, {"healthy_fraction": 1.5}],
)
def test_invalid_arguments_rejected(tmp_path: Path, arguments: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        write_synthetic_release(tmp_path / "out", **arguments)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


def test_cli_synth_writes_release(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert main(["synth", str(out), "--patients", "2", "--seed", "4", "--no-progress"]) == 0
    assert str(out) in capsys.readouterr().out
    assert (out / layout.MANIFEST_NAME).is_file()
    assert len(_read_csv(out / layout.CLINICAL_NAME)) == 2


def test_cli_synth_rejects_zero_patients(tmp_path: Path) -> None:
    assert main(["synth", str(tmp_path / "cli"), "--patients", "0"]) == 2


def test_cli_validate_deep_accepts_release(release: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tunisian_lung.checks")
    assert main(["validate", str(release), "--deep"]) == 0, capsys.readouterr().out
