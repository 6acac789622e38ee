"""Reading DICOM files and extracting the per-slice header values the loader needs.

A single-frame image gives one :class:`FrameHeader`. An enhanced multi-frame image gives one per
frame, with position, orientation, pixel spacing and rescale taken from the Per-frame Functional
Groups Sequence, or from the Shared Functional Groups Sequence when a frame does not carry them.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

logger = logging.getLogger(__name__)

#: SOP Class UID of a DICOMDIR (Media Storage Directory Storage).
MEDIA_STORAGE_DIRECTORY_UID = "1.2.840.10008.1.3.10"
#: SOP Class UIDs of Secondary Capture images, which are screenshots rather than acquired slices.
SECONDARY_CAPTURE_UIDS = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",
        "1.2.840.10008.5.1.4.1.1.7.1",
        "1.2.840.10008.5.1.4.1.1.7.2",
        "1.2.840.10008.5.1.4.1.1.7.3",
        "1.2.840.10008.5.1.4.1.1.7.4",
    }
)


def _looks_like_raw_dataset(path: Path) -> bool:
    """Return whether a file without the DICM prefix starts like a little-endian DICOM dataset.

    Old exports omit the 128-byte preamble and ``DICM`` marker and start directly with an
    element of group 0x0002 or 0x0008.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError:
        return False
    return len(head) == 4 and head[1] == 0x00 and head[0] in (0x02, 0x08) and head[3] == 0x00


def read_dataset(path: Path, *, header_only: bool) -> Dataset | None:
    """Read one file as DICOM, or return ``None`` when it is not a DICOM file.

    Raises
    ------
    OSError, pydicom errors
        The file looks like DICOM but cannot be parsed (truncated, corrupt).
    """
    try:
        return pydicom.dcmread(path, stop_before_pixels=header_only)
    except InvalidDicomError:
        if not _looks_like_raw_dataset(path):
            return None
    dataset = pydicom.dcmread(path, stop_before_pixels=header_only, force=True)
    if "SOPClassUID" not in dataset and "PixelData" not in dataset and "Rows" not in dataset:
        return None
    if "TransferSyntaxUID" not in dataset.file_meta:
        # A file without meta information is encoded in one of the two default syntaxes, and
        # pydicom records which one it detected while parsing.
        implicit = bool(getattr(dataset, "is_implicit_VR", True))
        dataset.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    return dataset


def is_directory_record_file(dataset: Dataset, path: Path) -> bool:
    """Return whether a dataset is a DICOMDIR (an index of a file set, not an image)."""
    sop_class = str(dataset.file_meta.get("MediaStorageSOPClassUID", dataset.get("SOPClassUID", "")))
    return sop_class == MEDIA_STORAGE_DIRECTORY_UID or "DirectoryRecordSequence" in dataset or path.name.upper() == "DICOMDIR"


def _text(dataset: Dataset, keyword: str) -> str | None:
    value = dataset.get(keyword)
    if value is None or value == "":
        return None
    if isinstance(value, pydicom.multival.MultiValue):
        return "\\".join(str(item) for item in value)
    return str(value).strip()


def _shared(value: Any) -> str:
    """Return ``str(value)`` interned, for a value that repeats in every file of a series."""
    return sys.intern(str(value))


def _shared_text(dataset: Dataset, keyword: str) -> str | None:
    text = _text(dataset, keyword)
    return None if text is None else sys.intern(text)


