"""Image quality checks run on every series of a release before it is published.

Each check returns :class:`~tunisian_lung.errors.ValidationIssue` records:

* the series cannot be read as a regular volume (slice gaps, varying slice spacing, mixed
  orientation), from the geometry errors of :func:`tunisian_lung.io.dicom.load_series`;
* the volume is empty or constant;
* air is far from -1000 HU (a wrong rescale slope or intercept), a warning;
* an annotated nodule centre lies outside its volume (world LPS mm annotations only);
* the same pixel data occurs under two patients, which would put one scan on both sides of a
  patient-level split.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tunisian_lung.errors import SeriesGeometryError, TunisianLungError, ValidationIssue
from tunisian_lung.io.volume import Volume

logger = logging.getLogger(__name__)

#: Voxels below this value are treated as outside-field padding and ignored by the air check.
PADDING_BELOW_HU = -1500.0
#: The 2nd percentile of a chest CT must lie within this distance of -1000 HU (air).
AIR_TOLERANCE_HU = 150.0


@dataclass(frozen=True)
class NoduleCentre:
    """One annotated nodule centre to check, in world LPS millimetres ``(x, y, z)``."""

    series_id: str
    centre_xyz_mm: tuple[float, float, float]
    csv_line: int | None


def load_series_checked(
    folder: Path, series_id: str, *, name: str | None = None
) -> tuple[Volume | None, list[ValidationIssue]]:
    """Load one series; return ``(None, [issue])`` when it is not a readable regular volume.

    ``name`` is the folder named in issues (default ``folder``), such as a release-relative path.
    """
    from tunisian_lung.io.dicom import load_series

    where = f"series {series_id}"
    try:
        return load_series(folder), []
    except SeriesGeometryError as error:
        return None, [
            ValidationIssue(
                name or str(folder), None, None, series_id, "series_geometry",
                f"{where} is not a regular volume: {error}",
                "remove the stray slices or split the series in the raw export",
            )
        ]
    except TunisianLungError as error:
        return None, [
            ValidationIssue(
                name or str(folder), None, None, series_id, "series_readable",
                f"{where} cannot be read as a CT volume: {error}",
                "check the files of this series in the raw export",
            )
        ]


def check_volume(
    volume: Volume,
    series_id: str,
    nodules: Iterable[NoduleCentre] = (),
    *,
    folder: Path,
    file: str,
) -> list[ValidationIssue]:
    """Check a loaded series: not constant, air near -1000 HU, nodule centres inside.

    ``folder`` names the series in issues; ``file`` is the annotation file named in nodule
    issues.
    """
    where = f"series {series_id}"
    issues: list[ValidationIssue] = []
    array = volume.array
    if array.size == 0 or float(array.min()) == float(array.max()):
        value = None if array.size == 0 else float(array.flat[0])
        issues.append(
            ValidationIssue(
                str(folder), None, None, value, "volume_not_constant",
                f"{where} is empty or constant",
                "check the export of this series; a constant volume holds no image",
            )
        )
        return issues
    body = array[array > PADDING_BELOW_HU]
    if body.size:
        air = float(np.percentile(body, 2))
        if abs(air + 1000.0) > AIR_TOLERANCE_HU:
            issues.append(
                ValidationIssue(
                    str(folder), None, None, round(air, 1), "air_near_minus_1000",
                    f"{where}: the 2nd percentile of the voxel values is {air:.0f} HU, far from air (-1000 HU)",
                    "check RescaleSlope and RescaleIntercept; the values may not be Hounsfield units",
                    severity="warning",
                )
            )
    for nodule in nodules:
        if not bool(volume.contains_world(np.asarray(nodule.centre_xyz_mm))):
            issues.append(
                ValidationIssue(
                    file, nodule.csv_line, "coordX", nodule.centre_xyz_mm, "nodule_inside_volume",
                    f"nodule centre {nodule.centre_xyz_mm} (world LPS mm) lies outside {where}",
                    "check the coordinate space (world LPS mm) and the series_id of this row",
                )
            )
    return issues


def duplicate_pixel_issues(pixel_hashes: Mapping[str, Iterable[tuple[str, str]]]) -> list[ValidationIssue]:
    """Report pixel data shared by two or more patients.

    ``pixel_hashes`` maps the sha256 of a slice's pixel bytes to ``(patient_id, file)`` pairs.
    Slices whose pixels are all one value are left out by the caller (padding slices may match).
    """
    issues: list[ValidationIssue] = []
    by_pair: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for digest, owners in pixel_hashes.items():
        owners = list(owners)
        patients = tuple(sorted({patient for patient, _ in owners}))
        if len(patients) > 1:
            by_pair[patients].append(owners[0][1])
    for patients, files in sorted(by_pair.items()):
        issues.append(
            ValidationIssue(
                files[0], None, None, ", ".join(patients), "pixel_data_unique_per_patient",
                f"{len(files)} slice(s) have the same pixel data under patients {', '.join(patients)}",
                "remove the duplicated scan or merge the patients; otherwise one scan can fall in both training and test splits",
            )
        )
    return issues


def pixel_digest(pixel_bytes: bytes) -> str | None:
    """Return the sha256 of a slice's pixel bytes, or None when every byte pair is equal."""
    import hashlib

    if not pixel_bytes:
        return None
    view = np.frombuffer(pixel_bytes[: len(pixel_bytes) // 2 * 2], dtype=np.uint16)
    if view.size and bool(np.all(view == view[0])):
        return None
    return hashlib.sha256(pixel_bytes).hexdigest()
