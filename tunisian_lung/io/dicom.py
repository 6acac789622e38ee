"""DICOM series discovery and loading with correct geometry and Hounsfield units.

Discovery (:func:`index_dicom_folder`) reads headers only, in a thread pool, from every file of
a folder tree whatever its name. It skips files that are not DICOM and DICOMDIR files. It groups
images into :class:`SeriesInfo` records by SeriesInstanceUID, then by FrameOfReferenceUID and
orientation, then by AcquisitionNumber where several acquisitions share slice positions.
Localizer images (ImageType ``LOCALIZER``) and secondary captures stored with the images are set
aside and listed in ``SeriesInfo.excluded``.

Loading (:func:`load_series`) orders slices by ImagePositionPatient projected on the slice
normal and checks that they form a regular grid: no missing slice, no duplicate position,
uniform spacing, no gantry tilt. It maps stored values to Hounsfield units with each slice's own
RescaleSlope and RescaleIntercept, or its Modality LUT. Each grid problem raises its own
exception unless a lenient keyword (``on_gap="resample"`` and so on) requests a correction.

Output dtype: ``int16`` when every slice's rescale maps integers to integers and every value
lies in the int16 range, else ``float32``. Volumes corrected by resampling are ``float32``.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar, Union

import numpy as np

from tunisian_lung.errors import (
    DicomError,
    InconsistentSlicesError,
    MultipleSeriesError,
    NotAVolumeError,
)
from tunisian_lung.io._dicom_headers import FrameHeader, frame_headers, is_directory_record_file, read_dataset
from tunisian_lung.io._dicom_pixels import DecodedSlice, decode_frames, make_slice, output_dtype, rescale_into
from tunisian_lung.io._slice_geometry import (
    DEFAULT_SPACING_RTOL,
    DuplicatePolicy,
    GapPolicy,
    NonUniformPolicy,
    StackGeometry,
    TiltPolicy,
    correct_tilt,
    find_problems,
    keep_first_of_duplicates,
    measure_stack,
    orientations_match,
    raise_for_problems,
    resample_along_normal,
    sort_order,
    spacing_tolerance_mm,
)
from tunisian_lung.io.volume import Volume

__all__ = ["SeriesInfo", "index_dicom_folder", "load_series", "read_frames"]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
_T = TypeVar("_T")
_R = TypeVar("_R")

#: Series listed at most in a MultipleSeriesError message.
_MAX_LISTED = 20

_POLICIES = {
    "on_gap": ("raise", "resample"),
    "on_nonuniform": ("raise", "resample"),
    "on_tilt": ("raise", "resample"),
    "on_duplicate": ("raise", "first"),
}


# --- series records ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeriesInfo:
    """Header summary of one image series, read without pixel data.

    Attributes
    ----------
    series_uid, study_uid, patient_id, frame_of_reference_uid, modality:
        DICOM identifiers and Modality of the series.
    files:
        One path per slice in slice order (ascending position along the slice normal). A
        multi-frame file appears once per frame; ``frames`` gives the 0-based frame numbers
        (``None`` for single-frame files).
    shape:
        ``(z, y, x)``: slices, rows, columns.
    spacing, origin, direction:
        Voxel size in mm along x, y, z. LPS position in mm of the first voxel. Direction matrix
        as 9 row-major values whose columns are the x, y and slice axes. All three are ``None``
        when the images carry no patient geometry (radiographs, secondary captures), and
        ``spacing`` is ``None`` for a single slice without SliceThickness.
    pixel_spacing:
        DICOM PixelSpacing (row spacing, column spacing) in mm.
    slice_thickness, kvp, tube_current:
        SliceThickness in mm, KVP in kV, XRayTubeCurrent in mA, from the first slice.
    acquisition_number:
        Set when a SeriesInstanceUID was split into several acquisitions.
    excluded:
        ``(path, reason)`` for each file of this SeriesInstanceUID set aside (localizers,
        secondary captures, images without pixel data).
    issues:
        Problems found in the headers that will make :func:`load_series` raise in strict mode
        (missing slices, duplicates, non-uniform spacing, tilt, mixed image sizes).
    """

    series_uid: str
    study_uid: str
    patient_id: str
    frame_of_reference_uid: str
    modality: str
    files: tuple[Path, ...]
    frames: tuple[int | None, ...]
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float] | None
    origin: tuple[float, float, float] | None
    direction: tuple[float, ...] | None
    manufacturer: str | None
    model: str | None
    slice_thickness: float | None
    kvp: float | None
    tube_current: float | None
    convolution_kernel: str | None
    pixel_spacing: tuple[float, float] | None
    acquisition_date: str | None
    series_description: str | None = None
    acquisition_number: int | None = None
    image_type: tuple[str, ...] = ()
    excluded: tuple[tuple[Path, str], ...] = ()
    issues: tuple[str, ...] = ()

    @property
    def num_slices(self) -> int:
        """Number of slices (``shape[0]``)."""
        return self.shape[0]

    @property
    def is_localizer(self) -> bool:
        """Whether every image of this series is a localizer."""
        return "LOCALIZER" in self.image_type

    def describe(self) -> str:
        """Describe the series in one line for listings and error messages."""
        acquisition = f", acquisition {self.acquisition_number}" if self.acquisition_number is not None else ""
        description = f" {self.series_description!r}" if self.series_description else ""
        kind = " localizer" if self.is_localizer else ""
        return f"{self.series_uid}{acquisition} ({self.modality}{kind}{description}, {self.num_slices} slice(s), shape {self.shape})"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SeriesInfo":
        """Rebuild a record from the output of :meth:`to_dict`."""

        def optional_tuple(key: str) -> Any:
            value = data.get(key)
            return None if value is None else tuple(value)

        return cls(
            series_uid=data["series_uid"],
            study_uid=data["study_uid"],
            patient_id=data["patient_id"],
            frame_of_reference_uid=data["frame_of_reference_uid"],
            modality=data["modality"],
            files=tuple(Path(path) for path in data["files"]),
            frames=tuple(data["frames"]),
            shape=(int(data["shape"][0]), int(data["shape"][1]), int(data["shape"][2])),
            spacing=optional_tuple("spacing"),
            origin=optional_tuple("origin"),
            direction=optional_tuple("direction"),
            manufacturer=data.get("manufacturer"),
            model=data.get("model"),
            slice_thickness=data.get("slice_thickness"),
            kvp=data.get("kvp"),
            tube_current=data.get("tube_current"),
            convolution_kernel=data.get("convolution_kernel"),
            pixel_spacing=optional_tuple("pixel_spacing"),
            acquisition_date=data.get("acquisition_date"),
            series_description=data.get("series_description"),
            acquisition_number=data.get("acquisition_number"),
            image_type=tuple(data.get("image_type", ())),
            excluded=tuple((Path(path), str(reason)) for path, reason in data.get("excluded", ())),
            issues=tuple(data.get("issues", ())),
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (paths as strings)."""
        return {
            "series_uid": self.series_uid,
            "study_uid": self.study_uid,
            "patient_id": self.patient_id,
            "frame_of_reference_uid": self.frame_of_reference_uid,
            "modality": self.modality,
            "files": [str(path) for path in self.files],
            "frames": list(self.frames),
            "shape": list(self.shape),
            "spacing": None if self.spacing is None else list(self.spacing),
            "origin": None if self.origin is None else list(self.origin),
            "direction": None if self.direction is None else list(self.direction),
            "manufacturer": self.manufacturer,
            "model": self.model,
            "slice_thickness": self.slice_thickness,
            "kvp": self.kvp,
            "tube_current": self.tube_current,
            "convolution_kernel": self.convolution_kernel,
            "pixel_spacing": None if self.pixel_spacing is None else list(self.pixel_spacing),
            "acquisition_date": self.acquisition_date,
            "series_description": self.series_description,
            "acquisition_number": self.acquisition_number,
            "image_type": list(self.image_type),
            "num_slices": self.num_slices,
            "excluded": [[str(path), reason] for path, reason in self.excluded],
            "issues": list(self.issues),
        }


