"""Deep validation of a dataset against its images (``tunisian-lung validate --deep``).

For every series of the dataset this module checks that its images exist on disk and reads the
series geometry from the DICOM headers (or the NIfTI header). It then checks that every annotated
nodule centre lies inside the volume in the dataset's declared coordinate space, and samples a
few slices to check that the intensities are plausible CT in Hounsfield units.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from tunisian_lung import layout
from tunisian_lung.errors import TunisianLungError, ValidationIssue
from tunisian_lung.io.volume import Volume

if TYPE_CHECKING:
    from tunisian_lung.io.dicom import SeriesInfo

__all__ = ["deep_validate", "PlausibilityThresholds"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlausibilityThresholds:
    """Limits of the plausible-CT check, in Hounsfield units.

    A chest CT slice through the body contains air (outside the patient and in the lungs) near
    -1000 HU. The check samples ``slices_sampled`` slices spread over the series and requires
    that at least ``min_air_fraction`` of their voxels lie in ``air_range_hu`` and that the
    standard deviation of the sampled voxels exceeds ``min_std_hu`` (the volume is not constant).
    """

    air_range_hu: tuple[float, float] = (-1100.0, -900.0)
    min_air_fraction: float = 0.01
    min_std_hu: float = 1.0
    slices_sampled: int = 3


def _issue(file: str | None, line: int | None, value: Any, rule: str, message: str, fix: str, column: str | None = None) -> ValidationIssue:
    return ValidationIssue(file=file, line=line, column=column, value=value, rule=rule, message=message, fix=fix)


def _first_line(nodules: Sequence[Any]) -> int | None:
    lines = [int(nodule.csv_line) for nodule in nodules if getattr(nodule, "csv_line", None) is not None]
    return min(lines) if lines else None


def _index_folder(dicom_dir: Path, index_cache: bool | str | os.PathLike[str] | None) -> list[SeriesInfo]:
    """Index a DICOM folder, reusing or storing its header index as :func:`deep_validate` documents."""
    from tunisian_lung.io import _index_cache
    from tunisian_lung.io.dicom import SeriesInfo, index_dicom_folder

    if index_cache is not None:
        return index_dicom_folder(dicom_dir, index_cache=index_cache)
    folder = Path(dicom_dir)
    if folder.is_dir():
        fingerprint = _index_cache.folder_fingerprint(folder)
        stored = _index_cache.load_entry(
            folder, use_dicomdir=True, fingerprint=fingerprint, cache_dir=_index_cache.index_cache_dir()
        )
        if stored is not None:
            return [SeriesInfo.from_dict(item) for item in stored]
    return index_dicom_folder(folder)


def _open_header(series: Any, index_cache: bool | str | os.PathLike[str] | None) -> tuple[Volume, str]:
    """Return a lazy volume of the series (header read, pixels not) and the path it came from.

    The volume of a DICOM series without problems is built from its index record, so its headers
    are read once, or not at all when the stored index of an unchanged folder is reused. A series
    whose index records a problem is read again by :func:`~tunisian_lung.io.dicom.load_series`,
    only to raise its error, which names the slice files involved.
    """
    from tunisian_lung.io.dicom import load_series
    from tunisian_lung.io.nifti import read_nifti

    dicom_dir = getattr(series, "dicom_dir", None)
    if dicom_dir is not None:
        infos = [info for info in _index_folder(dicom_dir, index_cache) if not info.is_localizer]
        matching = [info for info in infos if info.series_uid == series.series_id]
        if len(matching) == 1:
            chosen = matching[0]
        elif len(infos) == 1:
            chosen = infos[0]
        else:
            uids = ", ".join(sorted({info.series_uid for info in infos})) or "none"
            raise TunisianLungError(
                f"{dicom_dir} contains {len(infos)} image series ({uids}) and none has SeriesInstanceUID "
                f"{series.series_id}. Keep one series per folder, named by its SeriesInstanceUID"
            )
        volume = _volume_from_index(chosen)
        if volume is None:
            volume = load_series(chosen, lazy=True)
        return volume, str(dicom_dir)
    nifti_path = getattr(series, "nifti_path", None)
    assert nifti_path is not None
    return read_nifti(nifti_path, lazy=True), str(nifti_path)


def _volume_from_index(info: SeriesInfo) -> Volume | None:
    """Build the lazy volume of an indexed series, or return ``None`` when loading it would fail.

    The geometry equals that of ``load_series(info, lazy=True)`` with its default keywords,
    because both sort the slices along the normal and measure the stack the same way. The index
    lists in ``issues`` every gap, duplicate, non-uniform step, tilt and mixed image size that
    makes ``load_series`` raise. Modality, slice count and geometry are checked here.
    """
    from tunisian_lung.io.dicom import load_series

    if info.issues or info.modality != "CT" or info.num_slices < 2:
        return None
    if info.spacing is None or info.origin is None or info.direction is None:
        return None
    one_file_per_slice = all(frame is None for frame in info.frames)
    metadata = {
        "patient_id": info.patient_id,
        "series_uid": info.series_uid,
        "modality": info.modality,
        "slice_files": [str(path) for path in info.files] if one_file_per_slice else None,
        "source": f"series {info.series_uid}",
    }

    # NOTE: samples per pixel is not in the index, so a colour series is reported only when its
    # sampled slices are read, as pixel data that cannot be read.
    def load_pixels() -> np.ndarray:
        return load_series(info).array

    direction = np.asarray(info.direction, dtype=np.float64).reshape(3, 3)
    return Volume(None, spacing=info.spacing, origin=info.origin, direction=direction, loader=load_pixels, shape=info.shape, metadata=metadata)


def _sample_slices(volume: Volume, source: str, count: int) -> np.ndarray:
    """Read ``count`` slices spread over the volume without loading the whole series when possible."""
    depth = volume.shape[0]
    picks = sorted({int(round(q * (depth - 1))) for q in np.linspace(0.25, 0.75, count)})
    files = getattr(volume, "metadata", {}).get("slice_files")
    if files and Path(source).is_dir():
        from tunisian_lung.io.dicom import read_frames

        return np.concatenate([read_frames(files[index]).astype(np.float32) for index in picks])
    return np.asarray(volume.array[picks], dtype=np.float32)


def _check_nodules(volume: Volume, nodules: Sequence[Any], coordinate_space: str, annotations_file: str) -> list[ValidationIssue]:
    issues: list[ValidationIssue] = []
    depth, rows, columns = volume.shape
    for nodule in nodules:
        centre = np.asarray(nodule.coord_xyz_mm, dtype=np.float64)
        if coordinate_space == "voxel":
            index_xyz = centre
            upper = np.array([columns, rows, depth], dtype=np.float64) - 0.5
            inside = bool(np.all(index_xyz >= -0.5) and np.all(index_xyz <= upper))
            where = f"voxel (column, row, slice) {tuple(round(float(v), 2) for v in index_xyz)}"
        else:
            inside = bool(volume.contains_world(centre))
            z, y, x = volume.world_to_voxel(centre)
            where = f"voxel (column, row, slice) ({x:.2f}, {y:.2f}, {z:.2f})"
        if inside:
            continue
        issues.append(
            _issue(
                annotations_file,
                int(nodule.csv_line),
                tuple(float(v) for v in centre),
                "nodule_inside_volume",
                f"nodule centre of series {nodule.series_id} in coordinate space {coordinate_space!r} maps to "
                f"{where}, outside the volume of shape (slices, rows, columns) {volume.shape}",
                "check coordX/coordY/coordZ and the series_id of this row, and that dataset.json declares the "
                "coordinate_space the coordinates are written in",
            )
        )
    return issues


def _check_intensities(sample: np.ndarray, source: str, series_id: str, line: int | None, thresholds: PlausibilityThresholds) -> list[ValidationIssue]:
    issues: list[ValidationIssue] = []
    std = float(sample.std())
    if std <= thresholds.min_std_hu:
        issues.append(
            _issue(
                source, line, round(float(sample.mean()), 1), "ct_not_constant",
                f"series {series_id}: the sampled slices are constant (standard deviation {std:.3g} HU)",
                "re-export the series; the pixel data are blank or were not decoded",
            )
        )
        return issues
    low, high = thresholds.air_range_hu
    air_fraction = float(np.mean((sample >= low) & (sample <= high)))
    if air_fraction < thresholds.min_air_fraction:
        issues.append(
            _issue(
                source, line, round(float(np.median(sample)), 1), "ct_air_present",
                f"series {series_id}: only {air_fraction:.2%} of the sampled voxels lie in the air range "
                f"{low:g}..{high:g} HU (median shown), so the values do not look like chest CT in Hounsfield units",
                "check RescaleSlope/RescaleIntercept of the files, or that the series is a chest CT",
            )
        )
    return issues


def _series_records(dataset: Any) -> list[Any]:
    records = dataset.series
    return list(records.values()) if hasattr(records, "values") else list(records)


def deep_validate(
    dataset: Any,
    *,
    progress: bool = False,
    thresholds: PlausibilityThresholds = PlausibilityThresholds(),
    index_cache: bool | str | os.PathLike[str] | None = None,
) -> list[ValidationIssue]:
    """Check a dataset's annotations against its images and return every issue found.

    Parameters
    ----------
    dataset:
        A :class:`~tunisian_lung.dataset.TunisianLungDataset` (or any object with ``series``
        records carrying ``patient_id``, ``series_id``, ``dicom_dir``, ``nifti_path``,
        ``nodules`` carrying ``series_id``, ``coord_xyz_mm``, ``csv_line``, and
        ``coordinate_space``).
    progress:
        Show a tqdm bar over the series.
    thresholds:
        Limits of the plausible-CT check.
    index_cache:
        Use of the stored header index of each DICOM folder. ``None`` (default) reuses the index
        stored in the user cache directory (``$TUNISIAN_LUNG_CACHE`` overrides it) when the
        folder is unchanged, and stores nothing, so validating a temporary folder leaves no entry
        behind. ``True`` or a folder also stores the index, as in
        :func:`~tunisian_lung.io.dicom.index_dicom_folder`. ``False`` reads every header.

    Returns
    -------
    list of ValidationIssue
        Empty when every check passed. Issues about a nodule name its ``annotations.csv`` line;
        issues about a series name the first line of that series.

    Notes
    -----
    The headers of a DICOM series without problems are read once, or not at all when the stored
    index of an unchanged folder is reused. A series whose headers show a problem is read a
    second time, so that its issue names the files involved. Pixel data are read only for ``thresholds.slices_sampled`` slices per
    DICOM series (a NIfTI volume is read whole).
    """
    coordinate_space = str(getattr(dataset, "coordinate_space", layout.DEFAULT_COORDINATE_SPACE))
    annotations_file = layout.ANNOTATIONS_NAME
    nodules_by_series: dict[str, list[Any]] = {}
    for nodule in getattr(dataset, "nodules", ()):
        nodules_by_series.setdefault(str(nodule.series_id), []).append(nodule)

    records = _series_records(dataset)
    iterator: Iterable[Any] = records
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(records, desc="validate --deep", unit="series")

    issues: list[ValidationIssue] = []
    for series in iterator:
        series_id = str(series.series_id)
        nodules = nodules_by_series.get(series_id, [])
        line = _first_line(nodules)
        if getattr(series, "dicom_dir", None) is None and getattr(series, "nifti_path", None) is None:
            root = getattr(dataset, "root", ".")
            issues.append(
                _issue(
                    annotations_file, line, series_id, "series_on_disk",
                    f"series {series_id} of patient {series.patient_id} has no images: neither "
                    f"{layout.series_dicom_dir(root, series.patient_id, series_id)} nor "
                    f"{layout.series_nifti_path(root, series.patient_id, series_id)} exists",
                    "add the series' DICOM folder, or correct the patient_id/series_id of the rows",
                    column="series_id",
                )
            )
            continue
        try:
            volume, source = _open_header(series, index_cache)
        except TunisianLungError as error:
            issues.append(
                _issue(
                    str(series.dicom_dir or series.nifti_path), line, series_id, "series_readable",
                    f"series {series_id} cannot be read as a CT volume: {error}",
                    "fix or re-export the series' files; the message above names the file and the problem",
                )
            )
            continue
        issues.extend(_check_nodules(volume, nodules, coordinate_space, annotations_file))
        try:
            sample = _sample_slices(volume, source, thresholds.slices_sampled)
        except TunisianLungError as error:
            issues.append(
                _issue(
                    source, line, series_id, "series_readable",
                    f"series {series_id}: pixel data cannot be read: {error}",
                    "fix or re-export the series' files",
                )
            )
            continue
        issues.extend(_check_intensities(sample, source, series_id, line, thresholds))
    logger.info("deep validation of %d series: %d issue(s)", len(records), len(issues))
    return issues
