"""Import LIDC-IDRI (DICOM series with the readers' XML files) into a release.

Each LIDC XML file (root element ``LidcReadMessage``) belongs to one CT series, named by the
``SeriesInstanceUid`` of its ``ResponseHeader``, and holds up to four ``readingSession``
elements, one per radiologist. A session contains

* ``unblindedReadNodule`` marks of nodules of 3 mm or more. Such a nodule is outlined slice
  by slice (``roi`` elements with ``edgeMap`` pixel points and ``inclusion`` TRUE, or FALSE
  for a hole) and rated in ``characteristics`` (subtlety, internalStructure, calcification,
  sphericity, margin, lobulation, spiculation, texture, malignancy).
* ``unblindedReadNodule`` marks of nodules under 3 mm: one ``roi`` with a single ``edgeMap``
  point and usually no ratings.
* ``nonNodule`` marks: one ``locus`` point of a finding that is not a nodule.

Pixel points are ``(xCoord, yCoord) = (column, row)``, 0-based, in the slice named by
``imageSOP_UID``. When no slice of the series has that SOP Instance UID, the slice whose
ImagePositionPatient z equals ``imageZposition`` (within half the slice spacing) is used.

Per reader mark (one row of ``readers.csv``):

* the contour of each ``roi`` is filled on the pixel grid (pixel centres inside the polygon,
  plus the contour pixels themselves, minus the filled ``inclusion = FALSE`` contours);
* the centre is the centroid of all filled pixels in world coordinates (LPS, mm);
* the volume is the filled pixel count times the pixel area times the slice spacing;
* ``equivalent_diameter_mm`` is the diameter of the sphere of that volume, and
  ``max_inplane_diameter_mm`` the largest distance between two contour points of one slice.

Marks of different readers are grouped into one nodule by :func:`group_marks` (see
:class:`LidcImportConfig` for the distance rule), and each group is one row of
``lidc_nodules.csv``; groups that pass the class rule also go to ``annotations.csv``.
"""

from __future__ import annotations

import logging
import math
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from tunisian_lung import layout
from tunisian_lung.errors import SourceImportError
from tunisian_lung.importers._dicom_headers import SeriesHeaders, SliceHeader, scan_dicom_headers
from tunisian_lung.importers._release import (
    CC_BY_3,
    LIDC_IDRI_CITATION,
    ReleaseBuilder,
    annotation_table,
    check_identifier,
    finish_release,
)

logger = logging.getLogger(__name__)

READERS_NAME = "readers.csv"
NODULES_NAME = "lidc_nodules.csv"

#: The readers' rating names, in the order of the LIDC XML ``characteristics`` element.
CHARACTERISTICS = (
    "subtlety",
    "internalStructure",
    "calcification",
    "sphericity",
    "margin",
    "lobulation",
    "spiculation",
    "texture",
    "malignancy",
)

MarkKind = Literal["nodule", "small_nodule", "non_nodule"]

#: ``annotations.csv`` class codes of the library's schema: 1 malignant, 0 benign.
_CLASS_CODES = {"malignant": 1, "benign": 0}


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MalignancyMapping:
    """Mapping from the median of the readers' malignancy ratings (1 to 5) to a class.

    The median is ``benign`` when it is at most ``benign_max``, ``malignant`` when it is at least
    ``malignant_min`` and ``indeterminate`` in between. The defaults make ratings 1-2 benign,
    4-5 malignant and 3 indeterminate. A median between two ratings, such as 2.5 from the
    ratings (2, 3), falls on the side it is closest to.
    """

    benign_max: float = 2.5
    malignant_min: float = 3.5

    def __post_init__(self) -> None:
        if not 1.0 <= self.benign_max < self.malignant_min <= 5.0:
            raise SourceImportError(
                f"MalignancyMapping needs 1 <= benign_max < malignant_min <= 5, got benign_max={self.benign_max}, "
                f"malignant_min={self.malignant_min}"
            )

    def classify(self, median_rating: float | None) -> str:
        """Return ``benign``, ``malignant``, ``indeterminate``, or ``unrated`` when no reader rated it."""
        if median_rating is None or math.isnan(median_rating):
            return "unrated"
        if median_rating <= self.benign_max:
            return "benign"
        if median_rating >= self.malignant_min:
            return "malignant"
        return "indeterminate"


