"""Measure how time and peak memory grow with the number of patients in a release.

For each patient count, the script writes a synthetic release: one CT series per patient, a
fixed number of slices per series, and small square slices so that disk use stays modest. It
then times seven steps, each in a fresh Python process so that imports and earlier steps do
not count:

``open``
    :func:`tunisian_lung.dataset.open_dataset` (tables and folder checks, no DICOM read).
``index_first``
    :func:`tunisian_lung.io.dicom.index_dicom_folder` on the release's ``dicom/`` folder with
    ``index_cache`` pointing at an empty folder, so every header is read and the index stored.
``index_reopen``
    The same call again: the stored index is reused after a size and modification time check
    of every file. Where ``index_dicom_folder`` has no ``index_cache`` keyword, both steps read
    every header.
``validate_deep``
    :func:`tunisian_lung.checks.deep_validate` on the opened dataset.
``preprocess_1``, ``preprocess_2``
    :func:`tunisian_lung.preprocess.preprocess_dataset` with the ``reference`` preset into an
    empty cache, with 1 and 2 worker processes.
``epoch``
    One epoch of a :class:`~tunisian_lung.torch_data.ScanDataset` read from the cache filled by
    ``preprocess_2``, through a torch ``DataLoader`` (batch 8, 2 workers).

Wall and CPU time are measured inside the child around the step only. Peak memory is the largest summed
resident set size (RSS) of the child and its workers, sampled every 20 ms by the parent. The
RSS of the child just before the step (after its imports) is reported beside it. The script
fits ``seconds = a * patients ** k`` on a log-log scale for each step and flags a step as worse
than linear when ``k`` of its CPU time exceeds 1.2.

Usage::

    python benchmarks/bench_scale.py --patients 100,300,1000 [--slices 120] [--rows 32]
        [--workdir DIR] [--write-docs] [--profile STEP]

Releases are kept in ``--workdir`` (default: a temporary folder removed at the end) so that a
second run skips writing them. Results go to ``benchmarks/results/scale.json``. Needs the
``bench`` extra (psutil).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _suite import RESULTS_DIR, describe_machine, machine_info, replace_docs_section, run_child  # noqa: E402

STEPS = ("open", "index_first", "index_reopen", "validate_deep", "preprocess_1", "preprocess_2", "epoch")
SECTION_TITLE = "## Scale"

#: Growth exponent above which a step counts as worse than linear. Fits on few, small sizes
#: carry constant start-up costs, so exponents just over 1.0 are within the noise.
SUPERLINEAR_EXPONENT = 1.2


# --- steps, run inside a child process -----------------------------------------------------------


def _supports_index_cache() -> bool:
    """Return whether :func:`~tunisian_lung.io.dicom.index_dicom_folder` can persist its index."""
    import inspect

    from tunisian_lung.io.dicom import index_dicom_folder

    return "index_cache" in inspect.signature(index_dicom_folder).parameters


def _step_function(step: str, root: Path, work: Path) -> Callable[[], dict[str, Any]]:
    """Prepare ``step`` (imports, opening the dataset when the step is not the opening itself)
    and return the function to time, which returns details for the report."""
    from tunisian_lung.dataset import open_dataset

    if step == "open":
        return lambda: {"patients": len(open_dataset(root))}

    if step in ("index_first", "index_reopen"):
        index_dir = work / "header-index"
        if step == "index_first" and index_dir.exists():
            shutil.rmtree(index_dir)
        from tunisian_lung.io.dicom import index_dicom_folder

        if not _supports_index_cache():
            return lambda: {"series": len(index_dicom_folder(root / "dicom")), "persisted": False}
        return lambda: {"series": len(index_dicom_folder(root / "dicom", index_cache=index_dir)), "persisted": True}

    dataset = open_dataset(root)
    if step == "validate_deep":
        from tunisian_lung.checks import deep_validate

        # index_cache=False: read every header, so a stored index cannot make this step look fast.
        return lambda: {"issues": len(deep_validate(dataset, index_cache=False))}

    from tunisian_lung.preprocess import PreprocessCache, preset

    if step in ("preprocess_1", "preprocess_2"):
        workers = int(step[-1])
        cache_dir = work / f"cache-{workers}"
        if cache_dir.exists():
            shutil.rmtree(cache_dir)
        cache = PreprocessCache(cache_dir)

        def preprocess() -> dict[str, Any]:
            from tunisian_lung.preprocess import preprocess_dataset

            result = preprocess_dataset(dataset, preset("reference"), workers=workers, cache=cache)
            return {"computed": result.computed, "failed": len(result.failed)}

        return preprocess

    if step == "epoch":
        from torch.utils.data import DataLoader

        from tunisian_lung.torch_data import ScanDataset, collate

        scans = ScanDataset(dataset, config=preset("reference"), cache=PreprocessCache(work / "cache-2"), exclude_unlabeled=True)
        loader = DataLoader(scans, batch_size=8, num_workers=2, collate_fn=collate)

        def epoch() -> dict[str, Any]:
            samples = 0
            for batch in loader:
                samples += int(batch["image"].shape[0])
            return {"samples": samples}

        return epoch

    raise ValueError(f"unknown step {step!r}. Choose one of {', '.join(STEPS)}")


def run_step_in_child(step: str, root: Path, work: Path, profile: Path | None) -> None:
    """Run one step in this process and print its timing as one JSON line on stdout."""
    import psutil

    function = _step_function(step, root, work)
    baseline = psutil.Process().memory_info().rss
    cpu_start = _cpu_seconds()
    if profile is not None:
        import cProfile

        profiler = cProfile.Profile()
        start = time.perf_counter()
        details = profiler.runcall(function)
        seconds = time.perf_counter() - start
        profiler.dump_stats(profile)
    else:
        start = time.perf_counter()
        details = function()
        seconds = time.perf_counter() - start
    cpu_seconds = _cpu_seconds() - cpu_start
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "baseline_rss_bytes": baseline, "details": details}))


def _cpu_seconds() -> float:
    """Return user plus system CPU seconds of this process (all threads) and its reaped children.

    Worker processes count once they have exited, which both the preprocessing pool and the
    DataLoader workers do before the timed step returns.
    """
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# --- driver --------------------------------------------------------------------------------------


def release_path(workdir: Path, patients: int, slices: int, rows: int) -> Path:
    """Return the folder of the synthetic release with these sizes inside ``workdir``."""
    return workdir / f"release-{patients}p-{slices}s-{rows}px"


def ensure_release(workdir: Path, patients: int, slices: int, rows: int, *, seed: int = 0) -> tuple[Path, float]:
    """Write the synthetic release unless ``workdir`` already has it.

    Returns the release folder and the seconds spent writing it (0.0 when it existed).
    """
    from tunisian_lung.synthetic import write_synthetic_release

    root = release_path(workdir, patients, slices, rows)
    if (root / "annotations.csv").is_file():
        return root, 0.0
    start = time.perf_counter()
    write_synthetic_release(root, patients=patients, seed=seed, slices=slices, rows=rows)
    return root, time.perf_counter() - start


def count_files(folder: Path) -> int:
    """Count the regular files under ``folder``."""
    return sum(len(names) for _, _, names in os.walk(folder))


def measure_step(step: str, root: Path, work: Path, *, profile: Path | None = None) -> dict[str, Any]:
    """Run ``step`` in a child process and return its seconds and memory in MiB."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", step, "--root", str(root), "--work", str(work)]
    if profile is not None:
        command += ["--profile-out", str(profile)]
    run = run_child(command)
    if run.returncode != 0:
        raise RuntimeError(f"step {step} on {root} failed with exit code {run.returncode}:\n{run.stderr[-4000:]}")
    outcome = json.loads(run.stdout.strip().splitlines()[-1])
    return {
        "seconds": outcome["seconds"],
        "cpu_seconds": outcome["cpu_seconds"],
        "peak_rss_mib": run.peak_tree_rss_bytes / 2**20,
        "baseline_rss_mib": outcome["baseline_rss_bytes"] / 2**20,
        "details": outcome["details"],
    }


