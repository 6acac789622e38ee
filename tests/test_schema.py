"""Annotation and clinical tables: CSV dialects, every rule, the report, property-based checks."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunisian_lung.errors import ValidationError, ValidationIssue
from tunisian_lung.schema import (
    STAGES,
    normalize_header,
    normalize_stage,
    read_annotations,
    read_clinical,
    validate_tables,
)

ANNOTATION_HEADER = "patient_id,series_id,coordX,coordY,coordZ,diameter_mm,class,nodule_present,stage"
CLINICAL_HEADER = "patient_id,sex,age,health_status,histology,stage"


def write(folder: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = folder / name
    path.write_bytes(text.encode(encoding))
    return path


def annotations_csv(folder: Path, *rows: str, header: str = ANNOTATION_HEADER) -> Path:
    return write(folder, "annotations.csv", "\n".join([header, *rows]) + "\n")


def clinical_csv(folder: Path, *rows: str, header: str = CLINICAL_HEADER) -> Path:
    return write(folder, "clinical.csv", "\n".join([header, *rows]) + "\n")


def only_issue(issues: tuple[ValidationIssue, ...]) -> ValidationIssue:
    assert len(issues) == 1, "\n".join(issue.format() for issue in issues)
    return issues[0]


# --- reading spreadsheet exports -------------------------------------------------------------


def test_excel_export_with_bom_semicolons_decimal_commas(tmp_path: Path) -> None:
    text = (
        "\ufeffPatient ID ;Series UID;coordX;coordY;coordZ;diameter mm ;class;nodule_present;Stage\r\n"
        "007;1.2.3;-10,5;20,25;-100;5,5;1;1;Stage II\r\n"
        "007;1.2.3;1;2;3;4;0;1;stage ii\r\n"
    )
    path = write(tmp_path, "annotations.csv", text)

    report = validate_tables(path)

    assert report.ok, report.format()
    table = report.annotations
    assert table is not None
    assert table["patient_id"].tolist() == ["007", "007"]
    assert table["coordX"].tolist() == [-10.5, 1.0]
    assert table["coordY"].tolist() == [20.25, 2.0]
    assert table["diameter_mm"].tolist() == [5.5, 4.0]
    assert table["stage"].astype(str).tolist() == ["II", "II"]
    assert table["csv_line"].tolist() == [2, 3]
    assert report.column_mapping[str(path)] == {
        "Patient ID ": "patient_id",
        "Series UID": "series_id",
        "diameter mm ": "diameter_mm",
        "Stage": "stage",
    }


def test_dtypes_of_parsed_annotations(tmp_path: Path) -> None:
    path = annotations_csv(tmp_path, "001,0001,1,2,3,4,1,1,I", "002,0002,,,,,,0,")

    table = read_annotations(path)

    assert str(table["patient_id"].dtype) == "string"
    assert str(table["series_id"].dtype) == "string"
    assert table["series_id"].tolist() == ["0001", "0002"]
    assert table["coordX"].dtype == "float64"
    assert str(table["class"].dtype) == "Int8"
    assert str(table["nodule_present"].dtype) == "Int8"
    assert list(table["stage"].cat.categories) == list(STAGES)
    assert table["stage"].cat.ordered


def test_tab_separated_file_loads(tmp_path: Path) -> None:
    header = ANNOTATION_HEADER.replace(",", "\t")
    path = write(tmp_path, "annotations.csv", f"{header}\nP1\tS1\t1.5\t2\t3\t4\t0\t1\t\n")

    table = read_annotations(path)

    assert table["coordX"].tolist() == [1.5]


def test_blank_lines_keep_spreadsheet_line_numbers(tmp_path: Path) -> None:
    path = annotations_csv(tmp_path, "", "P1,S1,1,2,3,4,0,1,", ",,,,,,,,", "P1,S1,1,2,3,150,0,1,")

    report = validate_tables(path)

    issue = only_issue(report.issues)
    assert issue.line == 5
    assert issue.column == "diameter_mm"
    assert report.annotations is not None
    assert report.annotations["csv_line"].tolist() == [3, 5]


def test_trailing_empty_columns_are_accepted(tmp_path: Path) -> None:
    path = annotations_csv(tmp_path, "P1,S1,1,2,3,4,0,1,,,", header=ANNOTATION_HEADER + ",,")

    assert read_annotations(path)["patient_id"].tolist() == ["P1"]


def test_excel_separator_directive_named(tmp_path: Path) -> None:
    # A "sep=;" first line once gave nine missing_column issues and no word about the directive.
    path = write(tmp_path, "annotations.csv", "\n" + "sep=;\n" + ANNOTATION_HEADER.replace(",", ";") + "\nP1;S1;1;2;3;4;0;1;\n")

    issue = only_issue(validate_tables(path).issues)

    assert issue.rule == "header"
    assert issue.line == 2
    assert issue.value == "sep=;"
    assert "delete this line" in issue.fix


def test_quoted_decimal_comma_fix_names_the_mark(tmp_path: Path) -> None:
    path = annotations_csv(tmp_path, 'P1,S1,"1,5",2,3,4,0,1,')

    issue = only_issue(validate_tables(path).issues)

    assert issue.rule == "number"
    assert issue.value == "1,5"
    assert "use '.' as decimal mark in a comma-separated file" in issue.fix


def test_row_with_wrong_field_count(tmp_path: Path) -> None:
    path = annotations_csv(tmp_path, "P1,S1,1,2,3,4,0,1,,extra")

    issue = only_issue(validate_tables(path).issues)

    assert issue.rule == "field_count"
    assert issue.line == 2
    assert "10 fields but the header has 9" in issue.message


def test_decimal_comma_in_comma_file(tmp_path: Path) -> None:
    path = annotations_csv(tmp_path, "P1,S1,1,5,2,3,4,0,1,")

    issue = only_issue(validate_tables(path).issues)

    assert issue.rule == "field_count"


def test_non_utf8_file_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "annotations.csv", f"{ANNOTATION_HEADER}\nPé,S1,1,2,3,4,0,1,\n", encoding="latin-1")

    report = validate_tables(path)

    issue = only_issue(report.issues)
    assert issue.rule == "encoding"
    assert issue.line == 2
    assert "UTF-8" in issue.fix
    assert report.annotations is None


def test_empty_file_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "annotations.csv", "\n\n")

    issue = only_issue(validate_tables(path).issues)

    assert issue.rule == "empty_file"


def test_missing_column_is_named(tmp_path: Path) -> None:
    header = ANNOTATION_HEADER.replace("series_id,", "")
    path = annotations_csv(tmp_path, "P1,1,2,3,4,0,1,", header=header)

    issue = only_issue(validate_tables(path).issues)

    assert issue.rule == "missing_column"
    assert issue.column == "series_id"
    assert "required column 'series_id' is missing" in issue.message
    assert issue.line == 1


def test_unknown_column_is_named(tmp_path: Path) -> None:
    path = annotations_csv(tmp_path, "P1,S1,1,2,3,4,0,1,,x", header=ANNOTATION_HEADER + ",reader")

    issue = only_issue(validate_tables(path).issues)

    assert issue.rule == "unknown_column"
    assert issue.column == "reader"
    assert "unknown column 'reader'" in issue.message
    assert "allow_extra_columns=True" in issue.fix


def test_extra_column_kept_when_allowed(tmp_path: Path) -> None:
    path = annotations_csv(tmp_path, "P1,S1,1,2,3,4,0,1,,r1", header=ANNOTATION_HEADER + ",reader")

    table = read_annotations(path, allow_extra_columns=True)

    assert table["reader"].tolist() == ["r1"]


def test_two_headers_mapping_to_one_column(tmp_path: Path) -> None:
    path = annotations_csv(tmp_path, "P1,S1,1,2,3,4,0,1,,5", header=ANNOTATION_HEADER + ",diameter mm")

    issue = only_issue(validate_tables(path).issues)

    assert issue.rule == "duplicate_column"
    assert "'diameter_mm' and 'diameter mm' both map to 'diameter_mm'" in issue.message


def test_normalize_header_examples() -> None:
    assert normalize_header(" Patient ID ") == "patient_id"
    assert normalize_header("diameter (mm)") == "diameter_mm"
    assert normalize_header("coordX") == "coordx"


# --- stages ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I", "I"),
        ("iv", "IV"),
        ("Stage II", "II"),
        ("stage ii", "II"),
        ("STAGE  III", "III"),
        ("2", "II"),
        ("Stage 4", "IV"),
        ("Stade III", "III"),
        ("stade 1", "I"),
        ("Stage V", None),
        ("0", None),
        ("IIIA", None),
        ("IB2", None),
        ("3b", None),
        ("III A", None),
        ("III--A", None),
        ("II AB", None),
        ("IA4", None),
        ("early", None),
    ],
)
def test_normalize_stage(text: str, expected: str | None) -> None:
    assert normalize_stage(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("IIIA", "III"), ("IB2", "I"), ("Stage 3b", "III"), ("IVA", "IV"), ("III A", "III"), ("Stage III-A", "III"), ("ii b1", "II"), ("IA3", "I")],
)
def test_substages_collapse_only_when_asked(text: str, expected: str) -> None:
    assert normalize_stage(text, collapse_substages=True) == expected
    assert normalize_stage(text) is None


def test_substage_in_table_names_the_keyword(tmp_path: Path) -> None:
    path = annotations_csv(tmp_path, "P1,S1,1,2,3,4,1,1,IIIA")

    issue = only_issue(validate_tables(path).issues)

    assert issue.rule == "stage"
    assert issue.value == "IIIA"
    assert "collapse_substages=True" in issue.fix
    table = read_annotations(path, collapse_substages=True)
    assert table["stage"].astype(str).tolist() == ["III"]


# --- one failing example per rule ------------------------------------------------------------

VALID_NODULE = "P1,S1,1,2,3,4,1,1,II"

ANNOTATION_RULES = [
    # (rows, line, column, rule, text in the message)
    (["P1,S1,abc,2,3,4,1,1,II"], 2, "coordX", "number", "coordX is not a number"),
    (["P1,S1,inf,2,3,4,1,1,II"], 2, "coordX", "coordX_finite", "finite"),
    (["P1,S1,1,2,3,0,1,1,II"], 2, "diameter_mm", "diameter_range", "(0, 100]"),
    (["P1,S1,1,2,3,150,1,1,II"], 2, "diameter_mm", "diameter_range", "(0, 100]"),
    (["P1,S1,1,2,3,4,2,1,II"], 2, "class", "class_binary", "class must be 0 or 1"),
    (["P1,S1,1,2,3,4,1,5,II"], 2, "nodule_present", "nodule_present_binary", "nodule_present must be 0 or 1"),
    (["P1,S1,1,2,3,4,1,,II"], 2, "nodule_present", "nodule_present_required", "nodule_present is empty"),
    (["P1,S1,1,2,3,4,1,1,Stage V"], 2, "stage", "stage", "not one of I, II, III, IV"),
    ([",S1,1,2,3,4,1,1,II"], 2, "patient_id", "patient_id_required", "patient_id is empty"),
    (["P1,,1,2,3,4,1,1,II"], 2, "series_id", "series_id_required", "series_id is empty"),
    (["P 1,S1,1,2,3,4,1,1,II"], 2, "patient_id", "patient_id_no_spaces", "whitespace"),
    (["P1,S1,,2,3,4,1,1,II"], 2, "coordX", "coordX_required_for_nodule", "coordX is empty in a row with nodule_present = 1"),
    (["P1,S1,1,2,3,,1,1,II"], 2, "diameter_mm", "diameter_mm_required_for_nodule", "diameter_mm is empty"),
    (["P1,S1,1,2,3,4,,1,II"], 2, "class", "class_required_for_nodule", "class is empty"),
    (["P1,S1,,,,4,,0,"], 2, "diameter_mm", "diameter_mm_empty_without_nodule", "must be empty in a row with nodule_present = 0"),
    (["P1,S1,,,,,1,0,"], 2, "class", "class_empty_without_nodule", "must be empty"),
    ([VALID_NODULE, "P1,S1,,,,,,0,II"], 3, "nodule_present", "absent_row_alone", "series S1 has nodule_present = 0 here but 1 other row(s)"),
    ([VALID_NODULE, "P2,S1,5,6,7,8,1,1,"], 3, "patient_id", "series_single_patient", "series S1 belongs to patient P1 on line 2 but to P2 here"),
    ([VALID_NODULE, "P1,S2,5,6,7,8,1,1,III"], 3, "stage", "single_stage_per_patient", "patient P1 has stage II on line 2 but III here"),
    ([VALID_NODULE, VALID_NODULE], 3, None, "duplicate_row", "repeats line 2"),
]


@pytest.mark.parametrize(("rows", "line", "column", "rule", "message"), ANNOTATION_RULES, ids=[case[3] for case in ANNOTATION_RULES])
def test_annotation_rule_fails(
    tmp_path: Path, rows: list[str], line: int, column: str | None, rule: str, message: str
) -> None:
    path = annotations_csv(tmp_path, *rows)

    issue = only_issue(validate_tables(path).issues)

    assert issue.rule == rule
    assert issue.line == line
    assert issue.column == column
    assert message in issue.message
    assert issue.file == str(path)
    assert issue.fix


def test_unlabelled_nodules_accepted_when_asked(tmp_path: Path) -> None:
    path = annotations_csv(tmp_path, "P1,S1,1,2,3,4,,1,")

    table = read_annotations(path, allow_unlabelled=True)

    assert table["class"].isna().all()


def test_issue_value_is_the_cell_as_written(tmp_path: Path) -> None:
    path = annotations_csv(tmp_path, "P1,S1,1,2,3,4,2.0,1,")

    issue = only_issue(validate_tables(path).issues)

    assert issue.value == "2.0"


CLINICAL_RULES = [
    (["P1,X,60,cancer,adenocarcinoma,II"], 2, "sex", "sex_allowed", "sex is not one of M, F"),
    (["P1,M,130,cancer,adenocarcinoma,II"], 2, "age", "age_range", "between 0 and 120 years"),
    (["P1,M,sixty,cancer,adenocarcinoma,II"], 2, "age", "number", "age is not a number"),
    (["P1,M,60,sick,adenocarcinoma,II"], 2, "health_status", "health_status_allowed", "healthy, cancer"),
    (["P1,M,60,,adenocarcinoma,II"], 2, "health_status", "health_status_required", "health_status is empty"),
    (["P1,M,60,cancer,carcinoid,II"], 2, "histology", "histology_allowed", "histology is not one of"),
    (["P1,M,60,healthy,,I"], 2, "stage", "healthy_without_stage", "a healthy patient has a stage"),
    (["P1,M,60,cancer,adenocarcinoma,"], 2, "stage", "cancer_requires_stage", "a cancer patient has no stage"),
    (["P1,M,60,healthy,,", "P1,F,50,healthy,,"], 3, "patient_id", "unique_patient", "patient P1 already has a row on line 2"),
]


@pytest.mark.parametrize(("rows", "line", "column", "rule", "message"), CLINICAL_RULES, ids=[case[3] + str(case[1]) for case in CLINICAL_RULES])
def test_clinical_rule_fails(
    tmp_path: Path, rows: list[str], line: int, column: str, rule: str, message: str
) -> None:
    clinical = clinical_csv(tmp_path, *rows)

    with pytest.raises(ValidationError) as raised:
        read_clinical(clinical)

    issue = only_issue(raised.value.issues)
    assert issue.rule == rule
    assert issue.line == line
    assert issue.column == column
    assert message in issue.message


def test_clinical_optional_columns_typed(tmp_path: Path) -> None:
    header = "Patient ID,Gender,Age,Status,smoking,cough,PD-L1 (%),EGFR,outcome"
    clinical = write(tmp_path, "clinical.csv", f"{header},stage\n001,female,61,Cancer,Former,yes,45,Positive,alive,IV\n")

    table = read_clinical(clinical)

    row = table.iloc[0]
    assert row["patient_id"] == "001"
    assert row["sex"] == "F"
    assert row["age"] == 61.0
    assert row["health_status"] == "cancer"
    assert row["smoking_status"] == "former"
    assert bool(row["cough"]) is True
    assert row["pdl1_percent"] == 45.0
    assert row["egfr_status"] == "positive"
    assert row["outcome"] == "alive"
    assert str(table["cough"].dtype) == "boolean"


def test_clinical_boolean_rejects_other_words(tmp_path: Path) -> None:
    clinical = write(tmp_path, "clinical.csv", "patient_id,health_status,cough\nP1,healthy,sometimes\n")

    with pytest.raises(ValidationError) as raised:
        read_clinical(clinical)

    issue = only_issue(raised.value.issues)
    assert issue.rule == "boolean"
    assert issue.column == "cough"
    assert issue.value == "sometimes"


def test_clinical_pdl1_out_of_range(tmp_path: Path) -> None:
    clinical = write(tmp_path, "clinical.csv", "patient_id,health_status,stage,pdl1_percent\nP1,cancer,I,120\n")

    with pytest.raises(ValidationError) as raised:
        read_clinical(clinical)

    issue = only_issue(raised.value.issues)
    assert issue.rule == "pdl1_range"
    assert "45, not 0.45" in issue.fix


# --- rules across the two tables -------------------------------------------------------------

CROSS_TABLE_RULES = [
    # (annotation rows, clinical rows, file, line, column, rule, message)
    (["P1,S1,1,2,3,4,1,1,II", "P2,S2,,,,,,0,"], ["P1,M,60,cancer,other,II"], "annotations.csv", 3, "patient_id", "patient_in_clinical", "patient P2 has annotations but no row in clinical.csv"),
    (["P1,S1,1,2,3,4,1,1,II"], ["P1,M,60,cancer,other,II", "P9,F,50,healthy,,"], "clinical.csv", 3, "patient_id", "patient_in_annotations", "patient P9 has a clinical row but no row in annotations.csv"),
    (["P1,S1,1,2,3,4,1,1,"], ["P1,M,60,healthy,,"], "annotations.csv", 2, "class", "healthy_without_malignant_nodule", "patient P1 is healthy (clinical line 2) but this nodule is malignant"),
    (["P1,S1,1,2,3,4,0,1,II"], ["P1,M,60,healthy,,"], "annotations.csv", 2, "stage", "healthy_without_stage", "patient P1 is healthy (clinical line 2) but has a stage here"),
    (["P1,S1,1,2,3,4,1,1,III"], ["P1,M,60,cancer,other,II"], "annotations.csv", 2, "stage", "stage_agrees", "patient P1 has stage III here but II on clinical line 2"),
]


@pytest.mark.parametrize(
    ("annotation_rows", "clinical_rows", "file", "line", "column", "rule", "message"),
    CROSS_TABLE_RULES,
    ids=[case[5] for case in CROSS_TABLE_RULES],
)
def test_cross_table_rule_fails(
    tmp_path: Path,
    annotation_rows: list[str],
    clinical_rows: list[str],
    file: str,
    line: int,
    column: str,
    rule: str,
    message: str,
) -> None:
    annotations = annotations_csv(tmp_path, *annotation_rows)
    clinical = clinical_csv(tmp_path, *clinical_rows)

    issue = only_issue(validate_tables(annotations, clinical).issues)

    assert issue.rule == rule
    assert Path(issue.file or "").name == file
    assert issue.line == line
    assert issue.column == column
    assert message in issue.message


def test_matching_tables_pass(tmp_path: Path) -> None:
    annotations = annotations_csv(tmp_path, "P1,S1,1,2,3,4,1,1,II", "P2,S2,,,,,,0,")
    clinical = clinical_csv(tmp_path, "P1,M,60,cancer,other,II", "P2,F,50,healthy,,")

    report = validate_tables(annotations, clinical)

    assert report.ok, report.format()
    assert report.clinical is not None
    assert len(report.clinical) == 2


# --- the report ------------------------------------------------------------------------------


def test_report_collects_every_failure(tmp_path: Path) -> None:
    annotations = annotations_csv(tmp_path, "P1,S1,abc,2,3,150,2,1,Stage V", "P1,S1,1,2,3,4,1,7,")

    report = validate_tables(annotations)

    found = {(issue.line, issue.column, issue.rule) for issue in report.issues}
    assert found == {
        (2, "coordX", "number"),
        (2, "diameter_mm", "diameter_range"),
        (2, "class", "class_binary"),
        (2, "stage", "stage"),
        (3, "nodule_present", "nodule_present_binary"),
    }
    assert not report.ok


def test_report_json_lists_issues(tmp_path: Path) -> None:
    annotations = annotations_csv(tmp_path, "P1,S1,1,2,3,150,1,1,")

    data = json.loads(validate_tables(annotations).to_json())

    assert data["ok"] is False
    assert data["annotation_rows"] == 1
    assert data["issues"][0]["line"] == 2
    assert data["issues"][0]["column"] == "diameter_mm"
    assert data["issues"][0]["value"] == "150"
    assert data["issues"][0]["rule"] == "diameter_range"


def test_read_annotations_raises_with_every_issue(tmp_path: Path) -> None:
    annotations = annotations_csv(tmp_path, "P1,S1,1,2,3,150,1,1,", "P1,S1,1,2,3,4,3,1,")

    with pytest.raises(ValidationError) as raised:
        read_annotations(annotations)

    assert len(raised.value.issues) == 2
    text = str(raised.value)
    assert "line 2, column 'diameter_mm'" in text
    assert "line 3, column 'class'" in text


def test_valid_report_format(tmp_path: Path) -> None:
    annotations = annotations_csv(tmp_path, VALID_NODULE)

    report = validate_tables(annotations)

    assert report.format() == "valid: 1 annotation rows"
    report.raise_if_invalid()


# --- real LUNA16 annotations -----------------------------------------------------------------


@pytest.fixture(scope="module")
def luna16_in_schema(luna16_annotations_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real LUNA16 table mapped into this schema.

    LUNA16 has no patient id, label or stage: each series stands for one patient, ``class`` and
    ``stage`` stay empty, and every row is a nodule.
    """
    source = pd.read_csv(luna16_annotations_csv, dtype=str, keep_default_na=False)
    mapped = pd.DataFrame(
        {
            "patient_id": source["seriesuid"],
            "series_id": source["seriesuid"],
            "coordX": source["coordX"],
            "coordY": source["coordY"],
            "coordZ": source["coordZ"],
            "diameter_mm": source["diameter_mm"],
            "class": "",
            "nodule_present": "1",
            "stage": "",
        }
    )
    path = tmp_path_factory.mktemp("luna16") / "annotations.csv"
    mapped.to_csv(path, index=False)
    return path