@dataclass
class _Group:
    """Frames of one series candidate, before sorting."""

    headers: list[FrameHeader]
    excluded: list[tuple[Path, str]] = field(default_factory=list)
    split_by_acquisition: bool = False


@dataclass
class _FileRecord:
    """Headers and decoded slices of one file, as read by one worker."""

    path: Path
    headers: list[FrameHeader]
    slices: list[DecodedSlice] | None = None
    decode_error: str | None = None


# --- file discovery and parallel reading ---------------------------------------------------------


def _default_workers() -> int:
    return min(16, (os.cpu_count() or 1) * 2)


#: Default thread count of load_series. Parsing headers and converting pixels to HU runs mostly
#: in Python under the GIL. So on files in the page cache one thread was fastest for the 133-slice
#: LIDC-IDRI-0001 series on a 2-core machine: 0.21 s, against 0.26 s with 2 threads and 0.28 s
#: with 4 (benchmarks/bench_load.py). Threads pay off on slow or network storage.
LOAD_DEFAULT_WORKERS = 1


def _walk_files(folder: Path) -> list[Path]:
    files: list[Path] = []
    for directory, _subdirectories, names in os.walk(folder):
        for name in names:
            files.append(Path(directory) / name)
    files.sort()
    return files


def _dicomdir_files(folder: Path) -> list[Path] | None:
    """Return the image files listed by ``folder/DICOMDIR``, or ``None`` to scan the folder instead."""
    dicomdir = folder / "DICOMDIR"
    if not dicomdir.is_file():
        return None
    from pydicom.fileset import FileSet

    try:
        file_set = FileSet(dicomdir)
        paths = sorted({Path(instance.path) for instance in file_set})
    except (OSError, ValueError, KeyError, AttributeError) as error:
        logger.warning("%s: cannot read the DICOMDIR (%s); scanning the folder instead", dicomdir, error)
        return None
    missing = [path for path in paths if not path.is_file()]
    if missing:
        logger.warning(
            "%s lists %d file(s) that do not exist (first: %s); scanning the folder instead", dicomdir, len(missing), missing[0]
        )
        return None
    logger.debug("%s: using the %d file(s) it lists", dicomdir, len(paths))
    return paths


def _map_parallel(function: Callable[[_T], _R], items: Sequence[_T], *, workers: int | None, progress: bool, description: str) -> list[_R]:
    count = _default_workers() if workers is None else workers
    if count < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    results: Iterator[_R]
    if count == 1 or len(items) <= 1:
        results = map(function, items)
        return list(_with_progress(results, len(items), progress, description))
    with ThreadPoolExecutor(max_workers=count, thread_name_prefix="tunisian-lung-dicom") as pool:
        results = pool.map(function, items)
        return list(_with_progress(results, len(items), progress, description))