def growth_exponent(patients: list[int], seconds: list[float]) -> float | None:
    """Fit ``seconds = a * patients ** k`` by least squares on logarithms and return ``k``.

    Returns ``None`` with fewer than two sizes or a non-positive time.
    """
    if len(patients) < 2 or min(seconds) <= 0:
        return None
    import numpy as np

    slope, _intercept = np.polyfit(np.log(patients), np.log(seconds), 1)
    return float(slope)


def run_scale(
    patient_counts: list[int],
    *,
    slices: int,
    rows: int,
    workdir: Path,
    steps: tuple[str, ...] = STEPS,
    profile_step: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure every step on a release of each size and return the results as a dict.

    The dict has ``settings``, ``machine``, ``sizes`` (one entry per patient count, with the
    file count and per-step ``seconds``, ``cpu_seconds``, ``peak_rss_mib``, ``baseline_rss_mib``),
    and ``exponents`` and ``cpu_exponents`` (step -> growth exponent of wall and CPU time, or
    ``None``).
    """
    sizes: list[dict[str, Any]] = []
    for patients in sorted(patient_counts):
        root, written = ensure_release(workdir, patients, slices, rows)
        files = count_files(root / "dicom")
        if written:
            log(f"wrote {patients} patients ({files} DICOM files) in {written:.1f} s")
        work = workdir / f"work-{root.name}"
        work.mkdir(exist_ok=True)
        measured: dict[str, Any] = {}
        for step in steps:
            profile = RESULTS_DIR / f"profile-{step}-{patients}.prof" if step == profile_step else None
            measured[step] = measure_step(step, root, work, profile=profile)
            log(f"{patients:>6} patients  {step:<14} {measured[step]['seconds']:9.3f} s  peak {measured[step]['peak_rss_mib']:7.0f} MiB")
            # A cache holds 1 MiB per series with the reference preset, so each is deleted once no step reads it.
            if step == "preprocess_1":
                shutil.rmtree(work / "cache-1", ignore_errors=True)
        shutil.rmtree(work / "cache-2", ignore_errors=True)
        sizes.append({"patients": patients, "dicom_files": files, "steps": measured})

    counts = [size["patients"] for size in sizes]
    exponents = {step: growth_exponent(counts, [size["steps"][step]["seconds"] for size in sizes]) for step in steps}
    cpu_exponents = {step: growth_exponent(counts, [size["steps"][step]["cpu_seconds"] for size in sizes]) for step in steps}
    return {
        "settings": {"patients": counts, "slices": slices, "rows": rows, "steps": list(steps)},
        "machine": machine_info(),
        "sizes": sizes,
        "exponents": exponents,
        "cpu_exponents": cpu_exponents,
        "persisted_header_index": _supports_index_cache(),
    }


def _format_exponent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def markdown_table(results: dict[str, Any]) -> str:
    """Format the results as a Markdown table with one row per step.

    Each size gets a cell with wall seconds, CPU seconds and peak MiB, and the last two columns
    hold the growth exponents of wall and CPU time.
    """
    sizes = results["sizes"]
    header = "| step | " + " | ".join(f"{size['patients']} patients" for size in sizes) + " | k (wall) | k (CPU) |"
    rule = "|---" * (len(sizes) + 3) + "|"
    lines = [header, rule]
    slow = set(superlinear_steps(results))
    for step in results["settings"]["steps"]:
        cells = []
        for size in sizes:
            measured = size["steps"][step]
            cells.append(f"{measured['seconds']:.2f} s ({measured['cpu_seconds']:.2f} s CPU), {measured['peak_rss_mib']:.0f} MiB")
        wall = _format_exponent(results["exponents"].get(step))
        cpu = _format_exponent(results["cpu_exponents"].get(step)) + (" (worse than linear)" if step in slow else "")
        lines.append(f"| {step} | " + " | ".join(cells) + f" | {wall} | {cpu} |")
    return "\n".join(lines)


def superlinear_steps(results: dict[str, Any]) -> list[str]:
    """Return the steps whose CPU-time growth exponent exceeds :data:`SUPERLINEAR_EXPONENT`.

    CPU time is used because on a shared machine the wall time of a step also grows with the
    waiting for other processes, which is not the step's own cost.
    """
    exponents = results["cpu_exponents"]
    return [step for step, value in exponents.items() if value is not None and value > SUPERLINEAR_EXPONENT]


def plot_scale(results: dict[str, Any], path: Path) -> Path:
    """Plot wall and CPU seconds against patients on log-log axes, one line per step, each
    panel with a dashed line of slope 1 (linear growth) for comparison."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    counts = [size["patients"] for size in results["sizes"]]
    steps = results["settings"]["steps"]
    figure, panels = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for axes, key, title in ((panels[0], "seconds", "wall time"), (panels[1], "cpu_seconds", "CPU time")):
        for step in steps:
            axes.plot(counts, [size["steps"][step][key] for size in results["sizes"]], marker="o", label=step)
        if len(counts) >= 2:
            largest = max(size["steps"][step][key] for size in results["sizes"] for step in steps)
            axes.plot(counts, [largest * count / counts[-1] for count in counts], linestyle="--", color="grey", label="linear")
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xticks(counts)
        axes.xaxis.set_major_formatter(ScalarFormatter())
        axes.xaxis.set_minor_formatter(NullFormatter())
        axes.set_xlabel("patients (one series each)")
        axes.set_title(title)
    panels[0].set_ylabel("seconds")
    panels[1].legend(fontsize=8, loc="best")
    rows = results["settings"]["rows"]
    figure.suptitle(f"Scale study: {results['settings']['slices']} slices of {rows}x{rows} pixels per series")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.stem + ".tmp.png")
    figure.savefig(temporary, dpi=110)
    plt.close(figure)
    temporary.replace(path)
    return path