@dataclass(frozen=True)
class LidcImportConfig:
    """Settings of :func:`import_lidc`.

    Parameters
    ----------
    group_distance_mm:
        Two marks of different readers belong to one nodule when their centres are at most
        this far apart (Euclidean, mm). Marks are taken reader by reader, and each joins the
        nearest existing group within this distance that has no mark of the same reader yet,
        with the group centre being the mean of its marks' centres. 5 mm keeps the four
        outlines of a 25 mm nodule together (their centroids differ by about 1 mm) while
        keeping apart small nodules a few millimetres from each other.
    malignancy:
        The class rule applied to the median malignancy rating of a group.
    diameter:
        Which per-reader estimate becomes ``diameter_mm``: ``"equivalent_sphere"`` (diameter of
        the sphere with the filled contours' volume) or ``"max_inplane"`` (largest distance
        between two contour points of one slice). The group diameter is the mean over the
        readers that outlined the nodule.
    include_indeterminate:
        Also write groups whose class is ``indeterminate`` or ``unrated`` to ``annotations.csv``
        with an empty class. By default they only appear in ``lidc_nodules.csv``.
    strict:
        Raise when a contour's slice cannot be found by SOP Instance UID or z position. With
        ``strict=False`` such an ``roi`` is skipped and logged.
    """

    group_distance_mm: float = 5.0
    malignancy: MalignancyMapping = field(default_factory=MalignancyMapping)
    diameter: Literal["equivalent_sphere", "max_inplane"] = "equivalent_sphere"
    include_indeterminate: bool = False
    strict: bool = True

    def __post_init__(self) -> None:
        if not self.group_distance_mm > 0:
            raise SourceImportError(f"group_distance_mm must be positive, got {self.group_distance_mm}")
        if self.diameter not in ("equivalent_sphere", "max_inplane"):
            raise SourceImportError(
                f"diameter must be 'equivalent_sphere' or 'max_inplane', got {self.diameter!r}"
            )


# --- XML parsing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RoiContour:
    """One outline (or single point) of a mark on one slice, with ``(N, 2)`` pixel points ``(column, row)``."""

    sop_instance_uid: str
    z_position_mm: float
    inclusion: bool
    points_colrow: np.ndarray


@dataclass(frozen=True)
class ReaderMark:
    """One reader's mark of one finding, as read from the XML."""

    xml_path: Path
    series_uid: str
    session_index: int
    reader_id: str
    mark_id: str
    kind: MarkKind
    characteristics: dict[str, int]
    rois: tuple[RoiContour, ...]


@dataclass(frozen=True)
class LidcReadMessage:
    """The content of one LIDC XML file."""

    path: Path
    series_uid: str
    study_uid: str
    marks: tuple[ReaderMark, ...]
    session_count: int


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(element: ElementTree.Element, name: str) -> ElementTree.Element | None:
    return next((child for child in element if _local(child.tag) == name), None)


def _children(element: ElementTree.Element, name: str) -> list[ElementTree.Element]:
    return [child for child in element if _local(child.tag) == name]


def _text(element: ElementTree.Element, name: str, default: str = "") -> str:
    child = _child(element, name)
    return default if child is None or child.text is None else child.text.strip()


def _points(parent: ElementTree.Element, point_tag: str, where: str) -> np.ndarray:
    points = []
    for point in _children(parent, point_tag):
        try:
            points.append((float(_text(point, "xCoord")), float(_text(point, "yCoord"))))
        except ValueError as error:
            raise SourceImportError(f"{where}: a {point_tag} point has no numeric xCoord/yCoord") from error
    return np.asarray(points, dtype=np.float64).reshape(-1, 2)


