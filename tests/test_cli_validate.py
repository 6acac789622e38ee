"""``tunisian-lung validate`` and ``tunisian-lung info``: output and exit codes."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from tunisian_lung.cli import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, main
from tunisian_lung.errors import ValidationIssue

HEADER = "patient_id,series_id,coordX,coordY,coordZ,diameter_mm,class,nodule_present,stage"


def make_root(tmp_path: Path, *rows: str, clinical: str | None = None, manifest: str | None = None) -> Path:
    root = tmp_path / "release"
    root.mkdir()
    (root / "annotations.csv").write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    if clinical is not None:
        (root / "clinical.csv").write_text(clinical, encoding="utf-8")
    if manifest is not None:
        (root / "dataset.json").write_text(manifest, encoding="utf-8")
    return root


VALID_ROWS = ("P1,S1,1,2,3,4,1,1,II", "P2,S2,,,,,,0,")
CLINICAL = "patient_id,sex,age,health_status,histology,stage\nP1,M,60,cancer,other,II\nP2,F,50,healthy,,\n"


def test_validate_only_annotations_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_root(tmp_path, *VALID_ROWS)

    code = main(["validate", str(root)])

    assert code == EXIT_OK
    assert "valid (2 annotation rows)" in capsys.readouterr().out


def test_validate_with_clinical_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_root(tmp_path, *VALID_ROWS, clinical=CLINICAL)

    assert main(["validate", str(root)]) == EXIT_OK
    assert "2 clinical rows" in capsys.readouterr().out


def test_validate_reports_every_issue(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_root(tmp_path, "P1,S1,1,2,3,150,1,1,II", "P2,S2,,,,,,0,Stage V")

    code = main(["validate", str(root)])

    out = capsys.readouterr().out
    assert code == EXIT_PROBLEM
    assert "invalid, 2 error(s)" in out
    assert "annotations.csv, line 2, column 'diameter_mm'" in out
    assert "annotations.csv, line 3, column 'stage'" in out
    assert "Fix:" in out


def test_validate_shows_mapped_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "excel"
    root.mkdir()
    (root / "annotations.csv").write_text(
        "\ufeffPatient ID;series_id;coordX;coordY;coordZ;diameter mm;class;nodule_present;stage\nP1;S1;1,5;2;3;4;1;1;\n",
        encoding="utf-8",
    )

    assert main(["validate", str(root)]) == EXIT_OK
    assert "'Patient ID' -> patient_id, 'diameter mm' -> diameter_mm" in capsys.readouterr().out


def test_validate_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_root(tmp_path, "P1,S1,1,2,3,4,7,1,")

    code = main(["validate", str(root), "--json"])

    data = json.loads(capsys.readouterr().out)
    assert code == EXIT_PROBLEM
    assert data["ok"] is False
    assert data["manifest"] == "default"
    assert data["annotation_rows"] == 1
    issue = data["issues"][0]
    assert (issue["line"], issue["column"], issue["value"], issue["rule"]) == (2, "class", "7", "class_binary")


def test_validate_missing_folder_is_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["validate", str(tmp_path / "absent")])

    assert code == EXIT_USAGE
    assert "dataset folder not found" in capsys.readouterr().err


def test_validate_missing_annotations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["validate", str(tmp_path)])

    assert code == EXIT_PROBLEM
    assert "annotations.csv not found" in capsys.readouterr().out


def test_validate_invalid_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_root(tmp_path, *VALID_ROWS, manifest='{"format_version": "9.9"}')

    code = main(["validate", str(root)])

    assert code == EXIT_PROBLEM
    assert "unsupported format_version '9.9'" in capsys.readouterr().out


def test_validate_substage_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_root(tmp_path, "P1,S1,1,2,3,4,1,1,IIIA")

    assert main(["validate", str(root)]) == EXIT_PROBLEM
    assert main(["validate", str(root), "--collapse-substages"]) == EXIT_OK


def _fake_checks(monkeypatch: pytest.MonkeyPatch, issues: list[ValidationIssue]) -> list[Any]:
    seen: list[Any] = []

    def deep_validate(dataset: Any) -> list[ValidationIssue]:
        seen.append(dataset)
        return issues

    module = types.ModuleType("tunisian_lung.checks")
    module.deep_validate = deep_validate  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tunisian_lung.checks", module)
    return seen


def test_validate_deep_adds_image_issues(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    issue = ValidationIssue("annotations.csv", 2, "coordZ", -300.0, "nodule_inside_volume", "nodule centre lies outside the CT volume", "check the z coordinate")
    seen = _fake_checks(monkeypatch, [issue])
    root = make_root(tmp_path, *VALID_ROWS)

    code = main(["validate", str(root), "--deep"])

    assert code == EXIT_PROBLEM
    assert len(seen) == 1
    assert sorted(seen[0].patients) == ["P1", "P2"]
    assert "nodule centre lies outside the CT volume" in capsys.readouterr().out


def test_validate_deep_skipped_for_invalid_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    seen = _fake_checks(monkeypatch, [])
    root = make_root(tmp_path, "P1,S1,1,2,3,150,1,1,")

    assert main(["validate", str(root), "--deep"]) == EXIT_PROBLEM
    assert seen == []
    assert "deep checks skipped" in capsys.readouterr().out


def test_info_prints_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_root(tmp_path, *VALID_ROWS, clinical=CLINICAL)

    code = main(["info", str(root)])

    out = capsys.readouterr().out
    assert code == EXIT_OK
    assert "no dataset.json; coordinate space world_lps_mm" in out
    lines = [line.split() for line in out.splitlines()]
    assert ["patients", "2"] in lines
    assert ["cancer", "1"] in lines
    assert ["healthy", "1"] in lines
    assert ["II", "1"] in lines
    assert "50.0 - 60.0, mean 55.0" in out


def test_info_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_root(tmp_path, *VALID_ROWS, clinical=CLINICAL)

    assert main(["info", str(root), "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["nodules"] == 1


def test_info_invalid_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_root(tmp_path, "P1,S1,1,2,3,150,1,1,")

    assert main(["info", str(root)]) == EXIT_PROBLEM
    assert "ValidationError" in capsys.readouterr().err
    assert main(["info", str(root), "--no-validate"]) == EXIT_OK


def test_info_takes_lenient_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # info once lacked the options that the fix of each of these issues names.
    root = make_root(tmp_path)
    (root / "annotations.csv").write_text(HEADER + ",comment\nP1,S1,1,2,3,4,,1,IIIA,seen twice\n", encoding="utf-8")
    assert main(["info", str(root)]) == EXIT_PROBLEM
    err = capsys.readouterr().err
    for option in ("--allow-unlabelled", "--collapse-substages", "--allow-extra-columns"):
        assert option in err

    code = main(["info", str(root), "--allow-unlabelled", "--collapse-substages", "--allow-extra-columns"])

    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert code == EXIT_OK
    assert ["III", "1"] in lines
    assert ["nodule", "labels", "0", "malignant,", "0", "benign,", "1", "unlabelled"] in lines


def test_info_missing_folder(tmp_path: Path) -> None:
    assert main(["info", str(tmp_path / "absent")]) == EXIT_USAGE
