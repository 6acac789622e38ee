"""Scan and nodule labels for the training targets, read from a dataset's records.

This module needs no torch, so :meth:`tunisian_lung.splits.DatasetSplit.to_pandas` and
``to_datalist`` stay cheap to import. The torch datasets of :mod:`tunisian_lung.torch_data`
build their samples from the records returned here.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from tunisian_lung.errors import ConfigError, LabelError

logger = logging.getLogger(__name__)

#: Scan-level targets of :class:`~tunisian_lung.torch_data.ScanDataset`.
SCAN_TARGETS = ("cancer", "malignant_nodule", "stage")
#: Class index of each stage for ``target="stage"``.
STAGE_INDEX = {"I": 0, "II": 1, "III": 2, "IV": 3}
#: Class names of each target, index = label.
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "cancer": ("healthy", "cancer"),
    "malignant_nodule": ("no malignant nodule", "malignant nodule"),
    "stage": ("I", "II", "III", "IV"),
    "nodule": ("benign", "malignant"),
}



def is_missing(value: Any) -> bool:
    """Return whether a table value is empty (``None``, NaN or ``pd.NA``)."""
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def image_path(record: Any) -> Path | None:
    """Return a series' NIfTI file when it exists, else its DICOM folder, else ``None``."""
    nifti = getattr(record, "nifti_path", None)
    if nifti is not None and Path(nifti).exists():
        return Path(nifti)
    dicom = getattr(record, "dicom_dir", None)
    if dicom is not None:
        return Path(dicom)
    return Path(nifti) if nifti is not None else None


def _malignant_label(series_id: str, malignant: set[str], unlabeled_series: set[str]) -> int | None:
    if series_id in malignant:
        return 1
    return None if series_id in unlabeled_series else 0


def series_label_table(dataset: Any, series: Sequence[Any]) -> pd.DataFrame:
    """Return one row per series with patient attributes, every scan label and file paths.

    Columns:

    * ``patient_id``, ``series_id``, ``health_status``, ``histology``, ``stage``.
    * ``cancer``: 1 cancer, 0 healthy, missing when the health status is unknown.
    * ``stage_index``: 0..3 for stages I..IV, else missing.
    * ``nodules``: number of annotated nodules of the series.
    * ``malignant_nodule``: 1 if any nodule is malignant. Otherwise 0, or missing when some
      nodule has no class.
    * ``dicom_dir``, ``nifti_path``: strings, or missing.

    The label columns use the nullable ``Int64`` dtype.
    """
    nodules = Counter(str(record.series_id) for record in dataset.nodules)
    malignant = {str(record.series_id) for record in dataset.nodules if record.label == 1}
    unlabeled_series = {str(record.series_id) for record in dataset.nodules if record.label is None}
    rows = []
    for record in series:
        patient = dataset.patients[record.patient_id]
        status = getattr(patient, "health_status", None)
        stage = getattr(patient, "stage", None)
        rows.append(
            {
                "patient_id": str(record.patient_id),
                "series_id": str(record.series_id),
                "health_status": None if is_missing(status) else status,
                "histology": None if is_missing(getattr(patient, "histology", None)) else patient.histology,
                "stage": None if is_missing(stage) else stage,
                "cancer": {"cancer": 1, "healthy": 0}.get(str(status)) if not is_missing(status) else None,
                "stage_index": STAGE_INDEX.get(str(stage)) if not is_missing(stage) else None,
                "nodules": nodules.get(str(record.series_id), 0),
                "malignant_nodule": _malignant_label(str(record.series_id), malignant, unlabeled_series),
                "dicom_dir": None if record.dicom_dir is None else str(record.dicom_dir),
                "nifti_path": None if record.nifti_path is None else str(record.nifti_path),
            }
        )
    frame = pd.DataFrame(rows, columns=[
        "patient_id", "series_id", "health_status", "histology", "stage", "cancer",
        "stage_index", "nodules", "malignant_nodule", "dicom_dir", "nifti_path",
    ])
    for column in ("cancer", "stage_index", "malignant_nodule"):
        frame[column] = frame[column].astype("Int64")
    return frame


