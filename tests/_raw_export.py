"""A small raw hospital export with identifying attributes, for the packaging tests.

The images come from :func:`tunisian_lung.synthetic.write_synthetic_release`; every file then
gets the kind of identifying header content a real export carries.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from pydicom import dcmread

from tunisian_lung.synthetic import write_synthetic_release

PATIENT_NAME = "BEN SALAH^MOHAMED"
BIRTH_DATE = "19580312"
INSTITUTION = "Hopital Abderrahmen Mami"
PHYSICIAN = "TRABELSI^LEILA"
OTHER_ID = "MRN-0042"
ACQUISITION_DAYS_AFTER_STUDY = 3


def write_raw_export(folder: Path, *, patients: int = 3, seed: int = 7) -> Path:
    """Write ``folder/raw`` (DICOM files with identifying attributes) and the two tables.

    Returns ``folder``, holding ``raw/``, ``annotations.csv`` and ``clinical.csv``.
    """
    release = write_synthetic_release(folder / "synthetic", patients=patients, seed=seed, slices=12, rows=32)
    raw = folder / "raw"
    for index, path in enumerate(sorted((release / "dicom").rglob("*.dcm"))):
        ds = dcmread(path)
        ds.PatientName = PATIENT_NAME + f" {ds.PatientID}"
        ds.PatientBirthDate = BIRTH_DATE
        ds.InstitutionName = INSTITUTION
        ds.ReferringPhysicianName = PHYSICIAN
        ds.OtherPatientIDs = OTHER_ID
        ds.PatientAddress = "12 rue de Rome, Tunis"
        ds.SeriesDescription = f"Thorax {ds.PatientID} Dr Trabelsi"
        ds.StudyDate = "20230110"
        ds.AcquisitionDate = "20230113"
        block = ds.private_block(0x0029, "ACME HOSPITAL PACS", create=True)
        block.add_new(0x01, "LO", "internal accession 998877")
        safe = ds.private_block(0x0043, "GEMS_PARM_01", create=True)
        safe.add_new(0x27, "SH", "1.375:1")
        # Raw files are named after the patient, as some PACS exports do.
        target = raw / ds.PatientID / f"{ds.PatientID}_{index:04d}.dcm"
        target.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(target, enforce_file_format=True)
    shutil.copyfile(release / "annotations.csv", folder / "annotations.csv")
    shutil.copyfile(release / "clinical.csv", folder / "clinical.csv")
    shutil.rmtree(release)
    return folder


def tree_digest(folder: Path) -> dict[str, str]:
    """Return relative path -> sha256 of every file under ``folder``."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
