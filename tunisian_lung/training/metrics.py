"""Binary classification metrics with bootstrap confidence intervals.

Labels are 0 (negative) and 1 (positive); scores are the predicted probability of class 1.
Undefined values (sensitivity without positives, ROC AUC with one class) are ``nan``, never a
guessed 0 or 1.
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
    "confusion_matrix",
    "roc_auc",
    "binary_metrics",
    "bootstrap_ci",
]

logger = logging.getLogger(__name__)

ArrayLike = npt.ArrayLike


def _as_labels(y_true: ArrayLike) -> npt.NDArray[np.int64]:
    labels = np.asarray(y_true)
    if labels.ndim != 1:
        raise ValueError(f"labels must be a 1-D array, got shape {labels.shape}")
    if labels.size and not np.isin(labels, (0, 1)).all():
        bad = sorted(set(np.unique(labels).tolist()) - {0, 1})
        raise ValueError(f"binary labels must be 0 or 1, got {bad[:5]}")
    return labels.astype(np.int64)


def _as_scores(scores: ArrayLike, size: int) -> npt.NDArray[np.float64]:
    values = np.asarray(scores, dtype=np.float64)
    if values.shape != (size,):
        raise ValueError(f"expected {size} scores to match the labels, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("scores contain NaN or infinite values")
    return values


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike) -> npt.NDArray[np.int64]:
    """Count outcomes as a ``(2, 2)`` int64 array ``[[tn, fp], [fn, tp]]``.

    Rows are the true class and columns the predicted class, as in scikit-learn.
    """
    truth = _as_labels(y_true)
    predicted = _as_labels(y_pred)
    if truth.shape != predicted.shape:
        raise ValueError(f"{truth.size} labels but {predicted.size} predictions")
    matrix = np.zeros((2, 2), dtype=np.int64)
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


_CI_METRICS = ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "roc_auc")


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
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if truth.size == 0:
        return {name: (math.nan, math.nan) for name in _CI_METRICS}
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

    if patient_ids is None:
        groups = [np.array([index]) for index in range(truth.size)]
    else:
        if len(patient_ids) != truth.size:
            raise ValueError(f"{len(patient_ids)} patient ids for {truth.size} samples")
        _, inverse = np.unique(np.asarray(patient_ids, dtype=str), return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        boundaries = np.flatnonzero(np.diff(inverse[order])) + 1
        groups = np.split(order, boundaries)

    samples: dict[str, list[float]] = {name: [] for name in _CI_METRICS}
    for _ in range(n_resamples):
        picked = rng.integers(0, len(groups), size=len(groups))
        index = np.concatenate([groups[g] for g in picked])
        values = binary_metrics(truth[index], scores[index], threshold=threshold)
        for name in _CI_METRICS:
            if not math.isnan(values[name]):
                samples[name].append(values[name])

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
                "%s undefined in %d of %d bootstrap resamples (one class only)",
                name,
                n_resamples - len(defined),
                n_resamples,
            )
    return intervals
