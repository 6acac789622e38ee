"""The rules of the tables: pandera schemas for columns and rows, pandas for rules across rows.

Every rule turns its failures into :class:`~tunisian_lung.errors.ValidationIssue` objects with
the CSV line, the column and the cell as written in the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from tunisian_lung.errors import ValidationIssue
from tunisian_lung.schema.columns import LINE_COLUMN, MAX_AGE_YEARS, MAX_DIAMETER_MM, ColumnSpec
from tunisian_lung.schema.reading import _issue


# --- pandera rules ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    """Message and fix of one pandera check, keyed by the check's ``error`` string."""

    column: str | None
    message: str
    fix: str


def _isin(allowed: list[str]) -> Callable[[pd.Series], pd.Series]:
    return lambda values: values.isin(allowed)


def _not_missing(column: str) -> Callable[[pd.DataFrame], pd.Series]:
    return lambda frame: frame[column].notna()


def _filled_when_nodule_present(column: str, nodule_present: int) -> Callable[[pd.DataFrame], pd.Series]:
    """Return a row check: with ``nodule_present = 1`` the cell is filled, with 0 it is empty."""
    if nodule_present == 1:
        return lambda frame: ~((frame["nodule_present"] == 1) & frame[column].isna())
    return lambda frame: ~((frame["nodule_present"] == 0) & frame[column].notna())


def _line_at(frame: pd.DataFrame, index: Any) -> int:
    value: Any = frame.at[index, LINE_COLUMN]
    return int(value)


def _column_check(
    rules: dict[str, _Rule],
    rule_id: str,
    column: str,
    function: Callable[[pd.Series], pd.Series],
    message: str,
    fix: str,
) -> pa.Check:
    rules[rule_id] = _Rule(column, message, fix)
    return pa.Check(function, error=rule_id, ignore_na=True)


def _row_check(
    rules: dict[str, _Rule],
    rule_id: str,
    column: str,
    function: Callable[[pd.DataFrame], pd.Series],
    message: str,
    fix: str,
) -> pa.Check:
    rules[rule_id] = _Rule(column, message, fix)
    return pa.Check(function, error=rule_id)


def _column_schema(
    specs: Sequence[ColumnSpec], frame: pd.DataFrame, rules: dict[str, _Rule]
) -> pa.DataFrameSchema:
    columns: dict[str, pa.Column] = {}
    for spec in specs:
        if spec.name not in frame.columns:
            continue
        checks: list[pa.Check] = []
        if spec.kind == "binary":
            checks.append(
                _column_check(
                    rules, f"{spec.name}_binary", spec.name, lambda s: s.isin([0.0, 1.0]),
                    f"{spec.name} must be 0 or 1", "write 0 or 1",
                )
            )
        elif spec.kind == "choice":
            allowed = list(spec.choices)
            checks.append(
                _column_check(
                    rules, f"{spec.name}_allowed", spec.name, _isin(allowed),
                    f"{spec.name} is not one of {', '.join(allowed)}",
                    f"write one of: {', '.join(allowed)}",
                )
            )
        columns[spec.name] = pa.Column(nullable=True, checks=checks, coerce=False)
    for name in ("coordX", "coordY", "coordZ"):
        if name in columns and "coordX" in {spec.name for spec in specs}:
            columns[name].checks.append(
                _column_check(
                    rules, f"{name}_finite", name, lambda s: pd.Series(np.isfinite(s.to_numpy(dtype="float64")), index=s.index),
                    f"{name} must be a finite number of millimetres", "write the coordinate as a finite number",
                )
            )
    if "diameter_mm" in columns:
        columns["diameter_mm"].checks.append(
            _column_check(
                rules, "diameter_range", "diameter_mm", lambda s: (s > 0) & (s <= MAX_DIAMETER_MM),
                f"diameter_mm must be in (0, {MAX_DIAMETER_MM:g}] millimetres",
                f"write the diameter in millimetres, more than 0 and at most {MAX_DIAMETER_MM:g}; check the unit (cm instead of mm?)",
            )
        )
    if "age" in columns:
        columns["age"].checks.append(
            _column_check(
                rules, "age_range", "age", lambda s: (s >= 0) & (s <= MAX_AGE_YEARS),
                f"age must be between 0 and {MAX_AGE_YEARS:g} years", "write the age in years at the time of the scan",
            )
        )
    if "pdl1_percent" in columns:
        columns["pdl1_percent"].checks.append(
            _column_check(
                rules, "pdl1_range", "pdl1_percent", lambda s: (s >= 0) & (s <= 100),
                "pdl1_percent must be between 0 and 100", "write the PD-L1 tumour proportion score in percent (45, not 0.45)",
            )
        )
    for spec in specs:
        if spec.kind == "id" and spec.name in columns:
            columns[spec.name].checks.append(
                _column_check(
                    rules, f"{spec.name}_no_spaces", spec.name, lambda s: ~s.str.contains(r"\s", regex=True),
                    f"{spec.name} contains whitespace", "remove the spaces inside the identifier",
                )
            )
    return pa.DataFrameSchema(columns, strict=False)


