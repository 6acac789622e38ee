"""The typed dataset object: a release folder opened as patients, series and nodules.

Opening a release reads ``dataset.json`` (optional), ``annotations.csv`` (required) and
``clinical.csv`` (optional) and checks one ``is_dir``/``is_file`` per series for its image
folder. It reads no pixel data. Volumes and DICOM headers are read on request through
:meth:`TunisianLungDataset.load_volume` and :meth:`TunisianLungDataset.series_header`.

Without ``clinical.csv`` the health status is derived from the annotations. A patient with a
stage or a malignant nodule (``class = 1``) is ``"cancer"``. Every other patient has
``health_status = None`` (unknown), because a scan without malignant nodules does not show that
the patient is healthy.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

import numpy as np
import pandas as pd

from tunisian_lung import layout
from tunisian_lung.errors import DatasetLayoutError, MultipleSeriesError
from tunisian_lung.manifest import Manifest, read_manifest
from tunisian_lung.schema import LINE_COLUMN, STAGES, ValidationReport, validate_tables

if TYPE_CHECKING:  # pragma: no cover
    from tunisian_lung.io.volume import Volume
    from tunisian_lung.splits import DatasetSplit

logger = logging.getLogger(__name__)

#: Bin edges in mm of the nodule diameter distribution that :meth:`describe` reports. 6 and 8 mm
#: are the solid-nodule size thresholds of the Fleischner Society 2017 guideline (MacMahon et
#: al., Radiology 2017, doi:10.1148/radiol.2017161659), and 4 mm was the smallest threshold of
#: its 2005 version. A lesion over 30 mm is usually called a mass, and 15 mm splits 8-30 mm.
DIAMETER_BIN_EDGES_MM: tuple[float, ...] = (0.0, 4.0, 6.0, 8.0, 15.0, 30.0, 100.0)


@dataclass(frozen=True)
class Nodule:
    """One annotated nodule.

    Attributes
    ----------
    patient_id, series_id:
        The scan the nodule is annotated on.
    coord_xyz_mm:
        Nodule centre ``(x, y, z)``. In a release whose ``coordinate_space`` is
        ``world_lps_mm`` (the default) these are DICOM patient coordinates (LPS) in mm. When
        it is ``voxel``, they are continuous (column, row, slice) indices despite the name.
    diameter_mm:
        Nodule diameter in mm.
    label:
        1 malignant, 0 benign, ``None`` when the table has no label (``allow_unlabelled``).
    csv_line:
        Line of the nodule's row in ``annotations.csv``.
    """

    patient_id: str
    series_id: str
    coord_xyz_mm: tuple[float, float, float]
    diameter_mm: float
    label: int | None
    csv_line: int


@dataclass(frozen=True)
class Series:
    """One CT series of a patient.

    Attributes
    ----------
    dicom_dir:
        ``dicom/<patient_id>/<series_id>/`` when that folder exists, else ``None``.
    nifti_path:
        ``nifti/<patient_id>/<series_id>.nii.gz`` when that file exists, else ``None``.
    nodule_count:
        Number of rows of the series with ``nodule_present = 1``.
    """

    patient_id: str
    series_id: str
    dicom_dir: Path | None
    nifti_path: Path | None
    nodule_count: int = 0


@dataclass(frozen=True)
class Patient:
    """One patient with the clinical values the library uses directly.

    Attributes
    ----------
    health_status:
        ``"healthy"``, ``"cancer"`` or ``None`` (unknown; see the module docstring).
    histology, stage, sex:
        Normalised values (stage ``I``..``IV``, sex ``M``/``F``) or ``None``.
    age:
        Age in years, or ``None``.
    series_ids:
        The patient's series in the order of ``annotations.csv``.
    clinical:
        Every column of the patient's ``clinical.csv`` row (missing values as ``None``); empty
        without a clinical table.
    """

    patient_id: str
    health_status: str | None
    histology: str | None
    stage: str | None
    sex: str | None
    age: float | None
    series_ids: tuple[str, ...]
    clinical: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)


def _optional(value: Any) -> Any:
    """Return ``None`` for pandas/numpy missing values and plain Python scalars otherwise."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


