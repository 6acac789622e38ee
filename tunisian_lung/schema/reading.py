"""Reading a CSV export as text with canonical column names, then parsing cells to dtypes."""

from __future__ import annotations

import csv
import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from tunisian_lung.errors import ValidationIssue
from tunisian_lung.schema.columns import (
    LINE_COLUMN,
    STAGE_DTYPE,
    ColumnSpec,
    _FALSE_WORDS,
    _TRUE_WORDS,
    normalize_header,
    normalize_stage,
)

logger = logging.getLogger(__name__)


# --- reading text into string columns --------------------------------------------------------


@dataclass
class _TextTable:
    """A CSV file read as text, with canonical column names."""

    file: str
    frame: pd.DataFrame  # canonical columns of str (empty string for empty cells) + LINE_COLUMN
    delimiter: str
    header_line: int
    mapping: dict[str, str]
    issues: list[ValidationIssue]


def _issue(
    file: str,
    line: int | None,
    column: str | None,
    value: Any,
    rule: str,
    message: str,
    fix: str,
) -> ValidationIssue:
    if isinstance(value, float) and np.isnan(value):
        value = None
    if value is pd.NA:
        value = None
    if isinstance(value, np.generic):
        value = value.item()
    return ValidationIssue(file=file, line=line, column=column, value=value, rule=rule, message=message, fix=fix)


def _detect_delimiter(header: str) -> str:
    """Pick the delimiter that occurs most often outside quotes in the header line."""
    counts = {",": 0, ";": 0, "\t": 0}
    quoted = False
    for char in header:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    best = max(counts, key=lambda key: counts[key])
    return best if counts[best] > 0 else ","


def _decode(path: Path, file: str) -> tuple[str | None, list[ValidationIssue]]:
    try:
        data = path.read_bytes()
    except OSError as error:
        return None, [
            _issue(file, None, None, None, "file", f"cannot read the file: {error.strerror or error}", "check the path and its permissions")
        ]
    try:
        return data.decode("utf-8-sig"), []
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        return None, [
            _issue(
                file,
                line,
                None,
                data[error.start : error.start + 4].hex(" "),
                "encoding",
                "the file is not valid UTF-8",
                "export the table as 'CSV UTF-8' (Excel: Save As > CSV UTF-8)",
            )
        ]


def _map_header(
    file: str,
    names: Sequence[str],
    header_line: int,
    specs: Sequence[ColumnSpec],
    allow_extra_columns: bool,
) -> tuple[list[str | None], dict[str, str], list[ValidationIssue]]:
    """Map raw header names to canonical names; ``None`` marks a column that is dropped."""
    lookup: dict[str, str] = {}
    for spec in specs:
        lookup[normalize_header(spec.name)] = spec.name
        for alias in spec.aliases:
            lookup[alias] = spec.name
    known = ", ".join(spec.name for spec in specs)

    canonical: list[str | None] = []
    mapping: dict[str, str] = {}
    first_source: dict[str, str] = {}
    issues: list[ValidationIssue] = []
    for position, raw in enumerate(names, start=1):
        stripped = raw.strip()
        target = lookup.get(normalize_header(stripped))
        if not stripped:
            issues.append(
                _issue(file, header_line, None, raw, "header", f"header cell {position} is empty", f"name the column ({known}) or delete it")
            )
            canonical.append(None)
            continue
        if target is None:
            if allow_extra_columns:
                if stripped in first_source:
                    issues.append(
                        _issue(file, header_line, stripped, raw, "duplicate_column", f"column {stripped!r} appears twice", "delete or rename one of them")
                    )
                    canonical.append(None)
                else:
                    first_source[stripped] = raw
                    canonical.append(stripped)
                continue
            issues.append(
                _issue(
                    file,
                    header_line,
                    stripped,
                    raw,
                    "unknown_column",
                    f"unknown column {stripped!r}",
                    f"rename it to one of: {known}; or delete it; or pass allow_extra_columns=True (--allow-extra-columns) to keep it as text",
                )
            )
            canonical.append(None)
            continue
        if target in first_source:
            issues.append(
                _issue(
                    file,
                    header_line,
                    target,
                    raw,
                    "duplicate_column",
                    f"columns {first_source[target]!r} and {raw!r} both map to {target!r}",
                    "delete one of the two columns",
                )
            )
            canonical.append(None)
            continue
        first_source[target] = raw
        canonical.append(target)
        if raw != target:
            mapping[raw] = target

    for spec in specs:
        if spec.required and spec.name not in first_source:
            variants = ", ".join(repr(alias) for alias in spec.aliases[:3])
            issues.append(
                _issue(
                    file,
                    header_line,
                    spec.name,
                    None,
                    "missing_column",
                    f"required column {spec.name!r} is missing",
                    f"add a column named {spec.name!r} ({spec.description}); accepted variants include {variants}",
                )
            )
    return canonical, mapping, issues


