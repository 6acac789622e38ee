"""Binary and multi-class classification metrics with bootstrap confidence intervals.

Binary labels are 0 (negative) and 1 (positive), and binary scores are the predicted probability
of class 1. Multi-class labels are ``0 .. K-1`` and scores are a ``(n, K)`` matrix of class
probabilities. Undefined values (sensitivity without positives, ROC AUC with one class) are
``nan``, never a guessed 0 or 1.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata

__all__ = [
    "MULTICLASS_CI_METRICS",
    "confusion_matrix",
    "roc_auc",
    "one_vs_rest_roc_auc",
    "binary_metrics",
    "multiclass_metrics",
    "bootstrap_ci",
    "multiclass_bootstrap",
    "multiclass_bootstrap_ci",
]

logger = logging.getLogger(__name__)

ArrayLike = npt.ArrayLike


def _as_labels(y_true: ArrayLike, num_classes: int = 2) -> npt.NDArray[np.int64]:
    labels = np.asarray(y_true)
    if labels.ndim != 1:
        raise ValueError(f"labels must be a 1-D array, got shape {labels.shape}")
    valid = tuple(range(num_classes))
    if labels.size and not np.isin(labels, valid).all():
        bad = sorted(set(np.unique(labels).tolist()) - set(valid))
        if num_classes == 2:
            raise ValueError(f"binary labels must be 0 or 1, got {bad[:5]}")
        raise ValueError(f"labels of {num_classes} classes must be in 0..{num_classes - 1}, got {bad[:5]}")
    return labels.astype(np.int64)


def _check_num_classes(num_classes: int) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer of at least 2, got {num_classes!r}")


def _labels_and_probabilities(
    y_true: ArrayLike, probabilities: ArrayLike
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Validate ``(n,)`` class indices against ``(n, K)`` class probabilities."""
    labels = np.asarray(y_true)
    if labels.ndim != 1:
        raise ValueError(f"labels must be a 1-D array, got shape {labels.shape}")
    values = np.asarray(probabilities, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] != labels.size or values.shape[1] < 2:
        raise ValueError(
            f"expected class probabilities of shape ({labels.size}, K) with K >= 2 to match the "
            f"labels, got shape {values.shape}"
        )
    if not np.isfinite(values).all():
        raise ValueError("class probabilities contain NaN or infinite values")
    return _as_labels(labels, values.shape[1]), values


def _as_scores(scores: ArrayLike, size: int) -> npt.NDArray[np.float64]:
    values = np.asarray(scores, dtype=np.float64)
    if values.shape != (size,):
        raise ValueError(f"expected {size} scores to match the labels, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("scores contain NaN or infinite values")
    return values


def confusion_matrix(
    y_true: ArrayLike, y_pred: ArrayLike, *, num_classes: int = 2
) -> npt.NDArray[np.int64]:
    """Count outcomes as a ``(num_classes, num_classes)`` int64 array.

    Rows are the true class and columns the predicted class, as in scikit-learn, so the binary
    matrix is ``[[tn, fp], [fn, tp]]``. Labels must lie in ``0 .. num_classes - 1``.
    """
    _check_num_classes(num_classes)
    truth = _as_labels(y_true, num_classes)
    predicted = _as_labels(y_pred, num_classes)
    if truth.shape != predicted.shape:
        raise ValueError(f"{truth.size} labels but {predicted.size} predictions")
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (truth, predicted), 1)
    return matrix


