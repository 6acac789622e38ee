"""Preprocessing benchmark on the real LIDC-IDRI-0001 series (133 slices of 512x512).

Measured in one run:

1. Load time of the series with ``tunisian_lung.io.dicom.load_series``.
2. The reference recipe (clip to -1000..400 HU, scale to [-1, 1], trilinear resize to 64^3)
   on the loaded HU array with this library, with MONAI (``ScaleIntensityRange`` + ``Resize``)
   and with TorchIO (``Clamp`` + ``RescaleIntensity`` + ``Resize``). For MONAI and TorchIO the
   maximum absolute difference from this library's output is reported too.
3. Full preprocess (load + recipe) with this library against the load time alone.
4. Median and 95th percentile time of a cache hit for one 64^3 float32 entry:
   ``PreprocessCache.get(key)``, ``get_or_create`` (key hashing included) and
   ``load_preprocessed`` (file stats of the 133 source files included).
5. Throughput of ``preprocess_dataset`` with 1 and 2 worker processes over N copies of the
   series (each copy has its own series id, so each one is a cache miss).

Usage::

    python benchmarks/bench_preprocess.py [--repeats 5] [--series 8] [--data ../shared/data/real/lidc-idri-0001]

Needs the ``bench`` extra (monai, torchio). Writes only under a temporary directory. Prints a
JSON summary and a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "lidc-idri-0001"


def _times(function: Callable[[], Any], repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return seconds


def _median_ms(seconds: list[float]) -> float:
    return statistics.median(seconds) * 1000.0


def _p95_ms(seconds: list[float]) -> float:
    return float(np.percentile(seconds, 95)) * 1000.0


def monai_recipe(hu_zyx: np.ndarray) -> np.ndarray:
    from monai.transforms import Compose, Resize, ScaleIntensityRange

    chain = Compose(
        [
            ScaleIntensityRange(a_min=-1000.0, a_max=400.0, b_min=-1.0, b_max=1.0, clip=True),
            Resize((64, 64, 64), mode="trilinear", align_corners=False),
        ]
    )
    output = chain(hu_zyx[np.newaxis].astype(np.float32))
    return np.asarray(output)[0]


def torchio_recipe(hu_zyx: np.ndarray, spacing_xyz: tuple[float, float, float]) -> np.ndarray:
    import torch
    import torchio as tio

    # TorchIO tensors are (C, W, H, D), i.e. x, y, z.
    tensor = torch.from_numpy(np.ascontiguousarray(hu_zyx.transpose(2, 1, 0)[np.newaxis].astype(np.float32)))
    affine = np.diag([*spacing_xyz, 1.0])
    image = tio.ScalarImage(tensor=tensor, affine=affine)
    chain = tio.Compose(
        [
            tio.Clamp(out_min=-1000, out_max=400),
            tio.RescaleIntensity(out_min_max=(-1, 1), in_min_max=(-1000, 400)),
            tio.Resize((64, 64, 64), image_interpolation="linear"),
        ]
    )
    output = chain(image)
    return output.data.numpy()[0].transpose(2, 1, 0)


def bench_recipes(data: Path, repeats: int) -> dict[str, Any]:
    from tunisian_lung.io.dicom import load_series
    from tunisian_lung.preprocess import preprocess_volume, preset

    config = preset("reference")
    load_series(data).array  # warm the page cache so both timings read from memory
    # Interleaved, so a change in machine load hits both timings alike.
    load_seconds: list[float] = []
    full_seconds: list[float] = []
    for _ in range(repeats):
        load_seconds.extend(_times(lambda: load_series(data).array, 1))
        full_seconds.extend(_times(lambda: preprocess_volume(load_series(data), config), 1))
    volume = load_series(data)
    hu = np.asarray(volume.array)
    ours = preprocess_volume(volume, config).array

    results: dict[str, Any] = {"load_ms": _median_ms(load_seconds), "load_min_ms": min(load_seconds) * 1000.0}
    results["recipe_ms"] = {
        "tunisian_lung": _median_ms(_times(lambda: preprocess_volume(volume, config), repeats)),
    }
    results["max_abs_difference"] = {}
    try:
        monai_output = monai_recipe(hu)
        results["recipe_ms"]["monai"] = _median_ms(_times(lambda: monai_recipe(hu), repeats))
        results["max_abs_difference"]["monai"] = float(np.abs(monai_output - ours).max())
    except ImportError as error:
        results["recipe_ms"]["monai"] = f"not installed ({error})"
    try:
        torchio_output = torchio_recipe(hu, volume.spacing)
        results["recipe_ms"]["torchio"] = _median_ms(_times(lambda: torchio_recipe(hu, volume.spacing), repeats))
        results["max_abs_difference"]["torchio"] = float(np.abs(torchio_output - ours).max())
    except ImportError as error:
        results["recipe_ms"]["torchio"] = f"not installed ({error})"

    results["full_preprocess_ms"] = _median_ms(full_seconds)
    results["full_min_ms"] = min(full_seconds) * 1000.0
    results["full_over_load"] = results["full_preprocess_ms"] / results["load_ms"]
    results["full_over_load_min"] = results["full_min_ms"] / results["load_min_ms"]
    return results


def bench_cache_hit(data: Path, work: Path, repeats: int) -> dict[str, Any]:
    from tunisian_lung.preprocess import PreprocessCache, load_preprocessed, preset
    from tunisian_lung.preprocess.cache import make_cache_key
    from tunisian_lung.preprocess.runner import _key_parts, source_identity

    config = preset("reference")
    cache = PreprocessCache(work / "hit-cache")
    dataset = SimpleNamespace(root=data.parent, series=[SimpleNamespace(series_id="LIDC-IDRI-0001", dicom_dir=data, nifti_path=None)])
    first = load_preprocessed(dataset, "LIDC-IDRI-0001", config, cache=cache)
    key = first.metadata["cache_key"]
    key_parts = _key_parts(source_identity(data), config, "LIDC-IDRI-0001")
    assert make_cache_key(key_parts) == key

    def unexpected_miss() -> Any:
        raise RuntimeError("cache miss during the hit benchmark")

    def read_pixels(volume: Any) -> float:
        return float(volume.array[32, 32, 32])

    get_seconds = _times(lambda: read_pixels(cache.get(key)), repeats * 40)
    get_or_create_seconds = _times(lambda: read_pixels(cache.get_or_create(key_parts, unexpected_miss)), repeats * 40)
    load_seconds = _times(lambda: read_pixels(load_preprocessed(dataset, "LIDC-IDRI-0001", config, cache=cache)), repeats * 10)
    size_only = PreprocessCache(work / "hit-cache", verify="size")
    size_only_seconds = _times(lambda: read_pixels(size_only.get(key)), repeats * 40)
    return {
        "get_ms": {"median": _median_ms(get_seconds), "p95": _p95_ms(get_seconds)},
        "get_verify_size_ms": {"median": _median_ms(size_only_seconds), "p95": _p95_ms(size_only_seconds)},
        "get_or_create_ms": {"median": _median_ms(get_or_create_seconds), "p95": _p95_ms(get_or_create_seconds)},
        "load_preprocessed_ms": {"median": _median_ms(load_seconds), "p95": _p95_ms(load_seconds)},
    }


def bench_throughput(data: Path, work: Path, series: int) -> dict[str, Any]:
    from tunisian_lung.preprocess import PreprocessCache, preprocess_dataset, preset

    config = preset("reference")
    dataset = SimpleNamespace(
        root=data.parent,
        series=[SimpleNamespace(series_id=f"copy-{index}", dicom_dir=data, nifti_path=None) for index in range(series)],
    )
    results: dict[str, Any] = {}
    for workers in (1, 2):
        cache = PreprocessCache(work / f"throughput-{workers}")
        start = time.perf_counter()
        outcome = preprocess_dataset(dataset, config, workers=workers, cache=cache)
        seconds = time.perf_counter() - start
        if not outcome.ok:
            raise RuntimeError(f"throughput run failed: {outcome.failed}")
        results[f"workers_{workers}"] = {"seconds": seconds, "series_per_second": series / seconds}
    return results


def _library_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for package in ("numpy", "scipy", "pydicom", "monai", "torchio", "torch"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def markdown(summary: dict[str, Any]) -> str:
    recipes = summary["recipes"]
    hit = summary["cache_hit"]
    throughput = summary["throughput"]

    def cell(value: Any) -> str:
        return f"{value:.1f}" if isinstance(value, float) else str(value)

    libraries = ", ".join(f"{name} {version}" for name, version in summary["libraries"].items())
    lines = [
        f"- Machine: {summary['machine']}",
        f"- Libraries: {libraries}",
        f"- Command: `{summary['command']}`",
        f"- Load average when the run finished (1, 5, 15 min): {summary['load_average_at_end']}",
        "",
        "| measurement | value |",
        "|---|---|",
        f"| load LIDC-IDRI-0001 (133 x 512 x 512, `load_series`) | {recipes['load_ms']:.0f} ms |",
        f"| reference recipe on the loaded array, tunisian_lung | {cell(recipes['recipe_ms']['tunisian_lung'])} ms |",
        f"| same recipe, MONAI `ScaleIntensityRange` + `Resize(trilinear)` | {cell(recipes['recipe_ms'].get('monai'))} ms "
        f"(max abs difference {recipes['max_abs_difference'].get('monai', float('nan')):.2g}) |",
        f"| same recipe, TorchIO `Clamp` + `RescaleIntensity` + `Resize` | {cell(recipes['recipe_ms'].get('torchio'))} ms "
        f"(max abs difference {recipes['max_abs_difference'].get('torchio', float('nan')):.2g}) |",
        f"| full preprocess (load + recipe), tunisian_lung | {recipes['full_preprocess_ms']:.0f} ms "
        f"({recipes['full_over_load']:.2f} x load time; fastest runs {recipes['full_over_load_min']:.2f} x) |",
        f"| cache hit, `PreprocessCache.get` (CRC-32 check), 64^3 float32 | median {hit['get_ms']['median']:.2f} ms, "
        f"p95 {hit['get_ms']['p95']:.2f} ms |",
        f"| cache hit, `get(verify=\"size\")` | median {hit['get_verify_size_ms']['median']:.2f} ms |",
        f"| cache hit, `get_or_create` | median {hit['get_or_create_ms']['median']:.2f} ms |",
        f"| cache hit, `load_preprocessed` (stats the source files, reads one header) | median {hit['load_preprocessed_ms']['median']:.2f} ms |",
        f"| `preprocess_dataset`, {summary['series']} series, 1 worker | "
        f"{throughput['workers_1']['series_per_second']:.2f} series/s |",
        f"| `preprocess_dataset`, {summary['series']} series, 2 worker processes | "
        f"{throughput['workers_2']['series_per_second']:.2f} series/s |",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="DICOM folder of LIDC-IDRI-0001")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of each timed step (cache hits: 40x this)")
    parser.add_argument("--series", type=int, default=8, help="series copies for the throughput runs")
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"series folder {args.data} not found; pass --data")

    with tempfile.TemporaryDirectory(prefix="bench-preprocess-") as temporary:
        work = Path(temporary)
        summary: dict[str, Any] = {
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
            f"Python {platform.python_version()}",
            "command": f"python benchmarks/bench_preprocess.py --repeats {args.repeats} --series {args.series}",
            "series": args.series,
            "recipes": bench_recipes(args.data, args.repeats),
            "cache_hit": bench_cache_hit(args.data, work, args.repeats),
            "throughput": bench_throughput(args.data, work, args.series),
        }
    summary["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()] if hasattr(os, "getloadavg") else None
    summary["libraries"] = _library_versions()
    print(json.dumps(summary, indent=2))
    print()
    print(markdown(summary))


if __name__ == "__main__":
    main()
