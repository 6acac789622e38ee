"""Patient-level, stratified, reproducible splits and k-fold cross-validation.

Every patient lands in exactly one split, so no series or nodule of a test patient is ever seen
in training. The assignment is a pure function of the sorted patient ids, their stratum values,
the seed and the ratios:

* Within each stratum, patients are ordered by the sha256 digest of ``"<seed>:<patient_id>"``.
  No ``hash()``, set order or random generator stream is involved, so the result is identical on
  every platform, Python version and ``PYTHONHASHSEED``.
* Global split sizes follow the ratios by largest-remainder rounding, and each stratum's count
  per split is its ideal share rounded down or up (a controlled rounding of the stratum-by-split
  table). Every stratum is therefore within one patient of its target in every split, and the
  split sizes match the ratios as closely as whole patients allow.
* A stratum with fewer patients than there are splits cannot be spread over the splits. Small
  strata that agree on all but the last column are merged. A merged group that is still too
  small joins the largest stratum that agrees on those columns. If there is none, the rule
  repeats with one column fewer, and the patients left over at the end form one ``"pooled"``
  stratum. For example a lone small-cell carcinoma patient joins the largest cancer stratum,
  so health status stays balanced. :attr:`Splits.strata` records the final stratum of every
  patient.

The result is a :class:`Splits` object, persisted as ``splits.json`` with :meth:`Splits.save` and
read back, with leak and identity checks, by :func:`load_splits`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import pandas as pd

from tunisian_lung._split_allocation import (
    UNKNOWN_STRATUM_VALUE,
    assign_strata,
    controlled_rounding,
    largest_remainder,
    order_key,
)
from tunisian_lung.errors import SplitError
from tunisian_lung.layout import SPLITS_NAME

if TYPE_CHECKING:  # pragma: no cover
    from tunisian_lung.preprocess import PreprocessCache, PreprocessConfig
    from tunisian_lung.torch_data import NoduleDataset, ScanDataset

logger = logging.getLogger(__name__)

#: Version of the splits.json format written by :meth:`Splits.save`.
SPLITS_FORMAT_VERSION = "1.0"
SUPPORTED_SPLITS_FORMAT_VERSIONS = ("1.0",)

DEFAULT_NAMES = ("train", "val", "test")
DEFAULT_RATIOS = (0.70, 0.15, 0.15)
DEFAULT_STRATIFY = ("health_status", "histology")

#: Stratum value used for a patient whose stratification column is empty.
UNKNOWN_VALUE = UNKNOWN_STRATUM_VALUE
#: Stratum key of the patients left after every back-off step (all columns dropped).
POOLED_STRATUM = "pooled"

_STRATUM_SEPARATOR = " / "
_MAX_NAMED_PATIENTS = 10


# --- small helpers --------------------------------------------------------------------------


def patient_list_sha256(patient_ids: Iterable[str]) -> str:
    """Return the sha256 hex digest of the sorted patient ids joined by newlines.

    This identifies the patient list of a dataset in ``splits.json``: a split file made for
    another dataset (or an older version with other patients) has another digest.
    """
    text = "\n".join(sorted(str(pid) for pid in patient_ids))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _name_patients(patient_ids: Iterable[str]) -> str:
    ids = sorted(patient_ids)
    shown = ", ".join(ids[:_MAX_NAMED_PATIENTS])
    if len(ids) > _MAX_NAMED_PATIENTS:
        shown += f" and {len(ids) - _MAX_NAMED_PATIENTS} more"
    return shown


def _validate_names(names: Sequence[str]) -> tuple[str, ...]:
    result = tuple(str(name) for name in names)
    if not result:
        raise SplitError("split names must not be empty; pass for example names=('train', 'val', 'test')")
    if len(set(result)) != len(result):
        raise SplitError(f"split names must be unique, got {list(result)}")
    for name in result:
        if not name or name != name.strip():
            raise SplitError(f"split name {name!r} is invalid; use a non-empty name without surrounding spaces")
    return result


def _validate_ratios(ratios: Sequence[float], names: Sequence[str]) -> tuple[Fraction, ...]:
    values = [float(ratio) for ratio in ratios]
    if len(values) != len(names):
        raise SplitError(
            f"got {len(values)} ratios {values} for {len(names)} splits {list(names)}; pass one ratio per split"
        )
    if any(not (value >= 0.0) or value == float("inf") for value in values):
        raise SplitError(f"ratios must be finite and non-negative, got {values}")
    total = sum(values)
    if abs(total - 1.0) > 1e-6:
        raise SplitError(f"ratios must sum to 1, got {values} (sum {total:.6g})")
    # Exact fractions keep the rounding free of float artefacts such as 10 * 0.7 = 7.000000000000001.
    fractions = [Fraction(value).limit_denominator(1_000_000) for value in values]
    fraction_total = sum(fractions, Fraction(0))
    if fraction_total == 0:
        raise SplitError(f"at least one ratio must be positive, got {values}")
    return tuple(fraction / fraction_total for fraction in fractions)


# --- stratification ---------------------------------------------------------------------------


def _clinical_lookup(dataset: Any) -> dict[str, dict[str, Any]]:
    clinical = getattr(dataset, "clinical", None)
    if not isinstance(clinical, pd.DataFrame) or "patient_id" not in clinical.columns:
        return {}
    records = clinical.astype(object).where(clinical.notna(), None).to_dict(orient="records")
    return {str(record["patient_id"]): record for record in records}


def _annotation_lookup(dataset: Any, columns: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Return per-patient values of annotation columns that hold one value per patient.

    A merged release carries ``site`` in ``annotations.csv`` even when it has no clinical table.
    A column with two different values for one patient cannot describe the patient and raises.
    """
    annotations = getattr(dataset, "annotations", None)
    if not isinstance(annotations, pd.DataFrame) or "patient_id" not in annotations.columns:
        return {}
    wanted = [c for c in columns if c in annotations.columns and c != "patient_id"]
    lookup: dict[str, dict[str, Any]] = {}
    for column in wanted:
        values = annotations[["patient_id", column]].dropna().astype(str)
        values = values[values[column].str.strip() != ""].drop_duplicates()
        conflicting = values[values.duplicated("patient_id", keep=False)]
        if not conflicting.empty:
            patient = str(conflicting["patient_id"].iloc[0])
            found = sorted(conflicting.loc[conflicting["patient_id"] == patient, column])
            raise SplitError(
                f"annotations.csv column {column!r} has several values for patient {patient!r} "
                f"({found}); a column used to stratify or hold out must hold one value per patient"
            )
        for patient_id, value in zip(values["patient_id"], values[column]):
            lookup.setdefault(patient_id, {})[column] = value
    return lookup


