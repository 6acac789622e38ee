"""The fine-tuning trainer on tiny in-memory volumes, on the CPU."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import Dataset

from tunisian_lung.errors import ConfigError, TrainingError, WeightLoadError
from tunisian_lung.models import resnet3d
from tunisian_lung.training import (
    TrainConfig,
    evaluate,
    predict_array,
    train,
    write_comparison,
)
from tunisian_lung.training.checkpoints import RunFiles

SIZE = 16


class TinyScans(Dataset[dict[str, Any]]):
    """Random 16^3 volumes whose mean is shifted by the label; two scans per patient."""

    def __init__(self, count: int, seed: int, *, fail_after: int | None = None) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.labels = [index % 2 for index in range(count)]
        self.images = [
            torch.randn(1, SIZE, SIZE, SIZE, generator=generator) + 0.5 * label
            for label in self.labels
        ]
        self.fail_after = fail_after
        self.reads = 0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        self.reads += 1
        if self.fail_after is not None and self.reads > self.fail_after:
            raise RuntimeError("simulated crash while reading a scan")
        return {
            "image": self.images[index],
            "label": torch.tensor(self.labels[index], dtype=torch.int64),
            "patient_id": f"P{index // 2:03d}",
            "series_id": f"S{index:03d}",
        }


def small_config(**changes: Any) -> TrainConfig:
    settings: dict[str, Any] = dict(
        depth=10, epochs=1, batch_size=4, device="cpu", bootstrap_resamples=50, seed=5
    )
    settings.update(changes)
    return TrainConfig(**settings)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def without_timing(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


# --- config ----------------------------------------------------------------------------------


def test_config_json_round_trip(tmp_path: Path) -> None:
    config = TrainConfig(depth=34, class_weights=(1.0, 3.0), patience=3, scheduler="step")
    path = tmp_path / "config.json"
    config.to_json(path)
    assert TrainConfig.from_json(path) == config
    assert TrainConfig.from_json(config.to_json()) == config


def test_config_defaults_follow_reference_study() -> None:
    config = TrainConfig()
    assert config.epochs == 10
    assert config.device == "auto"
    assert config.amp_dtype == "bfloat16"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("depth", 12, "choose one of"),
        ("optimizer", "rmsprop", "'adam', 'adamw' or 'sgd'"),
        ("lr", 0.0, "positive finite learning rate"),
        ("class_weights", "inverse", "'balanced'"),
        ("class_weights", (1.0,), "2 positive finite weights"),
        ("early_stopping_metric", "f1", "choose one of"),
        ("amp_dtype", "fp8", "'bfloat16'"),
        ("device", "tpu", "'auto', 'cpu' or 'cuda'"),
        ("epochs", 0, "positive integer"),
    ],
)
def test_config_rejects_invalid_value(field: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        TrainConfig(**{field: value})
    assert f"TrainConfig.{field}" in str(caught.value)


def test_config_rejects_unknown_json_field() -> None:
    with pytest.raises(ConfigError, match="unknown TrainConfig field"):
        TrainConfig.from_dict({"depth": 10, "learning_rate": 0.1})


def test_config_is_keyword_only_and_frozen() -> None:
    with pytest.raises(TypeError):
        TrainConfig(10)  # type: ignore[misc]
    config = TrainConfig()
    with pytest.raises(AttributeError):
        config.depth = 18  # type: ignore[misc]


# --- training run ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("trained") / "run"
    result = train(
        small_config(),
        TinyScans(8, 0),
        TinyScans(4, 1),
        out_dir=run,
        test_ds=TinyScans(4, 2),
        context={"dataset_root": "/data/release"},
    )
    return run, result


def test_one_epoch_writes_every_output(finished_run: tuple[Path, Any]) -> None:
    run, result = finished_run
    files = RunFiles(run)
    for path in (
        files.config, files.context, files.history_csv, files.history_json,
        files.best_checkpoint, files.last_checkpoint, files.test_metrics,
        files.test_predictions, files.curves, files.report,
    ):
        assert path.is_file(), path.name
    assert files.curves.read_bytes().startswith(b"\x89PNG")
    assert result.best_epoch == 1
    assert len(result.history) == 1

    with files.history_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1
    assert {"train_loss", "val_roc_auc", "val_tp", "lr"} <= set(rows[0])

    test = json.loads(files.test_metrics.read_text())
    assert test["metrics"]["n"] == 4
    assert test["bootstrap_unit"] == "patient"
    assert set(test["confidence_intervals"]) == {
        "accuracy", "balanced_accuracy", "sensitivity", "specificity", "roc_auc",
    }
    assert result.test_metrics is not None
    assert result.test_metrics["accuracy"] == test["metrics"]["accuracy"]
    # Binary runs keep their output format: a threshold and no per-class block.
    assert test["threshold"] == 0.5
    assert "num_classes" not in test
    assert "per_class" not in test["metrics"]
    with files.test_predictions.open() as handle:
        assert next(csv.reader(handle)) == ["patient_id", "series_id", "label", "probability", "predicted"]

    report = files.report.read_text()
    assert "## Test metrics" in report
    assert "Confusion matrix" in report
    assert TrainConfig.from_json(files.config) == small_config()
    context = json.loads(files.context.read_text())
    assert context == {"dataset_root": "/data/release"}


def test_existing_run_folder_rejected(tmp_path: Path) -> None:
    train(small_config(), TinyScans(4, 0), TinyScans(4, 1), out_dir=tmp_path)
    with pytest.raises(TrainingError, match="already contains a run"):
        train(small_config(), TinyScans(4, 0), TinyScans(4, 1), out_dir=tmp_path)


@pytest.mark.slow
def test_resume_repeats_uninterrupted_history(tmp_path: Path) -> None:
    config = small_config(epochs=2, scheduler="cosine", dropout=0.3)
    full = train(config, TinyScans(8, 0), TinyScans(4, 1), out_dir=tmp_path / "full")

    crashing = TinyScans(8, 0, fail_after=8 + 4)  # epoch 1 reads 8 scans, epoch 2 fails mid-way
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config, crashing, TinyScans(4, 1), out_dir=tmp_path / "resumed")
    saved = torch.load(RunFiles(tmp_path / "resumed").last_checkpoint, weights_only=True)
    assert saved["epoch"] == 1

    resumed = train(config, TinyScans(8, 0), TinyScans(4, 1), out_dir=tmp_path / "resumed", resume=True)
    assert without_timing(resumed.history) == without_timing(full.history)
    final_full = torch.load(RunFiles(tmp_path / "full").last_checkpoint, weights_only=True)["model"]
    final_resumed = torch.load(RunFiles(tmp_path / "resumed").last_checkpoint, weights_only=True)["model"]
    for key, value in final_full.items():
        assert torch.equal(value, final_resumed[key]), key


def test_resume_with_changed_config_rejected(tmp_path: Path) -> None:
    train(small_config(), TinyScans(4, 0), TinyScans(4, 1), out_dir=tmp_path)
    with pytest.raises(TrainingError, match=r"lr: 0.0001 -> 0.01"):
        train(small_config(lr=0.01), TinyScans(4, 0), TinyScans(4, 1), out_dir=tmp_path, resume=True)


def test_training_leaves_global_rng_alone(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(small_config(), TinyScans(4, 0), TinyScans(4, 1), out_dir=tmp_path)
    assert torch.equal(torch.rand(3), expected)


def test_frozen_backbone_keeps_weights(tmp_path: Path) -> None:
    reference = resnet3d(10, dropout=0.2)
    weights = tmp_path / "resnet_10.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, weights)
    config = small_config(pretrained=str(weights), freeze_backbone_epochs=1)
    result = train(config, TinyScans(8, 0), TinyScans(4, 1), out_dir=tmp_path / "run")
    trained = torch.load(RunFiles(tmp_path / "run").last_checkpoint, weights_only=True)["model"]
    for key, value in reference.state_dict().items():
        if key.startswith("fc."):
            continue
        assert torch.equal(trained[key], value), key
    assert not torch.equal(trained["fc.weight"], reference.state_dict()["fc.weight"])
    assert result.history[0]["frozen_backbone"] is True


def test_early_stopping_with_undefined_metric(tmp_path: Path) -> None:
    positives_only = TinyScans(4, 1)
    positives_only.labels = [1, 1, 1, 1]
    # Specificity is undefined without negatives, so no epoch improves on the first one.
    config = small_config(epochs=3, early_stopping_metric="specificity", patience=1)
    result = train(config, TinyScans(4, 0), positives_only, out_dir=tmp_path)
    assert result.stopped_early is True
    assert len(result.history) == 1
    assert result.best_epoch == 1
    assert RunFiles(tmp_path).best_checkpoint.is_file()


def test_wrong_pretrained_depth_stops_training(tmp_path: Path) -> None:
    weights = tmp_path / "resnet_18.pth"
    torch.save({"state_dict": resnet3d(18).state_dict()}, weights)
    with pytest.raises(WeightLoadError, match="ResNet18"):
        train(small_config(pretrained=str(weights)), TinyScans(4, 0), TinyScans(4, 1), out_dir=tmp_path / "run")


def test_balanced_class_weights_need_both_classes(tmp_path: Path) -> None:
    one_class = TinyScans(4, 0)
    one_class.labels = [1, 1, 1, 1]
    with pytest.raises(TrainingError, match=r"class\(es\) \[0\] have no samples"):
        train(small_config(), one_class, TinyScans(4, 1), out_dir=tmp_path)


def test_evaluate_and_predict_from_run(finished_run: tuple[Path, Any]) -> None:
    run, _ = finished_run
    test = TinyScans(6, 3)
    result = evaluate(run, test, split="holdout", device="cpu")
    assert result["metrics"]["n"] == 6
    assert (run / "evaluation_holdout.json").is_file()
    with (run / "predictions_holdout.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["series_id"] for row in rows] == [f"S{i:03d}" for i in range(6)]

    probability, label = predict_array(run, test.images[0][0].numpy(), device="cpu")
    assert probability == pytest.approx(float(rows[0]["probability"]), abs=1e-5)
    assert label == int(rows[0]["predicted"])
    assert 0.0 <= probability <= 1.0


def test_comparison_table_lists_each_model(finished_run: tuple[Path, Any], tmp_path: Path) -> None:
    run, _ = finished_run
    runs = {"resnet10": run, "resnet18": tmp_path / "missing"}
    table = write_comparison(runs, tmp_path / "comparison.md").read_text()
    assert "| resnet10 | 1 | 4 |" in table
    assert "| resnet18 | n/a | n/a | no test metrics |" in table
    assert table.count("[") >= 5


# --- command line on a synthetic release -----------------------------------------------------


@pytest.mark.slow
def test_cli_train_evaluate_predict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tunisian_lung.cli import main
    from tunisian_lung.synthetic import write_synthetic_release

    monkeypatch.setenv("TUNISIAN_LUNG_CACHE", str(tmp_path / "cache"))
    root = write_synthetic_release(tmp_path / "release", patients=10, seed=0, slices=16, rows=32)
    run = tmp_path / "run"
    code = main([
        "train", str(root), "--model", "resnet10", "--epochs", "1", "--batch-size", "4",
        "--shape", "16", "--device", "cpu", "--quiet", "--out", str(run),
    ])
    assert code == 0
    for name in ("run_context.json", "splits.json", "report.md", "test_metrics.json"):
        assert (run / name).is_file(), name
    context = json.loads((run / "run_context.json").read_text())
    assert context["preprocess"]["target_shape_zyx"] == [16, 16, 16]
    assert context["dataset_root"] == str(root.resolve())
    # Without --splits and without ROOT/splits.json, train reports that it made new splits.
    assert "new splits, make_splits(seed=" in capsys.readouterr().err

    assert main(["evaluate", str(run), "--split", "test", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "accuracy" in captured.out
    assert "95% CI" in captured.out
    assert "caution: Only" in captured.err

    series_dir = next(path for path in (root / "dicom").glob("*/*") if path.is_dir())
    assert main(["predict", str(run), str(series_dir), "--device", "cpu"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("probability=")
    assert "label=" in line

    # A NIfTI file in the folder that also contains the cache, like ~/scan.nii.gz and ~/.cache.
    nifti = tmp_path / "scan.nii.gz"
    assert main(["convert", str(series_dir), str(nifti)]) == 0
    assert main(["predict", str(run), str(nifti), "--device", "cpu"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("probability=")


def test_cli_train_help_shows_percent(capsys: pytest.CaptureFixture[str]) -> None:
    from tunisian_lung.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    output = capsys.readouterr().out
    assert "95% confidence" in output
    assert "%%" not in output


def test_cli_rejects_unknown_model(tmp_path: Path) -> None:
    from tunisian_lung.cli import main

    assert main(["train", str(tmp_path), "--model", "vgg16", "--out", str(tmp_path / "run")]) == 2
