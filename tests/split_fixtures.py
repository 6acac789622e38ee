"""In-memory stand-ins for a dataset, for split and torch adapter tests.

They have the attributes that :mod:`tunisian_lung.splits` and :mod:`tunisian_lung.torch_data`
read (``patients``, ``series``, ``nodules``, ``clinical``, ``root``, ``subset``), so the
property-based tests can build hundreds of datasets without writing CSV files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

HISTOLOGIES = ("adenocarcinoma", "squamous cell carcinoma", "small cell lung cancer", "other")
STAGES = ("I", "II", "III", "IV")


@dataclass(frozen=True)
class FakePatient:
    patient_id: str
    health_status: str | None
    histology: str | None
    stage: str | None
    sex: str | None = None
    age: float | None = None
    series_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class FakeSeries:
    patient_id: str
    series_id: str
    dicom_dir: Path | None
    nifti_path: Path | None


@dataclass(frozen=True)
class FakeNodule:
    patient_id: str
    series_id: str
    coord_xyz_mm: tuple[float, float, float]
    diameter_mm: float
    label: int


@dataclass
class FakeDataset:
    root: Path | None
    patients: dict[str, FakePatient]
    series: tuple[FakeSeries, ...]
    nodules: tuple[FakeNodule, ...]
    clinical: pd.DataFrame | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def subset(self, patient_ids: Iterable[str]) -> "FakeDataset":
        keep = set(patient_ids)
        clinical = None
        if self.clinical is not None:
            clinical = self.clinical[self.clinical["patient_id"].isin(keep)].reset_index(drop=True)
        return FakeDataset(
            root=self.root,
            patients={pid: p for pid, p in self.patients.items() if pid in keep},
            series=tuple(s for s in self.series if s.patient_id in keep),
            nodules=tuple(n for n in self.nodules if n.patient_id in keep),
            clinical=clinical,
        )


def make_fake_dataset(
    statuses: Sequence[tuple[str | None, str | None, str | None]],
    *,
    root: Path | None = None,
    series_per_patient: int = 1,
    sites: Sequence[str] | None = None,
    prefix: str = "P",
) -> FakeDataset:
    """Build a dataset with one patient per ``(health_status, histology, stage)`` tuple.

    Cancer patients get one malignant nodule per series, healthy patients one benign nodule.
    ``sites`` adds a ``site`` column to the clinical table (one value per patient).
    """
    patients: dict[str, FakePatient] = {}
    series: list[FakeSeries] = []
    nodules: list[FakeNodule] = []
    for number, (status, histology, stage) in enumerate(statuses):
        pid = f"{prefix}{number:04d}"
        sids = tuple(f"{pid}-S{k}" for k in range(series_per_patient))
        patients[pid] = FakePatient(pid, status, histology, stage, series_ids=sids)
        for sid in sids:
            base = Path(root) if root is not None else Path("/nonexistent")
            series.append(FakeSeries(pid, sid, base / "dicom" / pid / sid, None))
            label = 1 if status == "cancer" else 0
            nodules.append(FakeNodule(pid, sid, (10.0, -20.0, 30.0 + number), 8.0, label))
    clinical = pd.DataFrame(
        {
            "patient_id": list(patients),
            "health_status": [p.health_status for p in patients.values()],
            "histology": [p.histology for p in patients.values()],
            "stage": [p.stage for p in patients.values()],
        }
    )
    if sites is not None:
        clinical["site"] = list(sites)
    return FakeDataset(root=root, patients=patients, series=tuple(series), nodules=tuple(nodules), clinical=clinical)


def reference_like_statuses() -> list[tuple[str | None, str | None, str | None]]:
    """Return 123 patients with a class mix like the reference cohort (an estimate, not its table)."""
    statuses: list[tuple[str | None, str | None, str | None]] = [("healthy", None, None)] * 35
    mix = [("adenocarcinoma", 44), ("squamous cell carcinoma", 28), ("small cell lung cancer", 11), ("other", 5)]
    number = 0
    for histology, count in mix:
        for _ in range(count):
            statuses.append(("cancer", histology, STAGES[number % 4]))
            number += 1
    return statuses