def _stratum_value(value: Any) -> str:
    if value is None:
        return UNKNOWN_VALUE
    try:
        if pd.isna(value):
            return UNKNOWN_VALUE
    except (TypeError, ValueError):
        pass
    text = str(value).strip()
    return text if text else UNKNOWN_VALUE


def patient_attribute_table(dataset: Any, columns: Sequence[str]) -> dict[str, dict[str, str]]:
    """Return ``{patient_id: {column: value}}`` for stratification and hold-out columns.

    A column is read from the :class:`~tunisian_lung.dataset.Patient` record when it has that
    attribute, else from the clinical table. Failing both, it is read from an annotation column
    with one value per patient, such as the ``site`` column of a merged release without a
    clinical table.
    Empty values become ``"unknown"``.

    Raises
    ------
    SplitError
        If a column is neither a patient attribute nor a clinical column.
    """
    patients: Mapping[str, Any] = dataset.patients
    clinical = _clinical_lookup(dataset) if columns else {}
    clinical_columns = set(next(iter(clinical.values())).keys()) if clinical else set()
    annotation_only = [c for c in columns if c not in clinical_columns]
    from_annotations = _annotation_lookup(dataset, annotation_only) if annotation_only else {}
    annotation_columns = {c for values in from_annotations.values() for c in values}
    table: dict[str, dict[str, str]] = {}
    for patient_id in sorted(patients):
        patient = patients[patient_id]
        row: dict[str, str] = {}
        record_clinical = getattr(patient, "clinical", None)
        for column in columns:
            if column != "clinical" and hasattr(patient, column):
                row[column] = _stratum_value(getattr(patient, column))
            elif isinstance(record_clinical, Mapping) and column in record_clinical:
                row[column] = _stratum_value(record_clinical[column])
            elif column in clinical_columns:
                row[column] = _stratum_value(clinical.get(str(patient_id), {}).get(column))
            elif column in annotation_columns:
                row[column] = _stratum_value(from_annotations.get(str(patient_id), {}).get(column))
            else:
                known = sorted({*clinical_columns, "health_status", "histology", "stage", "sex"})
                raise SplitError(
                    f"column {column!r} is neither a patient attribute nor a clinical column; "
                    f"choose from {known}"
                )
        table[str(patient_id)] = row
    return table


def _stratum_label(key: tuple[str, ...]) -> str:
    return _STRATUM_SEPARATOR.join(key) if key else POOLED_STRATUM


# --- the Splits object ------------------------------------------------------------------------


