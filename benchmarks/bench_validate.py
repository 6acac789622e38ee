"""Time the validation of the real LUNA16 annotation table (1,117 nodules, 568 series).

The LUNA16 file is mapped into the annotation schema the way ``tests/test_schema.py`` maps it
(each series stands for one patient, ``class`` and ``stage`` empty) and validated with
``allow_unlabelled=True``. The script prints the median of several runs.

Usage::

    python benchmarks/bench_validate.py [--runs 7] [--csv PATH] [--open]

``--open`` also times :func:`tunisian_lung.open_dataset` on a folder holding the mapped table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CSV = REPO_ROOT.parent / "shared" / "data" / "real" / "luna16-annotations" / "annotations_luna16_partial.csv"


def map_luna16(source_csv: Path, out_dir: Path) -> Path:
    """Write the LUNA16 table as ``<out_dir>/annotations.csv`` in this library's schema."""
    source = pd.read_csv(source_csv, dtype=str, keep_default_na=False)
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
    path = out_dir / "annotations.csv"
    mapped.to_csv(path, index=False)
    return path


def time_runs(function: Callable[[], object], runs: int) -> list[float]:
    durations = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        durations.append(time.perf_counter() - start)
    return durations


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="LUNA16 annotations.csv (seriesuid, coordX..Z, diameter_mm)")
    parser.add_argument("--runs", type=int, default=7, help="number of timed runs (default 7)")
    parser.add_argument("--open", action="store_true", help="also time open_dataset on the mapped table")
    args = parser.parse_args()
    if not args.csv.is_file():
        print(f"LUNA16 table not found: {args.csv}; pass --csv PATH", file=sys.stderr)
        return 2

    from tunisian_lung import open_dataset
    from tunisian_lung.schema import validate_tables

    with tempfile.TemporaryDirectory() as folder:
        table = map_luna16(args.csv, Path(folder))
        report = validate_tables(table, allow_unlabelled=True)  # warm-up run, imports pandera
        if not report.ok:
            print(report.format(), file=sys.stderr)
            return 1
        rows = len(report.annotations) if report.annotations is not None else 0
        durations = time_runs(lambda: validate_tables(table, allow_unlabelled=True), args.runs)
        print(f"validate_tables: {rows} rows, median {statistics.median(durations) * 1000:.1f} ms over {args.runs} runs")
        if args.open:
            durations = time_runs(lambda: open_dataset(folder, allow_unlabelled=True), args.runs)
            print(f"open_dataset:    {rows} rows, median {statistics.median(durations) * 1000:.1f} ms over {args.runs} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