def docs_section(results: dict[str, Any], command: str, *, under_load: bool) -> str:
    """Return the "Scale" section of ``docs/benchmarks.md`` for these results."""
    settings = results["settings"]
    slow = superlinear_steps(results)
    index_note = (
        "`index_first` reads every header and stores the index (`index_dicom_folder(..., index_cache=DIR)`); "
        "`index_reopen` reuses it after checking every file's size and modification time."
        if results.get("persisted_header_index")
        else "This library version cannot persist the header index, so `index_first` and `index_reopen` both read every header."
    )
    lines = [
        SECTION_TITLE,
        "",
        f"Synthetic releases of {', '.join(str(count) for count in settings['patients'])} patients, one CT series each, "
        f"{settings['slices']} slices of {settings['rows']}x{settings['rows']} pixels per series. Each step runs in its own "
        "Python process; time covers the step only, memory is the peak summed RSS of the process and its workers. "
        "The sum counts pages that forked workers share with their parent once per process, so the peaks of "
        "`preprocess_2` and `epoch` are upper bounds. The files were written just before the steps ran, "
        "but the script does not check whether they were still in the page cache.",
        "",
        f"- Machine: {describe_machine(results['machine'])}",
        f"- Command: `{command}`",
        "",
        markdown_table(results),
        "",
        "The growth exponent `k` fits `seconds = a * patients^k` by least squares on logarithms: 1 is linear growth. "
        "CPU time is user plus system time of the step's process, all its threads and its exited worker "
        f"processes; a step counts as worse than linear when its CPU-time `k` exceeds {SUPERLINEAR_EXPONENT}. " + index_note,
        "",
        "![Scale plot](img/scale.png)",
        "",
    ]
    if slow:
        lines += [f"Steps growing worse than linear (CPU-time k > {SUPERLINEAR_EXPONENT}): {', '.join(slow)}.", ""]
    elif len(settings["patients"]) >= 2:
        lines += [f"No step grows worse than linear: every CPU-time k is at most {SUPERLINEAR_EXPONENT}.", ""]
    if under_load:
        lines += [
            "NOTE: these numbers were taken on a shared machine under load. They show the method, not the "
            "library's speed; rerun the command on an idle machine.",
            "",
        ]
    return "\n".join(lines)


