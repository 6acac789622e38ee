"""Shared fixtures: paths to the real public CT data kept beside the repository.

The real files live in ``../shared/data`` next to the repository checkout (override with the
``TUNISIAN_LUNG_SHARED_DATA`` environment variable). Tests that need them skip with a reason
when the folder is absent, so the suite also passes on a user's machine.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """Return the folder with the real public data (it may not exist)."""
    override = os.environ.get("TUNISIAN_LUNG_SHARED_DATA")
    if override:
        return Path(override)
    return REPO_ROOT.parent / "shared" / "data"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(
            f"real test data not found at {path}; set TUNISIAN_LUNG_SHARED_DATA to the shared/data folder to run this test"
        )
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared/data folder with real public CT files."""
    return _require(shared_data_dir())


@pytest.fixture(scope="session")
def lidc_0001_dir() -> Path:
    """Folder of the real LIDC-IDRI-0001 chest CT series (133 slices, CC BY 3.0)."""
    return _require(shared_data_dir() / "real" / "lidc-idri-0001")


@pytest.fixture(scope="session")
def quirks_dir() -> Path:
    """Folder of awkward real DICOM files, one sub-folder per case (see its README.md)."""
    return _require(shared_data_dir() / "quirks")


@pytest.fixture(scope="session")
def luna16_annotations_csv() -> Path:
    """The real (partial) LUNA16 annotations.csv: 1,117 nodules over 568 distinct series."""
    return _require(shared_data_dir() / "real" / "luna16-annotations" / "annotations_luna16_partial.csv")
