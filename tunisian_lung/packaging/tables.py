"""Rewriting of the patient and series identifiers in the release tables.

The rewrite works on the CSV text, so every other cell keeps its exact characters. Only the
``patient_id`` and ``series_id`` columns change, found under any header variant that the
schema accepts. The output is UTF-8 without a byte order mark and keeps the input's separator, so a
table with decimal commas and ``;`` separators stays readable.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from tunisian_lung.errors import PackagingError
from tunisian_lung.schema import ANNOTATION_COLUMNS, CLINICAL_COLUMNS, normalize_header
from tunisian_lung.schema.reading import _detect_delimiter

_ID_COLUMNS = ("patient_id", "series_id")


def _id_column_lookup() -> dict[str, str]:
    lookup: dict[str, str] = {}
    for spec in (*ANNOTATION_COLUMNS, *CLINICAL_COLUMNS):
        if spec.name in _ID_COLUMNS:
            lookup[normalize_header(spec.name)] = spec.name
            for alias in spec.aliases:
                lookup[alias] = spec.name
    return lookup


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` as UTF-8 to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def rewrite_identifiers(
    source: Path,
    target: Path,
    *,
    patient_ids: Mapping[str, str],
    series_ids: Mapping[str, str] | None = None,
) -> None:
    """Copy a CSV table with its ``patient_id`` and ``series_id`` cells replaced.

    Raises
    ------
    PackagingError
        A patient or series id of the table has no replacement (the fix is to add the patient
        to the export or remove the row).
    """
    text = source.read_text(encoding="utf-8-sig")
    # The header is the first line with a non-blank cell, as in the schema reader, which skips
    # blank lines and rows of empty cells above it. Those rows are copied unchanged, so the
    # rewritten table keeps the line numbers of the source.
    first_line = next((line for line in text.splitlines() if line.strip()), None)
    if first_line is None:
        raise PackagingError(f"{source} is empty; a table needs a header line")
    delimiter = _detect_delimiter(first_line)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    lookup = _id_column_lookup()
    replacements: dict[str, Mapping[str, str]] = {"patient_id": patient_ids, "series_id": series_ids or {}}
    out_rows: list[Sequence[str]] = []
    columns: dict[int, str] | None = None
    end_of_previous = 0
    for row in reader:
        line_number, end_of_previous = end_of_previous + 1, reader.line_num
        if columns is None:
            out_rows.append(row)
            if any(cell.strip() for cell in row):
                columns = {
                    index: lookup[normalize_header(name)] for index, name in enumerate(row) if normalize_header(name) in lookup
                }
            continue
        new_row = list(row)
        for index, column in columns.items():
            if index >= len(row):
                continue
            value = row[index].strip()
            if not value:
                continue
            mapping = replacements[column]
            if column == "series_id" and series_ids is None:
                continue
            if value not in mapping:
                raise PackagingError(
                    f"{source.name}, line {line_number}: {column} {value!r} has no pseudonym because it is not in the DICOM export; "
                    "add its images to the export or remove the row"
                )
            new_row[index] = mapping[value]
        out_rows.append(new_row)
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
    writer.writerows(out_rows)
    write_text_atomic(target, buffer.getvalue())
