"""Reading and validating the annotation and clinical tables.

Both tables are read as text first, so that identifiers keep their leading zeros and every cell
that cannot be parsed is reported with its CSV line. Spreadsheet exports load as they are:
UTF-8 with or without a byte order mark, ``,``, ``;`` or tab separators, decimal commas in
``;``-separated files, blank lines, spaces around headers and values, and header variants such
as ``Patient ID`` or ``diameter mm``. A header that maps to no known column is an error unless
``allow_extra_columns=True``. Every mapped header is listed in
:attr:`ValidationReport.column_mapping` and logged.

The column and row rules run as pandera schemas with ``lazy=True``. The rules across rows and
across the two tables run in pandas. Every failure becomes one
:class:`~tunisian_lung.errors.ValidationIssue`, and one report contains all of them. The strict
readers :func:`read_annotations` and :func:`read_clinical` raise
:class:`~tunisian_lung.errors.ValidationError` listing every issue. ``docs/schema.md`` lists
every column, rule and accepted variant.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Sequence

import pandas as pd

from tunisian_lung.errors import ValidationError, ValidationIssue
from tunisian_lung.schema.columns import (
    ANNOTATION_COLUMNS,
    BIOMARKER_STATUSES,
    CLINICAL_COLUMNS,
    HEALTH_STATUSES,
    HISTOLOGIES,
    LINE_COLUMN,
    MAX_AGE_YEARS,
    MAX_DIAMETER_MM,
    SEXES,
    SMOKING_STATUSES,
    STAGE_DTYPE,
    STAGES,
    ColumnSpec,
    normalize_header,
    normalize_stage,
)
from tunisian_lung.schema.reading import _parse_table, _read_text_table
from tunisian_lung.schema.rules import (
    _annotation_cross_row_issues,
    _annotation_row_schema,
    _clinical_cross_row_issues,
    _clinical_row_schema,
    _column_schema,
    _cross_table_issues,
    _required_values_schema,
    _Rule,
    _run_schema,
)

__all__ = [
    "ANNOTATION_COLUMNS",
    "BIOMARKER_STATUSES",
    "CLINICAL_COLUMNS",
    "HEALTH_STATUSES",
    "HISTOLOGIES",
    "LINE_COLUMN",
    "MAX_AGE_YEARS",
    "MAX_DIAMETER_MM",
    "SEXES",
    "SMOKING_STATUSES",
    "STAGES",
    "STAGE_DTYPE",
    "ColumnSpec",
    "ValidationReport",
    "normalize_header",
    "normalize_stage",
    "read_annotations",
    "read_clinical",
    "validate_tables",
]

logger = logging.getLogger(__name__)

# --- report ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ValidationReport:
    """Result of :func:`validate_tables`.

    Attributes
    ----------
    issues:
        Every failed rule of both tables, sorted by file and line.
    annotations, clinical:
        The parsed tables (``None`` when a file was not given or could not be read at all).
        Cells that failed to parse are missing values, so a table of an invalid report must not
        be used as if it had passed.
    column_mapping:
        File name -> {header as written in the file: canonical column} for every header that
        differed from its canonical name.
    """

    issues: tuple[ValidationIssue, ...]
    annotations: pd.DataFrame | None
    clinical: pd.DataFrame | None
    column_mapping: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no issue has severity ``error``."""
        return not any(issue.severity == "error" for issue in self.issues)

    @property
    def errors(self) -> tuple[ValidationIssue, ...]:
        """The issues with severity ``error``."""
        return tuple(issue for issue in self.issues if issue.severity == "error")

    def format(self) -> str:
        """Render the report as text: a summary line, then one line per issue."""
        if self.ok and not self.issues:
            return "valid: " + self._counts_text()
        head = f"{len(self.errors)} error(s)" if not self.ok else "valid with warnings"
        lines = [f"{head}; {self._counts_text()}"]
        lines.extend(f"  - {issue.format()}" for issue in self.issues)
        return "\n".join(lines)

    def _counts_text(self) -> str:
        parts = []
        if self.annotations is not None:
            parts.append(f"{len(self.annotations)} annotation rows")
        if self.clinical is not None:
            parts.append(f"{len(self.clinical)} clinical rows")
        return ", ".join(parts) or "no table read"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict: ok, counts, column mapping and issues."""
        return {
            "ok": self.ok,
            "annotation_rows": None if self.annotations is None else len(self.annotations),
            "clinical_rows": None if self.clinical is None else len(self.clinical),
            "column_mapping": {name: dict(mapping) for name, mapping in self.column_mapping.items()},
            "issues": [issue.to_dict() for issue in self.issues],
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        """Return :meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def raise_if_invalid(self) -> None:
        """Raise :class:`ValidationError` listing every issue when the report is not ok."""
        if not self.ok:
            raise ValidationError(self.issues, summary=f"{len(self.errors)} validation error(s)")


