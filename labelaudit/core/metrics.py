"""Evaluation metrics for label-error detection and calibration."""

from __future__ import annotations

import numpy as np

from labelaudit.core.scoring import validate_labels, validate_pred_probs


def _bool_vector(values, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (N,), got shape {arr.shape}")
    if arr.size and not (arr.dtype == bool or np.all((arr == 0) | (arr == 1))):
        raise ValueError(f"{name} must be boolean (or 0/1)")
    return arr.astype(bool)


def _float_vector(values, name: str, n: int) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains nan or inf")
    return arr


def average_precision(is_error, scores) -> float:
    """Area under the precision-recall curve as average precision.

    ``AP = Σ_n (R_n − R_{n−1}) · P_n`` over the distinct score thresholds, highest first
    (samples with equal scores enter together), as ``sklearn.metrics.average_precision_score``.

    Parameters
    ----------
    is_error : array_like of bool, shape (N,)
        True for samples whose label really is wrong.
    scores : array_like, shape (N,)
        Higher = more likely an error.

    Returns
    -------
    float
        NaN when there is no positive sample.
    """
    positives = _bool_vector(is_error, "is_error")
    values = _float_vector(scores, "scores", positives.shape[0])
    if not positives.any():
        return float("nan")
    order = np.argsort(-values, kind="stable")
    sorted_scores = values[order]
    hits = np.cumsum(positives[order])
    # the last index of each run of equal scores is one threshold
    threshold_ends = np.r_[np.flatnonzero(np.diff(sorted_scores)), sorted_scores.shape[0] - 1]
    true_pos = hits[threshold_ends]
    flagged = threshold_ends + 1
    precision = true_pos / flagged
    recall = true_pos / true_pos[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def precision_recall(is_error, flagged) -> tuple[float, float]:
    """Precision and recall of a set of flagged samples.

    Parameters
    ----------
    is_error : array_like of bool, shape (N,)
    flagged : array_like of bool, shape (N,)

    Returns
    -------
    precision, recall : float
        Precision is NaN when nothing is flagged; recall is NaN when there is no error.
    """
    truth = _bool_vector(is_error, "is_error")
    flags = _bool_vector(flagged, "flagged")
    if truth.shape != flags.shape:
        raise ValueError(f"is_error has {truth.shape[0]} rows but flagged has {flags.shape[0]}")
    true_pos = float(np.sum(truth & flags))
    n_flagged = float(flags.sum())
    n_errors = float(truth.sum())
    precision = true_pos / n_flagged if n_flagged else float("nan")
    recall = true_pos / n_errors if n_errors else float("nan")
    return precision, recall


def expected_calibration_error(probs, outcomes, *, n_bins: int = 10) -> float:
    """Expected calibration error of binary probabilities.

    ``Σ_b (n_b / N) · |mean prob in b − fraction of outcomes in b|`` over ``n_bins`` equal-width
    bins on [0, 1] (a probability of exactly 1 falls in the last bin).

    Parameters
    ----------
    probs : array_like, shape (N,)
        Predicted probabilities of the event, in [0, 1].
    outcomes : array_like of bool, shape (N,)
        Whether the event happened.
    n_bins : int

    Returns
    -------
    float
        NaN for N = 0.
    """
    events = _bool_vector(outcomes, "outcomes")
    p = _float_vector(probs, "probs", events.shape[0])
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if np.any((p < 0) | (p > 1)):
        raise ValueError("probs must lie in [0, 1]")
    n = p.shape[0]
    if n == 0:
        return float("nan")
    bins = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    prob_sums = np.bincount(bins, weights=p, minlength=n_bins)
    event_sums = np.bincount(bins, weights=events.astype(np.float64), minlength=n_bins)
    # |Σp − Σevents| / N equals (n_b / N) · |mean p − frequency| for each bin
    return float(np.sum(np.abs(prob_sums - event_sums)) / n)


def accuracy(labels, pred_probs) -> float:
    """Fraction of samples whose most probable class equals the label.

    Parameters
    ----------
    labels : array_like, shape (N,)
    pred_probs : array_like, shape (N, K)

    Returns
    -------
    float
        NaN for N = 0.
    """
    probs = validate_pred_probs(pred_probs)
    labels = validate_labels(labels, probs.shape[1])
    if labels.shape[0] != probs.shape[0]:
        raise ValueError(f"labels has {labels.shape[0]} rows but pred_probs has {probs.shape[0]}")
    if labels.shape[0] == 0:
        return float("nan")
    return float(np.mean(probs.argmax(axis=1) == labels))