@dataclass(frozen=True)
class ScanRecord:
    """One labelled series: ids, class label and image path (NIfTI file or DICOM folder)."""

    patient_id: str
    series_id: str
    label: int
    image_path: Path | None


@dataclass(frozen=True)
class NoduleRecord:
    """One annotated nodule: ids, world centre (LPS, mm, ``(x, y, z)``), diameter in mm, label."""

    patient_id: str
    series_id: str
    center_xyz_mm: tuple[float, float, float]
    diameter_mm: float
    label: int
    image_path: Path | None


def check_target(target: str) -> None:
    """Raise :class:`ConfigError` unless ``target`` is one of :data:`SCAN_TARGETS`."""
    if target not in SCAN_TARGETS:
        raise ConfigError(f"unknown scan target {target!r}; choose one of {list(SCAN_TARGETS)}")


def scan_records(
    dataset: Any, series: Sequence[Any], *, target: str = "cancer", exclude_unlabeled: bool = False
) -> list[ScanRecord]:
    """Return one :class:`ScanRecord` per series with its label for ``target``.

    ``target="cancer"`` labels cancer 1 and healthy 0; ``"malignant_nodule"`` labels 1 when the
    series has an annotated malignant nodule; ``"stage"`` labels stages I..IV as 0..3.

    Raises
    ------
    LabelError
        If some series have no label for ``target`` (unknown health status, or no stage such as
        healthy patients for ``"stage"``) and ``exclude_unlabeled`` is false. The message
        names the series; pass ``exclude_unlabeled=True`` to drop them.
    """
    check_target(target)
    table = series_label_table(dataset, series)
    column = {"cancer": "cancer", "malignant_nodule": "malignant_nodule", "stage": "stage_index"}[target]
    unlabeled = table[table[column].isna()]
    if len(unlabeled) and not exclude_unlabeled:
        shown = ", ".join(
            f"{row.series_id} (patient {row.patient_id}, health_status {row.health_status}, stage {row.stage})"
            for row in unlabeled.head(10).itertuples()
        )
        more = f" and {len(unlabeled) - 10} more" if len(unlabeled) > 10 else ""
        reason = "healthy and unstaged patients have no stage" if target == "stage" else "their health status is unknown"
        raise LabelError(
            f"{len(unlabeled)} series have no {target!r} label because {reason}: {shown}{more}. "
            "Pass exclude_unlabeled=True to leave them out, or fill in clinical.csv"
        )
    if len(unlabeled):
        logger.info("left out %d series without a %r label", len(unlabeled), target)
    labelled = table[table[column].notna()]
    paths = {str(record.series_id): image_path(record) for record in series}
    return [
        ScanRecord(
            patient_id=row.patient_id,
            series_id=row.series_id,
            label=int(getattr(row, column)),
            image_path=paths[row.series_id],
        )
        for row in labelled.itertuples()
    ]


def nodule_records(dataset: Any, nodules: Sequence[Any], *, exclude_unlabeled: bool = False) -> list[NoduleRecord]:
    """Return one :class:`NoduleRecord` per annotated nodule, in the given order.

    Raises
    ------
    LabelError
        If a nodule has no benign/malignant label and ``exclude_unlabeled`` is false.
    """
    paths = {str(record.series_id): image_path(record) for record in dataset.series}
    missing = [nodule for nodule in nodules if nodule.label is None]
    if missing and not exclude_unlabeled:
        shown = ", ".join(
            f"series {nodule.series_id} line {getattr(nodule, 'csv_line', '?')}" for nodule in missing[:10]
        )
        raise LabelError(
            f"{len(missing)} nodules have no benign/malignant class: {shown}. "
            "Fill in the class column of annotations.csv or pass exclude_unlabeled=True to leave them out"
        )
    nodules = [nodule for nodule in nodules if nodule.label is not None]
    return [
        NoduleRecord(
            patient_id=str(nodule.patient_id),
            series_id=str(nodule.series_id),
            center_xyz_mm=tuple(float(value) for value in nodule.coord_xyz_mm),  # type: ignore[arg-type]
            diameter_mm=float(nodule.diameter_mm),
            label=int(nodule.label),
            image_path=paths.get(str(nodule.series_id)),
        )
        for nodule in nodules
    ]
