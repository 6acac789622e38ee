"""Helpers shared by ``run_all.py`` and ``bench_scale.py``: machine description, child processes
measured for peak memory, and replacing one section of ``docs/benchmarks.md``."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS_PATH = REPO_ROOT / "docs" / "benchmarks.md"
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"

#: Seconds between two samples of the child's memory. A peak shorter than this can be missed.
MEMORY_SAMPLE_SECONDS = 0.02


def cpu_model() -> str:
    """Return the CPU model name from ``lscpu``, else ``platform.processor()``."""
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    match = re.search(r"^Model name:\s*(.+)$", output, flags=re.MULTILINE)
    return match.group(1).strip() if match else (platform.processor() or "unknown CPU")


def machine_info() -> dict[str, Any]:
    """Describe the machine: CPU model, logical cores, memory in GiB, OS, Python, load average."""
    import psutil

    try:
        load = [round(value, 2) for value in os.getloadavg()]
    except OSError:
        load = []
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load_average_1_5_15": load,
    }


def describe_machine(info: dict[str, Any], *, with_load: bool = True) -> str:
    """Format :func:`machine_info` as one line for reports, optionally with the load average."""
    text = f"{info['cpu']}, {info['logical_cores']} logical cores, {info['memory_gib']} GiB RAM, {info['os']}, Python {info['python']}"
    if not with_load:
        return text
    load = ", ".join(f"{value:.2f}" for value in info.get("load_average_1_5_15", []))
    return f"{text}; load average {load or 'unknown'} (1, 5, 15 min)"


def _tree_rss_bytes(process: Any) -> int:
    import psutil

    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


@dataclass
class ChildRun:
    """Outcome of one command run by :func:`run_child`."""

    returncode: int
    stdout: str
    stderr: str
    wall_seconds: float
    peak_tree_rss_bytes: int


def run_child(command: list[str], *, env: dict[str, str] | None = None, timeout: float | None = None) -> ChildRun:
    """Run ``command`` and sample the summed RSS of its process tree until it exits.

    The sum counts pages shared between a parent and its forked workers once per process, so
    for a process pool it is an upper bound of the physical memory used.
    """
    import psutil

    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    process = psutil.Process(child.pid)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                peak = max(peak, _tree_rss_bytes(process))
            except psutil.NoSuchProcess:
                return
            time.sleep(MEMORY_SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    finally:
        done.set()
        sampler.join()
        if child.poll() is None:
            child.kill()
            child.communicate()
    return ChildRun(child.returncode, stdout, stderr, time.perf_counter() - start, peak)


def replace_docs_section(title: str, section: str, *, position: str = "end") -> None:
    """Replace the section headed ``title`` in ``docs/benchmarks.md``, keeping the others.

    A missing section is added at the end, or just after the ``# Benchmarks`` title when
    ``position`` is ``"top"``. The file is written to a temporary name and renamed.
    """
    text = DOCS_PATH.read_text() if DOCS_PATH.exists() else "# Benchmarks\n"
    body = section.rstrip("\n") + "\n\n"
    pattern = re.compile(rf"^{re.escape(title)}\n.*?(?=^## |\Z)", flags=re.MULTILINE | re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _match: body, text)
    elif position == "top":
        head, separator, rest = text.partition("\n")
        text = head + separator + "\n" + body + rest.lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + body
    # Sections written by other scripts may end without a blank line before the next heading.
    text = re.sub(r"([^\n])\n(## )", r"\1\n\n\2", text)
    temporary = DOCS_PATH.with_suffix(".md.tmp")
    temporary.write_text(text.rstrip("\n") + "\n")
    temporary.replace(DOCS_PATH)