def _read_text_table(
    path: Path, specs: Sequence[ColumnSpec], *, allow_extra_columns: bool
) -> _TextTable:
    file = str(path)
    text, issues = _decode(path, file)
    empty = pd.DataFrame({LINE_COLUMN: pd.Series([], dtype="int64")})
    if text is None:
        return _TextTable(file, empty, ",", 1, {}, issues)

    line_number, first_line = next(((number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip()), (1, ""))
    if re.fullmatch(r"sep=.?", first_line.strip(), flags=re.IGNORECASE):
        # Excel's separator directive: the header is on the next line. The rest of the file is
        # not read, because every header check would fail on it and hide this one cause.
        directive = _issue(
            file, line_number, None, first_line.strip(), "header",
            "the file starts with a spreadsheet separator directive in place of the header row",
            "delete this line so that the header row comes first",
        )
        return _TextTable(file, empty, ",", line_number, {}, [*issues, directive])
    delimiter = _detect_delimiter(first_line)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)

    header: list[str] | None = None
    header_line = 1
    padded_width = 0
    rows: list[list[str]] = []
    lines: list[int] = []
    end_of_previous = 0
    try:
        for record in reader:
            start = end_of_previous + 1
            end_of_previous = reader.line_num
            if not any(cell.strip() for cell in record):
                continue  # blank line, or a spreadsheet row of empty cells
            if header is None:
                header, header_line = record, start
                # Spreadsheets export a trailing run of empty header cells when empty columns
                # to the right were once used; rows then carry as many empty cells.
                while header and not header[-1].strip():
                    header = header[:-1]
                padded_width = len(record)
                continue
            if len(header) < len(record) <= padded_width and not any(cell.strip() for cell in record[len(header) :]):
                record = record[: len(header)]
            if len(record) != len(header):
                issues.append(
                    _issue(
                        file,
                        start,
                        None,
                        delimiter.join(record),
                        "field_count",
                        f"the row has {len(record)} fields but the header has {len(header)}",
                        f"make every row have {len(header)} fields separated by {delimiter!r}; quote values that contain {delimiter!r}",
                    )
                )
                continue
            rows.append(record)
            lines.append(start)
    except csv.Error as error:
        issues.append(
            _issue(file, reader.line_num, None, None, "csv_syntax", f"invalid CSV: {error}", "close the open quote or remove the stray quote character")
        )

    if header is None:
        issues.append(_issue(file, None, None, None, "empty_file", "the file has no header row", "add a header row naming the columns"))
        return _TextTable(file, empty, delimiter, 1, {}, issues)

    canonical, mapping, header_issues = _map_header(file, header, header_line, specs, allow_extra_columns)
    issues.extend(header_issues)
    if mapping:
        logger.info("%s: mapped columns %s", file, mapping)

    data: dict[str, Any] = {}
    for position, name in enumerate(canonical):
        if name is not None:
            data[name] = [row[position].strip() for row in rows]
    frame = pd.DataFrame(data, dtype=object) if data else pd.DataFrame(index=range(len(rows)))
    frame[LINE_COLUMN] = np.asarray(lines, dtype=np.int64)
    return _TextTable(file, frame, delimiter, header_line, mapping, issues)


