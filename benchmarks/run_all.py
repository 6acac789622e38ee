"""Run every benchmark of the suite in one command and collect the results.

Each per-feature script runs in its own Python process (loading, preprocessing, DataLoader,
table validation and, when CUDA is available, GPU training), with arguments chosen by
``--size``. Then the scale study (``bench_scale.py``) runs on synthetic releases. The runner
stores each script's output under ``benchmarks/results/`` as ``<name>.txt``, plus
``<name>.json`` when the script prints or writes a JSON object, and prints each script's wall
time and peak memory. It draws ``docs/img/benchmarks.png`` (reader medians and their ratio to
SimpleITK) and ``docs/img/scale.png``.

Usage::

    python benchmarks/run_all.py --size small|medium|large [--patients 100,300,1000]
        [--only load,preprocess,dataloader,validate,gpu_train,scale] [--workdir DIR] [--write-docs]

Run time on a shared 2-core machine: small about 3 minutes (measured), medium about 10 minutes
and large (1,000 patients in the scale study) about 30 minutes (estimates that scale the
measured cost per patient linearly). Needs the ``bench`` extra (psutil, monai, torchio).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_scale  # noqa: E402
from _suite import (  # noqa: E402
    DOCS_PATH,
    REPO_ROOT,
    RESULTS_DIR,
    describe_machine,
    machine_info,
    replace_docs_section,
    run_child,
)

BENCHMARKS_DIR = Path(__file__).resolve().parent
IMAGE_DIR = REPO_ROOT / "docs" / "img"
HOW_TO_RUN_TITLE = "## How to run"

#: Arguments of each per-feature script for each ``--size``.
SCRIPT_ARGUMENTS: dict[str, dict[str, list[str]]] = {
    "load": {
        "small": ["--runs", "3"],
        "medium": ["--runs", "7"],
        "large": ["--runs", "11"],
    },
    "preprocess": {
        "small": ["--repeats", "2", "--series", "4"],
        "medium": ["--repeats", "5", "--series", "8"],
        "large": ["--repeats", "5", "--series", "16"],
    },
    "dataloader": {
        "small": ["--patients", "8", "--small", "4", "--shape", "64"],
        "medium": ["--patients", "24", "--small", "8", "--shape", "96"],
        "large": ["--patients", "48", "--small", "12", "--shape", "96"],
    },
    "validate": {
        "small": ["--runs", "3", "--open"],
        "medium": ["--runs", "7", "--open"],
        "large": ["--runs", "11", "--open"],
    },
    "gpu_train": {"small": [], "medium": [], "large": []},
}

SCRIPT_FILES = {
    "load": "bench_load.py",
    "preprocess": "bench_preprocess.py",
    "dataloader": "bench_dataloader.py",
    "validate": "bench_validate.py",
    "gpu_train": "gpu_train.py",
}

#: Patient counts of the scale study for each ``--size``.
SCALE_PATIENTS = {"small": [10, 30], "medium": [30, 100, 300], "large": [100, 300, 1000]}

#: A line such as ``SimpleITK ImageSeriesReader    median 0.412 s`` in a script's output.
MEDIAN_LINE = re.compile(r"^(?P<name>\S.*?)\s+median (?P<seconds>[0-9.]+) s\b", flags=re.MULTILINE)


def extract_json(text: str) -> dict[str, Any] | None:
    """Return the first JSON object that starts at the beginning of a line of ``text``, if any."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"^\{", text, flags=re.MULTILINE):
        try:
            value, _end = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def extract_medians(text: str) -> dict[str, float]:
    """Return ``name -> seconds`` for every ``<name> median <x> s`` line of ``text``."""
    return {match["name"].strip(): float(match["seconds"]) for match in MEDIAN_LINE.finditer(text)}


def cuda_available() -> bool:
    """Return whether torch finds a CUDA device."""
    import torch

    return bool(torch.cuda.is_available())


def run_script(name: str, size: str, *, write_docs: bool) -> dict[str, Any]:
    """Run one per-feature script in a child process and store its output in the results folder."""
    arguments = list(SCRIPT_ARGUMENTS[name][size])
    json_path = RESULTS_DIR / f"{name}.json"
    if name == "gpu_train":
        arguments += ["--out", str(json_path)]
    if name == "load" and write_docs:
        arguments.append("--write-docs")
    command = [sys.executable, str(BENCHMARKS_DIR / SCRIPT_FILES[name]), *arguments]
    display = " ".join(["python", f"benchmarks/{SCRIPT_FILES[name]}", *arguments])
    print(f"\n=== {name}: {display}", flush=True)
    run = run_child(command)
    (RESULTS_DIR / f"{name}.txt").write_text(run.stdout + ("\n--- stderr ---\n" + run.stderr if run.stderr else ""))
    print(run.stdout.rstrip())
    if run.returncode != 0:
        print(f"{name} failed with exit code {run.returncode}. Its stderr ends with:\n{run.stderr[-2000:]}", file=sys.stderr)

    data = json.loads(json_path.read_text()) if name == "gpu_train" and json_path.is_file() else extract_json(run.stdout)
    if data is not None and name != "gpu_train":
        json_path.write_text(json.dumps(data, indent=2) + "\n")
    return {
        "command": display,
        "returncode": run.returncode,
        "wall_seconds": run.wall_seconds,
        "peak_rss_mib": run.peak_tree_rss_bytes / 2**20,
        "medians_seconds": extract_medians(run.stdout),
        "json": data is not None,
    }


def plot_readers(medians: dict[str, float], path: Path, *, command: str) -> Path | None:
    """Draw the reader medians of ``bench_load.py`` as bars labelled with their ratio to
    SimpleITK, with ``command`` (the run they came from) under the title."""
    if not medians:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reference = next((seconds for name, seconds in medians.items() if name.startswith("SimpleITK")), None)
    names = list(medians)
    figure, axes = plt.subplots(figsize=(8, 0.5 * len(names) + 1.5))
    bars = axes.barh(names, [medians[name] for name in names], color="tab:blue")
    if reference:
        for bar, name in zip(bars, names):
            axes.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {medians[name] / reference:.2f} x SimpleITK", va="center", fontsize=8)
    axes.invert_yaxis()
    axes.set_xlim(0, max(medians.values()) * 1.3)  # room for the ratio labels right of the longest bar
    axes.set_xlabel("median seconds (lower is better)")
    axes.set_title(f"Loading one real CT series (LIDC-IDRI-0001)\n{command}", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.stem + ".tmp.png")
    figure.savefig(temporary, dpi=110)
    plt.close(figure)
    temporary.replace(path)
    return path


def how_to_run_section(machine: dict[str, Any], *, under_load: bool) -> str:
    """Return the "How to run" section of ``docs/benchmarks.md``."""
    sizes = ", ".join(f"`{size}` ({'/'.join(str(n) for n in counts)} patients)" for size, counts in SCALE_PATIENTS.items())
    return "\n".join(
        [
            HOW_TO_RUN_TITLE,
            "",
            "Install the benchmark extra (`pip install -e .[bench]`), then run from the repository root:",
            "",
            "```",
            "python benchmarks/run_all.py --size small --write-docs",
            "```",
            "",
            f"`--size` sets the repetitions of each script and the patient counts of the scale study: {sizes}. "
            "`--patients 100,300,1000` sets the counts directly, `--only scale,load` runs a subset. "
            "Each script can also run alone, as its docstring describes.",
            "",
            "Run time on the machine below while other jobs ran: `small` took about 3 minutes (110 s for the "
            "scripts, 60 s for the scale study). For `medium` and `large`, the estimates are about 10 and "
            "about 30 minutes. They scale linearly the scale study's cost per patient at 120 slices, which "
            "was 0.2 s to write and 0.7 s to measure at 100 patients with a load average near 4. The releases "
            "of `large` hold 168,000 DICOM files (about 0.5 MB per patient, 700 MB in all), and the "
            "preprocessing cache of the 1,000-patient step takes up to 1 GiB while it runs.",
            "",
            "Results go to `benchmarks/results/` (`run_all.json`, one `.txt` and, where the script emits one, "
            "one `.json` per script) and the plots to `docs/img/`: `benchmarks.png` (loading one series, median "
            "and ratio to SimpleITK per reader) and `scale.png` (the scale study below). The first plot shows "
            "the `bench_load.py` run named in its title, which can differ from the run in the Loading section.",
            "",
            "![Loading one series with each reader](img/benchmarks.png)",
            "",
            f"Machine of the numbers on this page: {describe_machine(machine, with_load=False)}."
            + (" It was shared with other jobs while they were taken; each section gives its load average." if under_load else ""),
            "",
        ]
    )


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size", choices=("small", "medium", "large"), default="small", help="repetitions and data sizes (default small)")
    parser.add_argument("--patients", type=bench_scale.parse_counts, default=None, help="patient counts of the scale study, comma-separated (overrides --size)")
    parser.add_argument("--slices", type=int, default=120, help="slices per series in the scale study (default 120)")
    parser.add_argument("--rows", type=int, default=32, help="rows and columns per slice in the scale study, in pixels (default 32)")
    parser.add_argument("--only", default=",".join([*SCRIPT_FILES, "scale"]), help="benchmarks to run, comma-separated (default all)")
    parser.add_argument("--workdir", type=Path, default=None, help="folder kept for the scale study's releases (default: temporary)")
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md (How to run, Loading, Scale) and docs/img/")
    parser.add_argument("--under-load", action="store_true", help="mark the How to run and Scale sections as measured on a busy machine")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    selected = [name for name in args.only.split(",") if name]
    unknown = [name for name in selected if name not in SCRIPT_FILES and name != "scale"]
    if unknown:
        print(f"unknown benchmark(s) {unknown}. Choose from {', '.join([*SCRIPT_FILES, 'scale'])}", file=sys.stderr)
        return 2

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    command = "python benchmarks/run_all.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"machine: {describe_machine(machine)}")
    summary: dict[str, Any] = {"command": command.strip(), "size": args.size, "machine": machine, "scripts": {}}
    start = time.perf_counter()

    for name in SCRIPT_FILES:
        if name not in selected:
            continue
        if name == "gpu_train" and not cuda_available():
            print("\n=== gpu_train: skipped, torch found no CUDA device")
            summary["scripts"][name] = {"skipped": "no CUDA device"}
            continue
        summary["scripts"][name] = run_script(name, args.size, write_docs=args.write_docs)

    if "scale" in selected:
        counts = args.patients or SCALE_PATIENTS[args.size]
        print(f"\n=== scale: {counts} patients, {args.slices} slices of {args.rows}x{args.rows}", flush=True)
        scale_argv = ["--patients", ",".join(str(count) for count in counts), "--slices", str(args.slices), "--rows", str(args.rows)]
        if args.workdir is not None:
            scale_argv += ["--workdir", str(args.workdir)]
        if args.write_docs:
            scale_argv.append("--write-docs")
        if args.under_load:
            scale_argv.append("--under-load")
        returncode = bench_scale.main(scale_argv)
        scale_results = json.loads((RESULTS_DIR / "scale.json").read_text()) if returncode == 0 else None
        summary["scripts"]["scale"] = {"returncode": returncode, "exponents": None if scale_results is None else scale_results["exponents"]}
        if scale_results is not None:
            bench_scale.plot_scale(scale_results, IMAGE_DIR / "scale.png")

    summary["wall_seconds"] = time.perf_counter() - start
    (RESULTS_DIR / "run_all.json").write_text(json.dumps(summary, indent=2) + "\n")

    print("\n=== summary")
    print(f"{'benchmark':<12}{'exit':>6}{'wall s':>10}{'peak MiB':>10}")
    for name, entry in summary["scripts"].items():
        if "skipped" in entry:
            print(f"{name:<12}{'-':>6}  skipped: {entry['skipped']}")
            continue
        wall = entry.get("wall_seconds")
        peak = entry.get("peak_rss_mib")
        print(f"{name:<12}{entry['returncode']:>6}{'' if wall is None else f'{wall:.1f}':>10}{'' if peak is None else f'{peak:.0f}':>10}")
    # bench_load.py also prints the median of header-only indexing, which is no reader.
    medians = {label: seconds for label, seconds in summary["scripts"].get("load", {}).get("medians_seconds", {}).items() if not label.startswith("index_dicom_folder")}
    if medians:
        reference = next((seconds for label, seconds in medians.items() if label.startswith("SimpleITK")), None)
        print("\nloading one series, median and ratio to SimpleITK:")
        for label, seconds in medians.items():
            ratio = f"{seconds / reference:.2f} x" if reference else "n/a"
            print(f"  {label:<44}{seconds:8.3f} s  {ratio}")
        plot_readers(medians, IMAGE_DIR / "benchmarks.png", command=summary["scripts"]["load"]["command"])
    print(f"\nresults: {RESULTS_DIR}; total {summary['wall_seconds']:.0f} s")

    if args.write_docs:
        replace_docs_section(HOW_TO_RUN_TITLE, how_to_run_section(machine, under_load=args.under_load), position="top")
        print(f"updated {DOCS_PATH}")
    failed = [name for name, entry in summary["scripts"].items() if entry.get("returncode") not in (0, None)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
