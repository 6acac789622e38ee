"""Tests of the benchmark suite's own logic: growth fits, output parsing, docs sections.

No test here asserts a speed; the scripts under ``benchmarks/`` measure it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS_DIR))

import _suite  # noqa: E402
import bench_scale  # noqa: E402
import run_all  # noqa: E402


def _results(seconds_by_size: dict[int, float]) -> dict[str, object]:
    sizes = [
        {"patients": patients, "dicom_files": patients * 10, "steps": {"open": {"seconds": seconds, "cpu_seconds": seconds, "peak_rss_mib": 100.0, "baseline_rss_mib": 90.0}}}
        for patients, seconds in seconds_by_size.items()
    ]
    counts = list(seconds_by_size)
    return {
        "settings": {"patients": counts, "slices": 10, "rows": 16, "steps": ["open"]},
        "sizes": sizes,
        "exponents": {"open": bench_scale.growth_exponent(counts, list(seconds_by_size.values()))},
        "cpu_exponents": {"open": bench_scale.growth_exponent(counts, list(seconds_by_size.values()))},
    }


def test_growth_exponent_linear_and_quadratic() -> None:
    counts = [100, 300, 1000]
    linear = bench_scale.growth_exponent(counts, [0.5 * n for n in counts])
    quadratic = bench_scale.growth_exponent(counts, [1e-4 * n**2 for n in counts])
    assert linear == pytest.approx(1.0)
    assert quadratic == pytest.approx(2.0)


def test_growth_exponent_needs_two_positive_sizes() -> None:
    assert bench_scale.growth_exponent([100], [1.0]) is None
    assert bench_scale.growth_exponent([100, 300], [0.0, 1.0]) is None


def test_superlinear_steps_flags_quadratic_only() -> None:
    quadratic = _results({10: 1.0, 100: 100.0})
    linear = _results({10: 1.0, 100: 10.0})
    assert bench_scale.superlinear_steps(quadratic) == ["open"]
    assert bench_scale.superlinear_steps(linear) == []


def test_markdown_table_rows_and_flag() -> None:
    table = bench_scale.markdown_table(_results({10: 1.0, 100: 100.0}))
    lines = table.splitlines()
    assert lines[0] == "| step | 10 patients | 100 patients | k (wall) | k (CPU) |"
    assert lines[2].startswith("| open | 1.00 s (1.00 s CPU), 100 MiB | 100.00 s (100.00 s CPU), 100 MiB | 2.00 | 2.00")
    assert lines[2].endswith("(worse than linear) |")


@pytest.mark.parametrize("text", ["100,300,1000", "100, 300,1000", "5"])
def test_parse_counts_accepts_lists(text: str) -> None:
    assert bench_scale.parse_counts(text) == [int(part) for part in text.split(",")]


@pytest.mark.parametrize("text", ["", "0,10", "ten", "-5"])
def test_parse_counts_rejects_invalid(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="patient counts|comma-separated"):
        bench_scale.parse_counts(text)


def test_extract_json_after_log_lines() -> None:
    payload = {"series": 8, "throughput": {"workers_1": 1.5}}
    text = "prepared 8 series\n" + json.dumps(payload, indent=2) + "\n\n| markdown | table |\n"
    assert run_all.extract_json(text) == payload
    assert run_all.extract_json("no json here\n{ not json\n") is None


def test_extract_medians_reads_seconds_lines_only() -> None:
    text = (
        "SimpleITK ImageSeriesReader                median 0.412 s  (min 0.400, max 0.430)\n"
        "tunisian_lung load_series (all checks)     median 0.300 s  (min 0.290, max 0.310)\n"
        "validate_tables: 1117 rows, median 55.0 ms over 7 runs\n"
    )
    medians = run_all.extract_medians(text)
    assert medians == {"SimpleITK ImageSeriesReader": 0.412, "tunisian_lung load_series (all checks)": 0.3}


def test_replace_docs_section_keeps_other_sections(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\n## Loading\n\nloader numbers\n\n## Scale\n\nold scale\n")
    monkeypatch.setattr(_suite, "DOCS_PATH", docs)

    _suite.replace_docs_section("## Scale", "## Scale\n\nnew scale\n")
    _suite.replace_docs_section("## How to run", "## How to run\n\ncommands\n", position="top")
    text = docs.read_text()

    assert text.index("## How to run") < text.index("## Loading") < text.index("## Scale")
    assert "loader numbers" in text
    assert "new scale" in text
    assert "old scale" not in text
    assert not docs.with_suffix(".md.tmp").exists()


def test_docs_section_marks_load_and_links_plot() -> None:
    results = _results({10: 1.0, 30: 3.0})
    results["machine"] = {"cpu": "Test CPU", "logical_cores": 2, "memory_gib": 8.0, "os": "Linux", "python": "3.11", "load_average_1_5_15": [1.0, 1.0, 1.0]}
    section = bench_scale.docs_section(results, "python benchmarks/bench_scale.py --patients 10,30", under_load=True)
    assert section.startswith("## Scale\n")
    assert "Test CPU, 2 logical cores" in section
    assert "img/scale.png" in section
    assert "under load" in section


def test_plot_scale_writes_png(tmp_path: Path) -> None:
    path = bench_scale.plot_scale(_results({10: 1.0, 30: 3.0}), tmp_path / "img" / "scale.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def small_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root, _seconds = bench_scale.ensure_release(tmp_path_factory.mktemp("scale"), 2, 12, 16)
    return root


def test_index_steps_persist_then_reuse(small_release: Path, tmp_path: Path) -> None:
    first = bench_scale._step_function("index_first", small_release, tmp_path)()
    stored = sorted((tmp_path / "header-index").iterdir())
    reopened = bench_scale._step_function("index_reopen", small_release, tmp_path)()

    assert first == {"series": 2, "persisted": True}
    assert reopened == {"series": 2, "persisted": True}
    assert len(stored) == 1
    assert sorted((tmp_path / "header-index").iterdir()) == stored


def test_ensure_release_reuses_existing_folder(small_release: Path) -> None:
    root, seconds = bench_scale.ensure_release(small_release.parent, 2, 12, 16)
    assert root == small_release
    assert seconds == 0.0
    assert bench_scale.count_files(root / "dicom") == 24


@pytest.mark.slow
def test_measure_step_runs_child_process(small_release: Path, tmp_path: Path) -> None:
    measured = bench_scale.measure_step("open", small_release, tmp_path)
    assert measured["details"] == {"patients": 2}
    assert measured["seconds"] > 0
    assert measured["cpu_seconds"] > 0
    assert measured["peak_rss_mib"] >= measured["baseline_rss_mib"] > 0


def test_plot_readers_skips_empty_medians(tmp_path: Path) -> None:
    assert run_all.plot_readers({}, tmp_path / "readers.png", command="python benchmarks/bench_load.py") is None
    assert not (tmp_path / "readers.png").exists()


def test_how_to_run_section_names_command() -> None:
    machine = {"cpu": "Test CPU", "logical_cores": 2, "memory_gib": 8.0, "os": "Linux", "python": "3.11"}
    section = run_all.how_to_run_section(machine, under_load=False)
    assert section.startswith("## How to run\n")
    assert "python benchmarks/run_all.py --size small --write-docs" in section
    assert "Test CPU, 2 logical cores, 8.0 GiB RAM" in section
    assert "shared with other jobs" not in section