def roc_auc(y_true: ArrayLike, scores: ArrayLike) -> float:
    """Compute the area under the ROC curve from the Mann-Whitney U statistic.

    Tied scores count one half, which equals the trapezoidal area under the ROC curve.
    Returns ``nan`` when either class is absent.
    """
    truth = _as_labels(y_true)
    values = _as_scores(scores, truth.size)
    positives = int(truth.sum())
    negatives = truth.size - positives
    if positives == 0 or negatives == 0:
        return math.nan
    ranks = rankdata(values)  # average ranks for ties
    rank_sum = float(ranks[truth == 1].sum())
    u_statistic = rank_sum - positives * (positives + 1) / 2.0
    return u_statistic / (positives * negatives)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def binary_metrics(
    y_true: ArrayLike,
    probabilities: ArrayLike,
    *,
    threshold: float = 0.5,
    loss: float | None = None,
) -> dict[str, Any]:
    """Compute accuracy, balanced accuracy, sensitivity, specificity, ROC AUC and counts.

    Parameters
    ----------
    y_true
        Shape ``(n,)``, values 0 or 1.
    probabilities
        Shape ``(n,)``, predicted probability of class 1.
    threshold
        Probabilities at or above it are predicted positive.
    loss
        Mean loss over the same samples, copied into the result when given.

    Returns
    -------
    dict
        ``accuracy``, ``balanced_accuracy``, ``sensitivity``, ``specificity``, ``roc_auc``
        (floats, ``nan`` when undefined), ``loss`` (float or ``nan``), ``n`` and
        ``confusion_matrix`` (``[[tn, fp], [fn, tp]]`` as nested lists).
    """
    truth = _as_labels(y_true)
    scores = _as_scores(probabilities, truth.size)
    predicted = (scores >= threshold).astype(np.int64)
    matrix = confusion_matrix(truth, predicted)
    (tn, fp), (fn, tp) = matrix.tolist()
    sensitivity = _ratio(tp, tp + fn)
    specificity = _ratio(tn, tn + fp)
    defined = [value for value in (sensitivity, specificity) if not math.isnan(value)]
    return {
        "loss": math.nan if loss is None else float(loss),
        "accuracy": _ratio(tp + tn, truth.size),
        "balanced_accuracy": float(np.mean(defined)) if defined else math.nan,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "roc_auc": roc_auc(truth, scores),
        "n": int(truth.size),
        "confusion_matrix": matrix.tolist(),
    }


def one_vs_rest_roc_auc(y_true: ArrayLike, probabilities: ArrayLike) -> npt.NDArray[np.float64]:
    """Compute the one-vs-rest ROC AUC of every class.

    Parameters
    ----------
    y_true
        Shape ``(n,)``, class indices ``0 .. K-1``.
    probabilities
        Shape ``(n, K)``, predicted probability of each class.

    Returns
    -------
    numpy.ndarray
        Shape ``(K,)`` float64: the AUC of class ``k`` against all other classes, scored by
        column ``k`` (see :func:`roc_auc`). It is ``nan`` for a class that is absent from
        ``y_true`` or is its only class.
    """
    truth, scores = _labels_and_probabilities(y_true, probabilities)
    return np.array(
        [roc_auc((truth == k).astype(np.int64), scores[:, k]) for k in range(scores.shape[1])],
        dtype=np.float64,
    )


def _nan_mean(values: npt.NDArray[np.float64]) -> float:
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else math.nan


def _per_class_recall(matrix: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    support = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(matrix) / np.maximum(support, 1), math.nan)


def multiclass_metrics(
    y_true: ArrayLike,
    probabilities: ArrayLike,
    *,
    loss: float | None = None,
) -> dict[str, Any]:
    """Compute accuracy, balanced accuracy, macro ROC AUC and per-class metrics of K classes.

    The predicted class of a sample is the column of its highest probability (the lowest index
    on ties, as ``numpy.argmax``).

    Parameters
    ----------
    y_true
        Shape ``(n,)``, class indices ``0 .. K-1``.
    probabilities
        Shape ``(n, K)`` with ``K >= 2``, predicted probability of each class (rows of a
        softmax).
    loss
        Mean loss over the same samples, copied into the result when given.

    Returns
    -------
    dict
        ``loss`` (float or ``nan``), ``accuracy``, ``balanced_accuracy``, ``roc_auc``, ``n``,
        ``num_classes``, ``confusion_matrix`` and ``per_class``.

        * ``balanced_accuracy`` is the mean recall over the classes present in ``y_true``, as
          in scikit-learn's ``balanced_accuracy_score``.
        * ``roc_auc`` is the unweighted mean of the one-vs-rest AUCs that are defined, and
          ``nan`` when none is.
        * ``confusion_matrix`` is ``K x K`` nested lists with rows the true class and columns
          the predicted class.
        * ``per_class`` is a dict of lists indexed by class: ``support``, ``recall``,
          ``specificity``, ``precision`` and ``roc_auc`` (one class against the rest), each
          ``nan`` where undefined.
    """
    truth, scores = _labels_and_probabilities(y_true, probabilities)
    num_classes = scores.shape[1]
    predicted = np.argmax(scores, axis=1).astype(np.int64) if truth.size else truth
    matrix = confusion_matrix(truth, predicted, num_classes=num_classes)

    correct = np.diag(matrix)
    support = matrix.sum(axis=1)
    predicted_count = matrix.sum(axis=0)
    negatives = truth.size - support
    false_positives = predicted_count - correct
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted_count > 0, correct / np.maximum(predicted_count, 1), math.nan)
        specificity = np.where(
            negatives > 0, (negatives - false_positives) / np.maximum(negatives, 1), math.nan
        )
    recall = _per_class_recall(matrix)
    class_auc = one_vs_rest_roc_auc(truth, scores)
    return {
        "loss": math.nan if loss is None else float(loss),
        "accuracy": _ratio(float(correct.sum()), truth.size),
        "balanced_accuracy": _nan_mean(recall),
        "roc_auc": _nan_mean(class_auc),
        "n": int(truth.size),
        "num_classes": int(num_classes),
        "confusion_matrix": matrix.tolist(),
        "per_class": {
            "support": [int(v) for v in support],
            "recall": [float(v) for v in recall],
            "specificity": [float(v) for v in specificity],
            "precision": [float(v) for v in precision],
            "roc_auc": [float(v) for v in class_auc],
        },
    }


