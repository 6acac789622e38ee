"""Header-only scan of DICOM folders for the importers.

The importers need, per series, the DICOM PatientID, every file and, for LIDC contours, each
slice's SOPInstanceUID with its in-plane geometry. Pixel data are never read here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from tunisian_lung.errors import SourceImportError

logger = logging.getLogger(__name__)

_TAGS = [
    "PatientID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "Modality",
]


@dataclass(frozen=True)
class SliceHeader:
    """Geometry of one image slice: world LPS mm, ``(x, y, z)`` order."""

    path: Path
    sop_instance_uid: str
    position: tuple[float, float, float]
    row_direction: tuple[float, float, float]
    column_direction: tuple[float, float, float]
    row_spacing_mm: float
    column_spacing_mm: float

    def pixel_to_world(self, columns: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Map pixel centres (column, row; 0-based, may be fractional) of this slice to world points ``(N, 3)``.

        ``row_direction`` is the first ImageOrientationPatient triplet (the way column index
        grows) and ``row_spacing_mm`` the first PixelSpacing value (distance between rows).
        """
        columns = np.asarray(columns, dtype=np.float64).reshape(-1, 1)
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, 1)
        return (
            np.asarray(self.position)
            + columns * self.column_spacing_mm * np.asarray(self.row_direction)
            + rows * self.row_spacing_mm * np.asarray(self.column_direction)
        )


@dataclass
class SeriesHeaders:
    """Files and slice headers of one DICOM series found by :func:`scan_dicom_headers`."""

    series_uid: str
    patient_id: str
    modality: str = ""
    slices: list[SliceHeader] = field(default_factory=list)
    other_files: list[Path] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        """Every file of the series: image slices, then files without slice geometry."""
        return [header.path for header in self.slices] + list(self.other_files)

    def sorted_slices(self) -> list[SliceHeader]:
        """Return the image slices ordered by position along the slice normal."""
        if not self.slices:
            return []
        normal = np.cross(self.slices[0].row_direction, self.slices[0].column_direction)
        return sorted(self.slices, key=lambda header: float(np.dot(header.position, normal)))


def _floats(value: object, count: int) -> tuple[float, ...] | None:
    try:
        numbers = tuple(float(v) for v in value)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count else None


def scan_dicom_headers(
    folder: str | Path, *, skip_suffixes: tuple[str, ...] = (), progress: bool = False
) -> dict[str, SeriesHeaders]:
    """Scan a folder tree for DICOM files and group them by SeriesInstanceUID.

    Files whose lower-case suffix is in ``skip_suffixes`` are not opened. Files that are not
    DICOM (pydicom cannot parse them) and ``DICOMDIR`` files are skipped with a debug log line.
    Files without ImagePositionPatient, ImageOrientationPatient or PixelSpacing are kept in
    ``other_files`` of their series. ``progress=True`` shows a tqdm bar over the files on stderr.

    Raises
    ------
    SourceImportError
        The folder does not exist, or a series mixes PatientID values.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    root = Path(folder)
    if not root.is_dir():
        raise SourceImportError(f"DICOM folder not found: {root}")
    series: dict[str, SeriesHeaders] = {}
    paths: Iterable[Path] = sorted(p for p in root.rglob("*") if p.is_file())
    if progress:
        from tqdm import tqdm

        paths = tqdm(paths, desc="DICOM headers", unit="file")
    for path in paths:
        if path.name.upper() == "DICOMDIR" or path.suffix.lower() in skip_suffixes:
            continue
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_TAGS)
        except (InvalidDicomError, OSError, ValueError) as error:
            logger.debug("skipping %s: not a readable DICOM file (%s)", path, error)
            continue
        series_uid = str(dataset.get("SeriesInstanceUID", "") or "")
        if not series_uid:
            logger.debug("skipping %s: no SeriesInstanceUID", path)
            continue
        patient_id = str(dataset.get("PatientID", "") or "")
        modality = str(dataset.get("Modality", "") or "")
        entry = series.setdefault(
            series_uid, SeriesHeaders(series_uid=series_uid, patient_id=patient_id, modality=modality)
        )
        if entry.patient_id != patient_id:
            raise SourceImportError(
                f"series {series_uid} mixes PatientID {entry.patient_id!r} and {patient_id!r} ({path}); "
                "one series must belong to one patient"
            )
        position = _floats(dataset.get("ImagePositionPatient"), 3)
        orientation = _floats(dataset.get("ImageOrientationPatient"), 6)
        spacing = _floats(dataset.get("PixelSpacing"), 2)
        if position is None or orientation is None or spacing is None:
            entry.other_files.append(path)
            continue
        entry.slices.append(
            SliceHeader(
                path=path,
                sop_instance_uid=str(dataset.get("SOPInstanceUID", "") or ""),
                position=(position[0], position[1], position[2]),
                row_direction=(orientation[0], orientation[1], orientation[2]),
                column_direction=(orientation[3], orientation[4], orientation[5]),
                row_spacing_mm=spacing[0],
                column_spacing_mm=spacing[1],
            )
        )
    return series