def _with_progress(results: Iterable[_R], total: int, progress: bool, description: str) -> Iterable[_R]:
    if not progress:
        return results
    from tqdm.auto import tqdm

    return tqdm(results, total=total, desc=description, unit="file")


def _read_file(path: Path, *, header_only: bool) -> _FileRecord | None:
    """Read one file; ``None`` when it is not DICOM, is a DICOMDIR or cannot be parsed."""
    from pydicom.errors import InvalidDicomError

    try:
        dataset = read_dataset(path, header_only=header_only)
    except (OSError, ValueError, EOFError, InvalidDicomError, KeyError, TypeError) as error:
        logger.warning("%s: skipped, the file looks like DICOM but cannot be parsed (%s)", path, error)
        return None
    if dataset is None:
        logger.debug("%s: skipped, not a DICOM file", path)
        return None
    if is_directory_record_file(dataset, path):
        logger.debug("%s: skipped, DICOMDIR", path)
        return None
    record = _FileRecord(path, frame_headers(dataset, path))
    if header_only or not record.headers[0].has_pixels or record.headers[0].samples_per_pixel != 1:
        return record
    try:
        frames = decode_frames(dataset)
    except (OSError, ValueError, EOFError, KeyError, AttributeError, NotImplementedError, RuntimeError, TypeError) as error:
        record.decode_error = f"{type(error).__name__}: {error}"
        return record
    if len(frames) != len(record.headers):
        record.decode_error = f"decoded {len(frames)} frame(s) but the header lists {len(record.headers)}"
        return record
    record.slices = [
        make_slice(frames[index], header.rescale_slope if not header.has_modality_lut else 1.0, header.rescale_intercept if not header.has_modality_lut else 0.0)
        for index, header in enumerate(record.headers)
    ]
    return record


def _read_files(paths: Sequence[Path], *, header_only: bool, workers: int | None, progress: bool) -> list[_FileRecord]:
    def read(path: Path) -> _FileRecord | None:
        return _read_file(path, header_only=header_only)

    description = "DICOM headers" if header_only else "DICOM files"
    records = _map_parallel(read, list(paths), workers=workers, progress=progress, description=description)
    return [record for record in records if record is not None]


def _resolve_paths(source: PathLike | Sequence[PathLike], *, use_dicomdir: bool) -> list[Path]:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            listed = _dicomdir_files(path) if use_dicomdir else None
            return listed if listed is not None else _walk_files(path)
        if path.is_file():
            return [path]
        raise DicomError(f"DICOM source not found: {path}. Pass an existing folder, file or list of files")
    paths = [Path(item) for item in source]
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise DicomError(f"{len(missing)} DICOM file(s) not found, first: {missing[0]}")
    return paths


# --- grouping into series ------------------------------------------------------------------------


def _split_by_orientation(headers: list[FrameHeader]) -> list[list[FrameHeader]]:
    clusters: list[list[FrameHeader]] = []
    for header in headers:
        for cluster in clusters:
            reference = cluster[0].orientation
            if header.orientation is None and reference is None:
                cluster.append(header)
                break
            if header.orientation is not None and reference is not None and orientations_match(header.orientation, reference):
                cluster.append(header)
                break
        else:
            clusters.append([header])
    return clusters


def _split_by_frame_of_reference(series_uid: str, headers: list[FrameHeader]) -> list[list[FrameHeader]]:
    """Split frames by FrameOfReferenceUID when every part has at least two frames.

    Some de-identification tools give every slice its own FrameOfReferenceUID (LIDC-IDRI does),
    so a split that leaves single slices is taken as such an artefact and the frames stay together.
    """
    by_frame_of_reference: dict[str, list[FrameHeader]] = {}
    for header in headers:
        by_frame_of_reference.setdefault(header.frame_of_reference_uid, []).append(header)
    parts = list(by_frame_of_reference.values())
    if len(parts) > 1 and min(len(part) for part in parts) < 2:
        logger.debug(
            "series %s: %d FrameOfReferenceUIDs, some on a single slice; kept as one frame of reference", series_uid, len(parts)
        )
        return [headers]
    return parts


def _has_duplicate_positions(headers: list[FrameHeader]) -> bool:
    if len(headers) < 2 or headers[0].orientation is None or any(h.position_xyz_mm is None for h in headers):
        return False
    positions = np.asarray([h.position_xyz_mm for h in headers], dtype=np.float64)
    order = sort_order(positions, headers[0].orientation, [0.0] * len(headers))
    geometry = measure_stack(positions[order], headers[0].orientation)
    steps = geometry.steps_mm
    return bool(len(steps) and np.any(steps <= spacing_tolerance_mm(geometry.spacing_z_mm or 0.0, DEFAULT_SPACING_RTOL)))


