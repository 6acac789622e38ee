"""dataset.json: defaults, validation, atomic writing, checksums and verification."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import pytest

from tunisian_lung import manifest as manifest_module
from tunisian_lung.errors import DatasetLayoutError
from tunisian_lung.manifest import (
    FileEntry,
    Manifest,
    compute_file_entries,
    read_manifest,
    verify_files,
    write_manifest,
)

SHA_A = "a" * 64


def make_release(root: Path) -> Path:
    (root / "dicom" / "P1" / "S1").mkdir(parents=True)
    (root / "dicom" / "P1" / "S1" / "1.dcm").write_bytes(b"\x00" * 300)
    (root / "annotations.csv").write_text("patient_id,series_id\nP1,S1\n", encoding="utf-8")
    return root


def valid_data(**changes: object) -> dict[str, object]:
    data: dict[str, object] = {
        "format_version": "1.0",
        "name": "tunisian-lung",
        "version": "1.0.0",
        "license": "CC-BY-4.0",
    }
    data.update(changes)
    return data


def test_missing_manifest_gives_defaults(tmp_path: Path) -> None:
    manifest = read_manifest(make_release(tmp_path))

    assert manifest.is_default
    assert manifest.coordinate_space == "world_lps_mm"
    assert manifest.files == {}
    assert manifest.name is None


def test_manifest_round_trip(tmp_path: Path) -> None:
    root = make_release(tmp_path)
    manifest = Manifest(
        name="tunisian-lung",
        version="1.0.0",
        license="CC-BY-4.0",
        citation="Doe et al. 2026",
        coordinate_space="voxel",
        counts={"patients": 1},
        files=compute_file_entries(root),
        deidentification={"profile": "DICOM PS3.15 basic", "options": ["retain dates"]},
        source={"hospital": "site A"},
    )

    path = write_manifest(root, manifest)
    again = read_manifest(root)

    assert path == root / "dataset.json"
    assert again == manifest
    assert not again.is_default
    assert json.loads(path.read_text(encoding="utf-8"))["format_version"] == "1.0"


def test_manifest_is_read_only() -> None:
    manifest = Manifest(name="n", version="1", license="CC0-1.0", counts={"patients": 2})

    with pytest.raises(TypeError):
        manifest.counts["patients"] = 3  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        manifest.name = "other"  # type: ignore[misc]


def test_unknown_format_version_is_clear_error(tmp_path: Path) -> None:
    (tmp_path / "dataset.json").write_text(json.dumps(valid_data(format_version="2.0")), encoding="utf-8")

    with pytest.raises(DatasetLayoutError) as raised:
        read_manifest(tmp_path)

    message = str(raised.value)
    assert "unsupported format_version '2.0'" in message
    assert "reads 1.0" in message


def test_invalid_json_names_line(tmp_path: Path) -> None:
    (tmp_path / "dataset.json").write_text('{\n  "name": "x",\n}\n', encoding="utf-8")

    with pytest.raises(DatasetLayoutError) as raised:
        read_manifest(tmp_path)

    assert "invalid JSON at line 3" in str(raised.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"format_version": "1.0", "name": "x", "version": "1"}, "missing required key 'license'"),
        (valid_data(extra=1), "unknown key 'extra'"),
        (valid_data(coordinate_space="ras"), "invalid coordinate_space 'ras'"),
        (valid_data(name=""), "'name' must be a non-empty string"),
        (valid_data(counts={"patients": -1}), "counts['patients'] must be a non-negative integer"),
        (valid_data(files={"a.csv": {"sha256": "xyz", "size": 1}}), "invalid sha256 'xyz'"),
        (valid_data(files={"a.csv": {"sha256": SHA_A, "size": -1}}), "invalid file size -1"),
        (valid_data(files={"a.csv": {"sha256": SHA_A}}), "exactly the keys 'sha256' and 'size'"),
        (valid_data(files={"../a.csv": {"sha256": SHA_A, "size": 1}}), "must not contain '..'"),
        (valid_data(files={"/etc/a.csv": {"sha256": SHA_A, "size": 1}}), "must be relative"),
        (valid_data(files={"dicom\\a.dcm": {"sha256": SHA_A, "size": 1}}), "must use '/' separators"),
        (valid_data(source=[1, 2]), "'source' must be an object"),
    ],
)
def test_invalid_manifest_rejected(tmp_path: Path, data: dict[str, object], message: str) -> None:
    (tmp_path / "dataset.json").write_text(json.dumps(data), encoding="utf-8")

    with pytest.raises(DatasetLayoutError) as raised:
        read_manifest(tmp_path)

    assert message in str(raised.value)


def test_manifest_reports_every_problem_at_once(tmp_path: Path) -> None:
    data = {"format_version": "1.0", "name": "x", "junk": 1, "files": {"../a": {"sha256": SHA_A, "size": 1}}}
    (tmp_path / "dataset.json").write_text(json.dumps(data), encoding="utf-8")

    with pytest.raises(DatasetLayoutError) as raised:
        read_manifest(tmp_path)

    message = str(raised.value)
    assert "missing required key 'version'" in message
    assert "missing required key 'license'" in message
    assert "unknown key 'junk'" in message
    assert "'../a'" in message


def test_missing_folder_is_layout_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match="dataset folder not found"):
        read_manifest(tmp_path / "absent")


def test_compute_file_entries(tmp_path: Path) -> None:
    root = make_release(tmp_path)
    (root / "dataset.json").write_text("{}", encoding="utf-8")

    entries = compute_file_entries(root)

    assert list(entries) == ["annotations.csv", "dicom/P1/S1/1.dcm"]
    dicom = entries["dicom/P1/S1/1.dcm"]
    assert dicom.size == 300
    assert dicom.sha256 == hashlib.sha256(b"\x00" * 300).hexdigest()


def test_compute_file_entries_with_progress(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    entries = compute_file_entries(make_release(tmp_path), progress=True)

    assert len(entries) == 2
    assert "sha256" in capsys.readouterr().err


def test_verify_files_finds_missing_changed_extra(tmp_path: Path) -> None:
    root = make_release(tmp_path)
    (root / "notes.txt").write_text("v1", encoding="utf-8")
    manifest = Manifest(name="n", version="1", license="CC0-1.0", files=compute_file_entries(root))
    write_manifest(root, manifest)
    assert verify_files(root, manifest).ok

    (root / "notes.txt").write_text("v2", encoding="utf-8")  # same size, other content
    (root / "dicom" / "P1" / "S1" / "1.dcm").unlink()
    (root / "added.csv").write_text("x", encoding="utf-8")
    result = verify_files(root, manifest)

    assert result.missing == ("dicom/P1/S1/1.dcm",)
    assert result.changed == ("notes.txt",)
    assert result.extra == ("added.csv",)
    assert not result.ok


def test_write_manifest_keeps_old_file_when_replace_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_release(tmp_path)
    old = Manifest(name="old", version="1", license="CC0-1.0")
    write_manifest(root, old)

    def failing_replace(source: str, target: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_manifest(root, Manifest(name="new", version="2", license="CC0-1.0"))
    monkeypatch.undo()

    assert read_manifest(root).name == "old"
    assert sorted(path.name for path in root.iterdir()) == ["annotations.csv", "dataset.json", "dicom"]


def test_file_entry_rejects_bad_digest() -> None:
    with pytest.raises(DatasetLayoutError, match="64 lower-case hexadecimal"):
        FileEntry(sha256=SHA_A.upper(), size=1)


def test_from_dict_checks_each_path_once(monkeypatch: pytest.MonkeyPatch) -> None:
    checked: list[object] = []
    original = manifest_module._check_relative_path

    def counting_check(path: object) -> str | None:
        checked.append(path)
        return original(path)

    monkeypatch.setattr(manifest_module, "_check_relative_path", counting_check)
    files = {f"dicom/P1/S1/{index}.dcm": {"sha256": SHA_A, "size": 1} for index in range(50)}

    manifest = Manifest.from_dict(valid_data(files=files))

    assert len(manifest.files) == 50
    assert sorted(checked) == sorted(files)


@pytest.mark.parametrize(
    "path",
    ["../a.csv", "/etc/a.csv", "dicom\\a.dcm", "./a.csv", "dicom//a.dcm", "dicom/./a.dcm", "dicom/", "", "dataset.json"],
)
def test_invalid_path_rejected_by_both_constructors(path: str) -> None:
    with pytest.raises(DatasetLayoutError) as parsed:
        Manifest.from_dict(valid_data(files={path: {"sha256": SHA_A, "size": 1}}))
    with pytest.raises(DatasetLayoutError) as constructed:
        Manifest(name="x", version="1", license="CC0-1.0", files={path: FileEntry(sha256=SHA_A, size=1)})

    problem = str(constructed.value).splitlines()[1]
    assert f"{path!r}" in problem
    assert problem in str(parsed.value).splitlines()
