"""Audit of the identifying attributes left in the DICOM files of a folder or release.

:func:`audit` reads every DICOM header under a folder (pixels are not read). It lists, per file,
each attribute that can identify a patient: person names, birth dates, addresses and telephone
numbers, institution names, other patient IDs and accession numbers, and burned-in annotation
flags. It also lists free-text descriptions with words outside the clean-descriptor vocabulary
and private attributes outside the safe allow-list. A folder is clean when nothing is found.

Not checked: text burned into the pixels of unflagged images (no OCR), and whether dates were
shifted (a shifted date looks like a real one).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.errors import InvalidDicomError

from tunisian_lung.errors import PackagingError
from tunisian_lung.packaging.deid import (
    DUMMY_PERSON_NAME,
    SAFE_PRIVATE_TAGS,
    burned_in_reason,
    is_clean_descriptor,
)

logger = logging.getLogger(__name__)

#: Finding categories, in report order.
CATEGORIES = (
    "name",
    "birth_date",
    "address",
    "institution",
    "identifier",
    "description",
    "private",
    "burned_in",
    "deidentification",
)

_BIRTH = ("PatientBirthDate", "PatientBirthTime", "PatientBirthName", "PatientMotherBirthName")
_ADDRESS = (
    "PatientAddress",
    "PatientTelephoneNumbers",
    "CountryOfResidence",
    "RegionOfResidence",
    "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers",
    "InstitutionAddress",
    "CurrentPatientLocation",
    "PatientInstitutionResidence",
)
_INSTITUTION = ("InstitutionName", "InstitutionalDepartmentName", "InstitutionCodeSequence", "RequestingService")
_IDENTIFIER = (
    "OtherPatientIDs",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "IssuerOfPatientID",
    "MedicalRecordLocator",
    "AdmissionID",
    "AccessionNumber",
    "StudyID",
    "RequestedProcedureID",
    "ScheduledProcedureStepID",
    "PerformedProcedureStepID",
    "PlacerOrderNumberImagingServiceRequest",
    "FillerOrderNumberImagingServiceRequest",
    "IdentifyingComments",
)
_DESCRIPTION = (
    "StudyDescription",
    "SeriesDescription",
    "ProtocolName",
    "ImageComments",
    "StudyComments",
    "PatientComments",
    "AdditionalPatientHistory",
    "Occupation",
    "AdmittingDiagnosesDescription",
    "DerivationDescription",
    "AcquisitionComments",
    "AcquisitionProtocolDescription",
    "AcquisitionDeviceProcessingDescription",
    "RequestedProcedureDescription",
    "ScheduledProcedureStepDescription",
    "PerformedProcedureStepDescription",
    "ContrastBolusAgent",
    "VisitComments",
)


@dataclass(frozen=True)
class AuditFinding:
    """One identifying attribute found in one file."""

    file: str
    tag: str
    keyword: str
    category: str
    value: str

    def format(self) -> str:
        """Render the finding as one report line."""
        return f"{self.file}: {self.tag} {self.keyword} [{self.category}] = {self.value!r}"


@dataclass
class AuditReport:
    """Every finding of an audit; ``clean`` is True when there is none.

    ``files`` is the number of DICOM files read; ``unreadable`` lists files under the folder
    that are not DICOM (they are not audited).
    """

    root: Path
    files: int = 0
    findings: list[AuditFinding] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """True when no identifying attribute was found."""
        return not self.findings

    def by_keyword(self) -> Counter[str]:
        """Return the number of files each keyword was found in."""
        # A keyword can occur several times in one file (inside sequences), so count files.
        return Counter(keyword for keyword, _file in {(f.keyword, f.file) for f in self.findings})

    def by_file(self) -> dict[str, list[AuditFinding]]:
        """Return the findings grouped by file, in file order."""
        grouped: dict[str, list[AuditFinding]] = {}
        for finding in self.findings:
            grouped.setdefault(finding.file, []).append(finding)
        return grouped

    def format(self, *, summary_only: bool = False) -> str:
        """Render the report: one line per finding (unless ``summary_only``), a count of files
        per attribute, and a summary line."""
        lines = [] if summary_only else [finding.format() for finding in self.findings]
        if self.findings:
            categories = {finding.keyword: finding.category for finding in self.findings}
            lines.append("files per attribute:")
            for keyword, count in sorted(self.by_keyword().items(), key=lambda item: (-item[1], item[0])):
                lines.append(f"  {keyword} [{categories[keyword]}]: {count}")
        status = "clean" if self.clean else f"{len(self.findings)} identifying attribute(s) in {len(self.by_file())} file(s)"
        lines.append(f"audited {self.files} DICOM file(s) under {self.root}: {status}")
        return "\n".join(lines)


def _preview(value: object, limit: int = 60) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _has_value(value: object) -> bool:
    if value is None:
        return False
    if isinstance(value, (bytes, bytearray)):
        return bool(value.strip(b"\x00 "))
    return bool(str(value).strip())


def _walk(ds: Dataset, prefix: str = "") -> Iterator[tuple[str, Dataset, DataElement]]:
    """Yield ``(path, owner data set, element)`` for every element, nested ones included."""
    for element in ds:
        yield prefix, ds, element
        if element.VR == "SQ":
            for index, item in enumerate(element.value):
                yield from _walk(item, f"{prefix}{element.keyword or element.tag}[{index}].")


def _private_block_creators(ds: Dataset) -> dict[tuple[int, int], str]:
    return {
        (element.tag.group, element.tag.element): str(element.value).strip()
        for element in ds
        if element.tag.is_private and 0x0010 <= element.tag.element <= 0x00FF
    }


def audit_dataset(ds: Dataset, file: str) -> list[AuditFinding]:
    """Return the identifying attributes left in one DICOM data set (see module docstring)."""
    findings: list[AuditFinding] = []
    pseudonym = str(ds.get("PatientID", "")).strip()
    creators_by_owner: dict[int, dict[tuple[int, int], str]] = {}

    def add(path: str, element: DataElement, category: str, keyword: str | None = None) -> None:
        tag = element.tag
        keyword = keyword or element.keyword or "private"
        value = element.value if element.VR != "SQ" else f"{len(element.value)} item(s)"
        findings.append(
            AuditFinding(file, f"({tag.group:04X},{tag.element:04X})", path + keyword, category, _preview(value))
        )

    for path, owner, element in _walk(ds):
        keyword = element.keyword or ""
        value = element.value
        tag = element.tag
        if tag.is_private:
            creators = creators_by_owner.setdefault(id(owner), _private_block_creators(owner))
            if not _is_safe_private(tag, creators):
                block = tag.element if tag.element <= 0x00FF else tag.element >> 8
                creator = creators.get((tag.group, block), "unknown creator")
                add(path, element, "private", f"Private[{creator}]")
            continue
        if element.VR == "SQ":
            if keyword in _INSTITUTION + _IDENTIFIER and value:
                add(path, element, "institution" if keyword in _INSTITUTION else "identifier")
            continue
        if not _has_value(value):
            continue
        if element.VR == "PN":
            text = str(value).strip()
            if text not in (pseudonym, DUMMY_PERSON_NAME):
                add(path, element, "name")
        elif keyword in _BIRTH:
            add(path, element, "birth_date")
        elif keyword in _ADDRESS:
            add(path, element, "address")
        elif keyword in _INSTITUTION:
            add(path, element, "institution")
        elif keyword in _IDENTIFIER:
            add(path, element, "identifier")
        elif keyword in _DESCRIPTION and not is_clean_descriptor(str(value)):
            add(path, element, "description")

    reason = burned_in_reason(ds)
    if reason is not None:
        flag = ds["BurnedInAnnotation"] if "BurnedInAnnotation" in ds else ds["SOPClassUID"]
        add("", flag, "burned_in")
    if str(ds.get("PatientIdentityRemoved", "")).strip().upper() != "YES" and "PatientIdentityRemoved" in ds:
        add("", ds["PatientIdentityRemoved"], "deidentification")
    return findings


def _is_safe_private(tag: BaseTag, creators: dict[tuple[int, int], str]) -> bool:
    group = tag.group
    element = tag.element
    if 0x0010 <= element <= 0x00FF:
        creator = creators.get((group, element), "")
        return any(key[0] == creator and key[1] == group for key in SAFE_PRIVATE_TAGS)
    if element >= 0x1000:
        creator = creators.get((group, element >> 8), "")
        return (creator, group, element & 0xFF) in SAFE_PRIVATE_TAGS
    return False


def _candidate_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            yield path


def audit(root: str | Path, *, progress: bool = False) -> AuditReport:
    """List every identifying attribute left in the DICOM files under ``root``.

    Parameters
    ----------
    root:
        A release folder, a raw export or a single DICOM file. Every file below it is tried;
        files that are not DICOM (CSV, JSON, NIfTI, PNG) are skipped without a finding.
    progress:
        Show a tqdm bar over the files.

    Returns
    -------
    AuditReport
        The findings per file; ``report.clean`` is True when none was found.

    Raises
    ------
    PackagingError
        When ``root`` does not exist.
    """
    root = Path(root)
    if not root.exists():
        raise PackagingError(f"cannot audit {root}: no such file or folder")
    report = AuditReport(root=root)
    files = [root] if root.is_file() else list(_candidate_files(root))
    if progress:
        from tqdm import tqdm

        files = list(tqdm(files, desc="audit", unit="file"))
    for path in files:
        if path.suffix.lower() in (".csv", ".json", ".md", ".png", ".gz", ".nii", ".txt", ".xml"):
            continue
        try:
            ds = dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError) as error:
            logger.debug("skipping %s: not a DICOM file (%s)", path, error)
            report.unreadable.append(str(path))
            continue
        report.files += 1
        relative = str(path.relative_to(root)) if root.is_dir() else path.name
        report.findings.extend(audit_dataset(ds, relative))
    logger.info("audited %d DICOM file(s) under %s: %d finding(s)", report.files, root, len(report.findings))
    return report