def _roi(element: ElementTree.Element, where: str) -> RoiContour:
    try:
        z_position = float(_text(element, "imageZposition", "nan"))
    except ValueError as error:
        raise SourceImportError(f"{where}: imageZposition {_text(element, 'imageZposition')!r} is not a number") from error
    point_tag = "edgeMap" if _child(element, "edgeMap") is not None else "locus"
    return RoiContour(
        sop_instance_uid=_text(element, "imageSOP_UID"),
        z_position_mm=z_position,
        inclusion=_text(element, "inclusion", "TRUE").upper() != "FALSE",
        points_colrow=_points(element, point_tag, where),
    )


def _characteristics(element: ElementTree.Element) -> dict[str, int]:
    block = _child(element, "characteristics")
    ratings: dict[str, int] = {}
    if block is None:
        return ratings
    for name in CHARACTERISTICS:
        value = _text(block, name)
        if value:
            try:
                ratings[name] = int(float(value))
            except ValueError:
                logger.warning("ignoring characteristic %s = %r: not a number", name, value)
    return ratings


def parse_lidc_xml(path: str | Path) -> LidcReadMessage | None:
    """Parse one LIDC reader XML file.

    Returns ``None`` for XML files that are not LIDC CT readings (the root element is not
    ``LidcReadMessage``, such as the ``IdriReadMessage`` files of the chest radiographs).
    The namespace (``http://www.nih.gov`` in version 1.8 files) is ignored, so files with or
    without it parse alike.

    Raises
    ------
    SourceImportError
        The file is not well-formed XML, has no SeriesInstanceUid, or has a malformed point.
    """
    xml_path = Path(path)
    try:
        root = ElementTree.parse(xml_path).getroot()
    except ElementTree.ParseError as error:
        raise SourceImportError(f"{xml_path}: not well-formed XML ({error})") from error
    if _local(root.tag) != "LidcReadMessage":
        logger.debug("skipping %s: root element %s is not LidcReadMessage", xml_path, _local(root.tag))
        return None
    header = _child(root, "ResponseHeader")
    series_uid = _text(header, "SeriesInstanceUid") if header is not None else ""
    if not series_uid:
        raise SourceImportError(f"{xml_path}: ResponseHeader has no SeriesInstanceUid, so its series is unknown")
    study_uid = _text(header, "StudyInstanceUID") if header is not None else ""

    marks: list[ReaderMark] = []
    sessions = _children(root, "readingSession")
    for session_index, session in enumerate(sessions, start=1):
        reader_id = _text(session, "servicingRadiologistID") or f"session{session_index}"
        for element in _children(session, "unblindedReadNodule"):
            mark_id = _text(element, "noduleID")
            where = f"{xml_path}, reading session {session_index}, nodule {mark_id!r}"
            rois = tuple(_roi(roi, where) for roi in _children(element, "roi"))
            point_count = sum(len(roi.points_colrow) for roi in rois)
            kind: MarkKind = "small_nodule" if len(rois) == 1 and point_count == 1 else "nodule"
            marks.append(
                ReaderMark(xml_path, series_uid, session_index, reader_id, mark_id, kind, _characteristics(element), rois)
            )
        for element in _children(session, "nonNodule"):
            mark_id = _text(element, "nonNoduleID")
            where = f"{xml_path}, reading session {session_index}, non-nodule {mark_id!r}"
            rois = (_roi(element, where),)
            marks.append(ReaderMark(xml_path, series_uid, session_index, reader_id, mark_id, "non_nodule", {}, rois))
    return LidcReadMessage(xml_path, series_uid, study_uid, tuple(marks), len(sessions))


# --- geometry of the marks -------------------------------------------------------------------