@dataclass(frozen=True)
class Splits:
    """A patient-level assignment of one dataset to named splits.

    Build it with :func:`make_splits` or :func:`make_folds`, read it with :func:`load_splits`.

    Attributes
    ----------
    assignment:
        Patient id -> split name, for every patient of the dataset, in sorted id order.
    names:
        Split names in their canonical order, for example ``("train", "val", "test")`` or
        ``("fold-0", ..., "fold-4")`` for k-fold.
    strategy:
        ``"stratified"`` (:func:`make_splits`), ``"kfold"`` (:func:`make_folds`), or
        ``"custom"`` for a hand-written file.
    seed, ratios, stratify, holdout:
        The parameters that produced the assignment (``ratios`` is empty for k-fold).
    strata:
        Patient id -> stratum label after the small-strata back-off (``"cancer / adenocarcinoma"``).
    dataset:
        The dataset the splits belong to, or ``None`` when only the assignment is known.
    """

    assignment: Mapping[str, str]
    names: tuple[str, ...]
    strategy: str = "custom"
    seed: int | None = None
    ratios: tuple[float, ...] = ()
    stratify: tuple[str, ...] = ()
    holdout: Mapping[str, tuple[str, ...]] | None = None
    strata: Mapping[str, str] = field(default_factory=dict)
    dataset: Any = field(default=None, compare=False, repr=False)

    # --- queries ---------------------------------------------------------------------------

    @property
    def patient_list_sha256(self) -> str:
        """sha256 of the sorted patient ids that this assignment covers."""
        return patient_list_sha256(self.assignment)

    @property
    def k(self) -> int | None:
        """Number of folds for a k-fold assignment, else ``None``."""
        return len(self.fold_names) if self.strategy == "kfold" else None

    @property
    def fold_names(self) -> tuple[str, ...]:
        """Names of the k-fold parts (``fold-0``, ...), empty unless the strategy is k-fold."""
        return tuple(name for name in self.names if name.startswith("fold-")) if self.strategy == "kfold" else ()

    def patient_ids(self, name: str) -> tuple[str, ...]:
        """Return the sorted patient ids of split ``name``."""
        self._check_name(name)
        return tuple(pid for pid, split in self.assignment.items() if split == name)

    def counts(self) -> dict[str, int]:
        """Return the number of patients per split, in :attr:`names` order."""
        counter = Counter(self.assignment.values())
        return {name: counter.get(name, 0) for name in self.names}

    def stratum_counts(self) -> dict[str, dict[str, int]]:
        """Return ``{split: {stratum label: patients}}`` (empty inner dicts when unstratified)."""
        result: dict[str, dict[str, int]] = {name: {} for name in self.names}
        for pid, split in self.assignment.items():
            label = self.strata.get(pid)
            if label is not None:
                result[split][label] = result[split].get(label, 0) + 1
        return {name: dict(sorted(counts.items())) for name, counts in result.items()}

    def split(self, name: str) -> "DatasetSplit":
        """Return the patients, series and nodules of one split as a :class:`DatasetSplit`.

        Raises
        ------
        SplitError
            If ``name`` is not a split of this assignment, or no dataset is attached.
        """
        self._check_name(name)
        if self.dataset is None:
            raise SplitError(
                f"split {name!r} has no dataset attached; load the file with load_splits(dataset, path)"
            )
        return DatasetSplit(name=name, patient_ids=self.patient_ids(name), source=self.dataset)

    def fold(self, index: int, *, train_name: str = "train", val_name: str = "val") -> "Splits":
        """Return fold ``index`` of a k-fold assignment as train/val splits.

        Part ``fold-<index>`` becomes ``val_name`` and the other parts ``train_name``. A hold-out
        split (for example a whole site as ``test``) keeps its name.

        Raises
        ------
        SplitError
            If this is not a k-fold assignment or ``index`` is out of range.
        """
        if self.strategy != "kfold":
            raise SplitError(f"fold() needs a k-fold assignment, but this one is {self.strategy!r}; use make_folds()")
        k = len(self.fold_names)
        if not 0 <= index < k:
            raise SplitError(f"fold index {index} is out of range for k={k}; use 0..{k - 1}")
        held_out_fold = f"fold-{index}"
        assignment: dict[str, str] = {}
        for pid, split in self.assignment.items():
            if split == held_out_fold:
                assignment[pid] = val_name
            elif split in self.fold_names:
                assignment[pid] = train_name
            else:
                assignment[pid] = split
        others = tuple(name for name in self.names if name not in self.fold_names)
        return Splits(
            assignment=assignment,
            names=(train_name, val_name, *others),
            strategy=f"kfold-fold-{index}",
            seed=self.seed,
            stratify=self.stratify,
            holdout=self.holdout,
            strata=self.strata,
            dataset=self.dataset,
        )

    def folds(self, **names: str) -> list["Splits"]:
        """Return every fold of a k-fold assignment, see :meth:`fold`."""
        return [self.fold(index, **names) for index in range(len(self.fold_names))]

    def table(self) -> pd.DataFrame:
        """Return one row per split (and an ``all`` row) with patient, series and label counts.

        Columns: ``patients``, ``series``, ``nodules``, ``cancer``, ``healthy``, ``status
        unknown``, one ``histology: <value>`` column per histology and one ``stage <value>``
        column per stage present in the dataset. Series and nodule counts need an attached
        dataset and are omitted otherwise.
        """
        rows: dict[str, dict[str, int]] = {}
        patients = getattr(self.dataset, "patients", None)
        series_per_patient: Counter[str] = Counter()
        nodules_per_patient: Counter[str] = Counter()
        if self.dataset is not None:
            series_per_patient.update(str(record.patient_id) for record in self.dataset.series)
            nodules_per_patient.update(str(record.patient_id) for record in self.dataset.nodules)
        for name in (*self.names, "all"):
            members = [pid for pid, split in self.assignment.items() if name in ("all", split)]
            row: dict[str, int] = {"patients": len(members)}
            if patients is not None:
                row["series"] = sum(series_per_patient[pid] for pid in members)
                row["nodules"] = sum(nodules_per_patient[pid] for pid in members)
                statuses = Counter(_stratum_value(getattr(patients[pid], "health_status", None)) for pid in members)
                row["cancer"] = statuses.get("cancer", 0)
                row["healthy"] = statuses.get("healthy", 0)
                row["status unknown"] = sum(statuses.values()) - row["cancer"] - row["healthy"]
                for pid in members:
                    histology = getattr(patients[pid], "histology", None)
                    if _stratum_value(histology) != UNKNOWN_VALUE:
                        key = f"histology: {histology}"
                        row[key] = row.get(key, 0) + 1
                    stage = getattr(patients[pid], "stage", None)
                    if _stratum_value(stage) != UNKNOWN_VALUE:
                        key = f"stage {stage}"
                        row[key] = row.get(key, 0) + 1
            rows[name] = row
        frame = pd.DataFrame.from_dict(rows, orient="index").fillna(0).astype("int64")
        fixed = [column for column in ("patients", "series", "nodules", "cancer", "healthy", "status unknown") if column in frame]
        histology = sorted(column for column in frame.columns if column.startswith("histology: "))
        stages = sorted(column for column in frame.columns if column.startswith("stage "))
        frame = frame[fixed + histology + stages]
        frame.index.name = "split"
        return frame

    # --- persistence -----------------------------------------------------------------------

    def to_json_dict(self) -> dict[str, Any]:
        """Return the ``splits.json`` content as a JSON-serialisable dict (see :meth:`save`)."""
        from tunisian_lung import __version__

        data: dict[str, Any] = {
            "format_version": SPLITS_FORMAT_VERSION,
            "created_by": f"tunisian_lung {__version__}",
            "strategy": self.strategy,
            "seed": self.seed,
            "names": list(self.names),
            "ratios": list(self.ratios),
            "stratify": list(self.stratify),
            "holdout": {column: list(values) for column, values in self.holdout.items()} if self.holdout else None,
            "patients": len(self.assignment),
            "patient_list_sha256": self.patient_list_sha256,
            "counts": self.counts(),
            "stratum_counts": self.stratum_counts(),
            "assignment": dict(sorted(self.assignment.items())),
        }
        if self.strata:
            data["strata"] = dict(sorted(self.strata.items()))
        return data

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the splits as JSON to ``path`` atomically and return the path.

        The file contains the format version, strategy, seed, names, ratios, stratification
        columns, hold-out rule, the number of patients and the sha256 of their sorted ids,
        patient counts per split and per split and stratum, and the assignment patient -> split.
        The text is written to a temporary file in the target folder and renamed over ``path``,
        so a reader never sees a half-written file.
        """
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_json_dict(), indent=2, ensure_ascii=False) + "\n"
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(text)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        logger.info("wrote %d patient assignments to %s", len(self.assignment), target)
        return target

    def with_dataset(self, dataset: Any) -> "Splits":
        """Return a copy attached to ``dataset`` after checking that it covers the same patients.

        Raises
        ------
        SplitError
            If the dataset's patients differ from the assignment's (see :func:`load_splits`).
        """
        _check_against_dataset(self.assignment, dataset, source="these splits", file_hash=self.patient_list_sha256)
        return Splits(
            assignment=self.assignment,
            names=self.names,
            strategy=self.strategy,
            seed=self.seed,
            ratios=self.ratios,
            stratify=self.stratify,
            holdout=self.holdout,
            strata=self.strata,
            dataset=dataset,
        )

    def _check_name(self, name: str) -> None:
        if name not in self.names:
            raise SplitError(f"unknown split {name!r}; this assignment has splits {list(self.names)}")


# --- building splits --------------------------------------------------------------------------


def _normalise_holdout(holdout: Mapping[str, Any] | None) -> dict[str, tuple[str, ...]] | None:
    if holdout is None:
        return None
    if not isinstance(holdout, Mapping) or not holdout:
        raise SplitError(f"holdout must be a non-empty mapping such as {{'site': 'LIDC'}}, got {holdout!r}")
    result: dict[str, tuple[str, ...]] = {}
    for column, values in holdout.items():
        if isinstance(values, (str, int, float)):
            values = [values]
        normalised = tuple(sorted({str(value).strip() for value in values}))
        if not normalised:
            raise SplitError(f"holdout column {column!r} needs at least one value")
        result[str(column)] = normalised
    return result


def _select_holdout(
    attributes: Mapping[str, Mapping[str, str]], holdout: Mapping[str, tuple[str, ...]]
) -> list[str]:
    """Return the patients that match every column of ``holdout``."""
    held = [
        pid
        for pid, row in attributes.items()
        if all(row[column] in values for column, values in holdout.items())
    ]
    if not held:
        observed = {column: sorted({row[column] for row in attributes.values()}) for column in holdout}
        raise SplitError(f"holdout {dict(holdout)} matches no patient; values present: {observed}")
    if len(held) == len(attributes):
        raise SplitError(f"holdout {dict(holdout)} matches every patient, which leaves none to train on")
    return held


def _stratified_assignment(
    patient_ids: Sequence[str],
    attributes: Mapping[str, Mapping[str, str]],
    stratify: Sequence[str],
    names: Sequence[str],
    ratios: Sequence[Fraction],
    seed: int,
) -> tuple[dict[str, str], dict[str, str]]:
    """Assign ``patient_ids`` to ``names`` and return (assignment, stratum label per patient)."""
    active = sum(1 for ratio in ratios if ratio > 0)
    keys = assign_strata({pid: attributes[pid] for pid in patient_ids}, stratify, min_size=active)
    groups: dict[tuple[str, ...], list[str]] = {}
    for pid in sorted(patient_ids):
        groups.setdefault(keys[pid], []).append(pid)
    ordered_keys = sorted(groups)
    sizes = [len(groups[key]) for key in ordered_keys]
    targets = largest_remainder(len(patient_ids), ratios, seed, "global")
    table = controlled_rounding(sizes, ratios, targets, seed)

    assignment: dict[str, str] = {}
    for row, key in zip(table, ordered_keys):
        members = sorted(groups[key], key=lambda pid: order_key(seed, pid))
        start = 0
        for name, count in zip(names, row):
            for pid in members[start : start + count]:
                assignment[pid] = name
            start += count
    strata = {pid: _stratum_label(keys[pid]) for pid in patient_ids}
    return assignment, strata


def make_splits(
    dataset: Any,
    *,
    seed: int = 0,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    stratify: Sequence[str] = DEFAULT_STRATIFY,
    names: Sequence[str] = DEFAULT_NAMES,
    holdout: Mapping[str, Any] | None = None,
    holdout_split: str | None = None,
) -> Splits:
    """Split a dataset's patients into stratified, disjoint, reproducible splits.

    Parameters
    ----------
    dataset:
        A :class:`~tunisian_lung.dataset.TunisianLungDataset` (anything with a ``patients``
        mapping works; ``clinical`` is read for columns that patients lack).
    seed:
        Seed of the patient order inside each stratum. The same seed, dataset and parameters
        give the same assignment on every platform.
    ratios:
        Fraction of patients per split, one per name, summing to 1. With ``holdout`` the ratio
        of the hold-out split is ignored and the others are rescaled to sum to 1.
    stratify:
        Patient attributes or clinical columns to stratify on, most important first; small
        strata drop columns from the end (see the module docstring). Empty means no
        stratification. Missing values form their own ``"unknown"`` value.
    names:
        Split names.
    holdout:
        Column -> value or values, for example ``{"site": "LIDC"}``. Patients matching every
        column all go to ``holdout_split``; the other patients are split by ``ratios``.
    holdout_split:
        Split that receives the held-out patients; defaults to the last name (``"test"``).

    Returns
    -------
    Splits
        The assignment with its parameters and strata, attached to ``dataset``.

    Raises
    ------
    SplitError
        On invalid ratios or names, an unknown column, a hold-out that matches no patient or
        every patient, or a dataset without patients.
    """
    names = _validate_names(names)
    fractions = _validate_ratios(ratios, names)
    seed = _validate_seed(seed)
    stratify = tuple(str(column) for column in stratify)
    holdout_rule = _normalise_holdout(holdout)
    patient_ids = sorted(str(pid) for pid in dataset.patients)
    if not patient_ids:
        raise SplitError("the dataset has no patients to split; check annotations.csv and clinical.csv")
    columns = tuple(dict.fromkeys([*stratify, *(holdout_rule or {})]))
    attributes = patient_attribute_table(dataset, columns)

    assignment: dict[str, str] = {}
    strata: dict[str, str] = {}
    if holdout_rule is None:
        if holdout_split is not None:
            raise SplitError("holdout_split needs a holdout rule such as holdout={'site': 'LIDC'}")
        assignment, strata = _stratified_assignment(patient_ids, attributes, stratify, names, fractions, seed)
    else:
        target = names[-1] if holdout_split is None else holdout_split
        if target not in names:
            raise SplitError(f"holdout_split {target!r} is not one of the split names {list(names)}")
        held = _select_holdout(attributes, holdout_rule)
        held_set = set(held)
        rest = [pid for pid in patient_ids if pid not in held_set]
        rest_names = [name for name in names if name != target]
        rest_ratios = [ratio for name, ratio in zip(names, fractions) if name != target]
        total = sum(rest_ratios, Fraction(0))
        if total == 0:
            raise SplitError(f"the splits other than {target!r} all have ratio 0, so no patient can be assigned")
        rest_ratios = [ratio / total for ratio in rest_ratios]
        assignment, strata = _stratified_assignment(rest, attributes, stratify, rest_names, rest_ratios, seed)
        assignment.update({pid: target for pid in held})
        strata.update({pid: "held out" for pid in held})
        logger.info("held out %d patients matching %s as %r", len(held), holdout_rule, target)

    result = Splits(
        assignment=dict(sorted(assignment.items())),
        names=names,
        strategy="stratified" if stratify else "random",
        seed=seed,
        ratios=tuple(float(ratio) for ratio in ratios),
        stratify=stratify,
        holdout=holdout_rule,
        strata=dict(sorted(strata.items())),
        dataset=dataset,
    )
    counts = result.counts()
    empty = [name for name, ratio in zip(names, fractions) if ratio > 0 and counts[name] == 0]
    if empty:
        logger.warning(
            "split(s) %s received no patient: their share of %d patients is under one patient (ratios %s)",
            empty,
            len(patient_ids),
            list(ratios),
        )
    logger.info("split %d patients with seed %d: %s", len(patient_ids), seed, counts)
    return result


def make_folds(
    dataset: Any,
    *,
    k: int = 5,
    seed: int = 0,
    stratify: Sequence[str] = DEFAULT_STRATIFY,
    holdout: Mapping[str, Any] | None = None,
    holdout_split: str = "test",
) -> Splits:
    """Partition the patients into ``k`` stratified folds for cross-validation.

    The folds are named ``fold-0`` .. ``fold-<k-1>`` and have equal size up to one patient;
    each stratum is spread over the folds as evenly as whole patients allow. Use
    :meth:`Splits.fold` or :meth:`Splits.folds` for the train/val pairs. With ``holdout`` the
    matching patients form a separate ``holdout_split`` that is in no fold.

    Raises
    ------
    SplitError
        If ``k < 2``, ``k`` exceeds the number of patients to fold, or the hold-out rule fails.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise SplitError(f"k must be an integer >= 2, got {k!r}")
    fold_names = tuple(f"fold-{index}" for index in range(k))
    holdout_rule = _normalise_holdout(holdout)
    names = fold_names if holdout_rule is None else (*fold_names, holdout_split)
    folded = len(dataset.patients)
    if holdout_rule is not None:
        attributes = patient_attribute_table(dataset, tuple(holdout_rule))
        folded -= len(_select_holdout(attributes, holdout_rule))
    if folded < k:
        raise SplitError(f"cannot make {k} folds from {folded} patients; use k <= {folded}")
    # The float 1/k is turned back into the exact fraction 1/k, so fold sizes differ by at most one.
    ratios = [1.0 / k] * k + ([0.0] if holdout_rule is not None else [])
    splits = make_splits(
        dataset,
        seed=seed,
        ratios=ratios,
        stratify=stratify,
        names=names,
        holdout=holdout,
        holdout_split=holdout_split if holdout_rule is not None else None,
    )
    return Splits(
        assignment=splits.assignment,
        names=names,
        strategy="kfold",
        seed=splits.seed,
        ratios=(),
        stratify=splits.stratify,
        holdout=splits.holdout,
        strata=splits.strata,
        dataset=dataset,
    )


