"""Names and paths of the release folder layout.

```
<root>/
  dataset.json          manifest: name, version, licence, citation, coordinate_space, counts, files
  annotations.csv       one row per nodule; a scan without nodules has one nodule_present = 0 row
  clinical.csv          one row per patient (optional)
  splits.json           patient -> split (optional)
  dicom/<patient_id>/<series_id>/...   DICOM files, any names
  nifti/<patient_id>/<series_id>.nii.gz   optional converted volumes
```
"""

from __future__ import annotations

from pathlib import Path

MANIFEST_NAME = "dataset.json"
ANNOTATIONS_NAME = "annotations.csv"
CLINICAL_NAME = "clinical.csv"
SPLITS_NAME = "splits.json"
DICOM_DIR = "dicom"
NIFTI_DIR = "nifti"

#: Version of the dataset.json format written by this library.
FORMAT_VERSION = "1.0"
#: Format versions this library can read.
SUPPORTED_FORMAT_VERSIONS = ("1.0",)

COORDINATE_SPACES = ("world_lps_mm", "voxel")
DEFAULT_COORDINATE_SPACE = "world_lps_mm"


def series_dicom_dir(root: str | Path, patient_id: str, series_id: str) -> Path:
    """Return the folder holding the DICOM files of one series in a release."""
    return Path(root) / DICOM_DIR / patient_id / series_id


def series_nifti_path(root: str | Path, patient_id: str, series_id: str) -> Path:
    """Return the path of the converted NIfTI file of one series in a release."""
    return Path(root) / NIFTI_DIR / patient_id / f"{series_id}.nii.gz"