def _group_headers(records: Sequence[_FileRecord]) -> list[_Group]:
    """Group frames into series candidates and set aside images that are not part of a volume."""
    by_series: dict[str, list[FrameHeader]] = {}
    for record in records:
        for header in record.headers:
            by_series.setdefault(header.series_uid, []).append(header)

    groups: list[_Group] = []
    for series_uid, headers in by_series.items():
        excluded: list[tuple[Path, str]] = []
        images = []
        for header in headers:
            if not header.has_pixels:
                excluded.append((header.path, f"no pixel data (SOP class {header.sop_class_uid})"))
            else:
                images.append(header)
        volume_images = [h for h in images if not h.is_localizer and not h.is_secondary_capture]
        if volume_images and len(volume_images) < len(images):
            for header in images:
                if header.is_localizer:
                    excluded.append((header.path, f"localizer image (ImageType {'/'.join(header.image_type)})"))
                elif header.is_secondary_capture:
                    excluded.append((header.path, f"secondary capture (SOP class {header.sop_class_uid})"))
            images = volume_images
        if not images:
            logger.info("series %s has no image to load: %d file(s) set aside", series_uid, len(excluded))
            continue

        candidates: list[_Group] = []
        for same_frame in _split_by_frame_of_reference(series_uid, images):
            for same_orientation in _split_by_orientation(same_frame):
                acquisitions = {h.acquisition_number for h in same_orientation}
                # NOTE: acquisitions are split only when they share slice positions. Several
                # acquisitions over disjoint z ranges stay one group, and loading it then
                # raises a gap or spacing error instead of stacking them silently.
                if len(acquisitions) > 1 and _has_duplicate_positions(same_orientation):
                    # Several acquisitions (contrast phases, reconstructions) at the same positions.
                    by_acquisition: dict[int | None, list[FrameHeader]] = {}
                    for header in same_orientation:
                        by_acquisition.setdefault(header.acquisition_number, []).append(header)
                    for part in by_acquisition.values():
                        candidates.append(_Group(part, split_by_acquisition=True))
                else:
                    candidates.append(_Group(same_orientation))
        for candidate in candidates:
            candidate.excluded = list(excluded)
        if len(candidates) > 1:
            logger.info("series %s split into %d groups by frame of reference, orientation or acquisition", series_uid, len(candidates))
        groups.extend(candidates)
    return groups


def _sorted_headers(headers: Sequence[FrameHeader]) -> list[FrameHeader]:
    """Sort frames along the slice normal; frames without geometry by InstanceNumber."""
    instance_numbers = [float(h.instance_number) if h.instance_number is not None else 0.0 for h in headers]
    reference = headers[0].orientation
    if reference is None or any(h.position_xyz_mm is None for h in headers):
        order = np.argsort(instance_numbers, kind="stable")
    else:
        positions = np.asarray([h.position_xyz_mm for h in headers], dtype=np.float64)
        order = sort_order(positions, reference, instance_numbers)
    return [headers[int(i)] for i in order]


def _has_geometry(headers: Sequence[FrameHeader]) -> bool:
    return all(h.orientation is not None and h.position_xyz_mm is not None and h.pixel_spacing_mm is not None for h in headers)


