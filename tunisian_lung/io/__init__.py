"""Reading and writing CT volumes: the :class:`Volume` type, DICOM series and NIfTI files."""

from tunisian_lung.io.volume import Volume

__all__ = ["Volume"]