# --- public API ------------------------------------------------------------------------------


#: Reading failures after which a file has no table to check.
_UNREADABLE_RULES = frozenset({"file", "encoding", "empty_file"})


@dataclass
class _TableResult:
    frame: pd.DataFrame | None
    issues: list[ValidationIssue]
    mapping: dict[str, str]
    file: str


def _finalise_annotations(frame: pd.DataFrame) -> pd.DataFrame:
    for name in ("class", "nodule_present"):
        if name in frame.columns:
            values = frame[name]
            frame[name] = values.where(values.isin([0.0, 1.0])).astype("Int8")
    return frame


def _drop_shadowed(issues: list[ValidationIssue], parse_issues: Iterable[ValidationIssue]) -> list[ValidationIssue]:
    """Drop rule failures on cells that already failed to parse: one cause, one issue."""
    failed = {(issue.line, issue.column) for issue in parse_issues}
    return [issue for issue in issues if (issue.line, issue.column) not in failed]


def _validate_one(
    path: str | Path,
    specs: Sequence[ColumnSpec],
    kind: Literal["annotations", "clinical"],
    *,
    collapse_substages: bool,
    allow_extra_columns: bool,
    allow_unlabelled: bool = False,
) -> _TableResult:
    path = Path(path)
    table = _read_text_table(path, specs, allow_extra_columns=allow_extra_columns)
    if any(issue.rule in _UNREADABLE_RULES for issue in table.issues):
        return _TableResult(None, table.issues, table.mapping, table.file)
    frame, parse_issues = _parse_table(table, specs, collapse_substages)

    rules: dict[str, _Rule] = {}
    text = table.frame
    rule_issues = _run_schema(_column_schema(specs, frame, rules), frame, text, rules, table.file)
    rule_issues += _run_schema(_required_values_schema(specs, frame, rules), frame, text, rules, table.file)
    if kind == "annotations":
        rule_issues += _run_schema(
            _annotation_row_schema(frame, rules, allow_unlabelled=allow_unlabelled), frame, text, rules, table.file
        )
        rule_issues += _annotation_cross_row_issues(frame, table.file)
        frame = _finalise_annotations(frame)
    else:
        rule_issues += _run_schema(_clinical_row_schema(frame, rules), frame, text, rules, table.file)
        rule_issues += _clinical_cross_row_issues(frame, table.file)

    issues = table.issues + parse_issues + _drop_shadowed(rule_issues, parse_issues)
    return _TableResult(frame.reset_index(drop=True), issues, table.mapping, table.file)


def _sort_issues(issues: Iterable[ValidationIssue]) -> tuple[ValidationIssue, ...]:
    return tuple(sorted(issues, key=lambda issue: (issue.file or "", issue.line or 0, issue.column or "")))