def _required_values_schema(
    specs: Sequence[ColumnSpec], frame: pd.DataFrame, rules: dict[str, _Rule]
) -> pa.DataFrameSchema:
    checks: list[pa.Check] = []
    for spec in specs:
        if spec.kind == "id" and spec.name in frame.columns:
            checks.append(
                _row_check(
                    rules, f"{spec.name}_required", spec.name, _not_missing(spec.name),
                    f"{spec.name} is empty", f"fill in the {spec.name} of this row",
                )
            )
    if "health_status" in frame.columns:
        checks.append(
            _row_check(
                rules, "health_status_required", "health_status", lambda df: df["health_status"].notna(),
                "health_status is empty", "write healthy or cancer",
            )
        )
    if "nodule_present" in frame.columns:
        checks.append(
            _row_check(
                rules, "nodule_present_required", "nodule_present", lambda df: df["nodule_present"].notna(),
                "nodule_present is empty", "write 1 for a nodule row, or 0 for the single row of a series without nodules",
            )
        )
    return pa.DataFrameSchema(checks=checks)


def _annotation_row_schema(
    frame: pd.DataFrame, rules: dict[str, _Rule], *, allow_unlabelled: bool
) -> pa.DataFrameSchema:
    checks: list[pa.Check] = []
    if "nodule_present" not in frame.columns:
        return pa.DataFrameSchema(checks=checks)
    nodule_columns = ["coordX", "coordY", "coordZ", "diameter_mm", "class"]
    for name in nodule_columns:
        if name not in frame.columns:
            continue
        if not (name == "class" and allow_unlabelled):
            fix = "fill in the value" if name != "class" else "write 0 (benign) or 1 (malignant), or pass allow_unlabelled=True (--allow-unlabelled) for tables without labels"
            checks.append(
                _row_check(
                    rules, f"{name}_required_for_nodule", name,
                    _filled_when_nodule_present(name, 1),
                    f"{name} is empty in a row with nodule_present = 1", fix,
                )
            )
        checks.append(
            _row_check(
                rules, f"{name}_empty_without_nodule", name,
                _filled_when_nodule_present(name, 0),
                f"{name} must be empty in a row with nodule_present = 0",
                "empty the cell, or set nodule_present to 1 if this row describes a nodule",
            )
        )
    return pa.DataFrameSchema(checks=checks)


def _clinical_row_schema(frame: pd.DataFrame, rules: dict[str, _Rule]) -> pa.DataFrameSchema:
    checks: list[pa.Check] = []
    if {"health_status", "stage"} <= set(frame.columns):
        checks.append(
            _row_check(
                rules, "healthy_without_stage", "stage",
                lambda df: ~((df["health_status"] == "healthy") & df["stage"].notna()),
                "a healthy patient has a stage", "empty the stage, or set health_status to cancer",
            )
        )
        checks.append(
            _row_check(
                rules, "cancer_requires_stage", "stage",
                lambda df: ~((df["health_status"] == "cancer") & df["stage"].isna()),
                "a cancer patient has no stage", "write the stage (I, II, III or IV)",
            )
        )
    elif "health_status" in frame.columns:
        checks.append(
            _row_check(
                rules, "cancer_requires_stage", "health_status",
                lambda df: df["health_status"] != "cancer",
                "a cancer patient has no stage because the table has no stage column",
                "add a stage column with I, II, III or IV for every cancer patient",
            )
        )
    return pa.DataFrameSchema(checks=checks)


def _run_schema(
    schema: pa.DataFrameSchema, frame: pd.DataFrame, text: pd.DataFrame, rules: Mapping[str, _Rule], file: str
) -> list[ValidationIssue]:
    if not schema.columns and not schema.checks:
        return []
    try:
        schema.validate(frame, lazy=True)
    except SchemaErrors as errors:
        return _issues_from_failures(errors.failure_cases, frame, text, rules, file)
    return []


