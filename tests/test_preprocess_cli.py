"""The ``preprocess`` and ``cache`` subcommands on a small synthetic release."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tunisian_lung.cli import main


@pytest.fixture(scope="module")
def synthetic_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    synthetic = pytest.importorskip("tunisian_lung.synthetic")
    root = tmp_path_factory.mktemp("cli") / "release"
    return Path(synthetic.write_synthetic_release(root, patients=2, seed=0, slices=20, rows=32))


def test_preprocess_then_resume(synthetic_release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache_dir = tmp_path / "cache"
    arguments = ["preprocess", str(synthetic_release), "--cache-dir", str(cache_dir), "--no-progress"]
    assert main(arguments) == 0
    assert "2 series preprocessed (2 computed, 0 already cached), 0 failed" in capsys.readouterr().out
    assert main(arguments) == 0
    assert "(0 computed, 2 already cached)" in capsys.readouterr().out

    assert main(["cache", "info", "--cache-dir", str(cache_dir)]) == 0
    info = capsys.readouterr().out
    assert "entries: 2" in info
    assert str(cache_dir) in info
    assert main(["cache", "clear", "--cache-dir", str(cache_dir)]) == 0
    assert "deleted 2 cache entries" in capsys.readouterr().out
    assert main(["cache", "info", "--cache-dir", str(cache_dir)]) == 0
    assert "entries: 0" in capsys.readouterr().out


def test_preprocess_lists_failed_series(synthetic_release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import pydicom

    release = tmp_path / "broken"
    shutil.copytree(synthetic_release, release)
    series_dir = sorted((release / "dicom").glob("*/*"))[0]
    for path in series_dir.iterdir():
        ds = pydicom.dcmread(path)
        ds.PixelData = np.zeros_like(ds.pixel_array).tobytes()
        ds.save_as(path)

    code = main(["preprocess", str(release), "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1
    assert "1 series preprocessed" in captured.out
    assert "1 failed" in captured.out
    assert series_dir.name in captured.err
    assert "PreprocessError" in captured.err
    assert "constant" in captured.err


def test_preprocess_rejects_unknown_preset(synthetic_release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["preprocess", str(synthetic_release), "--preset", "nope", "--cache-dir", str(tmp_path)])
    assert code == 2
    assert "reference" in capsys.readouterr().err


def test_preprocess_rejects_cache_inside_release(synthetic_release: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["preprocess", str(synthetic_release), "--cache-dir", str(synthetic_release / "cache"), "--no-progress"])
    assert code == 1
    assert "inside the dataset folder" in capsys.readouterr().err
    assert not (synthetic_release / "cache").exists()
