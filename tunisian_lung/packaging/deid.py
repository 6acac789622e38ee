"""De-identification of DICOM headers with the DICOM PS3.15 Basic Application Level
Confidentiality Profile and a fixed set of its options.

The profile is applied attribute by attribute from :data:`ACTION_TABLE`, this library's own
transcription of the attributes of PS3.15 Table E.1-1 that occur in CT exports. Each entry has
the Basic Profile action and, where an option changes it, the action under that option:

* ``D`` replace with a non-empty dummy value, ``Z`` replace with an empty value,
  ``X`` remove, ``K`` keep, ``C`` clean (shift a date, or keep only safe descriptor words),
  ``U`` replace a UID with a consistent new UID.

Options (codes of the De-identification Method, PS3.16 CID 7050):

* Retain Longitudinal Temporal Information with Modified Dates (113107): every date is shifted
  by one offset per patient, so intervals between a patient's studies are kept. Times are kept.
* Retain Patient Characteristics (113108): sex, age, size, weight, smoking status are kept.
* Retain Device Identity (113109): station name, device serial numbers, software versions kept.
* Clean Descriptors (113105): free-text descriptions keep only words of
  :data:`SAFE_DESCRIPTOR_WORDS` and numbers with units; anything else is dropped.
* Retain Safe Private (113111): private attributes listed in :data:`SAFE_PRIVATE_TAGS` are
  kept, every other private attribute is removed.
* Clean Pixel Data: images flagged with burned-in annotations (BurnedInAnnotation ``YES``) and
  secondary captures are reported by :func:`burned_in_reason` and excluded by the release
  builder. Pixels are never inspected or edited (no OCR), so code 113101 is not recorded.

Attributes absent from the table are kept, as in the standard, with three exceptions that
err on the safe side. Any other UID value that is not a registered DICOM UID (a class or
transfer syntax) is remapped. Any other person name (VR PN) is emptied. Curve and overlay data
and comments (groups 50xx and 60xx) are removed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID

from tunisian_lung.errors import PackagingError

logger = logging.getLogger(__name__)

# --- option names and method codes -----------------------------------------------------------

#: Option key -> (code value of PS3.16 CID 7050, code meaning).
OPTION_CODES: dict[str, tuple[str, str]] = {
    "clean_descriptors": ("113105", "Clean Descriptors Option"),
    "retain_longitudinal_modified_dates": (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    "retain_patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
    "retain_device_identity": ("113109", "Retain Device Identity Option"),
    "retain_safe_private": ("113111", "Retain Safe Private Option"),
}
BASIC_PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")

_DATES = "retain_longitudinal_modified_dates"
_PATIENT = "retain_patient_characteristics"
_DEVICE = "retain_device_identity"
_DESCRIPTORS = "clean_descriptors"


@dataclass(frozen=True)
class DeidOptions:
    """Options of the Basic Application Level Confidentiality Profile applied to a release.

    Every option is on by default, matching the profile the reference dataset was released
    with. ``clean_pixel_data`` makes the builder exclude images flagged with burned-in
    annotations and secondary captures (it does not edit pixels).
    """

    retain_longitudinal_modified_dates: bool = True
    retain_patient_characteristics: bool = True
    retain_device_identity: bool = True
    clean_descriptors: bool = True
    retain_safe_private: bool = True
    clean_pixel_data: bool = True

    def enabled(self) -> tuple[str, ...]:
        """Return the names of the options that change the action table, in code order."""
        return tuple(name for name in OPTION_CODES if getattr(self, name))

    def method_codes(self) -> list[tuple[str, str]]:
        """Return ``(code value, code meaning)`` of the profile and every enabled option."""
        return [BASIC_PROFILE_CODE, *(OPTION_CODES[name] for name in self.enabled())]

    def method_text(self) -> str:
        """Return the De-identification Method (0012,0063) text, e.g. ``DCM:113100/113105``."""
        return "DCM:" + "/".join(code for code, _ in self.method_codes())

    def to_dict(self) -> dict[str, object]:
        """Return the options and codes as a JSON-serialisable dict for ``dataset.json``."""
        return {
            "profile": "DICOM PS3.15 Basic Application Level Confidentiality Profile",
            "method": self.method_text(),
            "options": {name: bool(getattr(self, name)) for name in (*OPTION_CODES, "clean_pixel_data")},
            "codes": [{"value": code, "scheme": "DCM", "meaning": meaning} for code, meaning in self.method_codes()],
        }


# --- the action table ------------------------------------------------------------------------


@dataclass(frozen=True)
class AttributeRule:
    """One row of the action table: the Basic Profile action and the option overrides."""

    keyword: str
    basic: str
    options: Mapping[str, str] = field(default_factory=dict)

    def action(self, options: DeidOptions) -> str:
        """Return the action for this attribute under ``options`` (last enabled option wins)."""
        action = self.basic
        for name, option_action in self.options.items():
            if getattr(options, name):
                action = option_action
        return action


def _rules(*rows: tuple[int, str, str, dict[str, str]]) -> dict[BaseTag, AttributeRule]:
    return {Tag(tag): AttributeRule(keyword, basic, overrides) for tag, keyword, basic, overrides in rows}


_D = {_DATES: "C"}
_P = {_PATIENT: "K"}
_V = {_DEVICE: "K"}
_T = {_DESCRIPTORS: "C"}

#: Tag -> rule. The library's transcription of PS3.15 Table E.1-1 for attributes seen in CT
#: exports. Sequences with action ``X`` are removed whole.
ACTION_TABLE: dict[BaseTag, AttributeRule] = _rules(
    # patient identity
    (0x00100010, "PatientName", "Z", {}),
    (0x00100020, "PatientID", "Z", {}),
    (0x00100021, "IssuerOfPatientID", "X", {}),
    (0x00100030, "PatientBirthDate", "Z", {}),
    (0x00100032, "PatientBirthTime", "X", {}),
    (0x00100050, "PatientInsurancePlanCodeSequence", "X", {}),
    (0x00100101, "PatientPrimaryLanguageCodeSequence", "X", {}),
    (0x00101000, "OtherPatientIDs", "X", {}),
    (0x00101001, "OtherPatientNames", "X", {}),
    (0x00101002, "OtherPatientIDsSequence", "X", {}),
    (0x00101005, "PatientBirthName", "X", {}),
    (0x00101040, "PatientAddress", "X", {}),
    (0x00101060, "PatientMotherBirthName", "X", {}),
    (0x00101080, "MilitaryRank", "X", {}),
    (0x00101081, "BranchOfService", "X", {}),
    (0x00101090, "MedicalRecordLocator", "X", {}),
    (0x00101100, "ReferencedPatientPhotoSequence", "X", {}),
    (0x00102000, "MedicalAlerts", "X", {}),
    (0x00102110, "Allergies", "X", {}),
    (0x00102150, "CountryOfResidence", "X", {}),
    (0x00102152, "RegionOfResidence", "X", {}),
    (0x00102154, "PatientTelephoneNumbers", "X", {}),
    (0x00102180, "Occupation", "X", _T),
    (0x001021B0, "AdditionalPatientHistory", "X", _T),
    (0x001021D0, "LastMenstrualDate", "X", _D),
    (0x001021F0, "PatientReligiousPreference", "X", {}),
    (0x00104000, "PatientComments", "X", _T),
    # patient characteristics
    (0x00100040, "PatientSex", "Z", _P),
    (0x00101010, "PatientAge", "X", _P),
    (0x00101020, "PatientSize", "X", _P),
    (0x00101030, "PatientWeight", "X", _P),
    (0x00102160, "EthnicGroup", "X", _P),
    (0x001021A0, "SmokingStatus", "X", _P),
    (0x001021C0, "PregnancyStatus", "X", _P),
    (0x00102203, "PatientSexNeutered", "X", _P),
    # visit and admission
    (0x00380010, "AdmissionID", "X", {}),
    (0x00380020, "AdmittingDate", "X", _D),
    (0x00380021, "AdmittingTime", "X", _D),
    (0x00380050, "SpecialNeeds", "X", _T),
    (0x00380300, "CurrentPatientLocation", "X", {}),
    (0x00380400, "PatientInstitutionResidence", "X", {}),
    (0x00380500, "PatientState", "X", _T),
    (0x00384000, "VisitComments", "X", _T),
    (0x00081080, "AdmittingDiagnosesDescription", "X", _T),
    (0x00081084, "AdmittingDiagnosesCodeSequence", "X", {}),
    # study, series and instance dates and times
    (0x00080012, "InstanceCreationDate", "X", _D),
    (0x00080013, "InstanceCreationTime", "X", _D),
    (0x00080015, "InstanceCoercionDateTime", "X", _D),
    (0x00080020, "StudyDate", "Z", _D),
    (0x00080021, "SeriesDate", "X", _D),
    (0x00080022, "AcquisitionDate", "X", _D),
    (0x00080023, "ContentDate", "Z", _D),
    (0x00080024, "OverlayDate", "X", _D),
    (0x00080025, "CurveDate", "X", _D),
    (0x0008002A, "AcquisitionDateTime", "X", _D),
    (0x00080030, "StudyTime", "Z", _D),
    (0x00080031, "SeriesTime", "X", _D),
    (0x00080032, "AcquisitionTime", "X", _D),
    (0x00080033, "ContentTime", "Z", _D),
    (0x00080034, "OverlayTime", "X", _D),
    (0x00080035, "CurveTime", "X", _D),
    (0x00080201, "TimezoneOffsetFromUTC", "X", {}),
    (0x00181012, "DateOfSecondaryCapture", "X", _D),
    (0x00181014, "TimeOfSecondaryCapture", "X", _D),
    (0x00189074, "FrameAcquisitionDateTime", "X", _D),
    (0x00189151, "FrameReferenceDateTime", "X", _D),
    (0x00189516, "StartAcquisitionDateTime", "X", _D),
    (0x00189517, "EndAcquisitionDateTime", "X", _D),
    (0x00400002, "ScheduledProcedureStepStartDate", "X", _D),
    (0x00400003, "ScheduledProcedureStepStartTime", "X", _D),
    (0x00400004, "ScheduledProcedureStepEndDate", "X", _D),
    (0x00400005, "ScheduledProcedureStepEndTime", "X", _D),
    (0x00400244, "PerformedProcedureStepStartDate", "X", _D),
    (0x00400245, "PerformedProcedureStepStartTime", "X", _D),
    (0x00400250, "PerformedProcedureStepEndDate", "X", _D),
    (0x00400251, "PerformedProcedureStepEndTime", "X", _D),
    # identifiers of the order and the study
    (0x00080050, "AccessionNumber", "Z", {}),
    (0x00200010, "StudyID", "Z", {}),
    (0x00400009, "ScheduledProcedureStepID", "X", {}),
    (0x00400253, "PerformedProcedureStepID", "X", {}),
    (0x00401001, "RequestedProcedureID", "X", {}),
    (0x00402016, "PlacerOrderNumberImagingServiceRequest", "Z", {}),
    (0x00402017, "FillerOrderNumberImagingServiceRequest", "Z", {}),
    (0x00080051, "IssuerOfAccessionNumberSequence", "X", {}),
    # institution and people
    (0x00080080, "InstitutionName", "X", {}),
    (0x00080081, "InstitutionAddress", "X", {}),
    (0x00080082, "InstitutionCodeSequence", "X", {}),
    (0x00081040, "InstitutionalDepartmentName", "X", {}),
    (0x00080090, "ReferringPhysicianName", "Z", {}),
    (0x00080092, "ReferringPhysicianAddress", "X", {}),
    (0x00080094, "ReferringPhysicianTelephoneNumbers", "X", {}),
    (0x00080096, "ReferringPhysicianIdentificationSequence", "X", {}),
    (0x00081048, "PhysiciansOfRecord", "X", {}),
    (0x00081049, "PhysiciansOfRecordIdentificationSequence", "X", {}),
    (0x00081050, "PerformingPhysicianName", "X", {}),
    (0x00081052, "PerformingPhysicianIdentificationSequence", "X", {}),
    (0x00081060, "NameOfPhysiciansReadingStudy", "X", {}),
    (0x00081062, "PhysiciansReadingStudyIdentificationSequence", "X", {}),
    (0x00081070, "OperatorsName", "X", {}),
    (0x00081072, "OperatorIdentificationSequence", "X", {}),
    (0x00321032, "RequestingPhysician", "X", {}),
    (0x00321033, "RequestingService", "X", {}),
    (0x00400006, "ScheduledPerformingPhysicianName", "X", {}),
    (0x0040A075, "VerifyingObserverName", "D", {}),
    (0x0040A123, "PersonName", "D", {}),
    (0x00700084, "ContentCreatorName", "Z", {}),
    # free-text descriptions
    (0x00081030, "StudyDescription", "X", _T),
    (0x0008103E, "SeriesDescription", "X", _T),
    (0x00082111, "DerivationDescription", "X", _T),
    (0x00084000, "IdentifyingComments", "X", {}),
    (0x00180010, "ContrastBolusAgent", "Z", _T),
    (0x00181030, "ProtocolName", "X", _T),
    (0x00181400, "AcquisitionDeviceProcessingDescription", "X", _T),
    (0x00184000, "AcquisitionComments", "X", _T),
    (0x00189424, "AcquisitionProtocolDescription", "X", _T),
    (0x00204000, "ImageComments", "X", _T),
    (0x00321060, "RequestedProcedureDescription", "X", _T),
    (0x00321070, "RequestedContrastAgent", "X", _T),
    (0x00324000, "StudyComments", "X", _T),
    (0x00400007, "ScheduledProcedureStepDescription", "X", _T),
    (0x00400254, "PerformedProcedureStepDescription", "X", _T),
    # device identity
    (0x00081010, "StationName", "X", _V),
    (0x00181000, "DeviceSerialNumber", "X", _V),
    (0x00181002, "DeviceUID", "U", _V),
    (0x00181004, "PlateID", "X", _V),
    (0x00181005, "GeneratorID", "X", _V),
    (0x00181007, "CassetteID", "X", _V),
    (0x00181008, "GantryID", "X", _V),
    (0x00181020, "SoftwareVersions", "X", _V),
    (0x00181200, "DateOfLastCalibration", "X", _V),
    (0x00181201, "TimeOfLastCalibration", "X", _V),
    (0x0018700A, "DetectorID", "X", _V),
    # sequences that carry identities or free text
    (0x00081110, "ReferencedStudySequence", "X", {}),
    (0x00081111, "ReferencedPerformedProcedureStepSequence", "X", {}),
    (0x00081120, "ReferencedPatientSequence", "X", {}),
    (0x00321064, "RequestedProcedureCodeSequence", "X", {}),
    (0x00400275, "RequestAttributesSequence", "X", {}),
    (0x00400555, "AcquisitionContextSequence", "X", {}),
    (0x0040A730, "ContentSequence", "X", {}),
    (0x04000561, "OriginalAttributesSequence", "X", {}),
    # UIDs
    (0x00080014, "InstanceCreatorUID", "U", {}),
    (0x00080018, "SOPInstanceUID", "U", {}),
    (0x00081155, "ReferencedSOPInstanceUID", "U", {}),
    (0x00081195, "TransactionUID", "U", {}),
    (0x0020000D, "StudyInstanceUID", "U", {}),
    (0x0020000E, "SeriesInstanceUID", "U", {}),
    (0x00200052, "FrameOfReferenceUID", "U", {}),
    (0x00200200, "SynchronizationFrameOfReferenceUID", "U", {}),
    (0x00209161, "ConcatenationUID", "U", {}),
    (0x00209164, "DimensionOrganizationUID", "U", {}),
    (0x0040A124, "UID", "U", {}),
    (0x00880140, "StorageMediaFileSetUID", "U", {}),
    (0x30060024, "ReferencedFrameOfReferenceUID", "U", {}),
    (0x300600C2, "RelatedFrameOfReferenceUID", "U", {}),
)

#: Value written for the ``D`` action on person names (Type 1 in some modules).
DUMMY_PERSON_NAME = "ANONYMIZED"

#: Private attributes kept under Retain Safe Private: (private creator, group, element offset
#: within the block) -> meaning. Only acquisition parameters with no identifying content.
#: NOTE: a short list chosen for CT; the standard's Table E.3.10-1 has many more entries, and
#: this list was not checked entry by entry against it.
SAFE_PRIVATE_TAGS: dict[tuple[str, int, int], str] = {
    ("GEMS_ACQU_01", 0x0019, 0x23): "table speed (mm/rotation)",
    ("GEMS_ACQU_01", 0x0019, 0x27): "rotation speed (s)",
    ("GEMS_PARM_01", 0x0043, 0x27): "scan pitch ratio",
}

#: Upper-case words a cleaned CT descriptor may keep (anatomy, technique, kernels, phases).
SAFE_DESCRIPTOR_WORDS: frozenset[str] = frozenset(
    """
    CT CHEST THORAX LUNG LUNGS THORACIC ABDOMEN PELVIS BODY WHOLE NECK HEAD MEDIASTINUM
    AXIAL CORONAL SAGITTAL OBLIQUE MIP MPR VOLUME SCOUT TOPOGRAM LOCALIZER SURVIEW
    HELICAL SPIRAL SEQUENTIAL HIGH LOW RESOLUTION HRCT LDCT DOSE SCREENING ROUTINE
    STANDARD SOFT SHARP SMOOTH BONE DETAIL LUNG_KERNEL KERNEL RECON RECONSTRUCTION THIN THICK
    SLICE SLICES SERIES STUDY IMAGE IMAGES PRIMARY ORIGINAL DERIVED SECONDARY
    CONTRAST NON WITH WITHOUT PLAIN ENHANCED ARTERIAL VENOUS PORTAL DELAYED PHASE IV ORAL NONE
    INSPIRATION EXPIRATION INSP EXP PROTOCOL AND OF W WO W/ W/O C+ C-
    B30F B31F B45F B50F B60F B70F B80F I30F I50F I70F FC01 FC07 FC51 FC52 FC86 YA YB YC
    """.split()
)

# At most three integer digits, so dates, accession numbers and record numbers never pass.
_NUMBER_WITH_UNIT = re.compile(r"^[+-]?\d{1,3}(?:[.,]\d+)?(?:MM|CM|KV|KVP|MA|MAS|S|MS|%)?$")
# Words split at spaces and punctuation other than - _ / +, so an ID such as ``SYN-0001`` is
# dropped whole and ``w/o`` or ``C+`` keep their meaning.
_DESCRIPTOR_SPLIT = re.compile(r"[\s,;:()\[\]]+")

_SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"


def clean_descriptor(text: str) -> str:
    """Return ``text`` with only safe words and numbers kept, upper-cased, joined by spaces.

    A word survives when it is in :data:`SAFE_DESCRIPTOR_WORDS` or is a number of at most
    three integer digits with an optional unit (``1.25MM``, ``120KV``). Everything else,
    including names, dates and IDs, is dropped.
    """
    words = [word for word in _DESCRIPTOR_SPLIT.split(text.upper()) if word]
    return " ".join(word for word in words if word in SAFE_DESCRIPTOR_WORDS or _NUMBER_WITH_UNIT.match(word))


def is_clean_descriptor(text: str) -> bool:
    """Return True when :func:`clean_descriptor` would keep every word of ``text``."""
    words = [word for word in _DESCRIPTOR_SPLIT.split(text.upper()) if word]
    return all(word in SAFE_DESCRIPTOR_WORDS or _NUMBER_WITH_UNIT.match(word) for word in words)


def burned_in_reason(ds: Dataset) -> str | None:
    """Return why an image may carry burned-in identifying text, or None when it is not flagged.

    An image is flagged when BurnedInAnnotation (0028,0301) is ``YES`` or when its SOP class
    is a Secondary Capture (scanned or screen-captured images, which often show names).
    """
    if str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES":
        return "BurnedInAnnotation is YES"
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class.startswith(_SECONDARY_CAPTURE_PREFIX):
        return f"Secondary Capture image (SOP class {sop_class})"
    return None


# --- keyed pseudonymisation ------------------------------------------------------------------


def remap_uid(uid: str, secret: bytes) -> str:
    """Return the ``2.25.<integer>`` UID derived from ``uid`` with a keyed hash.

    The same ``uid`` and ``secret`` always give the same result, so series and studies still
    group across files and rebuilds. The integer is the first 128 bits of
    HMAC-SHA256(secret, uid), which keeps the UID within 64 characters.
    """
    digest = hmac.new(secret, uid.strip().encode("ascii", "replace"), hashlib.sha256).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def date_offset_days(patient_id: str, secret: bytes, *, min_days: int = 365, max_days: int = 3650) -> int:
    """Return the per-patient date shift in days, a negative number in ``[-max_days, -min_days]``.

    Derived from HMAC-SHA256(secret, patient_id), so one patient always gets the same offset.
    """
    digest = hmac.new(secret, b"date-offset:" + patient_id.encode("utf-8"), hashlib.sha256).digest()
    span = max_days - min_days + 1
    return -(min_days + int.from_bytes(digest[:8], "big") % span)


def _shift_da(value: str, days: int) -> str:
    text = value.strip()
    if not text:
        return text
    try:
        day = dt.datetime.strptime(text[:8], "%Y%m%d").date()
    except ValueError as error:
        raise PackagingError(
            f"cannot shift the date {value!r}: it is not a DICOM DA value YYYYMMDD; fix or remove it in the raw export"
        ) from error
    return (day + dt.timedelta(days=days)).strftime("%Y%m%d")


def _shift_dt(value: str, days: int) -> str:
    text = value.strip()
    if len(text) < 8:
        # A DT holding only a year or year-month is too coarse to shift one day at a time.
        return ""
    return _shift_da(text[:8], days) + text[8:]


# --- applying the profile --------------------------------------------------------------------


@dataclass
class DeidSummary:
    """Counts of what the profile changed in one file (for logs and the build report)."""

    removed: int = 0
    emptied: int = 0
    replaced: int = 0
    dates_shifted: int = 0
    uids_remapped: int = 0
    descriptors_cleaned: int = 0
    private_removed: int = 0
    private_kept: int = 0


def _is_curve_or_overlay_data(tag: BaseTag) -> bool:
    """Return True for curve attributes (50xx,xxxx) and overlay data or comments (60xx,3000/4000)."""
    repeating_group = tag.group & 0xFF00
    if repeating_group == 0x5000:
        return True
    return repeating_group == 0x6000 and tag.element in (0x3000, 0x4000)


def _is_registered_uid(value: str) -> bool:
    uid = UID(value)
    return uid.name != str(uid)


def _process_dataset(
    ds: Dataset,
    options: DeidOptions,
    remap: Callable[[str], str],
    days: int,
    summary: DeidSummary,
) -> None:
    """Apply the action table to ``ds`` and to every nested sequence item, in place."""
    safe_blocks = _safe_private_blocks(ds) if options.retain_safe_private else {}
    for element in list(ds):
        tag = element.tag
        if tag.is_private:
            _process_private(ds, element, safe_blocks, summary)
            continue
        if _is_curve_or_overlay_data(tag):
            del ds[tag]
            summary.removed += 1
            continue
        rule = ACTION_TABLE.get(tag)
        if rule is None:
            if element.VR == "SQ":
                for item in element.value:
                    _process_dataset(item, options, remap, days, summary)
            elif element.VR == "UI" and element.value:
                _remap_generic_uid(element, remap, summary)
            elif element.VR == "PN" and element.value:
                # A person name outside the table is still a name: empty it, as for Z.
                element.value = ""
                summary.emptied += 1
            continue
        _apply_action(ds, element, rule.action(options), options, remap, days, summary)


def _remap_generic_uid(element: DataElement, remap: Callable[[str], str], summary: DeidSummary) -> None:
    keyword = element.keyword or ""
    if keyword.endswith("ClassUID") or keyword in ("TransferSyntaxUID", "CodingSchemeUID"):
        return
    values = element.value if element.VM > 1 else [element.value]
    new_values = [value if _is_registered_uid(str(value)) else remap(str(value)) for value in values]
    if new_values != list(values):
        element.value = new_values if element.VM > 1 else new_values[0]
        summary.uids_remapped += 1


def _apply_action(
    ds: Dataset,
    element: DataElement,
    action: str,
    options: DeidOptions,
    remap: Callable[[str], str],
    days: int,
    summary: DeidSummary,
) -> None:
    if action == "K":
        if element.VR == "SQ":
            for item in element.value:
                _process_dataset(item, options, remap, days, summary)
        return
    if action == "X":
        del ds[element.tag]
        summary.removed += 1
    elif action == "Z":
        if element.VR == "SQ":
            element.value = Sequence()
        else:
            element.value = ""
        summary.emptied += 1
    elif action == "D":
        element.value = DUMMY_PERSON_NAME if element.VR == "PN" else "0"
        summary.replaced += 1
    elif action == "U":
        if element.value:
            values = element.value if element.VM > 1 else [element.value]
            remapped = [remap(str(value)) for value in values]
            element.value = remapped if element.VM > 1 else remapped[0]
            summary.uids_remapped += 1
    elif action == "C":
        _clean(ds, element, days, summary)
    else:  # pragma: no cover - the table holds only the actions above
        raise PackagingError(f"unknown de-identification action {action!r} for {element.keyword}")


def _clean(ds: Dataset, element: DataElement, days: int, summary: DeidSummary) -> None:
    if element.VR == "DA":
        values = element.value if element.VM > 1 else [element.value]
        element.value = [_shift_da(str(v), days) for v in values] if element.VM > 1 else _shift_da(str(values[0]), days)
        summary.dates_shifted += 1
    elif element.VR == "DT":
        element.value = _shift_dt(str(element.value or ""), days)
        summary.dates_shifted += 1
    elif element.VR == "TM":
        return  # times are kept under Retain Longitudinal Temporal Information
    elif element.VR in ("LO", "SH", "ST", "LT", "UT", "CS"):
        original = str(element.value or "")
        cleaned = clean_descriptor(original)
        if not cleaned:
            del ds[element.tag]
            summary.removed += 1
        elif cleaned != original:
            element.value = cleaned
            summary.descriptors_cleaned += 1
    else:
        del ds[element.tag]
        summary.removed += 1


def _safe_private_blocks(ds: Dataset) -> dict[tuple[int, int], str]:
    """Return (group, block byte) -> creator for the private blocks of ``ds``."""
    blocks: dict[tuple[int, int], str] = {}
    for element in ds:
        tag = element.tag
        if tag.is_private and 0x0010 <= tag.element <= 0x00FF:
            blocks[(tag.group, tag.element)] = str(element.value).strip()
    return blocks


def _process_private(
    ds: Dataset, element: DataElement, blocks: Mapping[tuple[int, int], str], summary: DeidSummary
) -> None:
    tag = element.tag
    if blocks:
        if 0x0010 <= tag.element <= 0x00FF:
            creator = blocks.get((tag.group, tag.element), "")
            if any(key[0] == creator and key[1] == tag.group for key in SAFE_PRIVATE_TAGS):
                return
        elif tag.element >= 0x1000:
            creator = blocks.get((tag.group, tag.element >> 8), "")
            if (creator, tag.group, tag.element & 0xFF) in SAFE_PRIVATE_TAGS:
                summary.private_kept += 1
                return
    del ds[tag]
    summary.private_removed += 1


def deidentify_dataset(
    ds: Dataset,
    *,
    pseudonym: str,
    secret: bytes,
    options: DeidOptions = DeidOptions(),
    date_offset: int | None = None,
) -> DeidSummary:
    """De-identify one DICOM data set in place with the Basic Profile and ``options``.

    Parameters
    ----------
    ds:
        The data set read with pydicom, including its file meta information.
    pseudonym:
        The value written to PatientID and PatientName.
    secret:
        Release key for the keyed hashes of UIDs and of the date offset. Keep it outside the
        release: anyone who holds it can link remapped UIDs back to the originals.
    options:
        The profile options applied.
    date_offset:
        Shift of every date in days. Defaults to :func:`date_offset_days` of the original
        PatientID, so every file of one patient gets the same shift.

    Returns
    -------
    DeidSummary
        What was removed, emptied, replaced, shifted and remapped.
    """
    original_patient_id = str(ds.get("PatientID", ""))
    days = date_offset if date_offset is not None else date_offset_days(original_patient_id, secret)
    summary = DeidSummary()
    cache: dict[str, str] = {}

    def remap(uid: str) -> str:
        if uid not in cache:
            cache[uid] = remap_uid(uid, secret)
        return cache[uid]

    _process_dataset(ds, options, remap, days, summary)

    ds.PatientID = pseudonym
    ds.PatientName = pseudonym
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = options.method_text()
    codes = Sequence()
    for value, meaning in options.method_codes():
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        codes.append(item)
    ds.DeidentificationMethodCodeSequence = codes
    if options.retain_longitudinal_modified_dates:
        ds.LongitudinalTemporalInformationModified = "MODIFIED"
    elif "LongitudinalTemporalInformationModified" in ds:
        ds.LongitudinalTemporalInformationModified = "REMOVED"

    meta = getattr(ds, "file_meta", None)
    if meta is not None and "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return summary


def table_summary(options: DeidOptions = DeidOptions()) -> list[tuple[str, str, str]]:
    """Return ``(tag, keyword, action)`` for every row of the action table under ``options``."""
    rows = []
    for tag, rule in sorted(ACTION_TABLE.items()):
        rows.append((f"({tag.group:04X},{tag.element:04X})", rule.keyword, rule.action(options)))
    return rows


def identifying_keywords() -> Iterable[str]:
    """Return the keywords of the table whose Basic Profile action is not keep."""
    return (rule.keyword for rule in ACTION_TABLE.values() if rule.basic != "K")