@dataclass(frozen=True)
class MarkMeasurement:
    """World-space summary of one reader mark: centre in LPS mm ``(x, y, z)``, sizes in mm and mm³.

    Sizes are ``nan`` for single-point marks (small nodules and non-nodules).
    """

    centre_xyz_mm: tuple[float, float, float]
    volume_mm3: float
    equivalent_diameter_mm: float
    max_inplane_diameter_mm: float
    slice_count: int


class SliceLookup:
    """Finds the slice of a series that an LIDC ``roi`` refers to."""

    def __init__(self, series: SeriesHeaders) -> None:
        self.series = series
        self.slices = series.sorted_slices()
        if not self.slices:
            raise SourceImportError(f"series {series.series_uid} has no image slice with position and orientation")
        self._by_uid = {header.sop_instance_uid: header for header in self.slices}
        self._z = np.asarray([header.position[2] for header in self.slices])
        positions = np.asarray([header.position for header in self.slices])
        steps = np.linalg.norm(np.diff(positions, axis=0), axis=1)
        self.slice_spacing_mm = float(np.median(steps)) if len(steps) else 1.0

    def find(self, roi: RoiContour) -> SliceHeader | None:
        """Return the slice with the ROI's SOP Instance UID, else the slice at its z position, else ``None``."""
        header = self._by_uid.get(roi.sop_instance_uid)
        if header is not None:
            return header
        if math.isnan(roi.z_position_mm):
            return None
        nearest = int(np.argmin(np.abs(self._z - roi.z_position_mm)))
        if abs(self._z[nearest] - roi.z_position_mm) <= 0.5 * self.slice_spacing_mm:
            return self.slices[nearest]
        return None


def _edge_pixels(points_colrow: np.ndarray) -> np.ndarray:
    """Return the unique integer pixels on the closed polyline through the points.

    LIDC contours list every boundary pixel, but a contour given by its corners only still
    gets its whole boundary this way.
    """
    closed = np.vstack([points_colrow, points_colrow[:1]])
    pieces = [np.round(points_colrow).astype(np.int64)]
    for start, end in zip(closed[:-1], closed[1:]):
        steps = int(np.ceil(np.abs(end - start).max())) + 1
        line = start + np.linspace(0.0, 1.0, steps)[:, np.newaxis] * (end - start)
        pieces.append(np.round(line).astype(np.int64))
    return np.unique(np.vstack(pieces), axis=0)


def _filled_pixels(points_colrow: np.ndarray) -> np.ndarray:
    """Return the ``(M, 2)`` integer (column, row) pixels inside a closed contour, contour pixels included."""
    from matplotlib.path import Path as PolygonPath

    boundary = _edge_pixels(points_colrow)
    if len(points_colrow) < 3:
        return boundary
    low = boundary.min(axis=0)
    high = boundary.max(axis=0)
    columns, rows = np.meshgrid(np.arange(low[0], high[0] + 1), np.arange(low[1], high[1] + 1))
    grid = np.column_stack([columns.ravel(), rows.ravel()])
    inside = PolygonPath(points_colrow).contains_points(grid)
    filled = np.vstack([grid[inside], boundary])
    return np.unique(filled, axis=0)


def _max_pairwise_distance(points_mm: np.ndarray) -> float:
    if len(points_mm) < 2:
        return 0.0
    differences = points_mm[:, np.newaxis, :] - points_mm[np.newaxis, :, :]
    return float(np.sqrt((differences**2).sum(axis=-1)).max())


