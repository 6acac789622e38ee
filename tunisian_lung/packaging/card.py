"""The dataset card of a release: ``README.md`` with PNG figures under ``card/``.

The card is generated from the release tables and the DICOM headers only. It shows patients
healthy and with cancer, histology, stage, sex, age, smoking, scanners and models, slice
thickness and tube current, nodule counts and diameters, and the split table when
``splits.json`` exists. It ends with the licence, the citation and the de-identification
profile and options applied. The same release gives
byte-identical files (the PNGs carry no software version or date).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tunisian_lung import layout
from tunisian_lung.packaging.tables import write_text_atomic

logger = logging.getLogger(__name__)

CARD_NAME = "README.md"
FIGURES_DIR = "card"


def _counter_table(title: str, counts: Mapping[Any, int], total: int | None = None) -> list[str]:
    if not counts:
        return [f"{title}: not recorded.", ""]
    total = total if total is not None else sum(counts.values())
    lines = [f"| {title} | count | share |", "|---|---:|---:|"]
    for key, value in sorted(counts.items(), key=lambda item: (-item[1], str(item[0]))):
        share = f"{100 * value / total:.1f} %" if total else "-"
        lines.append(f"| {key} | {value} | {share} |")
    return [*lines, ""]


def _series_headers(root: Path) -> list[Any]:
    from tunisian_lung.io.dicom import index_dicom_folder

    infos: list[Any] = []
    dicom_root = root / layout.DICOM_DIR
    if not dicom_root.is_dir():
        return infos
    for patient_dir in sorted(p for p in dicom_root.iterdir() if p.is_dir()):
        for series_dir in sorted(p for p in patient_dir.iterdir() if p.is_dir()):
            infos.extend(index_dicom_folder(series_dir))
    return infos


def _histogram(path: Path, values: Iterable[float], *, title: str, xlabel: str, ylabel: str, bins: int = 20) -> bool:
    """Draw a histogram of ``values``; ``ylabel`` names what is counted (patients, series, nodules)."""
    data = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if data.size == 0:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(figsize=(5, 3.2), dpi=100)
    axes.hist(data, bins=min(bins, max(1, len(np.unique(data)))), color="#4c72b0", edgecolor="white")
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", metadata={"Software": None})
    plt.close(figure)
    return True


def _split_table(root: Path, clinical: Any) -> list[str]:
    path = root / layout.SPLITS_NAME
    if not path.exists():
        return ["No `splits.json` in this release; create one with `tunisian-lung split`.", ""]
    data = json.loads(path.read_text(encoding="utf-8"))
    assignment: dict[str, str] = {}
    if isinstance(data.get("assignment"), Mapping):
        assignment = {str(k): str(v) for k, v in data["assignment"].items()}
    elif isinstance(data.get("splits"), Mapping):
        assignment = {str(pid): str(name) for name, members in data["splits"].items() for pid in members}
    status: dict[str, str] = {}
    if clinical is not None and "health_status" in clinical.columns:
        status = {str(pid): str(value) for pid, value in zip(clinical["patient_id"], clinical["health_status"])}
    per_split: dict[str, Counter[str]] = {}
    for pid, split in assignment.items():
        per_split.setdefault(split, Counter())[status.get(pid, "unknown")] += 1
    labels = sorted({label for counter in per_split.values() for label in counter})
    lines = ["| split | patients | " + " | ".join(labels) + " |", "|---|---:|" + "---:|" * len(labels)]
    for split, counter in per_split.items():
        lines.append(f"| {split} | {sum(counter.values())} | " + " | ".join(str(counter[label]) for label in labels) + " |")
    seed = data.get("seed")
    lines.append("")
    if seed is not None:
        lines += [f"Split seed: {seed}; stratified by {', '.join(data.get('stratify') or []) or 'nothing'}.", ""]
    return lines


def write_card(
    root: str | Path,
    *,
    metadata: Mapping[str, Any] | None = None,
    counts: Mapping[str, int] | None = None,
    deidentification: Mapping[str, Any] | None = None,
    annotations: Any = None,
    clinical: Any = None,
) -> list[Path]:
    """Write ``README.md`` and the figures of ``card/`` into a release; return the paths.

    Parameters
    ----------
    root:
        The release folder.
    metadata:
        ``name``, ``version``, ``license`` and ``citation``. Defaults to ``dataset.json``.
    counts:
        Counts shown at the top. Defaults to ``dataset.json``.
    deidentification:
        The de-identification record (profile, method codes, options). Defaults to
        ``dataset.json``; ``None`` there means the release was not de-identified.
    annotations, clinical:
        The parsed tables. Read and validated from the release when omitted.
    """
    root = Path(root)
    if metadata is None or counts is None:
        from tunisian_lung.manifest import read_manifest

        manifest = read_manifest(root)
        metadata = metadata or {
            "name": manifest.name, "version": manifest.version, "license": manifest.license, "citation": manifest.citation,
        }
        counts = counts if counts is not None else dict(manifest.counts)
        if deidentification is None and manifest.deidentification is not None:
            deidentification = dict(manifest.deidentification)
    if annotations is None:
        from tunisian_lung.schema import validate_tables

        clinical_path = root / layout.CLINICAL_NAME
        report = validate_tables(root / layout.ANNOTATIONS_NAME, clinical_path if clinical_path.exists() else None)
        annotations, clinical = report.annotations, report.clinical

    figures_dir = root / FIGURES_DIR
    written: list[Path] = []
    lines = [f"# {metadata.get('name')} {metadata.get('version')}", ""]
    lines += ["Chest CT scans in DICOM with nodule annotations in world coordinates (LPS, mm).", ""]
    lines += ["## Contents", "", "| item | count |", "|---|---:|"]
    lines += [f"| {key.replace('_', ' ')} | {value} |" for key, value in counts.items()]
    lines.append("")

    lines += ["## Patients", ""]
    if clinical is not None:
        for column, title in (
            ("health_status", "health status"),
            ("histology", "histology"),
            ("stage", "stage"),
            ("sex", "sex"),
            ("smoking_status", "smoking"),
        ):
            if column in clinical.columns:
                values = Counter(str(v) for v in clinical[column] if v is not None and str(v) not in ("", "nan", "<NA>"))
                lines += _counter_table(title, values, total=len(clinical))
        if "age" in clinical.columns:
            ages = [float(v) for v in clinical["age"] if v is not None and str(v) not in ("", "nan", "<NA>")]
            if ages:
                lines += [f"Age: {min(ages):.0f} to {max(ages):.0f} years, mean {np.mean(ages):.1f}, median {np.median(ages):.1f}.", ""]
                if _histogram(figures_dir / "age.png", ages, title="Age at scan", xlabel="age (years)", ylabel="patients"):
                    written.append(figures_dir / "age.png")
                    lines += [f"![age distribution]({FIGURES_DIR}/age.png)", ""]
    else:
        lines += ["No clinical table in this release.", ""]

    headers = _series_headers(root)
    lines += ["## Scanners and acquisition", ""]
    scanners = Counter(f"{info.manufacturer or 'unknown'} {info.model or ''}".strip() for info in headers)
    lines += _counter_table("scanner (manufacturer, model)", scanners)
    thickness = [float(info.slice_thickness) for info in headers if info.slice_thickness is not None]
    current = [float(info.tube_current) for info in headers if info.tube_current is not None]
    for measurements, stem, title, unit in (
        (thickness, "slice_thickness", "Slice thickness", "mm"),
        (current, "tube_current", "X-ray tube current", "mA"),
    ):
        if measurements:
            xlabel = f"{title.lower()} ({unit})"
            low, high, median = min(measurements), max(measurements), float(np.median(measurements))
            lines.append(f"{title}: {low:g} to {high:g} {unit}, median {median:g} {unit}.")
            lines.append("")
            if _histogram(figures_dir / f"{stem}.png", measurements, title=title, xlabel=xlabel, ylabel="series"):
                written.append(figures_dir / f"{stem}.png")
                lines += [f"![{title.lower()}]({FIGURES_DIR}/{stem}.png)", ""]

    lines += ["## Nodules", ""]
    if annotations is not None and "nodule_present" in annotations.columns:
        present = annotations[annotations["nodule_present"] == 1]
        per_patient = Counter(str(pid) for pid in present["patient_id"])
        all_patients = {str(pid) for pid in annotations["patient_id"]}
        distribution = Counter(per_patient.get(pid, 0) for pid in all_patients)
        lines += ["| nodules per patient | patients |", "|---:|---:|"]
        lines += [f"| {nodule_count} | {patients} |" for nodule_count, patients in sorted(distribution.items())]
        lines.append("")
        diameters = [float(v) for v in present["diameter_mm"]] if "diameter_mm" in present.columns else []
        if diameters:
            lines += [f"Diameter: {min(diameters):.1f} to {max(diameters):.1f} mm, median {np.median(diameters):.1f} mm.", ""]
            if _histogram(figures_dir / "nodule_diameter.png", diameters, title="Nodule diameter", xlabel="diameter (mm)", ylabel="nodules"):
                written.append(figures_dir / "nodule_diameter.png")
                lines += [f"![nodule diameters]({FIGURES_DIR}/nodule_diameter.png)", ""]

    lines += ["## Splits", ""]
    lines += _split_table(root, clinical)

    lines += ["## De-identification", ""]
    if deidentification:
        lines.append(f"Profile: {deidentification.get('profile')}, method `{deidentification.get('method')}`.")
        lines.append("")
        codes = deidentification.get("codes") or []
        lines += ["| code | meaning |", "|---|---|"]
        lines += [f"| {code['scheme']} {code['value']} | {code['meaning']} |" for code in codes]
        lines.append("")
        options = deidentification.get("options") or {}
        if options.get("clean_pixel_data"):
            lines += [
                "Images flagged with burned-in annotations and secondary captures were excluded; "
                "pixel data were not inspected for text.",
                "",
            ]
    else:
        lines += ["This release was not de-identified by the builder; the DICOM headers are those of the source.", ""]

    lines += ["## Licence and citation", "", f"Licence: {metadata.get('license')}.", ""]
    citation = metadata.get("citation")
    lines += [f"Cite as: {citation}" if citation else "No citation given.", ""]
    lines += ["Checksums of every file are in `dataset.json`; check them with `tunisian-lung verify`.", ""]

    card = root / CARD_NAME
    write_text_atomic(card, "\n".join(lines))
    written.insert(0, card)
    logger.info("wrote the dataset card %s with %d figure(s)", card, len(written) - 1)
    return written
