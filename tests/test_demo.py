"""The demo end to end on a reduced setting: 10 synthetic patients, 1 epoch, CPU."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import pytest

from tunisian_lung.cli import EXIT_USAGE, main
from tunisian_lung.demo import MARKER_NAME, run_demo
from tunisian_lung.errors import DatasetLayoutError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo") / "out"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(
            ["demo", "--out", str(out), "--patients", "10", "--epochs", "1", "--device", "cpu", "--no-progress"]
        )
    assert code == 0
    return out, stdout.getvalue()


@pytest.mark.slow
def test_demo_prints_every_output(demo_run: tuple[Path, str]) -> None:
    out, printed = demo_run
    summary = json.loads((out / "demo_summary.json").read_text(encoding="utf-8"))
    assert set(summary["outputs"]) >= {"synthetic_release", "sample_release", "run", "report", "figure"}
    for key, path in summary["outputs"].items():
        assert Path(path).exists(), f"{key} missing at {path}"
        if key != "root":
            assert path in printed, f"{key} path not printed"


@pytest.mark.slow
def test_demo_splits_and_metrics_sane(demo_run: tuple[Path, str]) -> None:
    out, _ = demo_run
    summary = json.loads((out / "demo_summary.json").read_text(encoding="utf-8"))
    assert sum(summary["split_counts"].values()) == 10
    assert all(count >= 1 for count in summary["split_counts"].values())
    metrics = summary["test_metrics"]
    assert metrics["n"] == summary["split_counts"]["test"]
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert 0.0 <= summary["real_ct_probability"] <= 1.0
    assert summary["real_ct_label"] in (0, 1)
    assert summary["device"] == "cpu"
    assert (out / "run" / "checkpoints" / "best.pt").is_file()
    assert all(math.isfinite(seconds) and seconds >= 0 for seconds in summary["seconds"].values())


@pytest.mark.slow
def test_demo_writes_figure_and_report(demo_run: tuple[Path, str]) -> None:
    out, _ = demo_run
    figure = out / "real_ct_nodule.png"
    assert figure.read_bytes()[:8] == PNG_SIGNATURE
    assert figure.stat().st_size > 20_000
    report = (out / "demo_report.md").read_text(encoding="utf-8")
    assert "real_ct_nodule.png" in report
    assert "Predicted probability of cancer" in report
    assert "no errors" in report


@pytest.mark.slow
def test_demo_rerun_needs_overwrite(demo_run: tuple[Path, str]) -> None:
    out, _ = demo_run
    with pytest.raises(DatasetLayoutError, match="--overwrite"):
        run_demo(out, patients=10, epochs=1)


def test_demo_rejects_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("user data")
    with pytest.raises(DatasetLayoutError, match="not written by the demo"):
        run_demo(tmp_path, patients=10, epochs=1, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "user data"
    assert not (tmp_path / MARKER_NAME).exists()


def test_demo_cli_rejects_small_cohort(tmp_path: Path) -> None:
    assert main(["demo", "--out", str(tmp_path / "out"), "--patients", "4"]) == EXIT_USAGE
    assert not (tmp_path / "out").exists()


def test_demo_overwrite_clears_previous_run(tmp_path: Path) -> None:
    from tunisian_lung.demo import _prepare_output

    previous = tmp_path / "demo"
    previous.mkdir()
    (previous / MARKER_NAME).write_text("written by the demo")
    (previous / "demo_report.md").write_text("old report")
    _prepare_output(previous, overwrite=True)
    assert sorted(path.name for path in previous.iterdir()) == [MARKER_NAME]
