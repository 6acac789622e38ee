"""Binary metrics and bootstrap intervals against scikit-learn and hand-computed values."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from tunisian_lung.training.metrics import binary_metrics, bootstrap_ci, confusion_matrix, roc_auc


@pytest.fixture
def scored() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, size=60)
    # Rounded scores create many ties, which the AUC must count as one half.
    scores = np.round(np.clip(0.3 * labels + rng.normal(0.4, 0.25, size=60), 0, 1), 1)
    return labels, scores


def test_confusion_matrix_matches_sklearn(scored: tuple[np.ndarray, np.ndarray]) -> None:
    labels, scores = scored
    predicted = (scores >= 0.5).astype(int)
    expected = skm.confusion_matrix(labels, predicted, labels=[0, 1])
    assert confusion_matrix(labels, predicted).tolist() == expected.tolist()


def test_roc_auc_with_ties_matches_sklearn(scored: tuple[np.ndarray, np.ndarray]) -> None:
    labels, scores = scored
    assert roc_auc(labels, scores) == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-12)


def test_roc_auc_hand_computed() -> None:
    # Pairs (pos, neg): (0.8, 0.1) win, (0.8, 0.4) win, (0.4, 0.1) win, (0.4, 0.4) tie -> 3.5 / 4.
    assert roc_auc([1, 1, 0, 0], [0.8, 0.4, 0.1, 0.4]) == pytest.approx(0.875)


def test_roc_auc_one_class_is_nan() -> None:
    assert math.isnan(roc_auc([1, 1, 1], [0.2, 0.5, 0.9]))


def test_binary_metrics_match_sklearn(scored: tuple[np.ndarray, np.ndarray]) -> None:
    labels, scores = scored
    result = binary_metrics(labels, scores, threshold=0.5, loss=0.25)
    predicted = (scores >= 0.5).astype(int)
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(labels, predicted))
    assert result["balanced_accuracy"] == pytest.approx(
        skm.balanced_accuracy_score(labels, predicted)
    )
    assert result["sensitivity"] == pytest.approx(skm.recall_score(labels, predicted, pos_label=1))
    assert result["specificity"] == pytest.approx(skm.recall_score(labels, predicted, pos_label=0))
    assert result["roc_auc"] == pytest.approx(skm.roc_auc_score(labels, scores))
    assert result["loss"] == 0.25
    assert result["n"] == 60


def test_binary_metrics_hand_computed() -> None:
    result = binary_metrics([1, 1, 1, 0, 0], [0.9, 0.6, 0.2, 0.7, 0.1])
    assert result["confusion_matrix"] == [[1, 1], [1, 2]]
    assert result["sensitivity"] == pytest.approx(2 / 3)
    assert result["specificity"] == pytest.approx(1 / 2)
    assert result["accuracy"] == pytest.approx(3 / 5)
    assert result["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert math.isnan(result["loss"])


def test_sensitivity_without_positives_is_nan() -> None:
    result = binary_metrics([0, 0], [0.1, 0.8])
    assert math.isnan(result["sensitivity"])
    assert result["specificity"] == 0.5
    assert result["balanced_accuracy"] == 0.5


def test_invalid_labels_rejected() -> None:
    with pytest.raises(ValueError, match=r"0 or 1, got \[2\]"):
        binary_metrics([0, 2], [0.1, 0.2])


def test_score_count_mismatch_rejected() -> None:
    with pytest.raises(ValueError, match="expected 3 scores"):
        roc_auc([0, 1, 1], [0.1, 0.2])


def test_bootstrap_is_seeded_and_covers_estimate(scored: tuple[np.ndarray, np.ndarray]) -> None:
    labels, scores = scored
    first = bootstrap_ci(labels, scores, n_resamples=300, seed=3)
    second = bootstrap_ci(labels, scores, n_resamples=300, seed=3)
    other = bootstrap_ci(labels, scores, n_resamples=300, seed=4)
    assert first == second
    assert first != other
    point = binary_metrics(labels, scores)
    for name, (low, high) in first.items():
        assert low <= point[name] <= high, name
        assert low < high, name


def test_bootstrap_by_patient_is_wider_for_duplicates() -> None:
    rng = np.random.default_rng(0)
    patient_labels = rng.integers(0, 2, size=20)
    patient_scores = np.clip(0.25 * patient_labels + rng.normal(0.4, 0.2, size=20), 0, 1)
    # Every patient has five identical scans: scan-level resampling overstates the sample size.
    labels = np.repeat(patient_labels, 5)
    scores = np.repeat(patient_scores, 5)
    patients = [f"P{i}" for i in np.repeat(np.arange(20), 5)]
    by_scan = bootstrap_ci(labels, scores, n_resamples=400, seed=1)
    by_patient = bootstrap_ci(labels, scores, patient_ids=patients, n_resamples=400, seed=1)
    scan_width = by_scan["accuracy"][1] - by_scan["accuracy"][0]
    patient_width = by_patient["accuracy"][1] - by_patient["accuracy"][0]
    assert patient_width > 1.5 * scan_width


def test_bootstrap_patient_count_mismatch_rejected() -> None:
    with pytest.raises(ValueError, match="2 patient ids for 3 samples"):
        bootstrap_ci([0, 1, 1], [0.1, 0.5, 0.9], patient_ids=["a", "b"])


# --- warnings about small test splits ----------------------------------------------------------


def test_warnings_small_single_class_split() -> None:
    from tunisian_lung.training.report import sample_size_warnings

    metrics = binary_metrics([1, 1, 1], [0.9, 0.8, 0.7])
    intervals = {"accuracy": (1.0, 1.0), "specificity": (None, None), "roc_auc": (math.nan, math.nan)}
    warnings = sample_size_warnings(metrics, intervals, ["healthy", "cancer"])
    assert len(warnings) == 3
    assert "Only 3 scans" in warnings[0]
    assert "class 0 (healthy)" in warnings[1]
    assert "specificity and ROC AUC are undefined" in warnings[1]
    assert "balanced accuracy equals sensitivity" in warnings[1]
    assert "intervals of accuracy have zero width" in warnings[2]


def test_warnings_missing_positive_class() -> None:
    from tunisian_lung.training.report import sample_size_warnings

    warnings = sample_size_warnings(binary_metrics([0, 0], [0.1, 0.6]))
    assert "class 1 was evaluated" in warnings[1]
    assert "sensitivity and ROC AUC are undefined" in warnings[1]
    assert "balanced accuracy equals specificity" in warnings[1]


def test_warnings_missing_multiclass_class() -> None:
    from tunisian_lung.training.metrics import multiclass_metrics
    from tunisian_lung.training.report import sample_size_warnings

    probabilities = np.full((4, 3), 1 / 3)
    warnings = sample_size_warnings(multiclass_metrics([0, 1, 0, 1], probabilities), None, ["I", "II", "III"])
    assert "class 2 (III)" in warnings[1]
    assert "macro ROC AUC average only" in warnings[1]


def test_no_warnings_large_two_class_split() -> None:
    from tunisian_lung.training.report import SMALL_TEST_SCANS, sample_size_warnings

    labels = np.arange(SMALL_TEST_SCANS) % 2
    metrics = binary_metrics(labels, np.linspace(0.0, 1.0, SMALL_TEST_SCANS))
    assert sample_size_warnings(metrics, {"accuracy": (0.6, 0.9)}) == []


def test_run_report_shows_caution(tmp_path: Path) -> None:
    import json

    from tunisian_lung.training.report import write_comparison, write_run_report

    metrics = binary_metrics([1, 1, 1], [0.9, 0.8, 0.7])
    test = {"metrics": metrics, "confidence_intervals": {"accuracy": [1.0, 1.0]}, "checkpoint_epoch": 1}
    (tmp_path / "config.json").write_text(json.dumps({"depth": 10}))
    (tmp_path / "test_metrics.json").write_text(json.dumps(test))
    (tmp_path / "run_context.json").write_text(json.dumps({"class_names": ["healthy", "cancer"]}))
    report = write_run_report(tmp_path).read_text()
    assert "**Caution:** Only 3 scans" in report
    assert "class 0 (healthy)" in report
    comparison = write_comparison({"resnet10": tmp_path}, tmp_path / "comparison.md").read_text()
    assert "**Caution:** Only 3 scans" in comparison
