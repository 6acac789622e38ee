"""The bundled real chest CT: LIDC-IDRI-0001 with its LUNA16 nodule (CC BY 3.0).

The package ships the 133-slice series of patient LIDC-IDRI-0001 from the LIDC-IDRI collection
(The Cancer Imaging Archive), re-encoded as JPEG-LS lossless DICOM (22.5 MB in place of 70 MB;
decoded pixel values identical to the original), with the LIDC reader XML and the series' row of
the LUNA16 ``annotations.csv``. ``sample_data/lidc-idri-0001/PROVENANCE.md`` lists the sources,
the change made and the citations that the CC BY 3.0 licence requires.

Typical use::

    from tunisian_lung.io import load_volume
    from tunisian_lung.sample import sample_nodule, sample_series_dir

    volume = load_volume(sample_series_dir())
    nodule = sample_nodule()   # centre in world LPS mm, diameter in mm
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tunisian_lung import layout
from tunisian_lung.errors import DatasetLayoutError

logger = logging.getLogger(__name__)

SAMPLE_PATIENT_ID = "LIDC-IDRI-0001"
SAMPLE_SERIES_UID = "1.3.6.1.4.1.14519.5.2.1.6279.6001.179049373636438705059720603192"
SAMPLE_SLICES = 133
SAMPLE_LICENSE = "CC-BY-3.0"
SAMPLE_CITATION = (
    "Armato III S.G. et al. (2015) Data From LIDC-IDRI, The Cancer Imaging Archive, "
    "doi:10.7937/K9/TCIA.2015.LO9QL9SX; Clark K. et al. (2013) J Digit Imaging 26:1045-1057; "
    "LUNA16 annotations: Setio A.A.A. et al. (2017) Med Image Anal 42:1-13"
)
SAMPLE_SOURCE: dict[str, str] = {
    "collection": "LIDC-IDRI (The Cancer Imaging Archive)",
    "patient": SAMPLE_PATIENT_ID,
    "annotations": "LUNA16 annotations.csv",
    "encoding": "JPEG-LS lossless re-encoding of the original pixel data",
}
#: Class of the LUNA16 nodule: the four LIDC readers rated its malignancy 5, 5, 5 and 4, and a
#: median rating of 4 or 5 maps to malignant (1). A suspicion rating, not a pathology result.
SAMPLE_NODULE_CLASS = 1

_SAMPLE_FOLDER = "lidc-idri-0001"


def sample_dir() -> Path:
    """Return the folder of the bundled sample (DICOM folder, XML, CSV, provenance, licence).

    Raises
    ------
    DatasetLayoutError
        The package was installed without its ``sample_data`` files.
    """
    folder = Path(__file__).resolve().parent / "sample_data" / _SAMPLE_FOLDER
    dicom = folder / "dicom"
    if not dicom.is_dir() or not any(dicom.glob("*.dcm")):
        raise DatasetLayoutError(
            f"the bundled LIDC-IDRI-0001 sample is missing from {folder}; reinstall tunisian-lung "
            "from a wheel or a source checkout that includes tunisian_lung/sample_data, or "
            "regenerate it with scripts/make_sample.py"
        )
    return folder


def sample_series_dir() -> Path:
    """Return the folder holding only the 133 DICOM files of the sample series."""
    return sample_dir() / "dicom"


def sample_nodule() -> dict[str, Any]:
    """Return the LUNA16 nodule of the sample series.

    Returns
    -------
    dict
        ``patient_id`` and ``series_id`` (str), ``center_xyz_mm`` (tuple of 3 floats, world LPS
        millimetres in x, y, z order), ``diameter_mm`` (float) and ``class`` (int, 1 malignant).
    """
    path = sample_dir() / "annotations_luna16.csv"
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if row["seriesuid"] == SAMPLE_SERIES_UID]
    if len(rows) != 1:
        raise DatasetLayoutError(
            f"{path}: expected one row for series {SAMPLE_SERIES_UID}, found {len(rows)}; "
            "regenerate the sample with scripts/make_sample.py"
        )
    row = rows[0]
    return {
        "patient_id": SAMPLE_PATIENT_ID,
        "series_id": SAMPLE_SERIES_UID,
        "center_xyz_mm": (float(row["coordX"]), float(row["coordY"]), float(row["coordZ"])),
        "diameter_mm": float(row["diameter_mm"]),
        "class": SAMPLE_NODULE_CLASS,
    }


def sample_annotation_row() -> dict[str, str]:
    """Return the sample's nodule as one ``annotations.csv`` row of a release (all strings).

    The stage is empty because the LIDC-IDRI collection gives none for this patient.
    """
    nodule = sample_nodule()
    x, y, z = nodule["center_xyz_mm"]
    return {
        "patient_id": SAMPLE_PATIENT_ID,
        "series_id": SAMPLE_SERIES_UID,
        "coordX": repr(x),
        "coordY": repr(y),
        "coordZ": repr(z),
        "diameter_mm": repr(nodule["diameter_mm"]),
        "class": str(nodule["class"]),
        "nodule_present": "1",
        "stage": "",
    }


def copy_sample_series(root: str | os.PathLike[str]) -> Path:
    """Copy the sample's DICOM files into ``dicom/<patient_id>/<series_id>/`` of a release.

    Returns the series folder created in ``root``.
    """
    target = layout.series_dicom_dir(Path(root), SAMPLE_PATIENT_ID, SAMPLE_SERIES_UID)
    shutil.copytree(sample_series_dir(), target)
    return target


def write_sample_release(out_dir: str | os.PathLike[str]) -> Path:
    """Write the sample as a release folder with one patient and return its path.

    The release has ``dicom/LIDC-IDRI-0001/<SeriesInstanceUID>/`` (a copy of the 133 files),
    ``annotations.csv`` with the LUNA16 nodule, ``dataset.json`` (CC-BY-3.0, citation, file
    checksums), and ``PROVENANCE.md`` and ``LICENSE`` beside them. It has no ``clinical.csv``
    because the collection gives no clinical data for this patient. The release is built in a
    temporary sibling folder and renamed at the end.

    Raises
    ------
    DatasetLayoutError
        ``out_dir`` exists and is not an empty folder, or the bundled sample is missing.
    """
    from tunisian_lung.manifest import Manifest, compute_file_entries, write_manifest

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetLayoutError(
            f"output folder {out} already exists and is not empty; choose a new folder or delete it"
        )
    source = sample_dir()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        copy_sample_series(staging)
        for name in ("PROVENANCE.md", "LICENSE"):
            shutil.copyfile(source / name, staging / name)
        row = sample_annotation_row()
        with (staging / layout.ANNOTATIONS_NAME).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(row), lineterminator="\n")
            writer.writeheader()
            writer.writerow(row)
        manifest = Manifest(
            name="lidc-idri-0001-sample",
            version="1",
            license=SAMPLE_LICENSE,
            citation=SAMPLE_CITATION,
            coordinate_space=layout.DEFAULT_COORDINATE_SPACE,
            counts={"patients": 1, "series": 1, "nodules": 1},
            files=compute_file_entries(staging),
            source=SAMPLE_SOURCE,
        )
        write_manifest(staging, manifest)
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("wrote the LIDC-IDRI-0001 sample release to %s", out)
    return out
