"""Import LUNA16 (``annotations.csv``, optional ``candidates.csv``, and the CT volumes) into a release.

LUNA16's ``annotations.csv`` has the columns ``seriesuid, coordX, coordY, coordZ, diameter_mm``:
one row per nodule of 3 mm or more accepted by at least three of the four LIDC readers, centre
in world LPS mm (the frame of the ``.mhd`` ``Offset`` and of DICOM ImagePositionPatient).
``candidates.csv`` has ``seriesuid, coordX, coordY, coordZ, class`` (1 for a nodule, 0 for
a false-positive candidate).

The volumes can be LUNA16's MetaImage files (``<seriesuid>.mhd`` with its ``.raw``), which are
converted to ``nifti/<patient_id>/<series_id>.nii.gz``, or the original LIDC-IDRI DICOM
series, which are copied to ``dicom/<PatientID>/<SeriesInstanceUID>/``. A series found in both
forms is taken from DICOM.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from tunisian_lung import layout
from tunisian_lung.errors import SourceImportError
from tunisian_lung.importers._dicom_headers import SeriesHeaders, scan_dicom_headers
from tunisian_lung.importers._release import (
    CC_BY_3,
    LIDC_IDRI_CITATION,
    LUNA16_CITATION,
    ReleaseBuilder,
    annotation_table,
    check_identifier,
    finish_release,
)

logger = logging.getLogger(__name__)

ANNOTATION_CSV_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm")
CANDIDATE_CSV_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "class")
MISSING_SERIES_NAME = "missing_series.csv"
CANDIDATES_NAME = "candidates.csv"

_NOT_DICOM_SUFFIXES = (".mhd", ".mha", ".raw", ".zraw", ".csv", ".xml", ".txt", ".md", ".json", ".zip")


@dataclass
class Luna16ImportReport:
    """Summary of a LUNA16 import: the series and nodules written, and the series not found.

    ``missing_series`` lists the series that a CSV file names but the images folder lacks, as
    ``<seriesuid>.mhd`` and as DICOM. The release lists them in ``missing_series.csv`` too.
    """

    out: Path
    series_imported: list[str] = field(default_factory=list)
    nodules_in_annotations: int = 0
    candidates_written: int = 0
    missing_series: list[str] = field(default_factory=list)
    series_not_in_csv: list[str] = field(default_factory=list)
    source_format: dict[str, str] = field(default_factory=dict)


def read_luna16_csv(path: str | Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """Read a LUNA16 CSV file and check its columns and values.

    Coordinates must be finite numbers; ``diameter_mm`` must be positive; ``class`` must be 0
    or 1. Every invalid row is listed in the error, by its line number in the file (the header
    is line 1).

    Raises
    ------
    SourceImportError
        The file is missing, lacks a column, or has invalid values.
    """
    csv_path = Path(path)
    if not csv_path.is_file():
        raise SourceImportError(f"LUNA16 CSV file not found: {csv_path}")
    table = pd.read_csv(csv_path, dtype={"seriesuid": str})
    absent = [column for column in columns if column not in table.columns]
    if absent:
        raise SourceImportError(
            f"{csv_path}: missing column(s) {absent}; a LUNA16 file has the header {','.join(columns)}"
        )
    table = table[list(columns)].copy()
    problems: list[str] = []
    for column in columns[1:]:
        values = pd.to_numeric(table[column], errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=np.float64, na_value=np.nan))
        if column == "diameter_mm":
            bad |= values.to_numpy(dtype=np.float64, na_value=np.nan) <= 0
        if column == "class":
            bad |= ~values.isin([0, 1]).to_numpy()
        for index in np.flatnonzero(bad)[:10]:
            problems.append(f"line {index + 2}, column {column}: invalid value {table[column].iloc[index]!r}")
        table[column] = values
    empty_uid = table["seriesuid"].isna() | (table["seriesuid"].astype(str).str.strip() == "")
    for index in np.flatnonzero(empty_uid.to_numpy())[:10]:
        problems.append(f"line {index + 2}, column seriesuid: empty series UID")
    if problems:
        raise SourceImportError(
            f"{csv_path}: invalid rows (first {len(problems)} shown):\n  " + "\n  ".join(problems)
            + "\nFix these rows; coordinates are world LPS mm and diameters positive mm"
        )
    table["seriesuid"] = table["seriesuid"].astype(str).str.strip()
    if "class" in table.columns:
        table["class"] = table["class"].astype(int)
    return table


def _find_metaimages(images_dir: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(images_dir.rglob("*.mhd")):
        if path.stem in found:
            raise SourceImportError(
                f"series {path.stem} has two MetaImage headers: {found[path.stem]} and {path}; keep one"
            )
        found[path.stem] = path
    return found


def _write_metaimage_as_nifti(header_path: Path, release_root: Path, patient_id: str, series_id: str) -> None:
    from tunisian_lung.io.metaimage import read_metaimage
    from tunisian_lung.io.nifti import write_nifti

    volume = read_metaimage(header_path)
    target = layout.series_nifti_path(release_root, patient_id, series_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_nifti(volume, target)


def import_luna16(
    annotations_csv: str | Path,
    images_dir: str | Path,
    out: str | Path,
    *,
    candidates_csv: str | Path | None = None,
    missing: Literal["report", "error"] = "report",
    include_unannotated: bool = False,
    name: str = "LUNA16",
    version: str = "1.0",
    overwrite: bool = False,
    progress: bool = False,
) -> Luna16ImportReport:
    """Import LUNA16 annotations and the matching volumes into a new release folder.

    Parameters
    ----------
    annotations_csv:
        LUNA16 ``annotations.csv``. Its rows become ``annotations.csv`` rows of the release
        (``class`` and ``stage`` empty, since LUNA16 has no malignancy or stage).
    images_dir:
        Folder searched recursively for ``<seriesuid>.mhd`` files and for DICOM series.
    out:
        The release folder to create; written atomically.
    candidates_csv:
        Optional LUNA16 ``candidates.csv``. Rows of the imported series are written to the
        release's ``candidates.csv`` (``patient_id, series_id, coordX, coordY, coordZ, class``).
        Series named there without an annotation get a ``nodule_present = 0`` row.
    missing:
        ``"report"`` (default) imports what is found and lists each series named in a CSV but
        absent from ``images_dir`` in ``report.missing_series``, in ``missing_series.csv`` of
        the release and in a warning log line. ``"error"`` raises instead.
    include_unannotated:
        Also import CT series found on disk but named in neither CSV, as nodule-free scans.
        Off by default, because a folder of LIDC-IDRI DICOM also contains series LUNA16 excluded.
    progress:
        Show a tqdm bar on stderr while the DICOM headers are read.

    Notes
    -----
    Patient ids: a DICOM series keeps its PatientID. A MetaImage file has no patient tag, so its
    patient id is the series UID.

    Raises
    ------
    SourceImportError
        A CSV file is invalid, the images folder is missing, no series of the CSV is on disk, or
        ``missing="error"`` and a series is missing.
    """
    if missing not in ("report", "error"):
        raise SourceImportError(f"missing must be 'report' or 'error', got {missing!r}")
    images_root = Path(images_dir)
    if not images_root.is_dir():
        raise SourceImportError(f"LUNA16 images folder not found: {images_root}")
    annotations = read_luna16_csv(annotations_csv, ANNOTATION_CSV_COLUMNS)
    candidates = read_luna16_csv(candidates_csv, CANDIDATE_CSV_COLUMNS) if candidates_csv is not None else None

    metaimages = _find_metaimages(images_root)
    dicom_series = scan_dicom_headers(images_root, skip_suffixes=_NOT_DICOM_SUFFIXES, progress=progress)
    named = set(annotations["seriesuid"])
    if candidates is not None:
        named |= set(candidates["seriesuid"])
    on_disk = set(metaimages) | set(dicom_series)

    report = Luna16ImportReport(out=Path(out))
    report.missing_series = sorted(named - on_disk)
    unannotated_ct = sorted(
        uid for uid in on_disk - named if uid in metaimages or dicom_series[uid].modality in ("CT", "")
    )
    report.series_not_in_csv = [] if include_unannotated else unannotated_ct
    to_import = sorted((named & on_disk) | (set(unannotated_ct) if include_unannotated else set()))
    if report.missing_series:
        logger.warning(
            "%d of %d series named in the LUNA16 CSV files are not under %s (first: %s)",
            len(report.missing_series),
            len(named),
            images_root,
            report.missing_series[0],
        )
        if missing == "error":
            raise SourceImportError(
                f"{len(report.missing_series)} series named in the LUNA16 CSV files are not under {images_root}, "
                f"for example {report.missing_series[:3]}. Add them to the images folder, or import without "
                "missing='error' (--fail-on-missing) to get the list in missing_series.csv"
            )
    if not to_import:
        raise SourceImportError(
            f"no series named in {annotations_csv} was found under {images_root} as <seriesuid>.mhd or as a "
            "DICOM series; check the images folder"
        )

    rows: list[dict[str, Any]] = []
    candidate_tables: list[pd.DataFrame] = []
    with ReleaseBuilder(out, overwrite=overwrite) as builder:
        for uid in to_import:
            check_identifier(uid, "seriesuid", str(annotations_csv))
            if uid in dicom_series:
                series: SeriesHeaders = dicom_series[uid]
                patient_id = check_identifier(series.patient_id, "PatientID", f"DICOM series {uid}")
                builder.copy_series(series.files, patient_id, uid)
                report.source_format[uid] = "dicom"
                if uid in metaimages:
                    logger.info("series %s is both DICOM and %s, so the DICOM files are used", uid, metaimages[uid])
            else:
                # NOTE: LUNA16 MetaImage files carry no patient tag, so two scans of one LIDC
                # patient become two patients here, and a patient-level split can leak.
                patient_id = uid
                _write_metaimage_as_nifti(metaimages[uid], builder.root, patient_id, uid)
                report.source_format[uid] = "metaimage"
            nodules = annotations[annotations["seriesuid"] == uid]
            for nodule in nodules.itertuples(index=False):
                rows.append(
                    {
                        "patient_id": patient_id,
                        "series_id": uid,
                        "coordX": nodule.coordX,
                        "coordY": nodule.coordY,
                        "coordZ": nodule.coordZ,
                        "diameter_mm": nodule.diameter_mm,
                        "class": None,
                        "nodule_present": 1,
                        "stage": None,
                    }
                )
            if nodules.empty:
                rows.append({"patient_id": patient_id, "series_id": uid, "nodule_present": 0})
            if candidates is not None:
                selected = candidates[candidates["seriesuid"] == uid].drop(columns="seriesuid")
                selected.insert(0, "series_id", uid)
                selected.insert(0, "patient_id", patient_id)
                candidate_tables.append(selected)
            report.series_imported.append(uid)
        report.nodules_in_annotations = sum(1 for row in rows if row["nodule_present"] == 1)

        builder.write_table(layout.ANNOTATIONS_NAME, annotation_table(rows))
        if candidates is not None:
            table = pd.concat(candidate_tables, ignore_index=True) if candidate_tables else pd.DataFrame()
            builder.write_table(CANDIDATES_NAME, table)
            report.candidates_written = len(table)
        if report.missing_series:
            builder.write_table(MISSING_SERIES_NAME, _missing_table(report.missing_series, annotations, candidates))
        finish_release(
            builder.root,
            name=name,
            version=version,
            license=CC_BY_3,
            citation=f"{LUNA16_CITATION} {LIDC_IDRI_CITATION}",
            source={
                "collection": "LUNA16",
                "importer": "tunisian_lung.importers.luna16",
                "annotations_csv": str(annotations_csv),
                "candidates_csv": None if candidates_csv is None else str(candidates_csv),
                "images_dir": str(images_root),
                "missing_series": len(report.missing_series),
            },
        )
        builder.commit()
    logger.info(
        "imported %d LUNA16 series with %d nodules into %s; %d series missing on disk",
        len(report.series_imported),
        report.nodules_in_annotations,
        report.out,
        len(report.missing_series),
    )
    return report


def _missing_table(uids: list[str], annotations: pd.DataFrame, candidates: pd.DataFrame | None) -> pd.DataFrame:
    annotation_counts = annotations["seriesuid"].value_counts()
    candidate_counts = candidates["seriesuid"].value_counts() if candidates is not None else pd.Series(dtype=int)
    return pd.DataFrame(
        {
            "seriesuid": uids,
            "annotation_rows": [int(annotation_counts.get(uid, 0)) for uid in uids],
            "candidate_rows": [int(candidate_counts.get(uid, 0)) for uid in uids],
        }
    )