# --- parsing cells ---------------------------------------------------------------------------


def _parse_column(
    table: _TextTable,
    spec: ColumnSpec,
    collapse_substages: bool,
) -> tuple[pd.Series, list[ValidationIssue]]:
    """Convert one text column to its dtype; unparsable cells become missing and an issue."""
    raw: pd.Series = table.frame[spec.name].astype(object)
    lines = table.frame[LINE_COLUMN]
    filled = raw != ""
    issues: list[ValidationIssue] = []

    def report(mask: pd.Series, rule: str, message: str, fix: str) -> None:
        for line, value in zip(lines[mask].tolist(), raw[mask].tolist()):
            issues.append(_issue(table.file, int(line), spec.name, value, rule, message, fix))

    if spec.kind in ("id", "text"):
        return raw.where(filled, None).astype(pd.StringDtype()), issues

    if spec.kind in ("float", "binary"):
        text = raw.str.replace(",", ".", regex=False) if table.delimiter != "," else raw
        numbers = pd.to_numeric(text.where(filled, None), errors="coerce").astype("float64")
        bad = filled & numbers.isna()
        if table.delimiter != ",":
            hint = " (use ',' or '.' as decimal mark, no thousands separator)"
        else:
            hint = " (use '.' as decimal mark in a comma-separated file, no thousands separator)"
        expected = "0 or 1" if spec.kind == "binary" else "a number"
        report(bad, "number", f"{spec.name} is not {expected}", f"write {expected}{hint}, or leave the cell empty where the rules allow it")
        return numbers, issues

    if spec.kind == "stage":
        values = [
            normalize_stage(value, collapse_substages=collapse_substages) if value else None
            for value in raw.tolist()
        ]
        stages = pd.Series(values, index=raw.index, dtype=object)
        bad = filled & stages.isna()
        fix = "write one of I, II, III, IV (also accepted: 'Stage II', 'stage ii', 'Stade II', '2')"
        if not collapse_substages:
            fix += "; to map sub-stages such as IIIA to III, pass collapse_substages=True (--collapse-substages)"
        report(bad, "stage", "stage is not one of I, II, III, IV", fix)
        return stages.astype(STAGE_DTYPE), issues

    if spec.kind == "bool":
        lowered = raw.str.lower()
        result = pd.Series(pd.NA, index=raw.index, dtype="boolean")
        result[lowered.isin(_TRUE_WORDS)] = True
        result[lowered.isin(_FALSE_WORDS)] = False
        bad = filled & result.isna()
        report(bad, "boolean", f"{spec.name} is not yes or no", "write yes or no (also accepted: true/false, 1/0), or leave it empty when unknown")
        return result, issues

    # choice: normalise case and spacing, map synonyms; pandera reports values outside choices.
    key = raw.str.lower().str.replace(r"[\s_\-]+", " ", regex=True).str.strip()
    synonyms = {**{choice.lower(): choice for choice in spec.choices}, **spec.synonyms}
    mapped = key.map(lambda value: synonyms.get(value, value))
    result = raw.where(~filled, mapped).where(filled, None)
    return result.astype(pd.StringDtype()), issues


def _parse_table(
    table: _TextTable, specs: Sequence[ColumnSpec], collapse_substages: bool
) -> tuple[pd.DataFrame, list[ValidationIssue]]:
    columns: dict[str, pd.Series] = {}
    issues: list[ValidationIssue] = []
    for spec in specs:
        if spec.name in table.frame.columns:
            series, parse_issues = _parse_column(table, spec, collapse_substages)
            columns[spec.name] = series
            issues.extend(parse_issues)
    known = {spec.name for spec in specs}
    for name in table.frame.columns:
        if name not in known and name != LINE_COLUMN:
            raw = table.frame[name]
            columns[name] = raw.where(raw != "", None).astype(pd.StringDtype())
    columns[LINE_COLUMN] = table.frame[LINE_COLUMN]
    return pd.DataFrame(columns, index=table.frame.index), issues


