"""Merging releases across sites: id collisions, prefixes, the site column and the merged manifest."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tunisian_lung.cli import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, main
from tunisian_lung.dataset import open_dataset
from tunisian_lung.errors import SourceImportError
from tunisian_lung.importers.merge import merge_releases
from tunisian_lung.manifest import read_manifest, verify_files
from tunisian_lung.synthetic import write_synthetic_release


@pytest.fixture(scope="module")
def two_sites(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two small synthetic releases whose patient ids collide (``SYN-0001``) but whose scans differ."""
    folder = tmp_path_factory.mktemp("sites")
    first = write_synthetic_release(folder / "tunis", patients=3, seed=1, slices=8, rows=16)
    second = write_synthetic_release(folder / "sfax", patients=2, seed=3, slices=8, rows=16)
    return first, second


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_colliding_ids_rejected(two_sites: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(SourceImportError, match="collide between sites") as error:
        merge_releases(two_sites, tmp_path / "merged", site_names=["tunis", "sfax"])
    assert "patient_id 'SYN-0001'" in str(error.value)
    assert not (tmp_path / "merged").exists()


def test_same_scan_in_two_sites_rejected(tmp_path: Path) -> None:
    # One seed gives both releases the same SeriesInstanceUIDs: the same scans at two sites.
    first = write_synthetic_release(tmp_path / "lidc", patients=1, seed=5, slices=8, rows=16)
    second = write_synthetic_release(tmp_path / "luna16", patients=1, seed=5, slices=8, rows=16)
    series_id = _read(first / "annotations.csv")["series_id"].iloc[0]
    for prefixes in (None, ["a-", "b-"]):
        with pytest.raises(SourceImportError, match="same SeriesInstanceUID") as error:
            merge_releases([first, second], tmp_path / "merged", prefixes=prefixes)
        assert series_id in str(error.value)
        assert "sites 'lidc' and 'luna16'" in str(error.value)
    assert not (tmp_path / "merged").exists()


def test_same_non_uid_series_id_needs_prefix(two_sites: tuple[Path, Path], tmp_path: Path) -> None:
    # Series ids that are not DICOM UIDs, such as S1, name scans only within one site.
    copies = []
    for source in two_sites:
        copy = tmp_path / source.name
        shutil.copytree(source, copy)
        table = _read(copy / "annotations.csv")
        renamed = {old: f"S{index}" for index, old in enumerate(dict.fromkeys(table["series_id"]), start=1)}
        for old, new in renamed.items():
            patient = table.loc[table["series_id"] == old, "patient_id"].iloc[0]
            (copy / "dicom" / patient / old).rename(copy / "dicom" / patient / new)
        table["series_id"] = table["series_id"].map(renamed)
        table.to_csv(copy / "annotations.csv", index=False)
        copies.append(copy)
    with pytest.raises(SourceImportError, match="collide between sites") as error:
        merge_releases(copies, tmp_path / "plain", site_names=["tunis", "sfax"])
    assert "series_id 'S1'" in str(error.value)
    report = merge_releases(copies, tmp_path / "prefixed", prefixes=["tn-", "sf-"], site_names=["tunis", "sfax"])
    assert report.series == 5


@pytest.fixture(scope="module")
def merged(two_sites: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One merge of the two sites with prefixes, plus the sources' modification times before it."""
    before = {path: path.stat().st_mtime_ns for root in two_sites for path in root.rglob("*")}
    out = tmp_path_factory.mktemp("merged") / "release"
    report = merge_releases(two_sites, out, prefixes=["tn-", "sf-"], site_names=["tunis", "sfax"], name="tn-multisite")
    return {"out": out, "report": report, "before": before}


def test_prefixes_keep_sites_apart(two_sites: tuple[Path, Path], merged: dict[str, Any]) -> None:
    out = merged["out"]
    report = merged["report"]
    assert report.sites == ["tunis", "sfax"]
    assert report.patients == 5
    annotations = _read(out / "annotations.csv")
    assert annotations.columns[0] == "site"
    assert sorted(set(annotations["site"])) == ["sfax", "tunis"]
    tunis = annotations[annotations["site"] == "tunis"]
    assert tunis["patient_id"].str.startswith("tn-").all()
    assert tunis["series_id"].str.startswith("tn-").all()
    source = _read(two_sites[0] / "annotations.csv")
    assert sorted(tunis["patient_id"]) == sorted("tn-" + source["patient_id"])
    assert tunis["class"].tolist() == source["class"].tolist()
    for row in annotations.itertuples(index=False):
        series_folder = out / "dicom" / row.patient_id / row.series_id
        assert any(series_folder.iterdir()), f"no DICOM files copied to {series_folder}"
    clinical = _read(out / "clinical.csv")
    assert len(clinical) == 5
    assert set(clinical["site"]) == {"tunis", "sfax"}


def test_merged_manifest_covers_files(merged: dict[str, Any]) -> None:
    out = merged["out"]
    manifest = read_manifest(out)
    assert manifest.name == "tn-multisite"
    assert manifest.counts["sites"] == 2
    assert manifest.counts["patients"] == 5
    assert verify_files(out, manifest).ok
    assert manifest.source is not None
    assert [site["prefix"] for site in manifest.source["merged_from"]] == ["tn-", "sf-"]


def test_merged_card_listed(merged: dict[str, Any]) -> None:
    out = merged["out"]
    if not merged["report"].card_written:
        pytest.skip("tunisian_lung.packaging.card is not installed, so no card was written")
    manifest = read_manifest(out)
    assert (out / "README.md").is_file()
    assert "README.md" in manifest.files


def test_merged_release_opens_and_holds_out_site(merged: dict[str, Any]) -> None:
    dataset = open_dataset(merged["out"])
    annotations = dataset.annotations
    assert "site" in annotations.columns
    held_out = set(annotations.loc[annotations["site"] == "sfax", "patient_id"])
    training = set(annotations.loc[annotations["site"] != "sfax", "patient_id"])
    assert len(held_out) == 2
    assert held_out.isdisjoint(training)


def test_sources_left_unchanged(two_sites: tuple[Path, Path], merged: dict[str, Any]) -> None:
    after = {path: path.stat().st_mtime_ns for root in two_sites for path in root.rglob("*")}
    assert after == merged["before"]


def test_default_site_names_from_folders(two_sites: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tunisian_lung.importers.merge._write_card_if_available", lambda root: False)
    report = merge_releases(two_sites, tmp_path / "merged", prefixes=["tn-", "sf-"])
    assert report.sites == ["tunis", "sfax"]


def test_partial_clinical_rejected_or_dropped(two_sites: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tunisian_lung.importers.merge._write_card_if_available", lambda root: False)
    without_clinical = write_synthetic_release(tmp_path / "public", patients=2, seed=2, slices=8, rows=16)
    (without_clinical / "clinical.csv").unlink()
    roots = [two_sites[0], without_clinical]
    with pytest.raises(SourceImportError, match="drop_partial_clinical"):
        merge_releases(roots, tmp_path / "strict", prefixes=["tn-", "pub-"])

    report = merge_releases(roots, tmp_path / "dropped", prefixes=["tn-", "pub-"], drop_partial_clinical=True)

    assert not (tmp_path / "dropped" / "clinical.csv").exists()
    assert str(two_sites[0] / "clinical.csv") in report.files_not_merged
    assert len(open_dataset(tmp_path / "dropped").patients) == 5


def test_invalid_arguments(two_sites: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(SourceImportError, match="at least two"):
        merge_releases(two_sites[:1], tmp_path / "one")
    with pytest.raises(SourceImportError, match="1 prefixes for 2 releases"):
        merge_releases(two_sites, tmp_path / "p", prefixes=["a-"])
    with pytest.raises(SourceImportError, match="site names must differ"):
        merge_releases(two_sites, tmp_path / "s", prefixes=["a-", "b-"], site_names=["x", "x"])
    with pytest.raises(SourceImportError, match="no annotations.csv"):
        merge_releases([two_sites[0], tmp_path], tmp_path / "n", prefixes=["a-", "b-"])


def test_existing_output_rejected(two_sites: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "merged"
    out.mkdir()
    with pytest.raises(SourceImportError, match="already exists"):
        merge_releases(two_sites, out, prefixes=["a-", "b-"], site_names=["tunis", "sfax"])


def test_cli_merge(two_sites: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = (str(path) for path in two_sites)
    out = str(tmp_path / "merged")
    assert main(["merge", first, second, "--out", out, "--site", "tunis", "--site", "sfax"]) == EXIT_PROBLEM
    assert "prefix" in capsys.readouterr().err
    assert main(["merge", first, second, "--out", out, "--prefix", "tn-"]) == EXIT_USAGE
    code = main(
        ["merge", first, second, "--out", out, "--prefix", "tn-", "--prefix", "sf-", "--site", "tunis", "--site", "sfax"]
    )
    assert code == EXIT_OK
    assert "5 patients" in capsys.readouterr().out


def test_excel_style_tables_merged(two_sites: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A built release keeps the hospital's ';' table; merge once read it with ',' and raised KeyError.
    monkeypatch.setattr("tunisian_lung.importers.merge._write_card_if_available", lambda root: False)
    hospital = tmp_path / "hospital"
    shutil.copytree(two_sites[0], hospital)
    for name, renamed in (("annotations.csv", {"patient_id": "Patient ID", "diameter_mm": "Diameter (mm)"}), ("clinical.csv", {"patient_id": "Patient ID"})):
        table = _read(hospital / name).rename(columns=renamed)
        for column in ("coordX", "coordY", "coordZ", "Diameter (mm)", "age"):
            if column in table.columns:
                table[column] = table[column].str.replace(".", ",", regex=False)
        text = "\n" + table.to_csv(sep=";", index=False)
        (hospital / name).write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))

    out = tmp_path / "merged"
    merge_releases([hospital, two_sites[1]], out, prefixes=["tn-", "sf-"], site_names=["tunis", "sfax"])

    merged = _read(out / "annotations.csv")
    tunis = merged[merged["site"] == "tunis"].reset_index(drop=True)
    source = _read(two_sites[0] / "annotations.csv")
    assert tunis["patient_id"].tolist() == ("tn-" + source["patient_id"]).tolist()
    assert tunis["coordX"].tolist() == source["coordX"].tolist()
    assert tunis["diameter_mm"].tolist() == source["diameter_mm"].tolist()
    assert len(_read(out / "clinical.csv")) == 5
    assert len(open_dataset(out).patients) == 5
