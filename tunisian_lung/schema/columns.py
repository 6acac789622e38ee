"""Declarations of the annotation and clinical columns, and normalisation of stages and headers."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, Mapping

import pandas as pd

#: Lung cancer stages after normalisation, in order.
STAGES: tuple[str, ...] = ("I", "II", "III", "IV")
#: Ordered categorical dtype of the ``stage`` columns.
STAGE_DTYPE = pd.CategoricalDtype(list(STAGES), ordered=True)

#: Name of the column that carries each row's line number in its CSV file.
LINE_COLUMN = "csv_line"

HEALTH_STATUSES: tuple[str, ...] = ("healthy", "cancer")
HISTOLOGIES: tuple[str, ...] = (
    "adenocarcinoma",
    "squamous cell carcinoma",
    "small cell lung cancer",
    "other",
)
SEXES: tuple[str, ...] = ("M", "F")
SMOKING_STATUSES: tuple[str, ...] = ("never", "former", "current")
BIOMARKER_STATUSES: tuple[str, ...] = ("positive", "negative")

MAX_DIAMETER_MM = 100.0
MAX_AGE_YEARS = 120.0

ColumnKind = Literal["id", "float", "binary", "stage", "choice", "bool", "text"]


@dataclass(frozen=True)
class ColumnSpec:
    """Declaration of one table column.

    Attributes
    ----------
    name:
        Canonical column name in the returned DataFrame.
    kind:
        How cells are parsed: ``id`` (text, never converted to a number), ``float``, ``binary``
        (0 or 1), ``stage`` (normalised to ``I``..``IV``), ``choice`` (one of ``choices``),
        ``bool`` (yes/no), ``text``.
    required:
        Whether the column must be present in the file.
    aliases:
        Normalised header variants accepted for this column (lower case, words joined by
        ``_``), besides the normalised canonical name.
    description:
        Meaning and unit, used in ``docs/schema.md`` and in error messages.
    choices:
        Canonical values of a ``choice`` column.
    synonyms:
        Normalised input value -> canonical value of a ``choice`` column.
    """

    name: str
    kind: ColumnKind
    required: bool
    description: str
    aliases: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    synonyms: Mapping[str, str] = field(default_factory=dict)


ANNOTATION_COLUMNS: tuple[ColumnSpec, ...] = (
    ColumnSpec("patient_id", "id", True, "patient identifier (text)", ("patient", "patientid", "pid")),
    ColumnSpec(
        "series_id",
        "id",
        True,
        "series identifier, such as the DICOM SeriesInstanceUID (text)",
        ("series", "seriesid", "seriesuid", "series_uid", "seriesinstanceuid", "series_instance_uid"),
    ),
    ColumnSpec("coordX", "float", True, "nodule centre x in the manifest's coordinate space (LPS mm by default)", ("coord_x", "x", "x_mm", "coordx_mm")),
    ColumnSpec("coordY", "float", True, "nodule centre y in the manifest's coordinate space (LPS mm by default)", ("coord_y", "y", "y_mm", "coordy_mm")),
    ColumnSpec("coordZ", "float", True, "nodule centre z in the manifest's coordinate space (LPS mm by default)", ("coord_z", "z", "z_mm", "coordz_mm")),
    ColumnSpec("diameter_mm", "float", True, "nodule diameter in millimetres", ("diameter", "diametermm", "diam_mm")),
    ColumnSpec("class", "binary", True, "nodule label: 0 benign, 1 malignant", ("label", "malignant", "malignancy_class")),
    ColumnSpec("nodule_present", "binary", True, "1 for a nodule row, 0 for the single row of a series without nodules", ("nodulepresent", "has_nodule", "nodule")),
    ColumnSpec("stage", "stage", True, "patient's cancer stage I..IV, empty for healthy patients", ("cancer_stage", "tnm_stage")),
    ColumnSpec("site", "text", False, "site (hospital or collection) of the row in a merged release", ("centre", "center", "hospital")),
)

#: Names of the required annotation columns, in the order writers of this library use.
ANNOTATION_COLUMN_NAMES: tuple[str, ...] = tuple(spec.name for spec in ANNOTATION_COLUMNS if spec.required)

_YES_NO = "yes/no"

CLINICAL_COLUMNS: tuple[ColumnSpec, ...] = (
    ColumnSpec("patient_id", "id", True, "patient identifier (text)", ("patient", "patientid", "pid")),
    ColumnSpec(
        "sex",
        "choice",
        False,
        "M or F",
        ("gender",),
        SEXES,
        {"m": "M", "male": "M", "f": "F", "female": "F"},
    ),
    ColumnSpec("age", "float", False, "age at the scan in years", ("age_years", "age_y")),
    ColumnSpec(
        "health_status",
        "choice",
        True,
        "healthy or cancer",
        ("status", "diagnosis", "healthstatus"),
        HEALTH_STATUSES,
        {"healthy": "healthy", "cancer": "cancer", "sain": "healthy", "lung cancer": "cancer"},
    ),
    ColumnSpec(
        "histology",
        "choice",
        False,
        "histological type of the tumour, empty when unknown or healthy",
        ("histological_type", "histology_type", "histotype"),
        HISTOLOGIES,
        {
            "adenocarcinoma": "adenocarcinoma",
            "squamous cell carcinoma": "squamous cell carcinoma",
            "squamous": "squamous cell carcinoma",
            "scc": "squamous cell carcinoma",
            "small cell lung cancer": "small cell lung cancer",
            "small cell carcinoma": "small cell lung cancer",
            "sclc": "small cell lung cancer",
            "other": "other",
        },
    ),
    ColumnSpec("stage", "stage", False, "cancer stage I..IV, empty for healthy patients", ("cancer_stage", "tnm_stage")),
    ColumnSpec(
        "smoking_status",
        "choice",
        False,
        "never, former or current smoker",
        ("smoking", "smoker", "tobacco"),
        SMOKING_STATUSES,
        {"never": "never", "non smoker": "never", "former": "former", "ex smoker": "former", "current": "current"},
    ),
    ColumnSpec("family_history", "bool", False, f"family history of lung cancer ({_YES_NO})", ("family_history_of_cancer", "familial_history")),
    ColumnSpec("cough", "bool", False, f"symptom: cough ({_YES_NO})"),
    ColumnSpec("chest_pain", "bool", False, f"symptom: chest pain ({_YES_NO})"),
    ColumnSpec("shortness_of_breath", "bool", False, f"symptom: shortness of breath ({_YES_NO})", ("dyspnea", "dyspnoea")),
    ColumnSpec("surgery", "bool", False, f"treatment: surgery ({_YES_NO})"),
    ColumnSpec("chemotherapy", "bool", False, f"treatment: chemotherapy ({_YES_NO})", ("chemo",)),
    ColumnSpec("radiotherapy", "bool", False, f"treatment: radiotherapy ({_YES_NO})", ("radiation_therapy",)),
    ColumnSpec("outcome", "text", False, "outcome as recorded by the hospital (free text)"),
    ColumnSpec(
        "egfr_status",
        "choice",
        False,
        "EGFR mutation: positive or negative, empty when not tested",
        ("egfr", "egfr_mutation"),
        BIOMARKER_STATUSES,
        {"positive": "positive", "pos": "positive", "mutated": "positive", "negative": "negative", "neg": "negative", "wild type": "negative"},
    ),
    ColumnSpec(
        "alk_status",
        "choice",
        False,
        "ALK rearrangement: positive or negative, empty when not tested",
        ("alk", "alk_rearrangement"),
        BIOMARKER_STATUSES,
        {"positive": "positive", "pos": "positive", "negative": "negative", "neg": "negative"},
    ),
    ColumnSpec("pdl1_percent", "float", False, "PD-L1 expression in percent of tumour cells (0-100)", ("pdl1", "pd_l1", "pd_l1_percent", "pd_l1_expression", "pdl1_expression")),
    ColumnSpec("site", "text", False, "site (hospital or collection) of the patient in a merged release", ("centre", "center", "hospital")),
)

_TRUE_WORDS = frozenset({"yes", "y", "true", "1", "oui"})
_FALSE_WORDS = frozenset({"no", "n", "false", "0", "non"})

_ROMAN_STAGES = {"i": "I", "ii": "II", "iii": "III", "iv": "IV"}
_ARABIC_STAGES = {"1": "I", "2": "II", "3": "III", "4": "IV"}
# A sub-stage may follow its stage directly, or after one space or hyphen (IIIA, III A, III-A).
# Its digit goes up to 3 because the 8th edition of the TNM staging has IA1, IA2 and IA3.
_STAGE_PATTERN = re.compile(r"^(?:stage\s*|stade\s*)?(iv|iii|ii|i|[1-4])(?:[\s-]?([abc][1-3]?))?$")


def normalize_stage(value: str, *, collapse_substages: bool = False) -> str | None:
    """Return the canonical stage (``I``..``IV``) of one cell, or ``None`` when it is invalid.

    Accepted: ``I``..``IV`` and ``1``..``4`` in any case, with an optional ``Stage`` prefix
    or its French spelling ``Stade`` (``Stage II``, ``stage ii``, ``Stade II``, ``2``).
    Sub-stages such as ``IIIA``, ``III A``, ``III-A``, ``IA3``, ``IB2`` or ``Stage 3B`` are
    rejected unless ``collapse_substages=True``, which maps them to their main stage
    (``IIIA`` -> ``III``) and so drops the letter.
    """
    text = " ".join(value.strip().lower().split())
    match = _STAGE_PATTERN.match(text)
    if match is None:
        return None
    number, substage = match.groups()
    if substage and not collapse_substages:
        return None
    return _ROMAN_STAGES.get(number) or _ARABIC_STAGES[number]


def normalize_header(name: str) -> str:
    """Return the lookup key of a header: lower case, runs of other characters as one ``_``.

    ``"Patient ID "`` -> ``"patient_id"``, ``"diameter (mm)"`` -> ``"diameter_mm"``,
    ``"coordX"`` -> ``"coordx"``.
    """
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")

