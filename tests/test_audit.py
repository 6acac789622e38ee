"""Tests of the identifying-attribute audit on the real LIDC-IDRI-0001 series and on copies."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydicom import dcmread

from tunisian_lung.cli import main
from tunisian_lung.errors import PackagingError
from tunisian_lung.packaging.audit import audit

# What remains in the public LIDC-IDRI-0001 headers after TCIA's own de-identification. Each
# is explained in docs/packaging.md: a replacement accession number, "Removed by CTP"
# placeholders in two person-name attributes, and the private block of TCIA's CTP tool
# (project name and site number).
LIDC_EXPECTED = {
    ("AccessionNumber", "identifier"),
    ("VerifyingObserverName", "name"),
    ("PersonName", "name"),
    ("Private[CTP]", "private"),
}


@pytest.fixture(scope="module")
def lidc_report(lidc_0001_dir: Path):
    return audit(lidc_0001_dir)


def test_audit_lidc_findings_are_explained(lidc_report) -> None:
    assert lidc_report.files == 133
    assert lidc_report.unreadable == []
    found = {(finding.keyword, finding.category) for finding in lidc_report.findings}
    assert found == LIDC_EXPECTED


def test_audit_lidc_placeholders(lidc_report) -> None:
    names = {finding.value for finding in lidc_report.findings if finding.category == "name"}
    assert names == {"Removed by CTP"}
    counts = lidc_report.by_keyword()
    assert counts["AccessionNumber"] == 133
    assert counts["Private[CTP]"] == 133, "by_keyword counts files, not findings"
    private = [finding for finding in lidc_report.findings if finding.keyword == "Private[CTP]"]
    assert len(private) == 3 * 133


def test_audit_flags_injected_name_and_birth_date(lidc_0001_dir: Path, tmp_path: Path) -> None:
    for name in ("000000.dcm", "000001.dcm"):
        shutil.copyfile(lidc_0001_dir / name, tmp_path / name)
    target = tmp_path / "000001.dcm"
    ds = dcmread(target)
    ds.PatientName = "GHARBI^AMINA"
    ds.PatientBirthDate = "19520704"
    ds.InstitutionName = "Institut Salah Azaiez"
    ds.OtherPatientIDs = "MRN-31337"
    ds.SeriesDescription = "Thorax Gharbi"
    ds.BurnedInAnnotation = "YES"
    ds.save_as(target)
    report = audit(tmp_path)
    assert not report.clean
    injected = {(f.keyword, f.category, f.value) for f in report.by_file()["000001.dcm"]}
    assert ("PatientName", "name", "GHARBI^AMINA") in injected
    assert ("PatientBirthDate", "birth_date", "19520704") in injected
    assert ("InstitutionName", "institution", "Institut Salah Azaiez") in injected
    assert ("OtherPatientIDs", "identifier", "MRN-31337") in injected
    assert ("SeriesDescription", "description", "Thorax Gharbi") in injected
    assert ("BurnedInAnnotation", "burned_in", "YES") in injected
    untouched = {f.keyword for f in report.by_file()["000000.dcm"]}
    assert "PatientName" not in untouched


def test_audit_finds_nested_names(lidc_0001_dir: Path, tmp_path: Path) -> None:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    target = tmp_path / "000000.dcm"
    shutil.copyfile(lidc_0001_dir / "000000.dcm", target)
    ds = dcmread(target)
    item = Dataset()
    item.PersonName = "NESTED^NAME"
    ds.ContentSequence = Sequence([item])
    ds.save_as(target)
    findings = [f for f in audit(target).findings if f.value == "NESTED^NAME"]
    assert [f.keyword for f in findings] == ["ContentSequence[0].PersonName"]


def test_audit_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(PackagingError, match="no such file or folder"):
        audit(tmp_path / "absent")


def test_audit_skips_non_dicom(tmp_path: Path) -> None:
    (tmp_path / "notes.bin").write_bytes(b"not dicom")
    (tmp_path / "annotations.csv").write_text("patient_id\n")
    report = audit(tmp_path)
    assert report.clean
    assert report.files == 0
    assert report.unreadable == [str(tmp_path / "notes.bin")]


def test_cli_audit_exit_codes(lidc_0001_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "000000.dcm"
    shutil.copyfile(lidc_0001_dir / "000000.dcm", target)
    assert main(["audit", str(target)]) == 1
    output = capsys.readouterr().out
    assert "AccessionNumber" in output
    assert "identifying attribute(s) in 1 file(s)" in output
    assert main(["audit", str(tmp_path / "absent")]) == 2


def test_cli_audit_summary_counts_files(lidc_0001_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("000000.dcm", "000001.dcm"):
        shutil.copyfile(lidc_0001_dir / name, tmp_path / name)

    assert main(["audit", str(tmp_path), "--summary"]) == 1

    output = capsys.readouterr().out
    assert "files per attribute:" in output
    assert "  AccessionNumber [" in output
    assert "]: 2" in output.split("  AccessionNumber [", 1)[1].splitlines()[0]
    assert f"{tmp_path / '000000.dcm'}:" not in output, "--summary printed per-file lines"
    assert "identifying attribute(s) in 2 file(s)" in output