@pytest.mark.shared_data
def test_luna16_table_validates(luna16_in_schema: Path) -> None:
    report = validate_tables(luna16_in_schema, allow_unlabelled=True)

    assert report.ok, report.format()
    table = report.annotations
    assert table is not None
    assert len(table) == 1117
    # The file has 568 distinct series uids (its README counts the header line as a 569th).
    assert table["series_id"].nunique() == 568
    assert table["diameter_mm"].between(3.0, 40.0).all()
    assert table["series_id"].str.startswith("1.3.6.1.4.1.14519.5.2.1.6279.6001.").all()


@pytest.mark.shared_data
def test_luna16_without_labels_fails_each_row(luna16_in_schema: Path) -> None:
    report = validate_tables(luna16_in_schema)

    assert len(report.issues) == 1117
    assert {issue.rule for issue in report.issues} == {"class_required_for_nodule"}


# --- property-based --------------------------------------------------------------------------


@st.composite
def annotation_tables(draw: st.DrawFn) -> tuple[list[list[str]], bool]:
    """Draw a valid annotation table as rows of cells, and whether to write it Excel-style."""
    rows: list[list[str]] = []
    patients = draw(st.integers(min_value=1, max_value=5))
    coordinate = 0
    for patient_number in range(patients):
        patient_id = f"{patient_number:03d}"
        stage = draw(st.sampled_from(["", "I", "II", "III", "IV"]))
        for series_number in range(draw(st.integers(min_value=1, max_value=2))):
            series_id = f"1.2.{patient_number}.{series_number}"
            nodules = draw(st.integers(min_value=0, max_value=3))
            if nodules == 0:
                rows.append([patient_id, series_id, "", "", "", "", "", "0", stage])
            for _ in range(nodules):
                coordinate += 1
                diameter = draw(st.floats(min_value=0.5, max_value=100.0, allow_nan=False))
                label = draw(st.sampled_from(["0", "1"]))
                y = draw(st.floats(min_value=-300, max_value=300, allow_nan=False))
                rows.append(
                    [patient_id, series_id, f"{coordinate}.25", repr(round(y, 3)), "-120.5", repr(round(diameter, 3)), label, "1", stage]
                )
    excel = draw(st.booleans())
    return rows, excel