def _number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _floats(value: Any, count: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        numbers = tuple(float(item) for item in value)
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count else None


def _functional_item(dataset: Dataset, frame: int, sequence: str) -> Dataset | None:
    """Return the first item of a functional group macro for one frame (per-frame, else shared)."""
    for groups_keyword, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        groups = dataset.get(groups_keyword)
        if groups is None or len(groups) <= index:
            continue
        macro = groups[index].get(sequence)
        if macro is not None and len(macro) > 0:
            item: Dataset = macro[0]
            return item
    return None


@dataclass(frozen=True, slots=True)
class FrameHeader:
    """Header values of one 2D image (one file, or one frame of a multi-frame file).

    ``pixel_spacing_mm`` follows DICOM PixelSpacing: (row spacing, column spacing), that is
    (y, x). ``orientation`` is ImageOrientationPatient (row cosines, then column cosines).
    Indexing keeps one instance per file until the folder is grouped, so the class has slots
    and the values that repeat across a series are interned strings.
    """

    path: Path
    frame: int | None
    series_uid: str
    study_uid: str
    patient_id: str
    frame_of_reference_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    modality: str
    image_type: tuple[str, ...]
    has_pixels: bool
    samples_per_pixel: int
    rows: int
    columns: int
    pixel_spacing_mm: tuple[float, ...] | None
    orientation: tuple[float, ...] | None
    position_xyz_mm: tuple[float, ...] | None
    rescale_slope: float
    rescale_intercept: float
    has_modality_lut: bool
    bits_stored: int
    pixel_representation: int
    instance_number: int | None
    acquisition_number: int | None
    slice_thickness_mm: float | None
    spacing_between_slices_mm: float | None
    gantry_tilt_degrees: float | None
    manufacturer: str | None
    model: str | None
    kvp: float | None
    tube_current_ma: float | None
    convolution_kernel: str | None
    acquisition_date: str | None
    series_description: str | None

    @property
    def label(self) -> str:
        """File path, with the frame number for a frame of a multi-frame file."""
        return str(self.path) if self.frame is None else f"{self.path} (frame {self.frame + 1})"

    @property
    def is_localizer(self) -> bool:
        """Whether ImageType marks this image as a localizer (scout, topogram)."""
        return "LOCALIZER" in self.image_type

    @property
    def is_secondary_capture(self) -> bool:
        """Whether the SOP class is a Secondary Capture image (screenshot, report page)."""
        return self.sop_class_uid in SECONDARY_CAPTURE_UIDS


def frame_headers(dataset: Dataset, path: Path) -> list[FrameHeader]:
    """Extract the header of every frame of a dataset (one entry for a single-frame image)."""
    number_of_frames = int(dataset.get("NumberOfFrames", 1) or 1)
    multi_frame = "PerFrameFunctionalGroupsSequence" in dataset or "SharedFunctionalGroupsSequence" in dataset
    frames = range(number_of_frames) if multi_frame else [None]
    image_type = tuple(sys.intern(str(item).upper()) for item in (dataset.get("ImageType") or ()))
    common = dict(
        path=path,
        series_uid=_shared(dataset.get("SeriesInstanceUID", "")),
        study_uid=_shared(dataset.get("StudyInstanceUID", "")),
        patient_id=_shared(dataset.get("PatientID", "")),
        frame_of_reference_uid=_shared(dataset.get("FrameOfReferenceUID", "")),
        sop_class_uid=_shared(dataset.get("SOPClassUID", "")),
        sop_instance_uid=str(dataset.get("SOPInstanceUID", "")),
        modality=_shared(dataset.get("Modality", "")),
        has_pixels="PixelData" in dataset or "FloatPixelData" in dataset or "Rows" in dataset,
        samples_per_pixel=int(dataset.get("SamplesPerPixel", 1) or 1),
        rows=int(dataset.get("Rows", 0) or 0),
        columns=int(dataset.get("Columns", 0) or 0),
        has_modality_lut="ModalityLUTSequence" in dataset,
        bits_stored=int(dataset.get("BitsStored", dataset.get("BitsAllocated", 16)) or 16),
        pixel_representation=int(dataset.get("PixelRepresentation", 0) or 0),
        instance_number=_int_or_none(dataset.get("InstanceNumber")),
        acquisition_number=_int_or_none(dataset.get("AcquisitionNumber")),
        spacing_between_slices_mm=_number(dataset.get("SpacingBetweenSlices")),
        gantry_tilt_degrees=_number(dataset.get("GantryDetectorTilt")),
        manufacturer=_shared_text(dataset, "Manufacturer"),
        model=_shared_text(dataset, "ManufacturerModelName"),
        convolution_kernel=_shared_text(dataset, "ConvolutionKernel"),
        acquisition_date=_shared_text(dataset, "AcquisitionDate") or _shared_text(dataset, "SeriesDate"),
        series_description=_shared_text(dataset, "SeriesDescription"),
    )
    headers = []
    for frame in frames:
        if frame is None:
            spacing = _floats(dataset.get("PixelSpacing"), 2)
            orientation = _floats(dataset.get("ImageOrientationPatient"), 6)
            position = _floats(dataset.get("ImagePositionPatient"), 3)
            slope = _number(dataset.get("RescaleSlope"))
            intercept = _number(dataset.get("RescaleIntercept"))
            thickness = _number(dataset.get("SliceThickness"))
            kvp = _number(dataset.get("KVP"))
            current = _number(dataset.get("XRayTubeCurrent"))
            frame_image_type = image_type
        else:
            measures = _functional_item(dataset, frame, "PixelMeasuresSequence")
            plane = _functional_item(dataset, frame, "PlaneOrientationSequence")
            place = _functional_item(dataset, frame, "PlanePositionSequence")
            rescale = _functional_item(dataset, frame, "PixelValueTransformationSequence")
            xray = _functional_item(dataset, frame, "CTXRayDetailsSequence")
            acquisition = _functional_item(dataset, frame, "CTAcquisitionDetailsSequence")
            frame_type = _functional_item(dataset, frame, "CTImageFrameTypeSequence")
            spacing = _floats(measures.get("PixelSpacing") if measures else None, 2)
            orientation = _floats(plane.get("ImageOrientationPatient") if plane else None, 6)
            position = _floats(place.get("ImagePositionPatient") if place else None, 3)
            slope = _number(rescale.get("RescaleSlope")) if rescale else _number(dataset.get("RescaleSlope"))
            intercept = _number(rescale.get("RescaleIntercept")) if rescale else _number(dataset.get("RescaleIntercept"))
            thickness = _number(measures.get("SliceThickness")) if measures else None
            kvp = _number(dataset.get("KVP"))
            for item in (xray, acquisition):
                if item is not None and item.get("KVP") is not None:
                    kvp = _number(item.get("KVP"))
            current = _number(xray.get("XRayTubeCurrentInmA")) if xray else _number(dataset.get("XRayTubeCurrent"))
            frame_image_type = (
                tuple(str(item).upper() for item in frame_type.get("FrameType", ())) if frame_type else image_type
            )
        headers.append(
            FrameHeader(
                frame=frame,
                image_type=frame_image_type,
                pixel_spacing_mm=spacing,
                orientation=orientation,
                position_xyz_mm=position,
                rescale_slope=1.0 if slope is None else slope,
                rescale_intercept=0.0 if intercept is None else intercept,
                slice_thickness_mm=thickness,
                kvp=kvp,
                tube_current_ma=current,
                **common,  # type: ignore[arg-type]
            )
        )
    return headers


def _int_or_none(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
