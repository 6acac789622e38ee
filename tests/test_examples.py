"""The example scripts and the notebook run on the sample data and produce their documented outputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tunisian_lung import layout
from tunisian_lung.io import load_volume
from tunisian_lung.io.nifti import read_nifti
from tunisian_lung.synthetic import write_synthetic_release

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(script: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


@pytest.mark.slow
def test_quickstart_runs(tmp_path: Path) -> None:
    result = _run("quickstart.py", "--out", str(tmp_path), "--patients", "10")
    assert result.returncode == 0, result.stderr
    assert "HU there" in result.stdout
    assert "first training sample: image (1, 64, 64, 64)" in result.stdout


def test_convert_to_nifti_round_trip(tmp_path: Path) -> None:
    release = write_synthetic_release(tmp_path / "release", patients=2, seed=5)
    result = _run("convert_to_nifti.py", str(release), str(tmp_path / "converted"))
    assert result.returncode == 0, result.stderr
    for folder in sorted((release / layout.DICOM_DIR).glob("*/*")):
        patient_id, series_id = folder.parent.name, folder.name
        nifti = read_nifti(layout.series_nifti_path(tmp_path / "converted", patient_id, series_id))
        dicom = load_volume(folder)
        assert nifti.same_geometry(dicom), series_id
        assert np.array_equal(nifti.array, dicom.array), series_id


def test_convert_to_nifti_keeps_release_read_only(tmp_path: Path) -> None:
    release = write_synthetic_release(tmp_path / "release", patients=1, seed=5)
    result = _run("convert_to_nifti.py", str(release), str(release / "nifti"))
    assert result.returncode == 2
    assert "outside the release" in result.stderr
    assert not (release / "nifti").exists()


def test_finetune_without_weights_explains(tmp_path: Path) -> None:
    result = _run("finetune_medicalnet.py", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "--weights" in result.stdout
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_finetune_loads_medicalnet_file(tmp_path: Path) -> None:
    from tunisian_lung.models import resnet3d

    # A checkpoint in MedicalNet's layout (DataParallel "module." keys, no classifier head),
    # filled with random weights because the real file cannot be downloaded in tests.
    backbone = {
        f"module.{key}": value for key, value in resnet3d(10).state_dict().items() if not key.startswith("fc.")
    }
    weights = tmp_path / "resnet_10.pth"
    torch.save({"state_dict": backbone}, weights)
    result = _run(
        "finetune_medicalnet.py", "--weights", str(weights), "--patients", "10", "--epochs", "1",
        "--device", "cpu", "--out", str(tmp_path / "out"),
    )
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout
    assert (tmp_path / "out" / "run" / "checkpoints" / "best.pt").is_file()


@pytest.mark.slow
def test_notebook_runs_top_to_bottom() -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(EXAMPLES / "notebook_splits.ipynb", as_version=4)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3").execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.get("output_type") == "error"]
    shapes = [o["data"]["text/plain"] for o in outputs if "torch.Size([" in o.get("data", {}).get("text/plain", "")]
    assert shapes and "64, 64, 64" in shapes[0]