def measure_mark(mark: ReaderMark, lookup: SliceLookup, *, strict: bool = True) -> MarkMeasurement | None:
    """Compute the world centre and size estimates of one reader mark (see the module docstring).

    Returns ``None`` when ``strict`` is false and no ROI of the mark could be placed.

    Raises
    ------
    SourceImportError
        With ``strict=True``, an ROI names a slice that is not in the series.
    """
    filled_by_slice: dict[str, tuple[SliceHeader, set[tuple[int, int]]]] = {}
    holes_by_slice: dict[str, set[tuple[int, int]]] = {}
    single_points: list[np.ndarray] = []
    max_inplane = 0.0
    for roi in mark.rois:
        header = lookup.find(roi)
        if header is None:
            message = (
                f"{mark.xml_path}, reading session {mark.session_index}, mark {mark.mark_id!r}: no slice of series "
                f"{mark.series_uid} has SOP Instance UID {roi.sop_instance_uid} or z = {roi.z_position_mm} mm"
            )
            if strict:
                raise SourceImportError(message + "; check that the XML belongs to this DICOM folder")
            logger.warning("%s; skipping this roi", message)
            continue
        if len(roi.points_colrow) == 0:
            continue
        if mark.kind != "nodule":
            single_points.append(header.pixel_to_world(roi.points_colrow[:, 0], roi.points_colrow[:, 1]).mean(axis=0))
            continue
        pixels = {(int(c), int(r)) for c, r in _filled_pixels(roi.points_colrow)}
        if roi.inclusion:
            entry = filled_by_slice.setdefault(header.sop_instance_uid, (header, set()))
            entry[1].update(pixels)
            contour_mm = header.pixel_to_world(roi.points_colrow[:, 0], roi.points_colrow[:, 1])
            max_inplane = max(max_inplane, _max_pairwise_distance(contour_mm))
        else:
            holes_by_slice.setdefault(header.sop_instance_uid, set()).update(pixels)

    if mark.kind != "nodule":
        if not single_points:
            return None
        centre = np.mean(single_points, axis=0)
        nan = float("nan")
        return MarkMeasurement((float(centre[0]), float(centre[1]), float(centre[2])), nan, nan, nan, 1)

    world_points = []
    voxel_volume = 0.0
    for uid, (header, pixels) in filled_by_slice.items():
        nodule_pixels = np.asarray(sorted(pixels - holes_by_slice.get(uid, set())), dtype=np.float64).reshape(-1, 2)
        if len(nodule_pixels) == 0:
            continue
        world_points.append(header.pixel_to_world(nodule_pixels[:, 0], nodule_pixels[:, 1]))
        voxel_volume = header.row_spacing_mm * header.column_spacing_mm * lookup.slice_spacing_mm
    if not world_points:
        return None
    all_points = np.vstack(world_points)
    volume = len(all_points) * voxel_volume
    centre = all_points.mean(axis=0)
    return MarkMeasurement(
        centre_xyz_mm=(float(centre[0]), float(centre[1]), float(centre[2])),
        volume_mm3=volume,
        equivalent_diameter_mm=float((6.0 * volume / math.pi) ** (1.0 / 3.0)),
        max_inplane_diameter_mm=max_inplane,
        slice_count=len(world_points),
    )


# --- grouping --------------------------------------------------------------------------------


@dataclass
class NoduleGroup:
    """Marks of different readers that :func:`group_marks` assigned to one nodule."""

    members: list[tuple[ReaderMark, MarkMeasurement]] = field(default_factory=list)

    @property
    def centre_xyz_mm(self) -> np.ndarray:
        """Mean of the members' centres, LPS mm ``(x, y, z)``."""
        return np.mean([measurement.centre_xyz_mm for _, measurement in self.members], axis=0)

    @property
    def readers(self) -> set[int]:
        """Reading-session numbers of the members."""
        return {mark.session_index for mark, _ in self.members}

    @property
    def outlined(self) -> list[tuple[ReaderMark, MarkMeasurement]]:
        """Members with a contour (nodules of 3 mm or more)."""
        return [(mark, measurement) for mark, measurement in self.members if mark.kind == "nodule"]

    def diameter_mm(self, estimate: str) -> float:
        """Mean of the outlining readers' diameter estimate, ``nan`` when no reader outlined it."""
        attribute = "equivalent_diameter_mm" if estimate == "equivalent_sphere" else "max_inplane_diameter_mm"
        values = [getattr(measurement, attribute) for _, measurement in self.outlined]
        return float(np.mean(values)) if values else float("nan")

    def median_malignancy(self) -> float | None:
        """Median malignancy rating of the outlining readers, ``None`` when none rated it."""
        ratings = [mark.characteristics["malignancy"] for mark, _ in self.outlined if "malignancy" in mark.characteristics]
        return float(np.median(ratings)) if ratings else None


