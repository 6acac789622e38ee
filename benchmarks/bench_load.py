"""Time loading one real CT series with this library and with four other readers.

Readers, each timed in the same process on the same folder after one warm-up run (so every
reader sees the files in the page cache):

* ``tunisian_lung``: :func:`tunisian_lung.io.dicom.load_series` with every check on (slice
  order from ImagePositionPatient, gap, duplicate, spacing and tilt checks, per-slice rescale).
* ``pydicom read-sort-stack``: ``dcmread`` every file, sort by ImagePositionPatient z, stack
  ``pixel_array * slope + intercept``; no checks.
* ``SimpleITK ImageSeriesReader``: ``GetGDCMSeriesFileNames`` then ``Execute``.
* ``MONAI LoadImage``: ``LoadImage(image_only=True)`` on the folder.
* ``TorchIO ScalarImage``: ``ScalarImage(folder).load()``.

It also times header-only indexing (:func:`tunisian_lung.io.dicom.index_dicom_folder`) in files
per second. ``--write-docs`` replaces the "Loading" section of ``docs/benchmarks.md``.

Usage::

    python benchmarks/bench_load.py [--series DIR] [--runs 7] [--workers N] [--write-docs]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SERIES = REPO_ROOT.parent / "shared" / "data" / "real" / "lidc-idri-0001"
DOCS_PATH = REPO_ROOT / "docs" / "benchmarks.md"
SECTION_TITLE = "## Loading"


def load_tunisian_lung(folder: Path, workers: int | None) -> np.ndarray:
    from tunisian_lung.io.dicom import load_series

    return load_series(folder, workers=workers).array


def load_pydicom_stack(folder: Path) -> np.ndarray:
    import pydicom

    datasets = [pydicom.dcmread(path) for path in sorted(folder.glob("*.dcm"))]
    datasets.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    return np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in datasets])


def load_simpleitk(folder: Path) -> np.ndarray:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    return sitk.GetArrayFromImage(reader.Execute())


def load_monai(folder: Path) -> np.ndarray:
    from monai.transforms import LoadImage

    return np.asarray(LoadImage(image_only=True)(str(folder)))


def load_torchio(folder: Path) -> np.ndarray:
    import torchio

    image = torchio.ScalarImage(folder)
    image.load()
    return image.numpy()


def time_runs(function: Callable[[], object], runs: int) -> list[float]:
    function()  # warm-up: imports, page cache
    durations = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        durations.append(time.perf_counter() - start)
    return durations


def machine_description() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        match = re.search(r"^Model name:\s*(.+)$", output, flags=re.MULTILINE)
        if match:
            model = match.group(1).strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return f"{model}, {os.cpu_count()} logical cores, Python {platform.python_version()}, {platform.system()}"


def load_average() -> str:
    try:
        return ", ".join(f"{value:.2f}" for value in os.getloadavg()) + " (1, 5, 15 min)"
    except OSError:
        return "unknown"


def versions() -> str:
    import monai
    import pydicom
    import SimpleITK
    import torchio

    return (
        f"pydicom {pydicom.__version__}, SimpleITK {SimpleITK.Version_VersionString()}, "
        f"MONAI {monai.__version__}, TorchIO {torchio.__version__}, numpy {np.__version__}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=Path, default=DEFAULT_SERIES, help="folder of one DICOM series")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per reader, after one warm-up run")
    parser.add_argument("--workers", type=int, default=None, help="reading threads of tunisian_lung (default: its own)")
    parser.add_argument("--write-docs", action="store_true", help="replace the Loading section of docs/benchmarks.md")
    args = parser.parse_args()
    if not args.series.is_dir():
        print(f"series folder not found: {args.series}", file=sys.stderr)
        return 2
    warnings.simplefilter("ignore")

    folder: Path = args.series
    file_count = sum(1 for path in folder.rglob("*") if path.is_file())
    slice_count = sum(1 for _ in folder.glob("*.dcm"))
    readers: list[tuple[str, Callable[[], object]]] = [
        ("tunisian_lung load_series (all checks)", lambda: load_tunisian_lung(folder, args.workers)),
        ("pydicom read-sort-stack (no checks)", lambda: load_pydicom_stack(folder)),
        ("SimpleITK ImageSeriesReader", lambda: load_simpleitk(folder)),
        ("MONAI LoadImage", lambda: load_monai(folder)),
        ("TorchIO ScalarImage", lambda: load_torchio(folder)),
    ]
    medians: dict[str, float] = {}
    for name, function in readers:
        durations = time_runs(function, args.runs)
        medians[name] = statistics.median(durations)
        print(f"{name:42s} median {medians[name]:.3f} s  (min {min(durations):.3f}, max {max(durations):.3f})", flush=True)

    from tunisian_lung.io.dicom import index_dicom_folder

    index_durations = time_runs(lambda: index_dicom_folder(folder, workers=args.workers), args.runs)
    index_median = statistics.median(index_durations)
    files_per_second = file_count / index_median
    print(f"{'index_dicom_folder (headers only)':42s} median {index_median:.3f} s, {files_per_second:.0f} files/s")
    with tempfile.TemporaryDirectory() as cache_dir:
        cached_durations = time_runs(lambda: index_dicom_folder(folder, index_cache=cache_dir), args.runs)
    cached_median = statistics.median(cached_durations)
    print(f"{'index_dicom_folder (cached index)':42s} median {cached_median * 1000:.1f} ms")

    reference = medians["SimpleITK ImageSeriesReader"]
    rows = [f"| {name} | {median:.3f} | {median / reference:.2f} |" for name, median in medians.items()]
    command = "python benchmarks/bench_load.py " + " ".join(sys.argv[1:])
    section = "\n".join(
        [
            SECTION_TITLE,
            "",
            f"Loading the real LIDC-IDRI-0001 chest CT series ({slice_count} DICOM slices of 512x512 int16, "
            f"{file_count} files in the folder) into a `(z, y, x)` array in Hounsfield units. Median of "
            f"{args.runs} runs after one warm-up run, all readers in one process, files in the page cache.",
            "",
            f"- Machine: {machine_description()}",
            f"- Libraries: {versions()}",
            f"- Command: `{command.strip()}`",
            f"- Load average when the run finished: {load_average()}",
            "",
            "| reader | median (s) | time / SimpleITK |",
            "|---|---|---|",
            *rows,
            "",
            f"Header-only indexing (`index_dicom_folder`): {index_median:.3f} s for {file_count} files, "
            f"{files_per_second:.0f} files/s. With `index_cache=` and an unchanged folder (one `stat` per "
            f"file, no DICOM file read): {cached_median * 1000:.1f} ms.",
            "",
            "On a shared machine the absolute times vary between runs. The ratio to SimpleITK within one "
            "run is the figure to compare.",
            "",
        ]
    )
    print()
    print(section)
    if args.write_docs:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _suite import replace_docs_section

        replace_docs_section(SECTION_TITLE, section)
        print(f"updated {DOCS_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
