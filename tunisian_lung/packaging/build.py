"""Building a release folder from a hospital's raw DICOM export and its tables.

:func:`build_release` copies the raw export (never moving or editing it) into the release
layout ``dicom/<patient_id>/<series_id>/``, optionally de-identifies it with
:mod:`tunisian_lung.packaging.deid`, validates the tables and the images, optionally converts
every series to NIfTI, writes the dataset card and ``dataset.json`` with the sha256 and size of
every file, and only then renames the finished folder into place.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunisian_lung import layout
from tunisian_lung.errors import PackagingError, ValidationError, ValidationIssue
from tunisian_lung.packaging.deid import DeidOptions, burned_in_reason, date_offset_days, deidentify_dataset
from tunisian_lung.packaging.tables import rewrite_identifiers, write_text_atomic

logger = logging.getLogger(__name__)

#: Header of the pseudonym map kept outside the release.
PSEUDONYM_MAP_COLUMNS = ("original_patient_id", "pseudonym", "date_offset_days")
_MEDIA_DIRECTORY_STORAGE = "1.2.840.10008.1.3.10"
_SKIPPED_SUFFIXES = (".csv", ".json", ".md", ".txt", ".xml", ".png", ".jpg", ".pdf", ".zip", ".gz")


@dataclass(frozen=True)
class ExcludedImage:
    """A raw image left out of the release, with the reason."""

    file: str
    reason: str


@dataclass(frozen=True)
class BuildResult:
    """Summary of a release written by :func:`build_release`.

    Attributes
    ----------
    root:
        The release folder.
    counts:
        The counts written to ``dataset.json`` (patients, series, nodules, DICOM files).
    excluded:
        Raw images left out (burned-in annotations, secondary captures).
    skipped_series:
        Raw series that no annotation row refers to; they are not copied. Original UIDs.
    issues:
        Warnings of the table and image checks (errors raise before the release is written).
    pseudonym_map:
        The pseudonym map outside the release, when de-identifying.
    """

    root: Path
    counts: Mapping[str, int]
    excluded: tuple[ExcludedImage, ...] = ()
    skipped_series: tuple[str, ...] = ()
    issues: tuple[ValidationIssue, ...] = ()
    pseudonym_map: Path | None = None


@dataclass
class _RawSeries:
    patient_id: str
    series_uid: str
    files: list[tuple[int, str, Path]] = field(default_factory=list)  # (instance number, SOP UID, path)


# --- raw export ------------------------------------------------------------------------------


def _iter_candidate_files(raw_dir: Path) -> Iterator[Path]:
    for path in sorted(raw_dir.rglob("*")):
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() not in _SKIPPED_SUFFIXES:
            yield path


def scan_raw_export(raw_dir: Path) -> dict[str, _RawSeries]:
    """Group the DICOM files under ``raw_dir`` by SeriesInstanceUID (headers only).

    Raises
    ------
    PackagingError
        A series has files from two PatientIDs, or a file lacks a SeriesInstanceUID.
    """
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    series: dict[str, _RawSeries] = {}
    for path in _iter_candidate_files(raw_dir):
        try:
            ds = dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError, ValueError):
            logger.debug("skipping %s: not a DICOM file", path)
            continue
        series_uid = str(ds.get("SeriesInstanceUID", "")).strip()
        patient_id = str(ds.get("PatientID", "")).strip()
        media_class = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", ""))
        if media_class == _MEDIA_DIRECTORY_STORAGE:
            logger.info("skipping %s: a DICOMDIR index, not an image", path)
            continue
        if not series_uid:
            raise PackagingError(f"{path} has no SeriesInstanceUID; fix or remove this file in the raw export")
        entry = series.setdefault(series_uid, _RawSeries(patient_id, series_uid))
        if entry.patient_id != patient_id:
            raise PackagingError(
                f"series {series_uid} has files of two patients ({entry.patient_id!r} and {patient_id!r}, e.g. {path}); "
                "fix PatientID in the raw export"
            )
        instance = ds.get("InstanceNumber")
        entry.files.append((int(instance) if instance not in (None, "") else 0, str(ds.get("SOPInstanceUID", "")), path))
    for entry in series.values():
        entry.files.sort(key=lambda item: (item[0], item[1], str(item[2])))
    return series


def _check_folder_name(value: str, attribute: str) -> None:
    if not value or value in (".", "..") or "/" in value or "\\" in value or "\x00" in value:
        raise PackagingError(
            f"{attribute} {value!r} cannot be used as a folder name of the release; "
            "rename it in the export or build with deidentify=True to use pseudonyms"
        )


# --- pseudonyms ------------------------------------------------------------------------------


def default_pseudonym_map_path(out: Path) -> Path:
    """Return the default pseudonym map path, beside the release: ``<out>.pseudonyms.csv``."""
    return out.with_name(out.name + ".pseudonyms.csv")


def _key_path(map_path: Path) -> Path:
    return map_path.with_name(map_path.name.removesuffix(".csv") + ".key")


def _read_pseudonym_map(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    with path.open(encoding="utf-8", newline="") as stream:
        reader = csv.DictReader(stream)
        if reader.fieldnames is None or not {"original_patient_id", "pseudonym"} <= set(reader.fieldnames):
            raise PackagingError(
                f"pseudonym map {path} must have the columns original_patient_id and pseudonym; "
                "pass another path or delete the file to start a new map"
            )
        return {row["original_patient_id"]: row["pseudonym"] for row in reader}


def _load_or_create_secret(key_path: Path) -> bytes:
    if key_path.exists():
        text = key_path.read_text(encoding="ascii").strip()
        try:
            return bytes.fromhex(text)
        except ValueError as error:
            raise PackagingError(f"release key {key_path} is not hexadecimal; restore it from a backup") from error
    secret = secrets.token_bytes(32)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(key_path, secret.hex() + "\n")
    os.chmod(key_path, 0o600)
    logger.info("created a new release key %s; keep it with the pseudonym map", key_path)
    return secret


def assign_pseudonyms(patient_ids: list[str], existing: Mapping[str, str], *, prefix: str) -> dict[str, str]:
    """Return original id -> pseudonym, keeping ``existing`` and numbering new ids in sorted order."""
    mapping = dict(existing)
    used = set(mapping.values())
    width = max(4, len(str(len(set(patient_ids)) + len(used))))
    number = 1
    for patient_id in sorted(set(patient_ids) - set(mapping)):
        while f"{prefix}-{number:0{width}d}" in used:
            number += 1
        mapping[patient_id] = f"{prefix}-{number:0{width}d}"
        used.add(mapping[patient_id])
    return mapping


def _write_pseudonym_map(path: Path, mapping: Mapping[str, str], secret: bytes) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(PSEUDONYM_MAP_COLUMNS)
    for original, pseudonym in sorted(mapping.items(), key=lambda item: item[1]):
        writer.writerow([original, pseudonym, date_offset_days(original, secret)])
    write_text_atomic(path, buffer.getvalue())
    os.chmod(path, 0o600)


# --- the build -------------------------------------------------------------------------------


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _check_arguments(raw_dir: Path, annotations: Path, clinical: Path | None, out: Path) -> None:
    if not raw_dir.is_dir():
        raise PackagingError(f"raw export folder {raw_dir} not found; pass the folder holding the DICOM files")
    for table in (annotations, clinical):
        if table is not None and not table.is_file():
            raise PackagingError(f"table {table} not found")
    if _is_within(out, raw_dir) or _is_within(raw_dir, out):
        raise PackagingError(
            f"the release {out} and the raw export {raw_dir} must not contain each other; "
            "the raw export is never written to. Choose another output folder"
        )
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / layout.MANIFEST_NAME).exists())):
        raise PackagingError(
            f"{out} exists and is not a release built by this library (no {layout.MANIFEST_NAME}); "
            "choose a new output folder or delete it"
        )


def _validated_tables(annotations: Path, clinical: Path | None) -> Any:
    from tunisian_lung.schema import validate_tables

    report = validate_tables(annotations, clinical)
    if not report.ok:
        raise ValidationError(report.errors, summary=f"the tables of the raw export are invalid ({len(report.errors)} error(s))")
    return report


def _match_series(
    frame: Any, raw: Mapping[str, _RawSeries], annotations_name: str
) -> tuple[dict[str, _RawSeries], list[str]]:
    """Return the annotated raw series and the unannotated raw series UIDs."""
    issues: list[ValidationIssue] = []
    annotated: dict[str, _RawSeries] = {}
    for series_id, patient_id, line in zip(frame["series_id"], frame["patient_id"], frame["csv_line"]):
        entry = raw.get(str(series_id))
        if entry is None:
            issues.append(
                ValidationIssue(
                    annotations_name, int(line), "series_id", str(series_id), "series_in_export",
                    "no DICOM file of the raw export has this SeriesInstanceUID",
                    "add the series to the export or correct the series_id",
                )
            )
            continue
        if entry.patient_id != str(patient_id):
            issues.append(
                ValidationIssue(
                    annotations_name, int(line), "patient_id", str(patient_id), "patient_matches_dicom",
                    f"the DICOM files of series {series_id} have PatientID {entry.patient_id!r}",
                    "use the PatientID of the DICOM headers in the table",
                )
            )
        annotated[str(series_id)] = entry
    if issues:
        unique = {(issue.line, issue.column): issue for issue in issues}
        raise ValidationError(list(unique.values()), summary="the annotations do not match the raw DICOM export")
    skipped = sorted(set(raw) - set(annotated))
    return annotated, skipped


def build_release(
    raw_dir: str | Path,
    annotations: str | Path,
    *,
    clinical: str | Path | None = None,
    out: str | Path,
    deidentify: bool = False,
    nifti: bool = False,
    pseudonym_map: str | Path | None = None,
    allow_burned_in: bool = False,
    allow_quality_errors: bool = False,
    options: DeidOptions = DeidOptions(),
    pseudonym_prefix: str = "TL",
    progress: bool = False,
    name: str = "tunisian_lung",
    version: str = "1.0.0",
    license: str = "CC-BY-4.0",
    citation: str | None = None,
) -> BuildResult:
    """Build a release folder from a raw DICOM export and its annotation and clinical tables.

    Parameters
    ----------
    raw_dir:
        Folder of the raw export (DICOM files in any sub-folders, any file names). It is read
        only: no file under it is created, moved or changed.
    annotations, clinical:
        The annotation table (one row per nodule, ``series_id`` is the SeriesInstanceUID and
        coordinates are world LPS mm) and the optional clinical table.
    out:
        The release folder. A previous release there (with ``dataset.json``) is replaced after
        the new one is complete; any other existing non-empty folder is rejected.
    deidentify:
        Apply the Basic Application Level Confidentiality Profile with ``options``: UIDs
        remapped, PatientID replaced by a pseudonym, dates shifted per patient, tables and
        folder names rewritten with the same pseudonyms and UIDs.
    nifti:
        Also write ``nifti/<patient_id>/<series_id>.nii.gz`` for every series.
    pseudonym_map:
        Where the map ``original_patient_id, pseudonym, date_offset_days`` is written (and
        read, to keep the pseudonyms of an earlier build). Default ``<out>.pseudonyms.csv``.
        The release key that derives the UIDs and date shifts is kept beside it as
        ``<map name>.key``. Both must stay outside the release and private.
    allow_burned_in:
        Keep images flagged with burned-in annotations and secondary captures. By default a
        de-identified release excludes and reports them.
    allow_quality_errors:
        Write the release even when an image check fails (the issues are returned). By default
        any error raises.
    options:
        De-identification options (all on by default).
    pseudonym_prefix:
        Prefix of the pseudonyms (``TL-0001``).
    progress:
        Show tqdm bars.
    name, version, license, citation:
        Written to ``dataset.json`` and the dataset card.

    Returns
    -------
    BuildResult

    Raises
    ------
    ValidationError
        The tables are invalid, do not match the DICOM export, or an image check failed.
    PackagingError
        Invalid arguments, a pseudonym map inside the release, a pseudonym map whose release
        key is missing, or identifying attributes left after de-identification.
    """
    raw_dir = Path(raw_dir)
    annotations = Path(annotations)
    clinical = Path(clinical) if clinical is not None else None
    out = Path(out)
    _check_arguments(raw_dir, annotations, clinical, out)
    map_path: Path | None = None
    if deidentify:
        map_path = Path(pseudonym_map) if pseudonym_map is not None else default_pseudonym_map_path(out)
        if _is_within(map_path, out) or _is_within(map_path, raw_dir):
            raise PackagingError(
                f"pseudonym map {map_path} must be outside the release {out} and the raw export; "
                "it links pseudonyms to real patient IDs. Pass a path elsewhere"
            )

    report = _validated_tables(annotations, clinical)
    raw = scan_raw_export(raw_dir)
    annotated, skipped = _match_series(report.annotations, raw, annotations.name)
    if skipped:
        logger.info("%d raw series have no annotation row and are not copied", len(skipped))

    patient_map: dict[str, str] = {}
    secret = b""
    if deidentify:
        assert map_path is not None
        existing = _read_pseudonym_map(map_path)
        key_path = _key_path(map_path)
        if existing and not key_path.exists():
            raise PackagingError(
                f"pseudonym map {map_path} lists {len(existing)} patient(s) but its release key {key_path} is "
                "missing. A new key would change the date shift and every remapped UID of those patients, "
                "so their new release would not match the earlier one. Restore the key from a backup, or pass "
                "another pseudonym map path to start new pseudonyms"
            )
        secret = _load_or_create_secret(key_path)
        patient_ids = [entry.patient_id for entry in annotated.values()]
        if report.clinical is not None:
            patient_ids += [str(value) for value in report.clinical["patient_id"]]
        patient_map = assign_pseudonyms(patient_ids, existing, prefix=pseudonym_prefix)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".building", dir=out.parent))
    try:
        from tunisian_lung.packaging import _assemble

        result = _assemble.assemble(
            staging,
            annotated=annotated,
            skipped=skipped,
            report=report,
            annotations=annotations,
            clinical=clinical,
            deidentify=deidentify,
            patient_map=patient_map,
            secret=secret,
            options=options,
            nifti=nifti,
            allow_burned_in=allow_burned_in,
            allow_quality_errors=allow_quality_errors,
            progress=progress,
            metadata={"name": name, "version": version, "license": license, "citation": citation},
        )
        if deidentify:
            assert map_path is not None
            _write_pseudonym_map(map_path, patient_map, secret)
        _replace_folder(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("built release %s: %s", out, dict(result.counts))
    return BuildResult(
        root=out,
        counts=result.counts,
        excluded=result.excluded,
        skipped_series=tuple(skipped),
        issues=result.issues,
        pseudonym_map=map_path,
    )


def _replace_folder(staging: Path, out: Path) -> None:
    """Rename ``staging`` to ``out``, replacing a previous release only once the new one is done."""
    if not out.exists():
        os.replace(staging, out)
        return
    if not any(out.iterdir()):
        out.rmdir()
        os.replace(staging, out)
        return
    previous = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".previous", dir=out.parent))
    previous.rmdir()
    os.replace(out, previous)
    os.replace(staging, out)
    shutil.rmtree(previous, ignore_errors=True)


__all__ = ["BuildResult", "ExcludedImage", "build_release", "default_pseudonym_map_path", "assign_pseudonyms"]