_CI_METRICS = ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "roc_auc")
#: Summary metrics of :func:`multiclass_metrics` that :func:`multiclass_bootstrap_ci` covers.
MULTICLASS_CI_METRICS = ("accuracy", "balanced_accuracy", "roc_auc")


def _check_bootstrap(n_resamples: int, level: float) -> None:
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def _resampling_groups(size: int, patient_ids: Sequence[str] | None) -> list[npt.NDArray[np.intp]]:
    """Return the sample indices of each resampling unit: one sample, or all scans of a patient."""
    if patient_ids is None:
        return [np.array([index]) for index in range(size)]
    if len(patient_ids) != size:
        raise ValueError(f"{len(patient_ids)} patient ids for {size} samples")
    _, inverse = np.unique(np.asarray(patient_ids, dtype=str), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    boundaries = np.flatnonzero(np.diff(inverse[order])) + 1
    return np.split(order, boundaries)


def _percentile_intervals(
    samples: dict[str, list[float]], n_resamples: int, level: float
) -> dict[str, tuple[float, float]]:
    tail = (1.0 - level) / 2.0 * 100.0
    intervals: dict[str, tuple[float, float]] = {}
    for name, defined in samples.items():
        if defined:
            low, high = np.percentile(np.asarray(defined), [tail, 100.0 - tail])
            intervals[name] = (float(low), float(high))
        else:
            intervals[name] = (math.nan, math.nan)
        if 0 < len(defined) < n_resamples:
            logger.debug(
                "%s undefined in %d of %d bootstrap resamples (a class is missing)",
                name,
                n_resamples - len(defined),
                n_resamples,
            )
    return intervals


def bootstrap_ci(
    y_true: ArrayLike,
    probabilities: ArrayLike,
    *,
    patient_ids: Sequence[str] | None = None,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int | np.random.Generator = 0,
    threshold: float = 0.5,
) -> dict[str, tuple[float, float]]:
    """Estimate percentile bootstrap confidence intervals of the :func:`binary_metrics` values.

    Parameters
    ----------
    y_true, probabilities
        Shape ``(n,)`` labels (0/1) and probabilities of class 1.
    patient_ids
        Shape ``(n,)`` patient of each sample. When given, patients are resampled with
        replacement and carry all their scans, so scans of one patient are never treated as
        independent.
    n_resamples
        Number of bootstrap resamples.
    level
        Coverage of the interval, e.g. 0.95 for the 2.5th to 97.5th percentiles.
    seed
        Seed or generator of the resampling; the same seed gives the same intervals.
    threshold
        Decision threshold for the thresholded metrics.

    Returns
    -------
    dict
        ``metric -> (low, high)`` for accuracy, balanced accuracy, sensitivity, specificity and
        ROC AUC. A resample with one class leaves ROC AUC (and sensitivity or specificity)
        undefined, so it is left out of that metric's percentiles. An interval is
        ``(nan, nan)`` when no resample defines the metric.
    """
    truth = _as_labels(y_true)
    scores = _as_scores(probabilities, truth.size)
    _check_bootstrap(n_resamples, level)
    if truth.size == 0:
        return {name: (math.nan, math.nan) for name in _CI_METRICS}
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

    groups = _resampling_groups(truth.size, patient_ids)

    samples: dict[str, list[float]] = {name: [] for name in _CI_METRICS}
    for _ in range(n_resamples):
        picked = rng.integers(0, len(groups), size=len(groups))
        index = np.concatenate([groups[g] for g in picked])
        values = binary_metrics(truth[index], scores[index], threshold=threshold)
        for name in _CI_METRICS:
            if not math.isnan(values[name]):
                samples[name].append(values[name])

    return _percentile_intervals(samples, n_resamples, level)



def multiclass_bootstrap_ci(
    y_true: ArrayLike,
    probabilities: ArrayLike,
    *,
    patient_ids: Sequence[str] | None = None,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int | np.random.Generator = 0,
) -> dict[str, tuple[float, float]]:
    """Estimate percentile bootstrap intervals of the :func:`multiclass_metrics` summary values.

    Parameters
    ----------
    y_true, probabilities
        Shape ``(n,)`` class indices and ``(n, K)`` class probabilities.
    patient_ids
        Shape ``(n,)`` patient of each sample; when given, patients are resampled with all
        their scans, as in :func:`bootstrap_ci`.
    n_resamples, level, seed
        As in :func:`bootstrap_ci`.

    Returns
    -------
    dict
        ``metric -> (low, high)`` for accuracy, balanced accuracy and macro ROC AUC. Balanced
        accuracy and macro ROC AUC average over classes, so a resample counts for them only
        when it contains every class that ``y_true`` contains (and, for ROC AUC, at least one
        other class). Otherwise the resample's mean would cover fewer classes than the point
        estimate. An interval is ``(nan, nan)`` when no resample defines the metric.
    """
    intervals, _ = multiclass_bootstrap(
        y_true, probabilities, patient_ids=patient_ids, n_resamples=n_resamples, level=level, seed=seed
    )
    return intervals


def multiclass_bootstrap(
    y_true: ArrayLike,
    probabilities: ArrayLike,
    *,
    patient_ids: Sequence[str] | None = None,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int | np.random.Generator = 0,
) -> tuple[dict[str, tuple[float, float]], dict[str, int]]:
    """Return the intervals of :func:`multiclass_bootstrap_ci` and how many resamples each used.

    The counts show how far the rule on missing classes thinned the resamples: with one patient
    of a class among 19, about 36% of the resamples lack that class.
    """
    truth, scores = _labels_and_probabilities(y_true, probabilities)
    num_classes = scores.shape[1]
    _check_bootstrap(n_resamples, level)
    if truth.size == 0:
        return (
            {name: (math.nan, math.nan) for name in MULTICLASS_CI_METRICS},
            {name: 0 for name in MULTICLASS_CI_METRICS},
        )
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    groups = _resampling_groups(truth.size, patient_ids)
    present = np.bincount(truth, minlength=num_classes) > 0

    samples: dict[str, list[float]] = {name: [] for name in MULTICLASS_CI_METRICS}
    for _ in range(n_resamples):
        picked = rng.integers(0, len(groups), size=len(groups))
        index = np.concatenate([groups[g] for g in picked])
        resampled_truth = truth[index]
        predicted = np.argmax(scores[index], axis=1)
        samples["accuracy"].append(float(np.mean(predicted == resampled_truth)))
        if not (np.bincount(resampled_truth, minlength=num_classes)[present] > 0).all():
            continue
        matrix = confusion_matrix(resampled_truth, predicted, num_classes=num_classes)
        samples["balanced_accuracy"].append(_nan_mean(_per_class_recall(matrix)[present]))
        class_auc = one_vs_rest_roc_auc(resampled_truth, scores[index])[present]
        if not np.isnan(class_auc).any():
            samples["roc_auc"].append(float(class_auc.mean()))
    counts = {name: len(values) for name, values in samples.items()}
    return _percentile_intervals(samples, n_resamples, level), counts