def validate_tables(
    annotations_path: str | Path,
    clinical_path: str | Path | None = None,
    *,
    collapse_substages: bool = False,
    allow_unlabelled: bool = False,
    allow_extra_columns: bool = False,
) -> ValidationReport:
    """Read both tables, check every rule and return a report of all failures.

    This function does not raise for invalid data; check :attr:`ValidationReport.ok`, or call
    :meth:`ValidationReport.raise_if_invalid`.

    Parameters
    ----------
    annotations_path:
        ``annotations.csv``: one row per nodule, or one ``nodule_present = 0`` row for a series
        without nodules.
    clinical_path:
        ``clinical.csv`` with one row per patient. When given, the rules across the two tables
        also run: patients match, healthy patients have neither a stage nor a malignant nodule,
        and stages agree.
    collapse_substages:
        Map sub-stages such as ``IIIA`` to their main stage (``III``) in place of rejecting them.
    allow_unlabelled:
        Accept an empty ``class`` on nodule rows (tables without malignancy labels, such as
        LUNA16). The column stays ``<NA>`` there.
    allow_extra_columns:
        Keep unknown columns as text in place of reporting them.

    Returns
    -------
    ValidationReport
        The issues and the parsed tables. ``annotations`` has the columns ``patient_id``,
        ``series_id`` (string), ``coordX``, ``coordY``, ``coordZ``, ``diameter_mm`` (float64),
        ``class``, ``nodule_present`` (Int8), ``stage`` (ordered categorical I..IV) and
        ``csv_line`` (int64), each column only when present in the file.
    """
    annotations = _validate_one(
        annotations_path,
        ANNOTATION_COLUMNS,
        "annotations",
        collapse_substages=collapse_substages,
        allow_extra_columns=allow_extra_columns,
        allow_unlabelled=allow_unlabelled,
    )
    issues = list(annotations.issues)
    mapping = {annotations.file: annotations.mapping} if annotations.mapping else {}
    clinical_frame: pd.DataFrame | None = None
    if clinical_path is not None:
        clinical = _validate_one(
            clinical_path,
            CLINICAL_COLUMNS,
            "clinical",
            collapse_substages=collapse_substages,
            allow_extra_columns=allow_extra_columns,
        )
        issues += clinical.issues
        clinical_frame = clinical.frame
        if clinical.mapping:
            mapping[clinical.file] = clinical.mapping
        if annotations.frame is not None and clinical.frame is not None:
            issues += _cross_table_issues(annotations.frame, annotations.file, clinical.frame, clinical.file)
    report = ValidationReport(
        issues=_sort_issues(issues),
        annotations=annotations.frame,
        clinical=clinical_frame,
        column_mapping=mapping,
    )
    if report.ok:
        logger.info("tables valid: %s", report._counts_text())
    else:
        logger.info("tables invalid: %d error(s)", len(report.errors))
    return report


def read_annotations(
    path: str | Path,
    *,
    collapse_substages: bool = False,
    allow_unlabelled: bool = False,
    allow_extra_columns: bool = False,
) -> pd.DataFrame:
    """Read and validate an annotation table, raising on any failed rule.

    The keywords are those of :func:`validate_tables`; the columns and dtypes are listed there.

    Raises
    ------
    ValidationError
        Listing every failure (file, line, column, value, rule, fix).
    """
    result = _validate_one(
        path,
        ANNOTATION_COLUMNS,
        "annotations",
        collapse_substages=collapse_substages,
        allow_extra_columns=allow_extra_columns,
        allow_unlabelled=allow_unlabelled,
    )
    if result.issues or result.frame is None:
        raise ValidationError(_sort_issues(result.issues), summary=f"{result.file} is invalid ({len(result.issues)} error(s))")
    return result.frame


def read_clinical(
    path: str | Path,
    *,
    collapse_substages: bool = False,
    allow_extra_columns: bool = False,
) -> pd.DataFrame:
    """Read and validate a clinical table (one row per patient), raising on any failed rule.

    The result has the columns present in the file. Text and choice columns (``patient_id``,
    ``sex``, ``health_status``, ``histology``, ``smoking_status``, ``outcome``, ``egfr_status``,
    ``alk_status``) are string. ``age`` (years) and ``pdl1_percent`` are float64, yes/no columns
    are boolean, ``stage`` is an ordered categorical I..IV and ``csv_line`` is int64.

    Raises
    ------
    ValidationError
        Listing every failure (file, line, column, value, rule, fix).
    """
    result = _validate_one(
        path,
        CLINICAL_COLUMNS,
        "clinical",
        collapse_substages=collapse_substages,
        allow_extra_columns=allow_extra_columns,
    )
    if result.issues or result.frame is None:
        raise ValidationError(_sort_issues(result.issues), summary=f"{result.file} is invalid ({len(result.issues)} error(s))")
    return result.frame

