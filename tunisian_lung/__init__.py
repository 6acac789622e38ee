"""tunisian_lung: a lung-cancer chest CT dataset made easy and safe to use for deep learning.

The top-level names are imported lazily, so ``import tunisian_lung`` does not import torch or
pydicom until a function that needs them is used.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

# public name -> module that defines it
_LAZY_EXPORTS: dict[str, str] = {
    "Volume": "tunisian_lung.io.volume",
    "open_dataset": "tunisian_lung.dataset",
    "TunisianLungDataset": "tunisian_lung.dataset",
    "Patient": "tunisian_lung.dataset",
    "Series": "tunisian_lung.dataset",
    "Nodule": "tunisian_lung.dataset",
    "load_series": "tunisian_lung.io.dicom",
    "index_dicom_folder": "tunisian_lung.io.dicom",
    "read_nifti": "tunisian_lung.io.nifti",
    "write_nifti": "tunisian_lung.io.nifti",
    "load_volume": "tunisian_lung.io",
    "PreprocessConfig": "tunisian_lung.preprocess",
    "make_splits": "tunisian_lung.splits",
    "fetch": "tunisian_lung.packaging.fetch",
}

__all__ = ["__version__", *_LAZY_EXPORTS]

if TYPE_CHECKING:  # pragma: no cover
    from tunisian_lung.dataset import Nodule, Patient, Series, TunisianLungDataset, open_dataset
    from tunisian_lung.io import load_volume
    from tunisian_lung.io.dicom import index_dicom_folder, load_series
    from tunisian_lung.io.nifti import read_nifti, write_nifti
    from tunisian_lung.io.volume import Volume
    from tunisian_lung.packaging.fetch import fetch
    from tunisian_lung.preprocess import PreprocessConfig
    from tunisian_lung.splits import make_splits


def __getattr__(name: str) -> Any:
    module_name = _LAZY_EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'tunisian_lung' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