def _validate_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise SplitError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


# --- loading and checking ---------------------------------------------------------------------


def _check_against_dataset(
    assignment: Mapping[str, str], dataset: Any, *, source: str, file_hash: str | None
) -> None:
    dataset_ids = {str(pid) for pid in dataset.patients}
    file_ids = set(assignment)
    unknown = file_ids - dataset_ids
    missing = dataset_ids - file_ids
    dataset_hash = patient_list_sha256(dataset_ids)
    if file_hash is not None and file_hash != dataset_hash and not unknown and not missing:
        raise SplitError(
            f"{source} records patient list sha256 {file_hash[:12]}..., but the dataset's is "
            f"{dataset_hash[:12]}...; the file was edited by hand or made for another dataset. "
            "Regenerate it with `tunisian-lung split ROOT`"
        )
    problems = []
    if unknown:
        problems.append(f"{len(unknown)} patient(s) not in the dataset: {_name_patients(unknown)}")
    if missing:
        problems.append(f"{len(missing)} dataset patient(s) in no split: {_name_patients(missing)}")
    if problems:
        other = " It was made for another dataset or version." if file_hash not in (None, dataset_hash) else ""
        raise SplitError(
            f"{source} does not match the dataset: {'; '.join(problems)}.{other} "
            "Regenerate the splits for this dataset with `tunisian-lung split ROOT` or make_splits(dataset)"
        )


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    counts = Counter(key for key, _ in pairs)
    repeated = sorted(key for key, count in counts.items() if count > 1)
    if repeated:
        raise SplitError(f"key(s) listed more than once: {_name_patients(repeated)}")
    return dict(pairs)


