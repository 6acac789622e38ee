"""Reading and writing CT volumes: the :class:`Volume` type, DICOM series and NIfTI files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Union

from tunisian_lung.errors import TunisianLungError
from tunisian_lung.io.volume import Volume

__all__ = ["Volume", "load_volume"]

PathLike = Union[str, "os.PathLike[str]"]


def load_volume(path: PathLike, **kwargs: Any) -> Volume:
    """Load a volume from a DICOM folder, a DICOM file, a NIfTI file or a MetaImage file.

    Dispatch is by what ``path`` is: a folder is a DICOM series
    (:func:`tunisian_lung.io.dicom.load_series`), a ``.nii``/``.nii.gz`` file is NIfTI
    (:func:`tunisian_lung.io.nifti.read_nifti`), a ``.mhd``/``.mha`` file is MetaImage, and any
    other file is read as DICOM. ``kwargs`` go to the reader (for DICOM: ``series_uid``,
    ``lazy``, ``on_gap`` and the other lenient keywords).

    Raises
    ------
    TunisianLungError
        ``path`` does not exist, or the reader's own error (``DicomError``, ``NiftiError``, ...).
    """
    source = Path(path)
    if not source.exists():
        raise TunisianLungError(f"volume not found: {source}. Pass a DICOM folder or file, or a .nii/.nii.gz file")
    name = source.name.lower()
    if source.is_file() and name.endswith((".nii", ".nii.gz")):
        from tunisian_lung.io.nifti import read_nifti

        return read_nifti(source, **kwargs)
    if source.is_file() and name.endswith((".mhd", ".mha")):
        from tunisian_lung.io.metaimage import read_metaimage

        return read_metaimage(source, **kwargs)
    from tunisian_lung.io.dicom import load_series

    return load_series(source, **kwargs)