def _inconsistent_slices(headers: Sequence[FrameHeader]) -> list[FrameHeader]:
    """Return the frames whose rows, columns or pixel spacing differ from the most common ones."""
    keys = [(h.rows, h.columns, None if h.pixel_spacing_mm is None else tuple(round(v, 4) for v in h.pixel_spacing_mm)) for h in headers]
    counts: dict[Any, int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    majority = max(counts, key=lambda key: counts[key])
    return [header for header, key in zip(headers, keys) if key != majority]


def _single_slice_spacing(header: FrameHeader, fallback_mm: float | None = None) -> float | None:
    for value in (header.spacing_between_slices_mm, header.slice_thickness_mm, fallback_mm):
        if value is not None and value > 0:
            return float(value)
    return None


def _header_issues(headers: Sequence[FrameHeader]) -> tuple[str, ...]:
    issues: list[str] = []
    odd = _inconsistent_slices(headers)
    if odd:
        issues.append(f"{len(odd)} slice(s) differ in rows, columns or pixel spacing, first: {odd[0].label}")
    if not _has_geometry(headers) or len(headers) < 2:
        return tuple(issues)
    assert headers[0].orientation is not None and headers[0].pixel_spacing_mm is not None
    geometry = measure_stack(np.asarray([h.position_xyz_mm for h in headers]), headers[0].orientation)
    problems = find_problems(geometry, min(headers[0].pixel_spacing_mm))
    if problems.duplicates:
        issues.append(f"{len(problems.duplicates)} duplicate slice position(s)")
    if problems.gaps:
        issues.append(f"{len(problems.gaps)} gap(s) of missing slices")
    if problems.non_uniform:
        issues.append(f"{len(problems.non_uniform)} non-uniform slice step(s)")
    if problems.tilted:
        issues.append(f"gantry tilt of about {geometry.tilt_degrees:.3g} degrees")
    return tuple(issues)


def _series_info(group: _Group) -> SeriesInfo:
    headers = _sorted_headers(group.headers)
    first = headers[0]
    spacing: tuple[float, float, float] | None = None
    origin: tuple[float, float, float] | None = None
    direction: tuple[float, ...] | None = None
    if _has_geometry(headers):
        assert first.orientation is not None and first.pixel_spacing_mm is not None
        geometry = measure_stack(np.asarray([h.position_xyz_mm for h in headers]), first.orientation)
        spacing_z = geometry.spacing_z_mm if len(headers) > 1 else _single_slice_spacing(first)
        if spacing_z is not None and spacing_z > 0:
            spacing = (first.pixel_spacing_mm[1], first.pixel_spacing_mm[0], spacing_z)
        origin = geometry.origin_xyz_mm
        direction = tuple(float(v) for v in geometry.direction.reshape(-1))
    pixel_spacing = None if first.pixel_spacing_mm is None else (first.pixel_spacing_mm[0], first.pixel_spacing_mm[1])
    return SeriesInfo(
        series_uid=first.series_uid,
        study_uid=first.study_uid,
        patient_id=first.patient_id,
        frame_of_reference_uid=first.frame_of_reference_uid,
        modality=first.modality,
        files=tuple(h.path for h in headers),
        frames=tuple(h.frame for h in headers),
        shape=(len(headers), first.rows, first.columns),
        spacing=spacing,
        origin=origin,
        direction=direction,
        manufacturer=first.manufacturer,
        model=first.model,
        slice_thickness=first.slice_thickness_mm,
        kvp=first.kvp,
        tube_current=first.tube_current_ma,
        convolution_kernel=first.convolution_kernel,
        pixel_spacing=pixel_spacing,
        acquisition_date=first.acquisition_date,
        series_description=first.series_description,
        acquisition_number=first.acquisition_number if group.split_by_acquisition else None,
        image_type=first.image_type,
        excluded=tuple(group.excluded),
        issues=_header_issues(headers),
    )


def index_dicom_folder(
    folder: PathLike,
    *,
    workers: int | None = None,
    progress: bool = False,
    use_dicomdir: bool = True,
    index_cache: bool | PathLike = False,
) -> list[SeriesInfo]:
    """Index every image series under a folder from the file headers, without reading pixel data.

    Files are found recursively whatever their names; files that are not DICOM and DICOMDIR
    files are skipped. When ``use_dicomdir`` is true and ``folder/DICOMDIR`` exists, the files it
    lists are read instead of scanning the folder.

    Parameters
    ----------
    folder:
        Root folder of the export. It is only read.
    workers:
        Threads reading headers in parallel (default: twice the CPU count, at most 16).
    progress:
        Show a tqdm progress bar over the files.
    use_dicomdir:
        Read the file list from a DICOMDIR at the root when there is one.
    index_cache:
        ``True`` stores the index in the user cache directory (``$TUNISIAN_LUNG_CACHE``
        overrides it), a path stores it in that folder. A later call lists the folder, compares
        every file's path, size and modification time with the stored ones, and returns the
        stored records without reading any DICOM file when nothing changed. The DICOM folder
        itself is never written.

    Returns
    -------
    list of SeriesInfo
        Sorted by patient, study and series UID, then acquisition number.

    Raises
    ------
    DicomError
        ``folder`` does not exist or is not a folder.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DicomError(f"DICOM folder not found: {root}. Pass an existing folder")
    cache_dir: Path | None = None
    fingerprint: dict[str, list[int]] = {}
    if index_cache is not False:
        from tunisian_lung.io import _index_cache

        cache_dir = _index_cache.index_cache_dir() if index_cache is True else Path(index_cache)
        fingerprint = _index_cache.folder_fingerprint(root)
        cached = _index_cache.load_entry(root, use_dicomdir, fingerprint, cache_dir)
        if cached is not None:
            logger.debug("%s: header index read from the cache in %s", root, cache_dir)
            return [SeriesInfo.from_dict(item) for item in cached]

    paths = _resolve_paths(root, use_dicomdir=use_dicomdir)
    records = _read_files(paths, header_only=True, workers=workers, progress=progress)
    infos = [_series_info(group) for group in _group_headers(records)]
    infos.sort(key=lambda info: (info.patient_id, info.study_uid, info.series_uid, info.acquisition_number or 0, str(info.files[0])))
    logger.info("%s: %d DICOM file(s) in %d series", root, len(records), len(infos))
    if cache_dir is not None:
        from tunisian_lung.io import _index_cache

        _index_cache.store_entry(root, use_dicomdir, fingerprint, [info.to_dict() for info in infos], cache_dir)
    return infos


# --- loading -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _LoadPlan:
    """Sorted frames and the output geometry, decided from headers before any pixel is read."""

    headers: tuple[FrameHeader, ...]
    geometry: StackGeometry
    spacing: tuple[float, float, float]
    shape: tuple[int, int, int]
    correct_tilt: bool
    resample_spacing_mm: float | None
    corrections: tuple[str, ...]


def _check_policies(**policies: str) -> None:
    for name, value in policies.items():
        allowed = _POLICIES[name]
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def _select_group(groups: list[_Group], series_uid: str | None, source: str) -> _Group:
    if not groups:
        raise NotAVolumeError(f"{source}: no DICOM image found. Check the path; files that are not DICOM are skipped")
    if series_uid is not None:
        matching = [group for group in groups if group.headers[0].series_uid == series_uid]
        if not matching:
            available = sorted({group.headers[0].series_uid for group in groups})
            raise DicomError(f"{source}: series {series_uid} not found; available: {', '.join(available)}")
        groups = matching
    else:
        volumes = [group for group in groups if not all(h.is_localizer for h in group.headers)]
        if volumes and len(volumes) < len(groups):
            logger.info("%s: ignoring %d localizer-only group(s)", source, len(groups) - len(volumes))
            groups = volumes
    if len(groups) > 1:
        infos = [_series_info(group) for group in groups]
        listing = "\n".join(f"  - {info.describe()}" for info in infos[:_MAX_LISTED])
        if len(infos) > _MAX_LISTED:
            listing += f"\n  ... and {len(infos) - _MAX_LISTED} more"
        raise MultipleSeriesError(
            f"{source} contains {len(groups)} series; pick one with series_uid=, or pass a SeriesInfo from "
            f"index_dicom_folder():\n{listing}",
            series_uids=[info.series_uid for info in infos],
        )
    return groups[0]


def _validate_group(headers: Sequence[FrameHeader], *, modalities: Sequence[str] | None, min_slices: int, series: str) -> None:
    first = headers[0]
    if modalities is not None and first.modality not in modalities:
        raise NotAVolumeError(
            f"{first.label}: modality {first.modality or '(missing)'} is not one of {tuple(modalities)} "
            f"(series {series}). Load a CT series, or pass modalities=None to accept other modalities"
        )
    colour = [h for h in headers if h.samples_per_pixel != 1]
    if colour:
        raise NotAVolumeError(
            f"{colour[0].label}: {colour[0].samples_per_pixel} samples per pixel, but a CT volume is greyscale (1 sample)"
        )
    if not _has_geometry(headers):
        missing = next(h for h in headers if h.orientation is None or h.position_xyz_mm is None or h.pixel_spacing_mm is None)
        raise NotAVolumeError(
            f"{missing.label}: modality {missing.modality or '(missing)'} image without patient geometry "
            "(ImagePositionPatient, ImageOrientationPatient or PixelSpacing missing), so it is not a volume slice"
        )
    if all(h.is_localizer for h in headers):
        raise NotAVolumeError(f"{first.label}: series {series} contains only localizer images (ImageType {'/'.join(first.image_type)})")
    if len(headers) < min_slices:
        raise NotAVolumeError(
            f"{first.label}: series {series} has {len(headers)} slice(s) (modality {first.modality}), but a volume needs "
            f"at least {min_slices}. Pass min_slices=1 to load a single slice"
        )
    odd = _inconsistent_slices(headers)
    if odd:
        reference = next(h for h in headers if h not in odd)
        names = "; ".join(f"{h.label}: {h.rows}x{h.columns}, pixel spacing {h.pixel_spacing_mm}" for h in odd[:5])
        raise InconsistentSlicesError(
            f"series {series}: {len(odd)} slice(s) differ from the other {len(headers) - len(odd)} "
            f"({reference.rows}x{reference.columns}, pixel spacing {reference.pixel_spacing_mm}): {names}. "
            "Remove them from the folder or pass the files of one image size"
        )


def _plan(
    headers: Sequence[FrameHeader],
    *,
    on_gap: GapPolicy,
    on_nonuniform: NonUniformPolicy,
    on_tilt: TiltPolicy,
    on_duplicate: DuplicatePolicy,
    spacing_rtol: float,
    slice_spacing_mm: float | None,
) -> _LoadPlan:
    ordered = _sorted_headers(headers)
    first = ordered[0]
    assert first.orientation is not None and first.pixel_spacing_mm is not None
    series = first.series_uid
    positions = np.asarray([h.position_xyz_mm for h in ordered], dtype=np.float64)
    geometry = measure_stack(positions, first.orientation)
    pixel_spacing = first.pixel_spacing_mm
    labels = [h.label for h in ordered]
    corrections: list[str] = []

    if len(ordered) == 1:
        spacing_z = _single_slice_spacing(first, slice_spacing_mm)
        if spacing_z is None:
            raise NotAVolumeError(
                f"{first.label}: a single slice without SpacingBetweenSlices or SliceThickness has no slice spacing; "
                "pass slice_spacing_mm= to set one"
            )
        spacing = (pixel_spacing[1], pixel_spacing[0], spacing_z)
        return _LoadPlan(tuple(ordered), geometry, spacing, (1, first.rows, first.columns), False, None, ())

    problems = find_problems(geometry, min(pixel_spacing), rtol=spacing_rtol)
    raise_for_problems(
        problems, geometry, labels, series=series,
        on_gap=on_gap, on_nonuniform=on_nonuniform, on_tilt=on_tilt, on_duplicate=on_duplicate,
    )
    if problems.duplicates:
        keep = keep_first_of_duplicates(problems, len(ordered))
        corrections.append(f"dropped {len(ordered) - len(keep)} slice(s) at duplicate positions")
        ordered = [ordered[int(i)] for i in keep]
        geometry = measure_stack(positions[keep], first.orientation)
        problems = find_problems(geometry, min(pixel_spacing), rtol=spacing_rtol)

    resample_spacing: float | None = None
    steps = geometry.steps_mm
    if problems.non_uniform:
        resample_spacing = float(np.min(steps))
        corrections.append(f"resampled non-uniform slice spacing onto {resample_spacing:.4g} mm")
    elif problems.gaps:
        resample_spacing = float(geometry.spacing_z_mm or 0.0)
        corrections.append(f"interpolated {len(problems.gaps)} gap(s) of missing slices at {resample_spacing:.4g} mm")
    if problems.tilted:
        corrections.append(f"shifted slices to correct a gantry tilt of about {geometry.tilt_degrees:.3g} degrees")

    if resample_spacing is not None:
        span = float(geometry.positions_mm[-1] - geometry.positions_mm[0])
        count = int(np.floor(span / resample_spacing + 1e-6)) + 1
        spacing_z = resample_spacing
    else:
        count = len(ordered)
        spacing_z = float(geometry.spacing_z_mm or 0.0)
    for message in corrections:
        logger.warning("series %s: %s, as requested by a lenient loading keyword", series, message)
    return _LoadPlan(
        headers=tuple(ordered),
        geometry=geometry,
        spacing=(pixel_spacing[1], pixel_spacing[0], spacing_z),
        shape=(count, first.rows, first.columns),
        correct_tilt=problems.tilted,
        resample_spacing_mm=resample_spacing,
        corrections=tuple(corrections),
    )


def _assemble(plan: _LoadPlan, slices: Sequence[DecodedSlice]) -> np.ndarray:
    """Stack decoded slices in plan order as Hounsfield units and apply the planned corrections."""
    dtype = output_dtype(slices)
    first = plan.headers[0]
    stack = np.empty((len(slices), first.rows, first.columns), dtype=dtype)
    for index, item in enumerate(slices):
        rescale_into(stack[index], item)
    if plan.correct_tilt:
        stack = correct_tilt(stack, plan.geometry, (plan.spacing[0], plan.spacing[1]))
    if plan.resample_spacing_mm is not None:
        stack, _positions = resample_along_normal(stack, plan.geometry.positions_mm, plan.resample_spacing_mm)
    return stack


def _slices_for(plan: _LoadPlan, records: Sequence[_FileRecord]) -> list[DecodedSlice]:
    by_key: dict[tuple[Path, int | None], DecodedSlice] = {}
    errors: dict[Path, str] = {}
    for record in records:
        if record.slices is None:
            errors[record.path] = record.decode_error or "no pixel data"
            continue
        for header, decoded in zip(record.headers, record.slices):
            by_key[(header.path, header.frame)] = decoded
    slices = []
    for header in plan.headers:
        key = (header.path, header.frame)
        if key not in by_key:
            reason = errors.get(header.path, "file not read")
            raise DicomError(
                f"{header.label}: pixel data cannot be decoded ({reason}) in series {header.series_uid}. "
                "Check that the decoder plugins (pylibjpeg, pylibjpeg-libjpeg, pylibjpeg-openjpeg, pylibjpeg-rle, "
                "pyjpegls) are installed and that the file is complete"
            )
        slices.append(by_key[key])
    return slices


def _metadata(plan: _LoadPlan, info_source: str) -> dict[str, Any]:
    first = plan.headers[0]
    return {
        "patient_id": first.patient_id,
        "series_uid": first.series_uid,
        "study_uid": first.study_uid,
        "frame_of_reference_uid": first.frame_of_reference_uid,
        "modality": first.modality,
        "manufacturer": first.manufacturer,
        "model": first.model,
        "slice_thickness": first.slice_thickness_mm,
        "kvp": first.kvp,
        "tube_current": first.tube_current_ma,
        "convolution_kernel": first.convolution_kernel,
        "pixel_spacing": first.pixel_spacing_mm,
        "acquisition_date": first.acquisition_date,
        "series_description": first.series_description,
        "num_source_slices": len(plan.headers),
        # One file per array slice, in array order; None when a slice is not one whole file.
        "slice_files": (
            [str(h.path) for h in plan.headers]
            if all(h.frame is None for h in plan.headers) and plan.resample_spacing_mm is None and not plan.correct_tilt
            else None
        ),
        "corrections": list(plan.corrections),
        "source": info_source,
        "units": "HU" if first.modality == "CT" else "modality values",
    }


def load_series(
    source: PathLike | Sequence[PathLike] | SeriesInfo,
    *,
    series_uid: str | None = None,
    lazy: bool = False,
    on_gap: GapPolicy = "raise",
    on_nonuniform: NonUniformPolicy = "raise",
    on_tilt: TiltPolicy = "raise",
    on_duplicate: DuplicatePolicy = "raise",
    modalities: Sequence[str] | None = ("CT",),
    min_slices: int = 2,
    spacing_rtol: float = DEFAULT_SPACING_RTOL,
    slice_spacing_mm: float | None = None,
    workers: int | None = None,
    progress: bool = False,
    use_dicomdir: bool = True,
) -> Volume:
    """Load one DICOM series as a :class:`Volume` in Hounsfield units.

    Parameters
    ----------
    source:
        A folder (searched recursively), one file (an enhanced multi-frame file is a whole
        series), a list of files, or a :class:`SeriesInfo` from :func:`index_dicom_folder`.
    series_uid:
        SeriesInstanceUID to load when the source contains several series.
    lazy:
        Read headers and check the geometry now, and read pixel data on first access of
        ``Volume.array``.
    on_gap:
        ``"raise"`` (default) raises :class:`SliceGapError` for a missing slice;
        ``"resample"`` interpolates the missing slices linearly.
    on_nonuniform:
        ``"raise"`` raises :class:`NonUniformSpacingError`; ``"resample"`` interpolates onto a
        uniform grid with the smallest slice step.
    on_tilt:
        ``"raise"`` raises :class:`GantryTiltError` when slice origins drift across the slice
        plane; ``"resample"`` shifts each slice back onto the grid of the first slice.
    on_duplicate:
        ``"raise"`` raises :class:`DuplicateSliceError` when slices share a position;
        ``"first"`` keeps the first slice (lowest InstanceNumber) at each position.
    modalities:
        Accepted Modality values; ``None`` accepts any modality with patient geometry.
    min_slices:
        Smallest number of slices accepted as a volume. With ``min_slices=1`` a single slice
        loads with SpacingBetweenSlices, else SliceThickness, as its slice spacing.
    spacing_rtol:
        Accepted deviation of a slice step from the regular spacing, as a fraction of it
        (at least 0.001 mm).
    slice_spacing_mm:
        Slice spacing in mm for a single slice that has neither SpacingBetweenSlices nor
        SliceThickness; unused for series of two or more slices.
    workers, progress, use_dicomdir:
        Reading threads, a tqdm bar over the files, and use of a DICOMDIR in a source folder.
        One thread (the default) is the fastest for files in the page cache. More threads help
        on slow or network storage.

    Returns
    -------
    Volume
        Array ``(z, y, x)`` in Hounsfield units (modality values for other modalities): int16
        when every slice's rescale maps integers to integers inside the int16 range, else
        float32; float32 after any resampling correction. Geometry is LPS in mm with ``(x, y, z)``
        spacing, origin (centre of the first voxel of the first slice along the normal) and a
        direction matrix whose columns are the row, column and slice-normal directions.
        ``metadata`` contains ``patient_id``, ``series_uid``, ``modality``, the scanner fields of
        :class:`SeriesInfo`, ``corrections`` (what a lenient keyword changed) and
        ``slice_files`` (the file of each array slice, or ``None`` for multi-frame or resampled
        volumes).

    Raises
    ------
    MultipleSeriesError
        The source contains several series and ``series_uid`` does not pick one.
    NotAVolumeError
        The images are not a CT volume: another modality, no patient geometry, too few slices.
    InconsistentSlicesError
        Slices differ in rows, columns or pixel spacing.
    SliceGapError, DuplicateSliceError, NonUniformSpacingError, GantryTiltError
        The slices do not form a regular grid and the matching keyword is ``"raise"``.
    DicomError
        A file is missing or its pixel data cannot be decoded.
    """
    _check_policies(on_gap=on_gap, on_nonuniform=on_nonuniform, on_tilt=on_tilt, on_duplicate=on_duplicate)
    if min_slices < 1:
        raise ValueError(f"min_slices must be at least 1, got {min_slices}")

    if isinstance(source, SeriesInfo):
        paths = list(dict.fromkeys(source.files))
        wanted = set(zip(source.files, source.frames))
        description = f"series {source.series_uid}"
        series_uid = source.series_uid
    else:
        paths = _resolve_paths(source, use_dicomdir=use_dicomdir)
        wanted = None
        description = str(source) if isinstance(source, (str, os.PathLike)) else f"{len(paths)} file(s)"

    if workers is None:
        workers = LOAD_DEFAULT_WORKERS
    records = _read_files(paths, header_only=lazy, workers=workers, progress=progress and not lazy)
    if wanted is not None:
        headers = [h for record in records for h in record.headers if (h.path, h.frame) in wanted]
        if len(headers) != len(wanted):
            raise DicomError(
                f"{description}: {len(wanted) - len(headers)} slice(s) listed in the SeriesInfo could not be read; "
                "index the folder again with index_dicom_folder()"
            )
        group = _Group(headers)
    else:
        group = _select_group(_group_headers(records), series_uid, description)

    _validate_group(group.headers, modalities=modalities, min_slices=min_slices, series=group.headers[0].series_uid)
    plan = _plan(
        group.headers,
        on_gap=on_gap, on_nonuniform=on_nonuniform, on_tilt=on_tilt, on_duplicate=on_duplicate,
        spacing_rtol=spacing_rtol,
        slice_spacing_mm=slice_spacing_mm,
    )
    metadata = _metadata(plan, description)
    direction = plan.geometry.direction
    origin = plan.geometry.origin_xyz_mm

    if not lazy:
        array = _assemble(plan, _slices_for(plan, records))
        return Volume(array, spacing=plan.spacing, origin=origin, direction=direction, metadata=metadata)

    plan_paths = list(dict.fromkeys(h.path for h in plan.headers))

    def load_pixels() -> np.ndarray:
        pixel_records = _read_files(plan_paths, header_only=False, workers=workers, progress=progress)
        return _assemble(plan, _slices_for(plan, pixel_records))

    return Volume(None, spacing=plan.spacing, origin=origin, direction=direction, loader=load_pixels, shape=plan.shape, metadata=metadata)


def read_frames(path: PathLike) -> np.ndarray:
    """Read the modality values of every frame of one DICOM file, without any geometry.

    For files that are not part of a volume (radiographs, secondary captures, test patterns),
    or to inspect one slice. Values are stored values mapped by RescaleSlope/RescaleIntercept
    or the Modality LUT; no VOI window and no MONOCHROME1 inversion is applied.

    Returns
    -------
    numpy.ndarray
        Shape ``(frames, rows, columns)``; int16 when the mapping gives integers inside the
        int16 range, else float32.

    Raises
    ------
    DicomError
        The file is missing, not DICOM, has no pixel data or cannot be decoded.
    """
    file_path = Path(path)
    if not file_path.is_file():
        raise DicomError(f"DICOM file not found: {file_path}")
    record = _read_file(file_path, header_only=False)
    if record is None:
        raise DicomError(f"{file_path}: not a readable DICOM image file")
    if record.slices is None:
        reason = record.decode_error or "no pixel data"
        raise DicomError(f"{file_path}: pixel data cannot be read ({reason})")
    dtype = output_dtype(record.slices)
    out = np.empty((len(record.slices),) + record.slices[0].values.shape, dtype=dtype)
    for index, item in enumerate(record.slices):
        rescale_into(out[index], item)
    return out