class TunisianLungDataset:
    """A release folder opened as typed records and validated tables.

    Build one with :func:`open_dataset` or :meth:`open`. The object is read-only: the tables
    are the parsed ``annotations.csv`` and ``clinical.csv`` (see
    :func:`tunisian_lung.schema.validate_tables` for their columns and dtypes).

    ``len(ds)`` is the number of patients, iteration yields :class:`Patient` records in
    patient-id order, and ``ds["P001"]`` looks one up.
    """

    def __init__(
        self,
        root: str | Path,
        manifest: Manifest,
        annotations: pd.DataFrame,
        clinical: pd.DataFrame | None,
        report: ValidationReport | None = None,
    ) -> None:
        self.root: Path = Path(root)
        self.manifest: Manifest = manifest
        self.annotations: pd.DataFrame = annotations
        self.clinical: pd.DataFrame | None = clinical
        self.validation_report: ValidationReport | None = report
        self.nodules: tuple[Nodule, ...] = self._build_nodules()
        self.series: tuple[Series, ...] = self._build_series()
        self.patients: Mapping[str, Patient] = MappingProxyType(self._build_patients())
        self._series_by_id = {series.series_id: series for series in self.series}
        self._nodules_by_series: dict[str, list[Nodule]] = {}
        for nodule in self.nodules:
            self._nodules_by_series.setdefault(nodule.series_id, []).append(nodule)

    @classmethod
    def open(cls, root: str | Path, *, validate: bool = True, **table_options: bool) -> TunisianLungDataset:
        """Open a release folder; the same as :func:`open_dataset`."""
        return open_dataset(root, validate=validate, **table_options)

    # --- building the records ----------------------------------------------------------------

    def _build_nodules(self) -> tuple[Nodule, ...]:
        table = self.annotations
        needed = ["patient_id", "series_id", "coordX", "coordY", "coordZ", "diameter_mm", "nodule_present"]
        if any(name not in table.columns for name in needed):
            return ()
        rows = table[(table["nodule_present"] == 1).fillna(False)]
        labels = rows["class"] if "class" in rows.columns else pd.Series(pd.NA, index=rows.index)
        return tuple(
            Nodule(
                patient_id=str(patient),
                series_id=str(series),
                coord_xyz_mm=(float(x), float(y), float(z)),
                diameter_mm=float(diameter),
                label=None if label is pd.NA else int(label),
                csv_line=int(line),
            )
            for patient, series, x, y, z, diameter, label, line in zip(
                rows["patient_id"],
                rows["series_id"],
                rows["coordX"],
                rows["coordY"],
                rows["coordZ"],
                rows["diameter_mm"],
                labels.astype(object).where(labels.notna(), pd.NA),
                rows[LINE_COLUMN],
            )
        )

    def _build_series(self) -> tuple[Series, ...]:
        table = self.annotations.dropna(subset=["patient_id", "series_id"])
        pairs = table[["patient_id", "series_id"]].drop_duplicates("series_id")
        if "nodule_present" in table.columns:
            present = (table["nodule_present"] == 1).fillna(False)
            counts = present.groupby(table["series_id"]).sum()
        else:
            counts = pd.Series(dtype="int64")
        records = []
        for patient, series in zip(pairs["patient_id"], pairs["series_id"]):
            dicom_dir = layout.series_dicom_dir(self.root, patient, series)
            nifti_path = layout.series_nifti_path(self.root, patient, series)
            records.append(
                Series(
                    patient_id=str(patient),
                    series_id=str(series),
                    dicom_dir=dicom_dir if dicom_dir.is_dir() else None,
                    nifti_path=nifti_path if nifti_path.is_file() else None,
                    nodule_count=int(counts.get(series, 0)),
                )
            )
        return tuple(records)

    def _build_patients(self) -> dict[str, Patient]:
        annotations = self.annotations.dropna(subset=["patient_id"])
        series_ids: dict[str, list[str]] = {}
        for series in self.series:
            series_ids.setdefault(series.patient_id, []).append(series.series_id)

        annotation_stage: dict[str, str] = {}
        if "stage" in annotations.columns:
            staged = annotations.dropna(subset=["stage"])
            annotation_stage = staged.groupby("patient_id", sort=False)["stage"].first().astype(str).to_dict()
        malignant: set[str] = set()
        if "class" in annotations.columns:
            malignant = set(annotations.loc[(annotations["class"] == 1).fillna(False), "patient_id"])

        clinical_rows: dict[str, dict[str, Any]] = {}
        if self.clinical is not None and "patient_id" in self.clinical.columns:
            table = self.clinical.dropna(subset=["patient_id"]).drop_duplicates("patient_id")
            table = table.drop(columns=[LINE_COLUMN], errors="ignore")
            for record in table.astype(object).to_dict("records"):
                clean = {key: _optional(value) for key, value in record.items()}
                clinical_rows[str(clean["patient_id"])] = clean

        patient_ids = sorted(set(series_ids) | set(clinical_rows))
        patients: dict[str, Patient] = {}
        for patient_id in patient_ids:
            row = clinical_rows.get(patient_id, {})
            stage = row.get("stage") or annotation_stage.get(patient_id)
            status = row.get("health_status")
            if status is None and (stage is not None or patient_id in malignant):
                status = "cancer"
            age = row.get("age")
            patients[patient_id] = Patient(
                patient_id=patient_id,
                health_status=status,
                histology=row.get("histology"),
                stage=None if stage is None else str(stage),
                sex=row.get("sex"),
                age=None if age is None else float(age),
                series_ids=tuple(series_ids.get(patient_id, ())),
                clinical=MappingProxyType(row),
            )
        return patients

    # --- container protocol ------------------------------------------------------------------

    @property
    def coordinate_space(self) -> str:
        """Frame of the nodule coordinates: ``"world_lps_mm"`` or ``"voxel"``."""
        return self.manifest.coordinate_space

    def __len__(self) -> int:
        return len(self.patients)

    def __iter__(self) -> Iterator[Patient]:
        return iter(self.patients.values())

    def __contains__(self, patient_id: object) -> bool:
        return patient_id in self.patients

    def __getitem__(self, patient_id: str) -> Patient:
        try:
            return self.patients[patient_id]
        except KeyError:
            raise KeyError(f"patient {patient_id!r} is not in the dataset at {self.root}") from None

    def __repr__(self) -> str:
        return (
            f"TunisianLungDataset(root={str(self.root)!r}, patients={len(self.patients)}, "
            f"series={len(self.series)}, nodules={len(self.nodules)})"
        )

    def series_by_id(self, series_id: str) -> Series:
        """Return the series record with this id; raise ``KeyError`` when it is unknown."""
        try:
            return self._series_by_id[series_id]
        except KeyError:
            raise KeyError(f"series {series_id!r} is not in annotations.csv of {self.root}") from None

    def nodules_of(self, series_id: str) -> tuple[Nodule, ...]:
        """Return the nodules of one series in table order (empty for a series without nodules)."""
        self.series_by_id(series_id)
        return tuple(self._nodules_by_series.get(series_id, ()))

    def subset(self, patient_ids: Iterable[str]) -> TunisianLungDataset:
        """Return a dataset restricted to ``patient_ids`` (same root and manifest).

        Raises
        ------
        KeyError
            Naming every id that is not a patient of this dataset.
        """
        requested = list(dict.fromkeys(str(patient_id) for patient_id in patient_ids))
        unknown = [patient_id for patient_id in requested if patient_id not in self.patients]
        if unknown:
            raise KeyError(f"patients not in the dataset at {self.root}: {', '.join(unknown[:10])}")
        keep = set(requested)
        annotations = self.annotations[self.annotations["patient_id"].isin(keep).fillna(False)]
        clinical = None
        if self.clinical is not None:
            clinical = self.clinical[self.clinical["patient_id"].isin(keep).fillna(False)]
        return TunisianLungDataset(
            self.root,
            self.manifest,
            annotations.reset_index(drop=True),
            None if clinical is None else clinical.reset_index(drop=True),
            self.validation_report,
        )

    # --- images and splits -------------------------------------------------------------------

    def load_volume(self, series_id: str, *, lazy: bool = False) -> Volume:
        """Load one series as a :class:`~tunisian_lung.io.volume.Volume` in Hounsfield units.

        The DICOM folder ``dicom/<patient_id>/<series_id>/`` is used when it exists, else
        ``nifti/<patient_id>/<series_id>.nii.gz``.

        Parameters
        ----------
        lazy:
            Read the headers now and the pixels on first access of ``volume.array``.

        Raises
        ------
        KeyError
            When the series is not in the annotation table.
        DatasetLayoutError
            When the series has neither a DICOM folder nor a NIfTI file.
        """
        from tunisian_lung.io import load_volume

        path = self._image_path(series_id)
        if lazy:
            return load_volume(path, lazy=True)
        return load_volume(path)

    def _image_path(self, series_id: str) -> Path:
        series = self.series_by_id(series_id)
        if series.dicom_dir is not None:
            return series.dicom_dir
        if series.nifti_path is not None:
            return series.nifti_path
        raise DatasetLayoutError(
            f"series {series_id} of patient {series.patient_id} has no image: neither "
            f"{layout.series_dicom_dir(self.root, series.patient_id, series_id)} nor "
            f"{layout.series_nifti_path(self.root, series.patient_id, series_id)} exists; "
            "copy the DICOM files there or remove the series from annotations.csv"
        )

    def series_header(self, series_id: str, *, index_cache: bool | str | os.PathLike[str] = True) -> Any:
        """Index the series' DICOM folder and return its ``SeriesInfo`` (no pixel data read).

        When the folder contains several series, the one whose SeriesInstanceUID equals
        ``series_id`` is returned. ``index_cache`` is passed to
        :func:`~tunisian_lung.io.dicom.index_dicom_folder`: by default the header index is
        stored in the user cache directory, so a later call on an unchanged folder reads no
        DICOM file. ``False`` reads every header and stores nothing.

        Raises
        ------
        DatasetLayoutError
            When the series has no DICOM folder.
        MultipleSeriesError
            When the folder contains several series and none has the id ``series_id``.
        """
        from tunisian_lung.io.dicom import index_dicom_folder

        series = self.series_by_id(series_id)
        if series.dicom_dir is None:
            raise DatasetLayoutError(
                f"series {series_id} has no DICOM folder at "
                f"{layout.series_dicom_dir(self.root, series.patient_id, series_id)}"
            )
        infos = list(index_dicom_folder(series.dicom_dir, index_cache=index_cache))
        if len(infos) == 1:
            return infos[0]
        uids = [str(getattr(info, "series_uid", getattr(info, "series_instance_uid", ""))) for info in infos]
        for info, uid in zip(infos, uids):
            if uid == series_id:
                return info
        raise MultipleSeriesError(
            f"{series.dicom_dir} contains {len(infos)} series and none has SeriesInstanceUID "
            f"{series_id}; move the other series out, so that the folder contains one series",
            uids,
        )

    def split(self, name: str, *, path: str | Path | None = None) -> DatasetSplit:
        """Return one split (``"train"``, ``"val"``, ...) of ``splits.json`` or of ``path``."""
        from tunisian_lung.splits import load_splits

        return load_splits(self, path).split(name)

    # --- summary -----------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Summarise the cohort with the counts a dataset description reports.

        Returns
        -------
        dict
            ``patients``, ``series``, ``nodules`` (ints); ``health_status``, ``histology``,
            ``stage``, ``sex`` (value -> patients, with ``"unknown"`` for missing values);
            ``age_years`` (``min``, ``max``, ``mean``, ``known``); ``nodule_labels`` (malignant,
            benign, unlabelled); ``nodules_per_patient`` (``mean``, ``max`` and
            ``counts``: number of nodules -> patients); ``diameter_mm`` (``min``, ``median``,
            ``mean``, ``max`` and ``bins``: "lo-hi" -> nodules, edges in
            :data:`DIAMETER_BIN_EDGES_MM`, lower edge excluded, upper included).
        """
        patients = list(self.patients.values())

        def tally(values: Iterable[Any], order: Iterable[str] = ()) -> dict[str, int]:
            counts: dict[str, int] = {}
            for value in values:
                key = "unknown" if value is None else str(value)
                counts[key] = counts.get(key, 0) + 1
            ordered = {key: counts.pop(key) for key in order if key in counts}
            unknown = counts.pop("unknown", None)
            ordered.update(sorted(counts.items()))
            if unknown is not None:
                ordered["unknown"] = unknown
            return ordered

        ages = np.array([patient.age for patient in patients if patient.age is not None], dtype=np.float64)
        per_patient = [sum(self._series_by_id[sid].nodule_count for sid in patient.series_ids) for patient in patients]
        diameters = np.array([nodule.diameter_mm for nodule in self.nodules], dtype=np.float64)
        labels = [nodule.label for nodule in self.nodules]
        bins: dict[str, int] = {}
        # Bins are (lower, upper], matching the (0, 100] mm rule of the diameter column.
        for lower, upper in zip(DIAMETER_BIN_EDGES_MM[:-1], DIAMETER_BIN_EDGES_MM[1:]):
            bins[f"{lower:g}-{upper:g}"] = int(np.count_nonzero((diameters > lower) & (diameters <= upper)))

        return {
            "patients": len(patients),
            "series": len(self.series),
            "nodules": len(self.nodules),
            "health_status": tally((patient.health_status for patient in patients), ("cancer", "healthy")),
            "histology": tally(patient.histology for patient in patients if patient.health_status != "healthy"),
            "stage": tally((patient.stage for patient in patients if patient.health_status != "healthy"), STAGES),
            "sex": tally((patient.sex for patient in patients), ("M", "F")),
            "age_years": {
                "known": int(ages.size),
                "min": float(ages.min()) if ages.size else None,
                "max": float(ages.max()) if ages.size else None,
                "mean": float(ages.mean()) if ages.size else None,
            },
            "nodule_labels": {
                "malignant": labels.count(1),
                "benign": labels.count(0),
                "unlabelled": labels.count(None),
            },
            "nodules_per_patient": {
                "mean": float(np.mean(per_patient)) if per_patient else None,
                "max": int(max(per_patient)) if per_patient else None,
                "counts": {str(key): value for key, value in sorted(_count(per_patient).items())},
            },
            "diameter_mm": {
                "min": float(diameters.min()) if diameters.size else None,
                "median": float(np.median(diameters)) if diameters.size else None,
                "mean": float(diameters.mean()) if diameters.size else None,
                "max": float(diameters.max()) if diameters.size else None,
                "bins": bins,
            },
        }


def _count(values: Iterable[int]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def open_dataset(
    root: str | Path,
    *,
    validate: bool = True,
    collapse_substages: bool = False,
    allow_unlabelled: bool = False,
    allow_extra_columns: bool = False,
) -> TunisianLungDataset:
    """Open a release folder as a :class:`TunisianLungDataset`.

    Reads ``dataset.json`` (optional), ``annotations.csv`` and ``clinical.csv`` (optional);
    never pixel data.

    Parameters
    ----------
    root:
        Release folder (see ``docs/dataset-layout.md``).
    validate:
        Raise :class:`~tunisian_lung.errors.ValidationError` when a table breaks a rule. With
        ``False`` the dataset opens anyway, a warning logs the number of issues, cells that
        failed to parse are missing values, and ``ds.validation_report`` lists the issues.
    collapse_substages, allow_unlabelled, allow_extra_columns:
        Passed to :func:`tunisian_lung.schema.validate_tables`.

    Raises
    ------
    DatasetLayoutError
        When ``root`` is not a folder, ``annotations.csv`` is missing or unreadable, or
        ``dataset.json`` is invalid.
    ValidationError
        When ``validate`` is true and a table is invalid; it lists every issue.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"dataset folder not found: {root}")
    manifest = read_manifest(root)
    annotations_path = root / layout.ANNOTATIONS_NAME
    if not annotations_path.is_file():
        raise DatasetLayoutError(
            f"{annotations_path} not found; a release needs an annotation table with one row per "
            "nodule (see docs/dataset-layout.md)"
        )
    clinical_path = root / layout.CLINICAL_NAME
    report = validate_tables(
        annotations_path,
        clinical_path if clinical_path.is_file() else None,
        collapse_substages=collapse_substages,
        allow_unlabelled=allow_unlabelled,
        allow_extra_columns=allow_extra_columns,
    )
    if report.annotations is None:
        report.raise_if_invalid()
        raise DatasetLayoutError(f"{annotations_path} could not be read")  # pragma: no cover
    if validate:
        report.raise_if_invalid()
    elif not report.ok:
        logger.warning(
            "opened %s without validation: %d table error(s); see ds.validation_report",
            root,
            len(report.errors),
        )
    annotations = report.annotations
    for name in ("patient_id", "series_id"):
        if name not in annotations.columns:
            raise DatasetLayoutError(f"{annotations_path} has no {name!r} column; the dataset cannot be opened")
    dataset = TunisianLungDataset(root, manifest, annotations, report.clinical, report)
    logger.info("opened %r", dataset)
    return dataset