def parse_counts(text: str) -> list[int]:
    """Parse a comma-separated list of positive patient counts, such as ``100,300,1000``."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 100,300,1000, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"patient counts must be positive integers, got {text!r}")
    return counts


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--patients", type=parse_counts, default=[100, 300, 1000], help="patient counts, comma-separated (default 100,300,1000)")
    parser.add_argument("--slices", type=int, default=120, help="slices per series (default 120)")
    parser.add_argument("--rows", type=int, default=32, help="rows and columns per slice in pixels (default 32)")
    parser.add_argument("--workdir", type=Path, default=None, help="folder for releases and caches, kept between runs (default: a temporary folder)")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"steps to run, comma-separated (default all: {','.join(STEPS)})")
    parser.add_argument("--profile", choices=STEPS, default=None, help="write a cProfile file of this step to benchmarks/results/")
    parser.add_argument("--write-docs", action="store_true", help="replace the Scale section of docs/benchmarks.md and write docs/img/scale.png")
    parser.add_argument("--under-load", action="store_true", help="mark the docs section as measured on a busy machine")
    parser.add_argument("--child", choices=STEPS, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", type=Path, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.child:
        run_step_in_child(args.child, args.root, args.work, args.profile_out)
        return 0

    steps = tuple(step for step in args.steps.split(",") if step)
    unknown = [step for step in steps if step not in STEPS]
    if unknown:
        print(f"unknown step(s) {unknown}. Choose from {', '.join(STEPS)}", file=sys.stderr)
        return 2
    if "epoch" in steps and "preprocess_2" not in steps:
        print("the epoch step reads the cache that preprocess_2 fills, so add preprocess_2 to --steps", file=sys.stderr)
        return 2

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    temporary = None
    if args.workdir is None:
        temporary = tempfile.TemporaryDirectory(prefix="bench_scale_")
        workdir = Path(temporary.name)
    else:
        workdir = args.workdir
        workdir.mkdir(parents=True, exist_ok=True)
    try:
        results = run_scale(args.patients, slices=args.slices, rows=args.rows, workdir=workdir, steps=steps, profile_step=args.profile)
    finally:
        if temporary is not None:
            temporary.cleanup()

    command = "python benchmarks/bench_scale.py " + " ".join(argv if argv is not None else sys.argv[1:])
    results["command"] = command.strip()
    output = RESULTS_DIR / "scale.json"
    output.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(markdown_table(results))
    slow = superlinear_steps(results)
    if slow:
        print(f"\nworse than linear (k > {SUPERLINEAR_EXPONENT}): {', '.join(slow)}; profile with --profile STEP")
    print(f"\nresults: {output}")
    if args.write_docs:
        plot_scale(results, RESULTS_DIR.parent.parent / "docs" / "img" / "scale.png")
        replace_docs_section(SECTION_TITLE, docs_section(results, command.strip(), under_load=args.under_load))
    return 0


if __name__ == "__main__":
    sys.exit(main())