def group_marks(
    marks: list[tuple[ReaderMark, MarkMeasurement]], *, group_distance_mm: float
) -> list[NoduleGroup]:
    """Group nodule marks of different readers by centre distance (rule in :class:`LidcImportConfig`).

    Non-nodule marks are ignored. The result is ordered by the order of each group's first
    mark, which follows the XML (session by session), so the grouping is deterministic.
    """
    groups: list[NoduleGroup] = []
    for mark, measurement in marks:
        if mark.kind == "non_nodule":
            continue
        centre = np.asarray(measurement.centre_xyz_mm)
        best: NoduleGroup | None = None
        best_distance = math.inf
        for group in groups:
            if mark.session_index in group.readers:
                continue
            distance = float(np.linalg.norm(group.centre_xyz_mm - centre))
            if distance <= group_distance_mm and distance < best_distance:
                best, best_distance = group, distance
        if best is None:
            best = NoduleGroup()
            groups.append(best)
        best.members.append((mark, measurement))
    return groups


# --- import ----------------------------------------------------------------------------------


@dataclass
class LidcImportReport:
    """Summary of an LIDC import: the series and nodules written, and what was left out and why."""

    out: Path
    series_imported: list[str] = field(default_factory=list)
    nodules_in_annotations: int = 0
    groups_excluded: int = 0
    small_nodules: int = 0
    series_without_xml: list[str] = field(default_factory=list)
    xml_without_series: list[str] = field(default_factory=list)
    series_excluded: list[str] = field(default_factory=list)


def _find_reading_messages(xml_dir: Path) -> dict[str, LidcReadMessage]:
    if not xml_dir.is_dir():
        raise SourceImportError(f"LIDC XML folder not found: {xml_dir}")
    messages: dict[str, LidcReadMessage] = {}
    for path in sorted(xml_dir.rglob("*.xml")):
        message = parse_lidc_xml(path)
        if message is None:
            continue
        if message.series_uid in messages:
            raise SourceImportError(
                f"two LIDC XML files describe series {message.series_uid}: {messages[message.series_uid].path} and "
                f"{path}; keep one of them in the XML folder"
            )
        messages[message.series_uid] = message
    return messages


