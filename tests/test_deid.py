"""Tests of the DICOM Basic Application Level Confidentiality Profile and its options."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from tunisian_lung.packaging.audit import audit_dataset
from tunisian_lung.packaging.deid import (
    ACTION_TABLE,
    DeidOptions,
    burned_in_reason,
    clean_descriptor,
    date_offset_days,
    deidentify_dataset,
    remap_uid,
    table_summary,
)

SECRET = b"0123456789abcdef0123456789abcdef"


def _ct_header(**values: object) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1.1"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.1.1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.3"
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.4"
    ds.Modality = "CT"
    ds.PatientID = "HOSP-123456"
    ds.PatientName = "BEN ALI^SAMI"
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "M"
    ds.PatientAge = "063Y"
    ds.PatientAddress = "5 avenue Habib Bourguiba"
    ds.OtherPatientIDs = "MRN-77"
    ds.InstitutionName = "Hopital Charles Nicolle"
    ds.ReferringPhysicianName = "HAMDI^NOUR"
    ds.OperatorsName = "TECH^ONE"
    ds.AccessionNumber = "A20230110"
    ds.StudyDate = "20230110"
    ds.AcquisitionDate = "20230113"
    ds.StudyTime = "101500"
    ds.StationName = "CT01"
    ds.DeviceSerialNumber = "SN-998"
    ds.StudyDescription = "CT Thorax Dr Hamdi"
    ds.ProtocolName = "Lung 1.25mm"
    ds.ImageComments = "patient moved"
    ds.Manufacturer = "GE MEDICAL SYSTEMS"
    item = Dataset()
    item.ReferencedSOPClassUID = CTImageStorage
    item.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.9"
    ds.ReferencedImageSequence = Sequence([item])
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def test_action_table_keywords_match_dictionary() -> None:
    from pydicom.datadict import keyword_for_tag

    for tag, rule in ACTION_TABLE.items():
        assert keyword_for_tag(tag) == rule.keyword


def test_deid_removes_identifying_attributes() -> None:
    ds = _ct_header()
    deidentify_dataset(ds, pseudonym="TL-0001", secret=SECRET)
    assert ds.PatientID == "TL-0001"
    assert ds.PatientName == "TL-0001"
    assert ds.PatientBirthDate == ""
    assert ds.AccessionNumber == ""
    assert ds.ReferringPhysicianName == ""
    for keyword in ("PatientAddress", "OtherPatientIDs", "InstitutionName", "OperatorsName", "ImageComments"):
        assert keyword not in ds, keyword
    assert audit_dataset(ds, "x.dcm") == []


def test_deid_sets_method_codes() -> None:
    ds = _ct_header()
    deidentify_dataset(ds, pseudonym="TL-0001", secret=SECRET)
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.DeidentificationMethod == "DCM:113100/113105/113107/113108/113109/113111"
    codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113105", "113107", "113108", "113109", "113111"]
    assert all(item.CodingSchemeDesignator == "DCM" for item in ds.DeidentificationMethodCodeSequence)
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"


def test_deid_options_change_actions() -> None:
    retained = _ct_header()
    deidentify_dataset(retained, pseudonym="TL-0001", secret=SECRET)
    assert retained.PatientSex == "M"
    assert retained.PatientAge == "063Y"
    assert retained.StationName == "CT01"
    assert retained.DeviceSerialNumber == "SN-998"

    bare = _ct_header()
    options = DeidOptions(
        retain_longitudinal_modified_dates=False,
        retain_patient_characteristics=False,
        retain_device_identity=False,
        clean_descriptors=False,
        retain_safe_private=False,
    )
    deidentify_dataset(bare, pseudonym="TL-0001", secret=SECRET, options=options)
    assert bare.PatientSex == ""
    assert "PatientAge" not in bare
    assert "StationName" not in bare
    assert "DeviceSerialNumber" not in bare
    assert "StudyDescription" not in bare
    assert bare.StudyDate == ""
    assert "AcquisitionDate" not in bare
    assert bare.DeidentificationMethod == "DCM:113100"


def test_deid_shifts_dates_keeping_intervals() -> None:
    ds = _ct_header()
    deidentify_dataset(ds, pseudonym="TL-0001", secret=SECRET)
    offset = date_offset_days("HOSP-123456", SECRET)
    study = dt.datetime.strptime(ds.StudyDate, "%Y%m%d").date()
    acquisition = dt.datetime.strptime(ds.AcquisitionDate, "%Y%m%d").date()
    assert study == dt.date(2023, 1, 10) + dt.timedelta(days=offset)
    assert (acquisition - study).days == 3
    assert ds.StudyTime == "101500"
    assert -3650 <= offset <= -365


def test_date_offset_differs_between_patients() -> None:
    offsets = {date_offset_days(f"P{i:03d}", SECRET) for i in range(20)}
    assert len(offsets) > 1


def test_deid_remaps_uids_consistently() -> None:
    first = _ct_header()
    second = _ct_header(SOPInstanceUID="1.2.826.0.1.3680043.8.498.1.2")
    deidentify_dataset(first, pseudonym="TL-0001", secret=SECRET)
    deidentify_dataset(second, pseudonym="TL-0001", secret=SECRET)
    assert first.SeriesInstanceUID == second.SeriesInstanceUID
    assert first.StudyInstanceUID == second.StudyInstanceUID
    assert first.SOPInstanceUID != second.SOPInstanceUID
    assert first.SeriesInstanceUID == remap_uid("1.2.826.0.1.3680043.8.498.3", SECRET)
    assert first.SeriesInstanceUID.startswith("2.25.")
    assert len(first.SeriesInstanceUID) <= 64
    assert first.file_meta.MediaStorageSOPInstanceUID == first.SOPInstanceUID
    assert first.SOPClassUID == CTImageStorage
    reference = first.ReferencedImageSequence[0]
    assert reference.ReferencedSOPClassUID == CTImageStorage
    assert reference.ReferencedSOPInstanceUID == remap_uid("1.2.826.0.1.3680043.8.498.9", SECRET)


def test_remap_uid_depends_on_secret() -> None:
    uid = "1.2.826.0.1.3680043.8.498.3"
    assert remap_uid(uid, SECRET) != remap_uid(uid, b"another release key")


def test_deid_cleans_descriptors() -> None:
    ds = _ct_header()
    deidentify_dataset(ds, pseudonym="TL-0001", secret=SECRET)
    assert ds.StudyDescription == "CT THORAX"
    assert ds.ProtocolName == "LUNG 1.25MM"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("CT Chest w/o contrast", "CT CHEST W/O CONTRAST"),
        ("Chest/Abdomen", ""),
        ("Thorax MRN-0042 20230110", "THORAX"),
        ("Lung 1.25mm B30f", "LUNG 1.25MM B30F"),
        ("Dr House", ""),
    ],
)
def test_clean_descriptor_cases(text: str, expected: str) -> None:
    assert clean_descriptor(text) == expected


def test_deid_keeps_only_safe_private() -> None:
    ds = _ct_header()
    unsafe = ds.private_block(0x0029, "ACME HOSPITAL PACS", create=True)
    unsafe.add_new(0x01, "LO", "patient BEN ALI")
    safe = ds.private_block(0x0043, "GEMS_PARM_01", create=True)
    safe.add_new(0x27, "SH", "1.375:1")
    safe.add_new(0x28, "LO", "not in the allow-list")
    summary = deidentify_dataset(ds, pseudonym="TL-0001", secret=SECRET)
    private = {(element.tag.group, element.tag.element) for element in ds if element.tag.is_private}
    assert private == {(0x0043, 0x0010), (0x0043, 0x1027)}
    assert summary.private_kept == 1
    assert summary.private_removed == 3

    ds_no_private = _ct_header()
    ds_no_private.private_block(0x0043, "GEMS_PARM_01", create=True).add_new(0x27, "SH", "1.375:1")
    deidentify_dataset(ds_no_private, pseudonym="TL-0001", secret=SECRET, options=DeidOptions(retain_safe_private=False))
    assert not [element for element in ds_no_private if element.tag.is_private]


def test_deid_empties_unlisted_person_names() -> None:
    ds = _ct_header()
    ds.NamesOfIntendedRecipientsOfResults = "SOMEONE^ELSE"
    deidentify_dataset(ds, pseudonym="TL-0001", secret=SECRET)
    assert ds.NamesOfIntendedRecipientsOfResults == ""


def test_burned_in_reason_flags() -> None:
    assert burned_in_reason(_ct_header()) is None
    assert burned_in_reason(_ct_header(BurnedInAnnotation="YES")) == "BurnedInAnnotation is YES"
    assert burned_in_reason(_ct_header(BurnedInAnnotation="NO")) is None
    reason = burned_in_reason(_ct_header(SOPClassUID=SecondaryCaptureImageStorage))
    assert reason is not None and "Secondary Capture" in reason


def test_deid_real_lidc_slice(lidc_0001_dir: Path) -> None:
    ds = dcmread(lidc_0001_dir / "000000.dcm")
    original_pixels = ds.PixelData
    deidentify_dataset(ds, pseudonym="TL-0001", secret=SECRET)
    assert ds.PixelData == original_pixels
    assert ds.PatientID == "TL-0001"
    assert audit_dataset(ds, "000000.dcm") == []


def test_table_summary_lists_every_row() -> None:
    rows = table_summary()
    assert len(rows) == len(ACTION_TABLE)
    assert ("(0010,0010)", "PatientName", "Z") in rows
    assert ("(0010,0040)", "PatientSex", "K") in rows