def render(rows: list[list[str]], excel: bool) -> str:
    if not excel:
        return "\n".join([ANNOTATION_HEADER, *(",".join(row) for row in rows)]) + "\n"
    header = "\ufeffPatient ID;series_id;coordX;coordY;coordZ;diameter mm;class;nodule_present;stage "
    lines = [";".join(cell.replace(".", ",") if index in (2, 3, 4, 5) else cell for index, cell in enumerate(row)) for row in rows]
    return "\r\n".join([header, *lines]) + "\r\n"


COLUMNS = ANNOTATION_HEADER.split(",")
# Invalid values that break exactly one rule, for every row / for nodule rows only.
ANY_ROW_MUTATIONS = {
    "patient_id": [""],
    "series_id": [""],
    "coordX": ["abc", "1.2.3"],
    "coordY": ["abc"],
    "coordZ": ["--1"],
    "diameter_mm": ["abc"],
    "class": ["maybe"],
    "nodule_present": ["5", "yes"],
    "stage": ["Stage V", "IIIA", "0"],
}
NODULE_ROW_MUTATIONS = {
    "coordX": ["", "inf"],
    "diameter_mm": ["", "0", "150", "-4"],
    "class": ["", "2"],
}
ABSENT_ROW_MUTATIONS = {"coordY": ["1.5"], "diameter_mm": ["4"], "class": ["1"]}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=annotation_tables())
def test_generated_valid_tables_pass(tmp_path: Path, table: tuple[list[list[str]], bool]) -> None:
    rows, excel = table
    path = write(tmp_path, "annotations.csv", render(rows, excel))

    report = validate_tables(path)

    assert report.ok, report.format()
    assert report.annotations is not None
    assert len(report.annotations) == len(rows)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=annotation_tables(), data=st.data())
