"""Tests of the release build: copy, de-identification, checks, manifest, card and verify."""

from __future__ import annotations

import csv
import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from _raw_export import ACQUISITION_DAYS_AFTER_STUDY, write_raw_export, tree_digest
from tunisian_lung.cli import main
from tunisian_lung.errors import PackagingError, ValidationError
from tunisian_lung.packaging.audit import audit
from tunisian_lung.packaging.build import build_release
from tunisian_lung.packaging.verify import verify


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_raw_export(tmp_path_factory.mktemp("export"))


@pytest.fixture(scope="module")
def deid_release(export: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    """A de-identified release, the raw checksums taken before the build, and the pseudonym map."""
    before = tree_digest(export / "raw")
    out = tmp_path_factory.mktemp("releases") / "release"
    result = build_release(
        export / "raw", export / "annotations.csv", clinical=export / "clinical.csv", out=out, deidentify=True
    )
    assert result.pseudonym_map == out.with_name("release.pseudonyms.csv")
    with result.pseudonym_map.open(encoding="utf-8") as stream:
        mapping = {row["original_patient_id"]: row["pseudonym"] for row in csv.DictReader(stream)}
    (out.parent / "raw-before.json").write_text(json.dumps(before))
    return out, export, mapping


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def test_build_leaves_raw_byte_identical(deid_release) -> None:
    out, export, _ = deid_release
    before = json.loads((out.parent / "raw-before.json").read_text())
    assert tree_digest(export / "raw") == before


def test_build_deid_audit_clean(deid_release) -> None:
    out, export, _ = deid_release
    assert not audit(export / "raw").clean
    report = audit(out)
    assert report.files == 36
    assert report.clean, report.format()


def test_build_deid_keeps_series_grouping(deid_release) -> None:
    out, _, mapping = deid_release
    for series_dir in sorted((out / "dicom").glob("*/*")):
        headers = [dcmread(path, stop_before_pixels=True) for path in sorted(series_dir.glob("*.dcm"))]
        assert len(headers) == 12
        assert {ds.SeriesInstanceUID for ds in headers} == {series_dir.name}
        assert {ds.PatientID for ds in headers} == {series_dir.parent.name}
        assert len({ds.StudyInstanceUID for ds in headers}) == 1
        assert len({ds.SOPInstanceUID for ds in headers}) == 12
    assert sorted(p.name for p in (out / "dicom").iterdir()) == sorted(mapping.values())


def test_build_deid_nodules_point_at_series(deid_release) -> None:
    out, export, mapping = deid_release
    raw_rows = _rows(export / "annotations.csv")
    rows = _rows(out / "annotations.csv")
    assert len(rows) == len(raw_rows)
    for raw_row, row in zip(raw_rows, rows):
        assert row["patient_id"] == mapping[raw_row["patient_id"]]
        assert (out / "dicom" / row["patient_id"] / row["series_id"]).is_dir()
        assert row["series_id"] != raw_row["series_id"]
        assert row["coordX"] == raw_row["coordX"]
        assert row["diameter_mm"] == raw_row["diameter_mm"]
    clinical = _rows(out / "clinical.csv")
    assert {row["patient_id"] for row in clinical} == set(mapping.values())


def test_build_deid_shifts_dates_per_patient(deid_release) -> None:
    out, _, mapping = deid_release
    offsets = {row["pseudonym"]: int(row["date_offset_days"]) for row in _rows(out.with_name("release.pseudonyms.csv"))}
    for pseudonym in mapping.values():
        path = next((out / "dicom" / pseudonym).rglob("*.dcm"))
        ds = dcmread(path, stop_before_pixels=True)
        study = dt.datetime.strptime(ds.StudyDate, "%Y%m%d").date()
        acquisition = dt.datetime.strptime(ds.AcquisitionDate, "%Y%m%d").date()
        assert study == dt.date(2023, 1, 10) + dt.timedelta(days=offsets[pseudonym])
        assert (acquisition - study).days == ACQUISITION_DAYS_AFTER_STUDY


def test_build_deid_keeps_pixels(deid_release) -> None:
    out, export, mapping = deid_release
    original, pseudonym = sorted(mapping.items())[0]
    raw_pixels = sorted(dcmread(p).PixelData for p in (export / "raw" / original).glob("*.dcm"))
    released = sorted(dcmread(p).PixelData for p in (out / "dicom" / pseudonym).rglob("*.dcm"))
    assert raw_pixels == released


def test_build_manifest_and_verify(deid_release) -> None:
    out, _, _ = deid_release
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["counts"]["patients"] == 3
    assert manifest["counts"]["dicom_files"] == 36
    assert manifest["deidentification"]["method"].startswith("DCM:113100")
    assert "README.md" in manifest["files"]
    assert "annotations.csv" in manifest["files"]
    assert verify(out).ok
    assert not any(name.endswith(".pseudonyms.csv") for name in manifest["files"])


def test_build_card_lists_profile(deid_release) -> None:
    out, _, _ = deid_release
    card = (out / "README.md").read_text()
    assert "Basic Application Level Confidentiality Profile" in card
    assert "113107" in card
    assert "| cancer |" in card
    assert (out / "card" / "nodule_diameter.png").stat().st_size > 0
    assert (out / "card" / "slice_thickness.png").stat().st_size > 0


def test_verify_reports_changed_missing_extra(deid_release, tmp_path: Path) -> None:
    out, _, _ = deid_release
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    first = sorted((copy / "dicom").rglob("*.dcm"))[0]
    second = sorted((copy / "dicom").rglob("*.dcm"))[1]
    with first.open("r+b") as handle:
        handle.seek(-1, 2)
        last = handle.read(1)
        handle.seek(-1, 2)
        handle.write(bytes([last[0] ^ 0xFF]))
    second.unlink()
    (copy / "notes.txt").write_text("added")
    result = verify(copy)
    assert result.changed == (str(first.relative_to(copy)),)
    assert result.missing == (str(second.relative_to(copy)),)
    assert result.extra == ("notes.txt",)
    assert main(["verify", str(copy)]) == 1
    assert main(["verify", str(out)]) == 0


def test_build_rerun_is_idempotent(export: Path, tmp_path: Path) -> None:
    out = tmp_path / "release"
    kwargs = dict(clinical=export / "clinical.csv", out=out, deidentify=True)
    build_release(export / "raw", export / "annotations.csv", **kwargs)
    first = tree_digest(out)
    build_release(export / "raw", export / "annotations.csv", **kwargs)
    assert tree_digest(out) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release", "release.pseudonyms.csv", "release.pseudonyms.key"]


def test_build_without_deid_copies_bytes(export: Path, tmp_path: Path) -> None:
    out = tmp_path / "plain"
    result = build_release(export / "raw", export / "annotations.csv", out=out)
    assert result.pseudonym_map is None
    raw_digests = set(tree_digest(export / "raw").values())
    release_digests = set(tree_digest(out / "dicom").values())
    assert release_digests == raw_digests
    assert (out / "annotations.csv").read_bytes() == (export / "annotations.csv").read_bytes()


def test_build_rejects_map_inside_release(export: Path, tmp_path: Path) -> None:
    out = tmp_path / "release"
    with pytest.raises(PackagingError, match="must be outside the release"):
        build_release(
            export / "raw", export / "annotations.csv", out=out, deidentify=True, pseudonym_map=out / "map.csv"
        )
    assert not out.exists()


def test_build_rejects_output_inside_raw(export: Path) -> None:
    with pytest.raises(PackagingError, match="must not contain each other"):
        build_release(export / "raw", export / "annotations.csv", out=export / "raw" / "release")
    assert not (export / "raw" / "release").exists()


def test_build_reports_duplicate_pixels(export: Path, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(export / "raw", raw)
    patients = sorted(p.name for p in raw.iterdir())
    donor = dcmread(sorted((raw / patients[0]).glob("*.dcm"))[5])
    victim_path = sorted((raw / patients[1]).glob("*.dcm"))[5]
    victim = dcmread(victim_path)
    victim.PixelData = donor.PixelData
    victim.save_as(victim_path)
    with pytest.raises(ValidationError, match="same pixel data") as caught:
        build_release(raw, export / "annotations.csv", out=tmp_path / "release", deidentify=True)
    issue = caught.value.issues[0]
    assert issue.rule == "pixel_data_unique_per_patient"
    assert not (tmp_path / "release").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_build_excludes_burned_in(export: Path, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(export / "raw", raw)
    files = sorted((raw / sorted(p.name for p in raw.iterdir())[0]).glob("*.dcm"))
    # Flag the top slice: dropping a slice from the middle would leave a gap in the volume.
    flagged = max(files, key=lambda path: float(dcmread(path, stop_before_pixels=True).ImagePositionPatient[2]))
    ds = dcmread(flagged)
    ds.BurnedInAnnotation = "YES"
    ds.save_as(flagged)
    result = build_release(raw, export / "annotations.csv", out=tmp_path / "release", deidentify=True)
    assert [item.file for item in result.excluded] == [str(flagged)]
    assert result.counts["dicom_files"] == 35
    with_flagged = build_release(
        raw, export / "annotations.csv", out=tmp_path / "kept", deidentify=True, allow_burned_in=True
    )
    assert with_flagged.counts["dicom_files"] == 36
    assert not audit(tmp_path / "kept").clean


def test_build_rejects_unknown_series(export: Path, tmp_path: Path) -> None:
    table = tmp_path / "annotations.csv"
    text = (export / "annotations.csv").read_text()
    first_uid = _rows(export / "annotations.csv")[0]["series_id"]
    table.write_text(text.replace(first_uid, "1.2.3.4.5"))
    with pytest.raises(ValidationError, match="no DICOM file of the raw export"):
        build_release(export / "raw", table, out=tmp_path / "release")


def test_build_reports_nodule_outside_volume(export: Path, tmp_path: Path) -> None:
    rows = _rows(export / "annotations.csv")
    target = next(row for row in rows if row["nodule_present"] == "1")
    target["coordZ"] = "900"
    table = tmp_path / "annotations.csv"
    with table.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(ValidationError, match="lies outside") as caught:
        build_release(export / "raw", table, out=tmp_path / "release")
    assert caught.value.issues[0].line == rows.index(target) + 2


def test_build_deid_errors_name_inputs(export: Path, tmp_path: Path) -> None:
    # The error once named the staged annotations.csv and the remapped SeriesInstanceUID.
    rows = _rows(export / "annotations.csv")
    target = next(row for row in rows if row["nodule_present"] == "1")
    target["coordZ"] = "900"
    table = tmp_path / "hospital_annotations.csv"
    with table.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(ValidationError, match="lies outside") as caught:
        build_release(export / "raw", table, out=tmp_path / "release", deidentify=True)
    issue = caught.value.issues[0]
    assert issue.file == str(table)
    assert issue.line == rows.index(target) + 2
    assert issue.message.endswith(f"series {target['series_id']}")


def test_cli_build_and_audit(export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "release"
    code = main([
        "build", str(export / "raw"), "--annotations", str(export / "annotations.csv"),
        "--clinical", str(export / "clinical.csv"), "--out", str(out), "--deidentify",
    ])
    assert code == 0
    assert "3 patient(s)" in capsys.readouterr().out
    assert main(["audit", str(out)]) == 0
    assert main(["audit", str(export / "raw")]) == 1
    assert "PatientBirthDate" in capsys.readouterr().out


LIDC_SERIES_UID = "1.3.6.1.4.1.14519.5.2.1.6279.6001.179049373636438705059720603192"


@pytest.mark.slow
def test_build_real_lidc_deid_audits_clean(lidc_0001_dir: Path, tmp_path: Path) -> None:
    before = tree_digest(lidc_0001_dir)
    table = tmp_path / "annotations.csv"
    table.write_text(
        "patient_id,series_id,coordX,coordY,coordZ,diameter_mm,class,nodule_present,stage\n"
        f"LIDC-IDRI-0001,{LIDC_SERIES_UID},-34.0,-55.0,-150.0,3.0,0,1,\n"
        f"LIDC-IDRI-0001,{LIDC_SERIES_UID},55.52,85.56,-116.12,27.44,1,1,\n"
    )
    out = tmp_path / "release"
    result = build_release(lidc_0001_dir, table, out=out, deidentify=True)
    assert result.counts["dicom_files"] == 133
    assert audit(out).clean
    assert verify(out).ok
    assert tree_digest(lidc_0001_dir) == before
    rows = _rows(out / "annotations.csv")
    series_dir = out / "dicom" / rows[0]["patient_id"] / rows[0]["series_id"]
    assert len(list(series_dir.glob("*.dcm"))) == 133


def test_interrupted_build_leaves_nothing(export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("tunisian_lung.packaging.card.write_card", fail)
    with pytest.raises(KeyboardInterrupt):
        build_release(export / "raw", export / "annotations.csv", out=tmp_path / "release")
    assert list(tmp_path.iterdir()) == []


def test_interrupted_rebuild_keeps_previous(export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "release"
    build_release(export / "raw", export / "annotations.csv", out=out)
    before = tree_digest(out)

    def fail(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("tunisian_lung.packaging.card.write_card", fail)
    with pytest.raises(KeyboardInterrupt):
        build_release(export / "raw", export / "annotations.csv", out=out)
    assert tree_digest(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["release"]


def test_build_writes_nifti(export: Path, tmp_path: Path) -> None:
    from tunisian_lung.io.dicom import load_series
    from tunisian_lung.io.nifti import read_nifti

    out = tmp_path / "release"
    build_release(export / "raw", export / "annotations.csv", out=out, deidentify=True, nifti=True)
    series_dirs = sorted((out / "dicom").glob("*/*"))
    assert len(series_dirs) == 3
    for series_dir in series_dirs:
        path = out / "nifti" / series_dir.parent.name / f"{series_dir.name}.nii.gz"
        from_nifti = read_nifti(path)
        from_dicom = load_series(series_dir)
        assert from_nifti.shape == from_dicom.shape
        assert from_nifti.same_geometry(from_dicom, atol_mm=1e-3)
    manifest = json.loads((out / "dataset.json").read_text())
    assert sum(name.startswith("nifti/") for name in manifest["files"]) == 3


def test_scan_raw_export_skips_dicomdir(quirks_dir: Path) -> None:
    from tunisian_lung.packaging.build import scan_raw_export

    series = scan_raw_export(quirks_dir / "dicomdir")
    assert len(series) == 13
    assert {entry.patient_id for entry in series.values()} == {"77654033", "98890234"}
    assert sum(len(entry.files) for entry in series.values()) == 31


def test_card_split_table(deid_release, tmp_path: Path) -> None:
    from tunisian_lung.packaging.card import write_card

    out, _, mapping = deid_release
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    pseudonyms = sorted(mapping.values())
    assignment = {pseudonyms[0]: "train", pseudonyms[1]: "train", pseudonyms[2]: "test"}
    (copy / "splits.json").write_text(json.dumps({"seed": 11, "stratify": ["health_status"], "assignment": assignment}))
    write_card(copy)
    card = (copy / "README.md").read_text()
    assert "| train | 2 |" in card
    assert "| test | 1 |" in card
    assert "Split seed: 11; stratified by health_status." in card


def test_rewrite_identifiers_keeps_excel_style(tmp_path: Path) -> None:
    from tunisian_lung.packaging.tables import rewrite_identifiers

    source = tmp_path / "raw.csv"
    source.write_bytes(
        "\ufeffPatient ID ;SeriesUID;coordX;diameter mm\n"
        "P1;1.2.3;-12,5;7,25\n"
        "P2;1.2.4;3,0;4,5\n".encode("utf-8")
    )
    target = tmp_path / "release.csv"
    rewrite_identifiers(source, target, patient_ids={"P1": "TL-0001", "P2": "TL-0002"}, series_ids={"1.2.3": "2.25.1", "1.2.4": "2.25.2"})
    assert target.read_text(encoding="utf-8").splitlines() == [
        "Patient ID ;SeriesUID;coordX;diameter mm",
        "TL-0001;2.25.1;-12,5;7,25",
        "TL-0002;2.25.2;3,0;4,5",
    ]
    with pytest.raises(PackagingError, match="line 3: patient_id 'P2' has no pseudonym"):
        rewrite_identifiers(source, target, patient_ids={"P1": "TL-0001"}, series_ids={"1.2.3": "2.25.1", "1.2.4": "2.25.2"})


def test_card_histogram_whole_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Four ages in three bins once gave y ticks at 0.5, 1.5 patients and the label "count".
    from matplotlib.figure import Figure

    from tunisian_lung.packaging.card import _histogram

    saved: list[Figure] = []
    original = Figure.savefig

    def keep(figure: Figure, *args: Any, **kwargs: Any) -> None:
        saved.append(figure)
        original(figure, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    assert _histogram(tmp_path / "age.png", [54, 56, 58, 67], title="Age at scan", xlabel="age (years)", ylabel="patients")
    axes = saved[0].axes[0]
    assert axes.get_ylabel() == "patients"
    ticks = [float(tick) for tick in axes.get_yticks()]
    assert all(tick.is_integer() for tick in ticks), ticks


def test_rewrite_identifiers_header_after_blank_rows(tmp_path: Path) -> None:
    # The schema reader skips blank lines and empty-cell rows above the header, so the rewrite
    # must too. It once took the blank first line as the header and left every id unchanged.
    from tunisian_lung.packaging.tables import rewrite_identifiers

    source = tmp_path / "raw.csv"
    source.write_text('\n;;\n"patient_id";series_id;coordX\nP1;1.2.3;-12,5\n', encoding="utf-8")
    target = tmp_path / "release.csv"
    rewrite_identifiers(source, target, patient_ids={"P1": "TL-0001"}, series_ids={"1.2.3": "2.25.1"})
    assert target.read_text(encoding="utf-8").splitlines() == [
        "",
        ";;",
        "patient_id;series_id;coordX",
        "TL-0001;2.25.1;-12,5",
    ]
    with pytest.raises(PackagingError, match="line 4: patient_id 'P1' has no pseudonym"):
        rewrite_identifiers(source, target, patient_ids={}, series_ids={"1.2.3": "2.25.1"})


def test_build_rejects_map_without_key(export: Path, tmp_path: Path) -> None:
    # A lost key was once replaced in silence, which changed every date shift and UID.
    out = tmp_path / "release"
    map_path = tmp_path / "private" / "map.csv"
    build_release(export / "raw", export / "annotations.csv", out=out, deidentify=True, pseudonym_map=map_path)
    map_before = map_path.read_bytes()
    (tmp_path / "private" / "map.key").unlink()

    with pytest.raises(PackagingError, match="release key .*map.key is missing"):
        build_release(export / "raw", export / "annotations.csv", out=out, deidentify=True, pseudonym_map=map_path)

    assert map_path.read_bytes() == map_before
    assert not (tmp_path / "private" / "map.key").exists()
    assert verify(out).ok