def _read_assignment(data: Mapping[str, Any], path: Path) -> dict[str, str]:
    """Return patient -> split from the ``assignment`` or the ``splits`` form of the file."""
    if "assignment" in data:
        raw = data["assignment"]
        if not isinstance(raw, Mapping):
            raise SplitError(f"{path}: 'assignment' must map patient id -> split name, got {type(raw).__name__}")
        assignment: dict[str, str] = {}
        for pid, split in raw.items():
            if not isinstance(split, str):
                raise SplitError(
                    f"{path}: patient {pid!r} is assigned {split!r}; each patient must have exactly one split name"
                )
            assignment[str(pid)] = split
        return assignment
    if "splits" in data:
        raw = data["splits"]
        if not isinstance(raw, Mapping):
            raise SplitError(f"{path}: 'splits' must map split name -> list of patient ids")
        owners: dict[str, list[str]] = {}
        for split, members in raw.items():
            if not isinstance(members, list):
                raise SplitError(f"{path}: split {split!r} must be a list of patient ids, got {members!r}")
            for pid in members:
                owners.setdefault(str(pid), []).append(str(split))
        leaked = {pid: splits for pid, splits in owners.items() if len(splits) > 1}
        if leaked:
            detail = "; ".join(f"{pid} in {', '.join(splits)}" for pid, splits in sorted(leaked.items())[:_MAX_NAMED_PATIENTS])
            raise SplitError(
                f"{path}: {len(leaked)} patient(s) are in more than one split ({detail}); "
                "a patient must be in exactly one split, so remove the extra entries or regenerate the file"
            )
        return {pid: splits[0] for pid, splits in owners.items()}
    raise SplitError(f"{path}: neither 'assignment' nor 'splits' found; this is not a splits.json file")