def test_one_mutated_cell_gives_one_issue(tmp_path: Path, table: tuple[list[list[str]], bool], data: st.DataObject) -> None:
    rows, excel = table
    row_index = data.draw(st.integers(min_value=0, max_value=len(rows) - 1), label="row")
    is_nodule = rows[row_index][7] == "1"
    extra = NODULE_ROW_MUTATIONS if is_nodule else ABSENT_ROW_MUTATIONS
    column = data.draw(st.sampled_from(COLUMNS), label="column")
    value = data.draw(st.sampled_from(ANY_ROW_MUTATIONS[column] + extra.get(column, [])), label="value")
    rows = [list(row) for row in rows]
    rows[row_index][COLUMNS.index(column)] = value
    path = write(tmp_path, "annotations.csv", render(rows, excel))

    issue = only_issue(validate_tables(path).issues)

    assert issue.line == row_index + 2
    assert issue.column == column


CLINICAL_FULL_HEADER = "patient_id,sex,age,health_status,histology,stage,cough,pdl1_percent"
CLINICAL_COLUMN_NAMES = CLINICAL_FULL_HEADER.split(",")


@st.composite
def cohorts(draw: st.DrawFn) -> tuple[list[list[str]], list[list[str]]]:
    """Draw matching valid annotation and clinical tables as rows of cells."""
    annotation_rows: list[list[str]] = []
    clinical_rows: list[list[str]] = []
    for number in range(draw(st.integers(min_value=1, max_value=6))):
        patient_id = f"T{number:03d}"
        cancer = draw(st.booleans())
        stage = draw(st.sampled_from(STAGES)) if cancer else ""
        histology = draw(st.sampled_from(["adenocarcinoma", "squamous cell carcinoma", "small cell lung cancer", "other", ""])) if cancer else ""
        clinical_rows.append(
            [
                patient_id,
                draw(st.sampled_from(["M", "F", ""])),
                str(draw(st.integers(min_value=18, max_value=95))),
                "cancer" if cancer else "healthy",
                histology,
                stage,
                draw(st.sampled_from(["yes", "no", ""])),
                str(draw(st.integers(min_value=0, max_value=100))) if cancer else "",
            ]
        )
        nodules = draw(st.integers(min_value=0, max_value=2))
        annotation_stage = draw(st.sampled_from([stage, ""]))
        if nodules == 0:
            annotation_rows.append([patient_id, f"S{number}", "", "", "", "", "", "0", annotation_stage])
        for index in range(nodules):
            label = draw(st.sampled_from(["0", "1"])) if cancer else "0"
            annotation_rows.append([patient_id, f"S{number}", f"{index}.5", "1", "2", "6", label, "1", annotation_stage])
    return annotation_rows, clinical_rows


