"""Exception hierarchy of tunisian_lung.

Every error the library raises on purpose derives from :class:`TunisianLungError`, so a caller
can catch the library's failures in one ``except`` clause. Messages name what failed (file, row,
series, value) and what to do about it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence


class TunisianLungError(Exception):
    """Base class of every error raised by tunisian_lung."""


# --- tables and dataset folders -------------------------------------------------------------


@dataclass(frozen=True)
class ValidationIssue:
    """One failed rule in a table or a dataset folder.

    ``line`` is the 1-based line number in the CSV file as a spreadsheet shows it (the header is
    line 1, the first data row line 2). ``fix`` is the change the data manager should make.
    """

    file: str | None
    line: int | None
    column: str | None
    value: Any
    rule: str
    message: str
    fix: str
    severity: str = "error"

    def format(self) -> str:
        """Render the issue as one line of an error report."""
        where = self.file or "<dataset>"
        if self.line is not None:
            where += f", line {self.line}"
        if self.column is not None:
            where += f", column {self.column!r}"
        value = "" if self.value is None else f" (value {self.value!r})"
        return f"{where}: {self.message}{value} [rule {self.rule}]. Fix: {self.fix}"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict of the issue."""
        data = asdict(self)
        value = data["value"]
        if value is not None and not isinstance(value, (str, int, float, bool)):
            data["value"] = str(value)
        return data


class ValidationError(TunisianLungError):
    """A table or dataset failed one or more rules; ``issues`` lists every failure."""

    def __init__(self, issues: Sequence[ValidationIssue], summary: str | None = None) -> None:
        self.issues: tuple[ValidationIssue, ...] = tuple(issues)
        head = summary or f"{len(self.issues)} validation error(s)"
        body = "\n".join(f"  - {issue.format()}" for issue in self.issues)
        super().__init__(f"{head}:\n{body}" if body else head)


class DatasetLayoutError(TunisianLungError):
    """A dataset folder is missing a required file or has an invalid ``dataset.json``."""


# --- images ----------------------------------------------------------------------------------


class VolumeError(TunisianLungError):
    """A volume's array or geometry is invalid for the requested operation."""


class DicomError(TunisianLungError):
    """A DICOM file or series cannot be read as a CT volume."""


class NotAVolumeError(DicomError):
    """A file or series is not a CT image volume (wrong modality, single slice, no geometry)."""


class MultipleSeriesError(DicomError):
    """A folder contains several series where one was expected; ``series_uids`` lists them."""

    def __init__(self, message: str, series_uids: Iterable[str] = ()) -> None:
        self.series_uids: tuple[str, ...] = tuple(series_uids)
        super().__init__(message)


class SeriesGeometryError(DicomError):
    """The slices of a series do not form a regular grid."""


class SliceGapError(SeriesGeometryError):
    """A series has a missing slice (a gap larger than the regular slice spacing)."""


class DuplicateSliceError(SeriesGeometryError):
    """Two or more slices of a series share one position along the slice normal."""


class NonUniformSpacingError(SeriesGeometryError):
    """The distance between consecutive slices varies beyond the tolerance."""


class GantryTiltError(SeriesGeometryError):
    """The slice positions do not move along the slice normal (gantry tilt or shear)."""


class InconsistentSlicesError(SeriesGeometryError):
    """Slices of one series differ in rows, columns, pixel spacing or orientation."""


class NiftiError(TunisianLungError):
    """A NIfTI file cannot be read or written with valid geometry."""


# --- preprocessing and cache -----------------------------------------------------------------


class PreprocessError(TunisianLungError):
    """A preprocessing step cannot produce a valid output for this volume."""


class ConfigError(TunisianLungError, ValueError):
    """A configuration object received an invalid value."""


class CacheError(TunisianLungError):
    """The preprocessing cache cannot be read or written."""


# --- splits, models, training ----------------------------------------------------------------


class SplitError(TunisianLungError):
    """A split file is invalid, leaks patients or belongs to another dataset."""


class LabelError(TunisianLungError, ValueError):
    """A sample has no valid label for the requested training target (for example a healthy
    patient for a stage target), or a label-based sampler cannot be built."""


class WeightLoadError(TunisianLungError):
    """A checkpoint does not match the model it is loaded into."""


class TrainingError(TunisianLungError):
    """Training, evaluation or prediction cannot run with the given inputs."""


# --- packaging -------------------------------------------------------------------------------


class PackagingError(TunisianLungError):
    """A release cannot be built, audited or verified."""


class FetchError(TunisianLungError):
    """A download failed after its retries, or its archive is unsafe."""


class ChecksumMismatchError(FetchError):
    """A downloaded or released file does not match its expected sha256."""


class UnsafeArchiveError(FetchError):
    """An archive member would be written outside the destination folder."""


class SourceImportError(TunisianLungError):
    """A public collection (LIDC-IDRI, LUNA16) or another release cannot be imported."""
