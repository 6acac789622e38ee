"""Multi-class targets (such as stages I-IV): metrics against scikit-learn, trainer, report, CLI."""

from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from torch.utils.data import Dataset

from tunisian_lung.errors import ConfigError, TrainingError
from tunisian_lung.training import (
    TrainConfig,
    evaluate,
    multiclass_bootstrap_ci,
    multiclass_metrics,
    one_vs_rest_roc_auc,
    predict_array,
    predict_probabilities_array,
    train,
    write_comparison,
)
from tunisian_lung.training.checkpoints import RunFiles
from tunisian_lung.training.metrics import confusion_matrix

SIZE = 12
CLASSES = 4
STAGES = ("I", "II", "III", "IV")


class TinyStages(Dataset[dict[str, Any]]):
    """Random 12^3 volumes of four classes whose mean grows with the label; two scans per patient."""

    class_names = STAGES

    def __init__(self, count: int, seed: int, *, fail_after: int | None = None) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.labels = [(index // 2) % CLASSES for index in range(count)]
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


def stage_config(**changes: Any) -> TrainConfig:
    settings: dict[str, Any] = dict(
        depth=10, num_classes=CLASSES, epochs=1, batch_size=4, device="cpu",
        bootstrap_resamples=50, seed=5, early_stopping_metric="balanced_accuracy",
    )
    settings.update(changes)
    return TrainConfig(**settings)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture
def scored() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    labels = rng.integers(0, CLASSES, size=80)
    raw = rng.dirichlet(np.ones(CLASSES), size=80) + 0.4 * np.eye(CLASSES)[labels]
    # Rounding creates tied scores, which every one-vs-rest AUC must count as one half.
    rounded = np.round(raw, 1) + 1e-3
    return labels, rounded / rounded.sum(axis=1, keepdims=True)


# --- metrics ----------------------------------------------------------------------------------


def test_confusion_matrix_k_classes_matches_sklearn(scored: tuple[np.ndarray, np.ndarray]) -> None:
    labels, probabilities = scored
    predicted = probabilities.argmax(axis=1)
    expected = skm.confusion_matrix(labels, predicted, labels=list(range(CLASSES)))
    matrix = confusion_matrix(labels, predicted, num_classes=CLASSES)
    assert matrix.shape == (CLASSES, CLASSES)
    assert matrix.tolist() == expected.tolist()


def test_summary_metrics_match_sklearn(scored: tuple[np.ndarray, np.ndarray]) -> None:
    labels, probabilities = scored
    predicted = probabilities.argmax(axis=1)
    result = multiclass_metrics(labels, probabilities, loss=0.7)
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(labels, predicted))
    assert result["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(labels, predicted))
    assert result["roc_auc"] == pytest.approx(
        skm.roc_auc_score(labels, probabilities, multi_class="ovr", average="macro"), abs=1e-12
    )
    assert result["loss"] == 0.7
    assert result["n"] == 80
    assert result["num_classes"] == CLASSES


def test_per_class_metrics_match_sklearn(scored: tuple[np.ndarray, np.ndarray]) -> None:
    labels, probabilities = scored
    predicted = probabilities.argmax(axis=1)
    per_class = multiclass_metrics(labels, probabilities)["per_class"]
    classes = list(range(CLASSES))
    assert per_class["support"] == np.bincount(labels, minlength=CLASSES).tolist()
    np.testing.assert_allclose(per_class["recall"], skm.recall_score(labels, predicted, labels=classes, average=None))
    np.testing.assert_allclose(
        per_class["precision"], skm.precision_score(labels, predicted, labels=classes, average=None)
    )
    for k in classes:
        one_vs_rest = (labels == k).astype(int)
        expected_auc = skm.roc_auc_score(one_vs_rest, probabilities[:, k])
        assert per_class["roc_auc"][k] == pytest.approx(expected_auc, abs=1e-12), k
        # Specificity of class k is the recall of "not k" among the samples of other classes.
        expected_specificity = skm.recall_score(one_vs_rest, (predicted == k).astype(int), pos_label=0)
        assert per_class["specificity"][k] == pytest.approx(expected_specificity), k


def test_one_vs_rest_auc_matches_sklearn(scored: tuple[np.ndarray, np.ndarray]) -> None:
    labels, probabilities = scored
    expected = skm.roc_auc_score(labels, probabilities, multi_class="ovr", average=None)
    np.testing.assert_allclose(one_vs_rest_roc_auc(labels, probabilities), expected, atol=1e-12)


def test_metrics_hand_computed_three_classes() -> None:
    labels = [0, 0, 1, 1, 2, 2]
    probabilities = [
        [0.7, 0.2, 0.1],  # 0 -> 0
        [0.2, 0.5, 0.3],  # 0 -> 1
        [0.1, 0.8, 0.1],  # 1 -> 1
        [0.1, 0.6, 0.3],  # 1 -> 1
        [0.3, 0.3, 0.4],  # 2 -> 2
        [0.5, 0.1, 0.4],  # 2 -> 0
    ]
    result = multiclass_metrics(labels, probabilities)
    assert result["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["per_class"]["recall"] == pytest.approx([0.5, 1.0, 0.5])
    assert result["balanced_accuracy"] == pytest.approx(2 / 3)
    assert result["per_class"]["precision"] == pytest.approx([0.5, 2 / 3, 1.0])
    # Class 0 against the rest: negatives 1, 1, 2, 2 predicted as 0 once (the last sample).
    assert result["per_class"]["specificity"] == pytest.approx([3 / 4, 3 / 4, 1.0])
    assert math.isnan(result["loss"])


def test_absent_class_is_left_out_of_macro_values() -> None:
    labels = np.array([0, 0, 1, 1, 1])
    probabilities = np.array([
        [0.6, 0.3, 0.1],
        [0.2, 0.3, 0.5],
        [0.1, 0.8, 0.1],
        [0.5, 0.4, 0.1],
        [0.2, 0.7, 0.1],
    ])
    result = multiclass_metrics(labels, probabilities)
    per_class = result["per_class"]
    assert per_class["support"] == [2, 3, 0]
    assert math.isnan(per_class["recall"][2])
    assert math.isnan(per_class["roc_auc"][2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn warns that class 2 is only predicted
        expected_balanced = skm.balanced_accuracy_score(labels, probabilities.argmax(axis=1))
    assert result["balanced_accuracy"] == pytest.approx(expected_balanced)
    defined_auc = [per_class["roc_auc"][0], per_class["roc_auc"][1]]
    assert result["roc_auc"] == pytest.approx(np.mean(defined_auc))


def test_multiclass_labels_out_of_range_rejected() -> None:
    with pytest.raises(ValueError, match=r"0\.\.2, got \[3\]"):
        multiclass_metrics([0, 3], [[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])


def test_probability_shape_mismatch_rejected() -> None:
    with pytest.raises(ValueError, match=r"shape \(3, K\)"):
        multiclass_metrics([0, 1, 2], [[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])


def test_multiclass_bootstrap_seeded_and_covers(scored: tuple[np.ndarray, np.ndarray]) -> None:
    labels, probabilities = scored
    first = multiclass_bootstrap_ci(labels, probabilities, n_resamples=200, seed=3)
    second = multiclass_bootstrap_ci(labels, probabilities, n_resamples=200, seed=3)
    other = multiclass_bootstrap_ci(labels, probabilities, n_resamples=200, seed=4)
    assert first == second
    assert first != other
    assert set(first) == {"accuracy", "balanced_accuracy", "roc_auc"}
    point = multiclass_metrics(labels, probabilities)
    for name, (low, high) in first.items():
        assert low <= point[name] <= high, name
        assert low < high, name


def test_multiclass_bootstrap_by_patient_is_wider() -> None:
    rng = np.random.default_rng(0)
    patient_labels = rng.integers(0, 3, size=24)
    patient_scores = rng.dirichlet(np.ones(3), size=24) + 0.3 * np.eye(3)[patient_labels]
    labels = np.repeat(patient_labels, 5)
    probabilities = np.repeat(patient_scores / patient_scores.sum(axis=1, keepdims=True), 5, axis=0)
    patients = [f"P{i}" for i in np.repeat(np.arange(24), 5)]
    by_scan = multiclass_bootstrap_ci(labels, probabilities, n_resamples=300, seed=1)
    by_patient = multiclass_bootstrap_ci(labels, probabilities, patient_ids=patients, n_resamples=300, seed=1)
    scan_width = by_scan["accuracy"][1] - by_scan["accuracy"][0]
    patient_width = by_patient["accuracy"][1] - by_patient["accuracy"][0]
    assert patient_width > 1.5 * scan_width


def test_multiclass_bootstrap_single_class_auc_undefined() -> None:
    probabilities = np.tile([0.5, 0.3, 0.2], (6, 1))
    intervals = multiclass_bootstrap_ci([0] * 6, probabilities, n_resamples=20, seed=0)
    assert intervals["accuracy"] == (1.0, 1.0)
    assert intervals["balanced_accuracy"] == (1.0, 1.0)
    assert all(math.isnan(bound) for bound in intervals["roc_auc"])


# --- config -----------------------------------------------------------------------------------


def test_config_accepts_four_classes() -> None:
    config = TrainConfig(num_classes=4, class_weights=(1.0, 2.0, 2.0, 1.0), early_stopping_metric="roc_auc")
    assert TrainConfig.from_json(config.to_json()) == config


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"num_classes": 1}, "num_classes", "at least 2"),
        ({"num_classes": 4, "early_stopping_metric": "sensitivity"}, "early_stopping_metric", "for 4 classes"),
        ({"num_classes": 4, "threshold": 0.3}, "threshold", "most probable class"),
        ({"num_classes": 4, "class_weights": (1.0, 2.0)}, "class_weights", "4 positive finite weights"),
    ],
)
def test_config_rejects_invalid_multiclass(changes: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        TrainConfig(**changes)
    assert f"TrainConfig.{field}" in str(caught.value)


# --- training run -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stage_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("stages") / "run"
    result = train(
        stage_config(),
        TinyStages(8, 0),
        TinyStages(8, 1),
        out_dir=run,
        test_ds=TinyStages(8, 2),
        context={"dataset_root": "/data/release", "class_names": list(STAGES)},
    )
    return run, result


def test_stage_run_writes_every_output(stage_run: tuple[Path, Any]) -> None:
    run, result = stage_run
    files = RunFiles(run)
    for path in (
        files.config, files.context, files.history_csv, files.history_json,
        files.best_checkpoint, files.last_checkpoint, files.test_metrics,
        files.test_predictions, files.curves, files.report,
    ):
        assert path.is_file(), path.name
    assert files.curves.read_bytes().startswith(b"\x89PNG")
    assert len(result.history) == 1

    with files.history_csv.open() as handle:
        columns = set(next(csv.DictReader(handle)))
    assert {"val_loss", "val_balanced_accuracy", "val_roc_auc", "val_recall_3", "train_recall_0"} <= columns
    assert "val_sensitivity" not in columns

    test = json.loads(files.test_metrics.read_text())
    assert test["num_classes"] == CLASSES
    assert test["class_names"] == list(STAGES)
    assert "threshold" not in test
    assert test["bootstrap_unit"] == "patient"
    assert set(test["confidence_intervals"]) == {"accuracy", "balanced_accuracy", "roc_auc"}
    used = test["bootstrap_resamples_used"]
    assert used["accuracy"] == 50
    assert 0 < used["balanced_accuracy"] <= 50
    metrics = test["metrics"]
    assert len(metrics["confusion_matrix"]) == CLASSES
    assert sum(map(sum, metrics["confusion_matrix"])) == 8
    assert metrics["per_class"]["support"] == [2, 2, 2, 2]
    assert result.test_metrics is not None
    assert result.test_metrics["balanced_accuracy"] == metrics["balanced_accuracy"]


def test_stage_predictions_csv_has_class_columns(stage_run: tuple[Path, Any]) -> None:
    run, _ = stage_run
    with RunFiles(run).test_predictions.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [
        "patient_id", "series_id", "label",
        "probability_0", "probability_1", "probability_2", "probability_3", "predicted",
    ]
    for row in rows:
        probabilities = [float(row[f"probability_{k}"]) for k in range(CLASSES)]
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)
        assert int(row["predicted"]) == int(np.argmax(probabilities))


def test_stage_report_tables(stage_run: tuple[Path, Any]) -> None:
    run, _ = stage_run
    report = RunFiles(run).report.read_text()
    assert "macro ROC AUC (one-vs-rest)" in report
    assert "| class | scans | recall | specificity | precision | ROC AUC |" in report
    assert "| 3 (IV) | 2 |" in report
    assert "| | predicted I | predicted II | predicted III | predicted IV |" in report
    assert report.count("| true ") == CLASSES
    assert "val macro AUC" in report


def test_stage_evaluate_and_predict(stage_run: tuple[Path, Any]) -> None:
    run, _ = stage_run
    holdout = TinyStages(8, 3)
    result = evaluate(run, holdout, split="holdout", device="cpu")
    assert result["metrics"]["num_classes"] == CLASSES
    evaluation = json.loads((run / "evaluation_holdout.json").read_text())
    assert evaluation["class_names"] == list(STAGES)
    with (run / "predictions_holdout.csv").open() as handle:
        first = next(csv.DictReader(handle))

    prediction = predict_probabilities_array(run, holdout.images[0][0].numpy(), device="cpu")
    assert len(prediction.probabilities) == CLASSES
    assert sum(prediction.probabilities) == pytest.approx(1.0, abs=1e-5)
    for k in range(CLASSES):
        assert prediction.probabilities[k] == pytest.approx(float(first[f"probability_{k}"]), abs=1e-5)
    assert prediction.label == int(first["predicted"])
    assert prediction.class_name == STAGES[prediction.label]


def test_binary_predict_array_rejects_stage_run(stage_run: tuple[Path, Any]) -> None:
    run, _ = stage_run
    with pytest.raises(TrainingError, match="predict_probabilities_array"):
        predict_array(run, np.zeros((SIZE, SIZE, SIZE), dtype=np.float32), device="cpu")


def test_stage_comparison_uses_macro_columns(stage_run: tuple[Path, Any], tmp_path: Path) -> None:
    run, _ = stage_run
    table = write_comparison({"resnet10": run, "resnet18": tmp_path / "missing"}, tmp_path / "c.md").read_text()
    assert "macro ROC AUC [95% CI]" in table
    assert "sensitivity" not in table
    assert "| resnet10 | 1 | 8 |" in table
    assert "| resnet18 | n/a | n/a | no test metrics | | |" in table


def test_class_count_mismatch_rejected(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match=r"4 classes \['I', 'II', 'III', 'IV'\].*num_classes=4"):
        train(stage_config(num_classes=2, early_stopping_metric="loss"), TinyStages(8, 0), TinyStages(8, 1), out_dir=tmp_path)
    assert not RunFiles(tmp_path).last_checkpoint.exists()


def test_label_outside_classes_rejected(tmp_path: Path) -> None:
    three = TinyStages(8, 0)
    three.class_names = ("I", "II", "III")  # type: ignore[misc]
    with pytest.raises(TrainingError, match=r"labels \[3\] outside 0\.\.2"):
        train(stage_config(num_classes=3), three, TinyStages(8, 1), out_dir=tmp_path)


@pytest.mark.slow
def test_stage_resume_repeats_uninterrupted_history(tmp_path: Path) -> None:
    config = stage_config(epochs=2, dropout=0.3)
    full = train(config, TinyStages(8, 0), TinyStages(8, 1), out_dir=tmp_path / "full")

    crashing = TinyStages(8, 0, fail_after=8 + 4)  # epoch 1 reads 8 scans, epoch 2 fails mid-way
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config, crashing, TinyStages(8, 1), out_dir=tmp_path / "resumed")
    resumed = train(config, TinyStages(8, 0), TinyStages(8, 1), out_dir=tmp_path / "resumed", resume=True)

    def without_timing(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in history]

    assert without_timing(resumed.history) == without_timing(full.history)
    final_full = torch.load(RunFiles(tmp_path / "full").last_checkpoint, weights_only=True)["model"]
    final_resumed = torch.load(RunFiles(tmp_path / "resumed").last_checkpoint, weights_only=True)["model"]
    for key, value in final_full.items():
        assert torch.equal(value, final_resumed[key]), key


@pytest.mark.slow
def test_cli_stage_target_train_evaluate_predict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tunisian_lung.cli import main
    from tunisian_lung.synthetic import write_synthetic_release

    monkeypatch.setenv("TUNISIAN_LUNG_CACHE", str(tmp_path / "cache"))
    root = write_synthetic_release(tmp_path / "release", patients=16, seed=0, slices=16, rows=32)
    run = tmp_path / "run"
    arguments = [
        "train", str(root), "--target", "stage", "--epochs", "1", "--batch-size", "4",
        "--shape", "16", "--device", "cpu", "--quiet", "--out", str(run),
    ]
    # Healthy patients have no stage, so the target needs the explicit opt-in.
    assert main(arguments) == 2
    assert "--exclude-unlabeled" in capsys.readouterr().err

    assert main([*arguments, "--exclude-unlabeled"]) == 0
    context = json.loads((run / "run_context.json").read_text())
    assert context["class_names"] == list(STAGES)
    assert context["exclude_unlabeled"] is True
    assert TrainConfig.from_json(run / "config.json").num_classes == CLASSES
    test = json.loads((run / "test_metrics.json").read_text())
    assert test["class_names"] == list(STAGES)

    capsys.readouterr()
    assert main(["evaluate", str(run), "--split", "test", "--device", "cpu"]) == 0
    output = capsys.readouterr().out
    assert "macro_roc_auc" in output
    assert "class 3 (IV)" in output

    series_dir = next(path for path in (root / "dicom").glob("*/*") if path.is_dir())
    assert main(["predict", str(run), str(series_dir), "--device", "cpu"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("probabilities=")
    assert len(line.split()[0].split("=")[1].split(",")) == CLASSES


def test_cli_stage_rejects_binary_metric(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tunisian_lung.cli import main

    code = main([
        "train", str(tmp_path), "--target", "stage", "--early-stopping-metric", "sensitivity",
        "--out", str(tmp_path / "run"),
    ])
    assert code == 2
    assert "early_stopping_metric='sensitivity'" in capsys.readouterr().err