def _series_tables(
    message: LidcReadMessage, series: SeriesHeaders, patient_id: str, config: LidcImportConfig
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Measure, group and classify one series' marks, and return its annotation, nodule and reader rows."""
    lookup = SliceLookup(series)
    measured: list[tuple[ReaderMark, MarkMeasurement]] = []
    for mark in message.marks:
        measurement = measure_mark(mark, lookup, strict=config.strict)
        if measurement is not None:
            measured.append((mark, measurement))
    groups = group_marks(measured, group_distance_mm=config.group_distance_mm)

    series_id = series.series_uid
    group_of: dict[int, int] = {}
    annotation_rows: list[dict[str, Any]] = []
    nodule_rows: list[dict[str, Any]] = []
    for index, group in enumerate(groups, start=1):
        for mark, _ in group.members:
            group_of[id(mark)] = index
        centre = group.centre_xyz_mm
        small = not group.outlined
        median = group.median_malignancy()
        label = "small_nodule" if small else config.malignancy.classify(median)
        diameter = group.diameter_mm(config.diameter)
        written = not small and (label in ("benign", "malignant") or config.include_indeterminate)
        nodule_rows.append(
            {
                "patient_id": patient_id,
                "series_id": series_id,
                "nodule_index": index,
                "coordX": centre[0],
                "coordY": centre[1],
                "coordZ": centre[2],
                "diameter_mm": diameter,
                "num_readers": len(group.readers),
                "num_outlining_readers": len(group.outlined),
                "malignancy_median": median,
                "label": label,
                "in_annotations": written,
            }
        )
        if written:
            annotation_rows.append(
                {
                    "patient_id": patient_id,
                    "series_id": series_id,
                    "coordX": centre[0],
                    "coordY": centre[1],
                    "coordZ": centre[2],
                    "diameter_mm": diameter,
                    "class": _CLASS_CODES.get(label),
                    "nodule_present": 1,
                    "stage": None,
                }
            )

    reader_rows = []
    for mark, measurement in measured:
        row: dict[str, Any] = {
            "patient_id": patient_id,
            "series_id": series_id,
            "nodule_index": group_of.get(id(mark)),
            "reading_session": mark.session_index,
            "reader_id": mark.reader_id,
            "mark_id": mark.mark_id,
            "kind": mark.kind,
            "coordX": measurement.centre_xyz_mm[0],
            "coordY": measurement.centre_xyz_mm[1],
            "coordZ": measurement.centre_xyz_mm[2],
            "volume_mm3": measurement.volume_mm3,
            "equivalent_diameter_mm": measurement.equivalent_diameter_mm,
            "max_inplane_diameter_mm": measurement.max_inplane_diameter_mm,
            "slice_count": measurement.slice_count,
        }
        for name in CHARACTERISTICS:
            row[name] = mark.characteristics.get(name)
        row["source_xml"] = mark.xml_path.name
        reader_rows.append(row)
    return annotation_rows, nodule_rows, reader_rows


def import_lidc(
    dicom_dir: str | Path,
    xml_dir: str | Path,
    out: str | Path,
    *,
    config: LidcImportConfig | None = None,
    name: str = "LIDC-IDRI",
    version: str = "1.0",
    overwrite: bool = False,
    progress: bool = False,
) -> LidcImportReport:
    """Import LIDC-IDRI CT series and their reader XML files into a new release folder.

    Every CT series under ``dicom_dir`` that has an LIDC XML file under ``xml_dir`` is copied to
    ``dicom/<PatientID>/<SeriesInstanceUID>/`` (the source files are only read). The release
    gets

    * ``annotations.csv``: one row per grouped nodule of 3 mm or more whose class (from the
      median malignancy rating) is benign or malignant, centre in LPS mm, ``stage`` empty.
      A series without such nodules and without excluded ones gets one ``nodule_present = 0``
      row. Nodules under 3 mm (single points) do not make a series positive, as in LUNA16.
    * ``lidc_nodules.csv``: every grouped nodule, with readers, median rating and label.
    * ``readers.csv``: every reader mark with its centre, size estimates and ratings.
    * ``dataset.json``: source, licence (CC BY 3.0), citation, counts and checksums.

    A series whose only nodules are excluded (indeterminate or unrated) is left out of the
    release, because a ``nodule_present = 0`` row would be false. Such series are listed in
    ``report.series_excluded``.

    Parameters
    ----------
    dicom_dir, xml_dir:
        Folders searched recursively for DICOM files and for ``*.xml`` reader files.
    out:
        The release folder to create; written atomically.
    config:
        Grouping, diameter and class rules. :class:`LidcImportConfig` defaults when omitted.
    progress:
        Show a tqdm bar on stderr while the DICOM headers are read.

    Raises
    ------
    SourceImportError
        A folder is missing, an XML file is invalid, a contour names a slice that is not in the
        series (with ``config.strict``), or no series has both DICOM files and an XML file.
    """
    settings = config or LidcImportConfig()
    dicom_root, xml_root = Path(dicom_dir), Path(xml_dir)
    messages = _find_reading_messages(xml_root)
    all_series = scan_dicom_headers(dicom_root, progress=progress)
    report = LidcImportReport(out=Path(out))
    report.xml_without_series = sorted(uid for uid in messages if uid not in all_series)
    report.series_without_xml = sorted(uid for uid in all_series if uid not in messages)
    for uid in report.xml_without_series:
        logger.warning("LIDC XML %s describes series %s, which is not under %s", messages[uid].path, uid, dicom_root)
    if report.series_without_xml:
        logger.info("%d DICOM series have no LIDC XML file and are not imported", len(report.series_without_xml))
    matched = sorted(uid for uid in messages if uid in all_series)
    if not matched:
        raise SourceImportError(
            f"no DICOM series under {dicom_root} has a LIDC XML file under {xml_root} "
            f"({len(all_series)} series, {len(messages)} XML files); check the two folders"
        )

    annotations: list[dict[str, Any]] = []
    nodules: list[dict[str, Any]] = []
    readers: list[dict[str, Any]] = []
    with ReleaseBuilder(out, overwrite=overwrite) as builder:
        for uid in matched:
            series = all_series[uid]
            patient_id = check_identifier(series.patient_id, "PatientID", f"series {uid}")
            check_identifier(uid, "SeriesInstanceUID", f"patient {patient_id}")
            series_annotations, series_nodules, series_readers = _series_tables(messages[uid], series, patient_id, settings)
            nodules.extend(series_nodules)
            readers.extend(series_readers)
            excluded = sum(1 for row in series_nodules if row["label"] != "small_nodule" and not row["in_annotations"])
            report.groups_excluded += excluded
            report.small_nodules += sum(1 for row in series_nodules if row["label"] == "small_nodule")
            if not series_annotations and excluded:
                report.series_excluded.append(uid)
                logger.info("series %s left out: its %d nodule(s) are indeterminate or unrated", uid, excluded)
                continue
            if not series_annotations:
                series_annotations = [
                    {"patient_id": patient_id, "series_id": uid, "nodule_present": 0, "class": None, "stage": None}
                ]
            annotations.extend(series_annotations)
            report.nodules_in_annotations += sum(row["nodule_present"] for row in series_annotations)
            builder.copy_series(series.files, patient_id, uid)
            report.series_imported.append(uid)
        if not annotations:
            raise SourceImportError(
                f"every matched series was left out ({len(report.series_excluded)} with only indeterminate or unrated "
                "nodules); pass LidcImportConfig(include_indeterminate=True) to keep them"
            )
        builder.write_table(layout.ANNOTATIONS_NAME, annotation_table(annotations))
        builder.write_table(NODULES_NAME, pd.DataFrame(nodules))
        reader_table = pd.DataFrame(readers)
        if "nodule_index" in reader_table.columns:
            # Non-nodule marks have no group; the nullable type keeps the others integer.
            reader_table["nodule_index"] = reader_table["nodule_index"].astype("Int64")
        builder.write_table(READERS_NAME, reader_table)
        finish_release(
            builder.root,
            name=name,
            version=version,
            license=CC_BY_3,
            citation=LIDC_IDRI_CITATION,
            source={
                "collection": "LIDC-IDRI",
                "importer": "tunisian_lung.importers.lidc",
                "dicom_dir": str(dicom_root),
                "xml_dir": str(xml_root),
                "group_distance_mm": settings.group_distance_mm,
                "diameter_estimate": settings.diameter,
                "malignancy_benign_max": settings.malignancy.benign_max,
                "malignancy_malignant_min": settings.malignancy.malignant_min,
                "include_indeterminate": settings.include_indeterminate,
            },
        )
        builder.commit()
    logger.info(
        "imported %d LIDC series with %d nodules into %s (%d groups excluded, %d small nodules)",
        len(report.series_imported),
        report.nodules_in_annotations,
        report.out,
        report.groups_excluded,
        report.small_nodules,
    )
    return report