def _issues_from_failures(
    failures: pd.DataFrame, frame: pd.DataFrame, text: pd.DataFrame, rules: Mapping[str, _Rule], file: str
) -> list[ValidationIssue]:
    """Convert pandera failure cases to issues that show each cell as the file spells it."""
    issues: list[ValidationIssue] = []
    seen: set[tuple[str, int]] = set()
    for record in failures.to_dict("records"):
        rule_id = str(record["check"])
        rule = rules.get(rule_id)
        index = record["index"]
        if rule is None or index is None or pd.isna(index):
            # A failure of pandera itself (dtype, missing column) has no rule of ours.
            issues.append(_issue(file, None, record.get("column"), record.get("failure_case"), "schema", str(rule_id), "check the column"))
            continue
        key = (rule_id, int(index))
        if key in seen:
            continue  # a row check reports one failure case per cell of the failing row
        seen.add(key)
        line = _line_at(frame, int(index))
        value = text.at[int(index), rule.column] if rule.column in text.columns else None
        if value == "":
            value = None
        issues.append(_issue(file, line, rule.column, value, rule_id, rule.message, rule.fix))
    return issues


# --- rules across rows -----------------------------------------------------------------------


def _first_lines(frame: pd.DataFrame, key: str) -> pd.Series:
    """Map each value of ``key`` to the CSV line of its first row."""
    return frame.dropna(subset=[key]).groupby(key, sort=False)[LINE_COLUMN].first()


def _duplicate_row_issues(frame: pd.DataFrame, file: str, data_columns: list[str]) -> list[ValidationIssue]:
    duplicated = frame.duplicated(subset=data_columns, keep="first")
    if not duplicated.any():
        return []
    first_line = frame.groupby(data_columns, dropna=False, sort=False)[LINE_COLUMN].transform("first")
    issues = []
    for index in frame.index[duplicated]:
        issues.append(
            _issue(
                file,
                _line_at(frame, index),
                None,
                None,
                "duplicate_row",
                f"the row repeats line {int(first_line[index])} exactly",
                "delete the repeated row",
            )
        )
    return issues


def _conflict_issues(
    frame: pd.DataFrame,
    file: str,
    group: str,
    column: str,
    rule: str,
    describe: Callable[[Any, Any, Any, int], str],
    fix: str,
) -> list[ValidationIssue]:
    """Report rows whose ``column`` differs from the first value of their ``group``."""
    known = frame.dropna(subset=[group, column])
    if known.empty:
        return []
    first_value = known.groupby(group, sort=False, observed=True)[column].transform("first")
    first_line = known.groupby(group, sort=False, observed=True)[LINE_COLUMN].transform("first")
    differs = known[column].astype(object) != first_value.astype(object)
    issues = []
    for index in known.index[differs.to_numpy()]:
        issues.append(
            _issue(
                file,
                _line_at(known, index),
                column,
                known.at[index, column],
                rule,
                describe(known.at[index, group], known.at[index, column], first_value[index], int(first_line[index])),
                fix,
            )
        )
    return issues


def _annotation_cross_row_issues(frame: pd.DataFrame, file: str) -> list[ValidationIssue]:
    issues: list[ValidationIssue] = []
    if {"patient_id", "series_id"} <= set(frame.columns):
        issues += _conflict_issues(
            frame, file, "series_id", "patient_id", "series_single_patient",
            lambda series, patient, first, line: f"series {series} belongs to patient {first} on line {line} but to {patient} here",
            "a series belongs to one patient: correct the patient_id or the series_id",
        )
    if {"patient_id", "stage"} <= set(frame.columns):
        issues += _conflict_issues(
            frame, file, "patient_id", "stage", "single_stage_per_patient",
            lambda patient, stage, first, line: f"patient {patient} has stage {first} on line {line} but {stage} here",
            "write the same stage on every row of the patient",
        )
    if {"series_id", "nodule_present"} <= set(frame.columns):
        keyed = frame.dropna(subset=["series_id"])
        rows_per_series = keyed.groupby("series_id", sort=False)[LINE_COLUMN].transform("size")
        absent = keyed["nodule_present"] == 0
        first_absent = keyed[absent].groupby("series_id", sort=False)[LINE_COLUMN].transform("first")
        for index in keyed.index[(absent & (rows_per_series > 1)).to_numpy()]:
            line = _line_at(keyed, index)
            others = int(rows_per_series[index]) - 1
            if int(first_absent[index]) != line:
                message = f"series {keyed.at[index, 'series_id']} already has a nodule_present = 0 row on line {int(first_absent[index])}"
            else:
                message = f"series {keyed.at[index, 'series_id']} has nodule_present = 0 here but {others} other row(s)"
            issues.append(
                _issue(
                    file, line, "nodule_present", 0, "absent_row_alone", message,
                    "a series without nodules has exactly one row: delete this row, or the nodule rows if the series has no nodule",
                )
            )
    data_columns = [name for name in frame.columns if name != LINE_COLUMN]
    issues += _duplicate_row_issues(frame, file, data_columns)
    return issues