def render_rows(header: str, rows: list[list[str]]) -> str:
    return "\n".join([header, *(",".join(row) for row in rows)]) + "\n"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cohort=cohorts())
def test_generated_cohort_passes(tmp_path: Path, cohort: tuple[list[list[str]], list[list[str]]]) -> None:
    annotation_rows, clinical_rows = cohort
    annotations = write(tmp_path, "annotations.csv", render_rows(ANNOTATION_HEADER, annotation_rows))
    clinical = write(tmp_path, "clinical.csv", render_rows(CLINICAL_FULL_HEADER, clinical_rows))

    report = validate_tables(annotations, clinical)

    assert report.ok, report.format()


# Invalid clinical values that break exactly one rule, by column.
CLINICAL_MUTATIONS = {
    "patient_id": [""],
    "sex": ["X", "unknown"],
    "age": ["abc", "200", "-1"],
    "health_status": ["", "sick"],
    "histology": ["carcinoid"],
    "stage": ["Stage V", "IIIA"],
    "cough": ["maybe"],
    "pdl1_percent": ["abc", "101"],
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cohort=cohorts(), data=st.data())
def test_one_mutated_clinical_cell(tmp_path: Path, cohort: tuple[list[list[str]], list[list[str]]], data: st.DataObject) -> None:
    _, clinical_rows = cohort
    row_index = data.draw(st.integers(min_value=0, max_value=len(clinical_rows) - 1), label="row")
    column = data.draw(st.sampled_from(CLINICAL_COLUMN_NAMES), label="column")
    value = data.draw(st.sampled_from(CLINICAL_MUTATIONS[column]), label="value")
    rows = [list(row) for row in clinical_rows]
    rows[row_index][CLINICAL_COLUMN_NAMES.index(column)] = value
    clinical = write(tmp_path, "clinical.csv", render_rows(CLINICAL_FULL_HEADER, rows))

    with pytest.raises(ValidationError) as raised:
        read_clinical(clinical)

    issue = only_issue(raised.value.issues)
    assert issue.line == row_index + 2
    assert issue.column == column