def load_splits(dataset: Any, path: str | os.PathLike[str] | None = None) -> Splits:
    """Read a ``splits.json`` file and check it against ``dataset``.

    Parameters
    ----------
    dataset:
        The dataset the file belongs to.
    path:
        The split file; defaults to ``<dataset.root>/splits.json``. Both the written form
        (``"assignment": {patient: split}``) and a hand-written ``"splits": {split: [patients]}``
        form are read.

    Raises
    ------
    SplitError
        If the file cannot be used. That is the case when it is missing, is not valid JSON or has
        an unsupported format version. It is also the case when it lists a patient twice or in
        two splits, names a patient the dataset lacks, misses a patient of the dataset, or
        records another dataset's patient list hash. The message names the patients and the
        fix.
    """
    if path is None:
        root = getattr(dataset, "root", None)
        if root is None:
            raise SplitError("the dataset has no root folder, so pass the splits.json path explicitly")
        path = Path(root) / SPLITS_NAME
    path = Path(path)
    if not path.is_file():
        raise SplitError(
            f"split file not found: {path}. Create one with `tunisian-lung split ROOT --out {path}` "
            "or make_splits(dataset).save(path)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_reject_duplicate_keys)
    except SplitError as error:
        raise SplitError(f"{path}: {error}; a patient must appear once, in exactly one split") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SplitError(f"{path} is not valid UTF-8 JSON: {error}") from error
    if not isinstance(data, dict):
        raise SplitError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
    version = str(data.get("format_version", SPLITS_FORMAT_VERSION))
    if version not in SUPPORTED_SPLITS_FORMAT_VERSIONS:
        raise SplitError(
            f"{path}: format_version {version!r} is not supported (supported: "
            f"{list(SUPPORTED_SPLITS_FORMAT_VERSIONS)}); upgrade tunisian_lung or regenerate the file"
        )
    assignment = _read_assignment(data, path)
    file_hash = data.get("patient_list_sha256")
    _check_against_dataset(assignment, dataset, source=str(path), file_hash=file_hash)

    names = tuple(str(name) for name in data.get("names") or ())
    used = list(dict.fromkeys(assignment[pid] for pid in sorted(assignment)))
    if names:
        undeclared = sorted(set(used) - set(names))
        if undeclared:
            raise SplitError(f"{path}: split(s) {undeclared} are used in the assignment but not listed in 'names' {list(names)}")
    else:
        names = tuple(name for name in DEFAULT_NAMES if name in used) + tuple(
            sorted(name for name in used if name not in DEFAULT_NAMES)
        )
    holdout = data.get("holdout")
    return Splits(
        assignment=dict(sorted(assignment.items())),
        names=names,
        strategy=str(data.get("strategy", "custom")),
        seed=data.get("seed"),
        ratios=tuple(float(ratio) for ratio in data.get("ratios") or ()),
        stratify=tuple(str(column) for column in data.get("stratify") or ()),
        holdout={str(column): tuple(values) for column, values in holdout.items()} if holdout else None,
        strata=dict(data.get("strata") or {}),
        dataset=dataset,
    )


# --- one split of a dataset -------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSplit:
    """The patients of one split with their series and nodules, and adapters for training.

    Attributes
    ----------
    name:
        Split name, for example ``"train"``.
    patient_ids:
        Sorted patient ids of the split.
    source:
        The full dataset the split was taken from.
    """

    name: str
    patient_ids: tuple[str, ...]
    source: Any = field(repr=False)

    @property
    def dataset(self) -> Any:
        """The split as a dataset of its own (``source.subset(patient_ids)``)."""
        return self.source.subset(list(self.patient_ids))

    @property
    def series(self) -> tuple[Any, ...]:
        """Series records of the split's patients, in the dataset's order."""
        members = set(self.patient_ids)
        return tuple(record for record in self.source.series if str(record.patient_id) in members)

    @property
    def nodules(self) -> tuple[Any, ...]:
        """Nodule records of the split's patients, in the dataset's order."""
        members = set(self.patient_ids)
        return tuple(record for record in self.source.nodules if str(record.patient_id) in members)

    def __len__(self) -> int:
        return len(self.patient_ids)

    def to_pandas(self) -> pd.DataFrame:
        """Return one row per series with patient, label columns and file paths.

        Columns: ``split``, ``patient_id``, ``series_id``, ``health_status``, ``histology``,
        ``stage``, ``cancer`` (1, 0, or missing when the status is unknown), ``stage_index``
        (0..3 for I..IV, else missing), ``nodules`` (annotated nodules of the series),
        ``malignant_nodule`` (1 if any nodule is malignant), ``dicom_dir``, ``nifti_path``.
        """
        from tunisian_lung.labels import series_label_table

        frame = series_label_table(self.source, self.series)
        frame.insert(0, "split", self.name)
        return frame

    def to_datalist(self, task: str = "scan", *, target: str = "cancer", exclude_unlabeled: bool = False) -> list[dict[str, Any]]:
        """Return a MONAI-style datalist: one dict per sample with ``image`` and ``label``.

        ``image`` is the NIfTI path of the series when it exists, else its DICOM folder (MONAI's
        ``LoadImage`` reads both). For ``task="scan"`` each dict also has ``patient_id`` and
        ``series_id``. For ``task="nodule"`` each dict is one annotated nodule with ``label``
        0 benign / 1 malignant, ``center_xyz_mm`` (LPS, mm) and ``diameter_mm``.

        Raises
        ------
        LabelError
            If a series has no label for ``target`` and ``exclude_unlabeled`` is false.
        """
        from tunisian_lung.labels import nodule_records, scan_records

        if task == "scan":
            samples = scan_records(self.source, self.series, target=target, exclude_unlabeled=exclude_unlabeled)
            return [
                {
                    "image": str(sample.image_path),
                    "label": sample.label,
                    "patient_id": sample.patient_id,
                    "series_id": sample.series_id,
                }
                for sample in samples
            ]
        if task == "nodule":
            return [
                {
                    "image": str(record.image_path),
                    "label": record.label,
                    "patient_id": record.patient_id,
                    "series_id": record.series_id,
                    "center_xyz_mm": list(record.center_xyz_mm),
                    "diameter_mm": record.diameter_mm,
                }
                for record in nodule_records(self.source, self.nodules, exclude_unlabeled=exclude_unlabeled)
            ]
        raise SplitError(f"unknown task {task!r}; use 'scan' or 'nodule'")

    def to_torch(
        self,
        task: str = "scan",
        *,
        config: "PreprocessConfig | None" = None,
        augment: Any = None,
        target: str = "cancer",
        cache: "PreprocessCache | None" = None,
        seed: int = 0,
        **options: Any,
    ) -> "ScanDataset | NoduleDataset":
        """Return a torch ``Dataset`` over this split.

        Parameters
        ----------
        task:
            ``"scan"`` for a :class:`~tunisian_lung.torch_data.ScanDataset` (one sample per
            series) or ``"nodule"`` for a :class:`~tunisian_lung.torch_data.NoduleDataset`
            (one patch per annotated nodule, plus optional negatives).
        config:
            Preprocessing config; ``None`` uses ``preset("reference")``.
        augment:
            ``None`` or ``False`` for no augmentation, ``True`` for the default
            :class:`~tunisian_lung.preprocess.Augmentation`, or an ``Augmentation``. Pass it
            for the training split only.
        target:
            Scan label: ``"cancer"`` (cancer 1 vs healthy 0), ``"malignant_nodule"`` or
            ``"stage"`` (I..IV -> 0..3). Ignored for nodules, whose label is benign 0 /
            malignant 1.
        cache:
            Preprocessing cache; ``None`` uses the default cache directory.
        seed:
            Seed of augmentation and negative-patch sampling.
        options:
            Further keywords of the dataset class (for example ``exclude_unlabeled=True`` or
            ``negatives_per_scan=2``).
        """
        from tunisian_lung.torch_data import NoduleDataset, ScanDataset

        if task == "scan":
            return ScanDataset(self, target=target, config=config, cache=cache, augment=augment, seed=seed, **options)
        if task == "nodule":
            return NoduleDataset(self, config=config, cache=cache, augment=augment, seed=seed, **options)
        raise SplitError(f"unknown task {task!r}; use 'scan' or 'nodule'")