def _clinical_cross_row_issues(frame: pd.DataFrame, file: str) -> list[ValidationIssue]:
    if "patient_id" not in frame.columns:
        return []
    keyed = frame.dropna(subset=["patient_id"])
    duplicated = keyed["patient_id"].duplicated(keep="first")
    first_line = _first_lines(keyed, "patient_id")
    issues = []
    for index in keyed.index[duplicated.to_numpy()]:
        patient = keyed.at[index, "patient_id"]
        issues.append(
            _issue(
                file, _line_at(keyed, index), "patient_id", patient, "unique_patient",
                f"patient {patient} already has a row on line {int(first_line[patient])}",
                "keep one row per patient: merge the two rows",
            )
        )
    return issues


def _cross_table_issues(
    annotations: pd.DataFrame, annotations_file: str, clinical: pd.DataFrame, clinical_file: str
) -> list[ValidationIssue]:
    if "patient_id" not in annotations.columns or "patient_id" not in clinical.columns:
        return []
    issues: list[ValidationIssue] = []
    annotated = annotations.dropna(subset=["patient_id"])
    described = clinical.dropna(subset=["patient_id"]).drop_duplicates("patient_id")
    annotated_lines = _first_lines(annotated, "patient_id")
    clinical_lines = _first_lines(described, "patient_id")

    for patient in annotated_lines.index.difference(clinical_lines.index, sort=False):
        issues.append(
            _issue(
                annotations_file, int(annotated_lines[patient]), "patient_id", patient, "patient_in_clinical",
                f"patient {patient} has annotations but no row in {Path(clinical_file).name}",
                f"add a row for {patient} to the clinical table, or correct the patient_id",
            )
        )
    for patient in clinical_lines.index.difference(annotated_lines.index, sort=False):
        issues.append(
            _issue(
                clinical_file, int(clinical_lines[patient]), "patient_id", patient, "patient_in_annotations",
                f"patient {patient} has a clinical row but no row in {Path(annotations_file).name}",
                "add the patient's series to the annotation table (a series without nodules gets one nodule_present = 0 row), or correct the patient_id",
            )
        )

    clinical_columns = [name for name in ("health_status", "stage") if name in described.columns]
    if not clinical_columns:
        return issues
    joined = annotated.merge(
        described[["patient_id", *clinical_columns, LINE_COLUMN]].rename(
            columns={"stage": "clinical_stage", LINE_COLUMN: "clinical_line"}
        ),
        on="patient_id",
        how="inner",
        validate="many_to_one",
    )
    if "health_status" in joined.columns:
        healthy = joined["health_status"] == "healthy"
        if "class" in joined.columns:
            for row in joined[healthy & (joined["class"] == 1)].itertuples(index=False):
                issues.append(
                    _issue(
                        annotations_file, int(getattr(row, LINE_COLUMN)), "class", 1, "healthy_without_malignant_nodule",
                        f"patient {row.patient_id} is healthy (clinical line {row.clinical_line}) but this nodule is malignant",
                        "correct the class, or the patient's health_status in the clinical table",
                    )
                )
        if "stage" in joined.columns:
            for row in joined[healthy & joined["stage"].notna()].itertuples(index=False):
                issues.append(
                    _issue(
                        annotations_file, int(getattr(row, LINE_COLUMN)), "stage", row.stage, "healthy_without_stage",
                        f"patient {row.patient_id} is healthy (clinical line {row.clinical_line}) but has a stage here",
                        "empty the stage, or correct the patient's health_status in the clinical table",
                    )
                )
    if "stage" in joined.columns and "clinical_stage" in joined.columns:
        both = joined["stage"].notna() & joined["clinical_stage"].notna()
        differs = both & (joined["stage"].astype(object) != joined["clinical_stage"].astype(object))
        for row in joined[differs].itertuples(index=False):
            issues.append(
                _issue(
                    annotations_file, int(getattr(row, LINE_COLUMN)), "stage", row.stage, "stage_agrees",
                    f"patient {row.patient_id} has stage {row.stage} here but {row.clinical_stage} on clinical line {row.clinical_line}",
                    "write the same stage in both tables",
                )
            )
    return issues


