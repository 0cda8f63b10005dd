"""Estimators of the noise transition matrix T.

Convention: ``T[i, j] = P(noisy label j | true label i)``; rows sum to 1. Joint count
matrices are indexed the same way: ``joint[true, given]``.

* :func:`confident_joint` / :func:`transition_from_confident_joint` — Northcutt et al.,
  "Confident Learning", JAIR 2021. No trusted data.
* :func:`anchor_transition` — Patrini et al., "Making deep neural networks robust to label
  noise: a loss correction approach", CVPR 2017. No trusted data.
* :func:`glc_transition` — Hendrycks et al., "Using trusted data to train deep networks on
  labels corrupted by severe noise" (GLC), NeurIPS 2018. Needs trusted rows.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from labelaudit.core.scoring import validate_labels, validate_pred_probs

# Samples whose p_j equals the class threshold t_j must count as confident even when the
# threshold, being a mean, comes out a rounding error above them.
_THRESHOLD_SLACK = 1e-6


def _resolve_n_classes(pred_probs: np.ndarray, n_classes: int | None) -> int:
    k = pred_probs.shape[1]
    if n_classes is not None and n_classes != k:
        raise ValueError(f"n_classes={n_classes} but pred_probs has {k} columns")
    return k


def _row_normalise_or_identity(matrix: np.ndarray) -> np.ndarray:
    """Normalise rows to sum 1; rows with no mass become identity rows."""
    row_sums = matrix.sum(axis=1, keepdims=True)
    empty = row_sums[:, 0] <= 0
    result = matrix / np.where(row_sums > 0, row_sums, 1.0)
    result[empty] = np.eye(matrix.shape[0])[empty]
    return result


def confusion_counts(true_labels, noisy_labels, *, n_classes: int) -> np.ndarray:
    """Count matrix of (true, noisy) label pairs.

    Parameters
    ----------
    true_labels, noisy_labels : array_like, shape (N,)
    n_classes : int

    Returns
    -------
    np.ndarray, shape (K, K), int64
        ``counts[i, j]`` = number of samples with true label i and noisy label j.
    """
    true = validate_labels(true_labels, n_classes, name="true_labels")
    noisy = validate_labels(noisy_labels, n_classes, name="noisy_labels")
    if true.shape != noisy.shape:
        raise ValueError(f"true_labels has {true.shape[0]} rows but noisy_labels has {noisy.shape[0]}")
    flat = np.bincount(true * n_classes + noisy, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes).astype(np.int64)


def realised_transition(true_labels, noisy_labels, *, n_classes: int) -> np.ndarray:
    """Empirical T from known true labels (for tests and benchmarks).

    Returns
    -------
    np.ndarray, shape (K, K)
        Row-normalised :func:`confusion_counts`; a true class with no samples gets an identity row.
    """
    counts = confusion_counts(true_labels, noisy_labels, n_classes=n_classes)
    return _row_normalise_or_identity(counts.astype(np.float64))


def confident_counts(labels, pred_probs) -> np.ndarray:
    """The confident joint's counts before calibration: how many rows fall in each (true, given) cell.

    Per-class threshold t_j = mean p_j over the rows labelled j (Northcutt et al. 2021); a row with some
    class at or above its threshold is counted under (the most probable of those classes, its label); other
    rows are not counted. :func:`confident_joint` then rescales each column to the label's row count, which
    turns a single row into 1.5 or 2 when few rows are counted; a test of how the noisy rows spread over the
    cells (:mod:`labelaudit.core.noise_structure`) needs the rows themselves.

    Parameters
    ----------
    labels : array_like, shape (N,)
        Given labels in [0, K).
    pred_probs : array_like, shape (N, K)

    Returns
    -------
    np.ndarray, shape (K, K), int64
        ``counts[true, given]``; a class nobody is labelled with has no threshold and is never a true class.
    """
    probs = validate_pred_probs(pred_probs)
    n_classes = probs.shape[1]
    labels = validate_labels(labels, n_classes)
    if labels.shape[0] != probs.shape[0]:
        raise ValueError(f"labels has {labels.shape[0]} rows but pred_probs has {probs.shape[0]}")
    label_counts = np.bincount(labels, minlength=n_classes)
    self_confidence = np.bincount(labels, weights=probs[np.arange(len(labels)), labels], minlength=n_classes)
    thresholds = np.full(n_classes, np.inf)
    used = label_counts > 0
    thresholds[used] = self_confidence[used] / label_counts[used]
    confident = probs >= thresholds - _THRESHOLD_SLACK
    counted = confident.any(axis=1)
    guess = np.where(confident, probs, -np.inf).argmax(axis=1)
    flat = np.bincount(guess[counted] * n_classes + labels[counted], minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes).astype(np.int64)


def confident_joint(labels, pred_probs, *, n_classes: int | None = None) -> np.ndarray:
    """Calibrated confident joint: estimated counts of (true, given) label pairs.

    Method (Northcutt et al. 2021): per-class threshold ``t_j`` = mean ``p_j`` over the samples
    labelled j. Each sample with at least one class at or above its threshold is counted under
    (true = the most probable of those classes, given = its label); samples with none are not
    counted. Each given-label column is then rescaled so that it sums to the number of samples
    with that label, so the matrix sums to N. A class nobody is labelled with has no threshold
    and is never counted as a true class.

    Parameters
    ----------
    labels : array_like, shape (N,)
        Given labels.
    pred_probs : array_like, shape (N, K)
        Out-of-sample predicted probabilities of the given (noisy) labels.
    n_classes : int, optional
        K; must equal ``pred_probs.shape[1]`` if given.

    Returns
    -------
    np.ndarray, shape (K, K), float64
        ``joint[i, j]`` = estimated number of samples with true label i and given label j.
        Column j sums to the count of label j; the total is N.
    """
    probs = validate_pred_probs(pred_probs)
    k = _resolve_n_classes(probs, n_classes)
    labels = validate_labels(labels, k)
    joint = confident_counts(labels, probs).astype(np.float64)
    label_counts = np.bincount(labels, minlength=k)
    labelled = label_counts > 0

    # Every used label has a counted sample (its most confident one reaches the mean t_j),
    # so only the columns of unused labels are empty.
    column_sums = joint.sum(axis=0)
    joint[:, labelled] *= label_counts[labelled] / column_sums[labelled]
    return joint


def transition_from_confident_joint(labels, pred_probs, *, n_classes: int | None = None) -> np.ndarray:
    """T estimated from the :func:`confident_joint`, normalised per true class.

    Returns
    -------
    np.ndarray, shape (K, K)
        Row-stochastic; a true class with no estimated mass gets an identity row.
    """
    return _row_normalise_or_identity(confident_joint(labels, pred_probs, n_classes=n_classes))


def smoothed_confident_joint_transition(labels, pred_probs, *, n_classes: int | None = None) -> np.ndarray:
    """:func:`transition_from_confident_joint` with each row smoothed by :func:`smooth_transition`
    (one flat prior row), so no confusion is impossible. labels: (N,); pred_probs: (N, K); returns (K, K)."""
    joint = confident_joint(labels, pred_probs, n_classes=n_classes)
    return smooth_transition(_row_normalise_or_identity(joint), joint.sum(axis=1))


def smooth_transition(transition, row_counts, *, prior_count: float = 1.0) -> np.ndarray:
    """Posterior mean of each row of T under a flat Dirichlet prior worth ``prior_count`` rows.

    transition: (K, K) estimate, T[i, j] = P(noisy j | true i); row_counts: (K,) how many samples the
    estimate of each row rests on. Returns (K, K) with rows summing to 1 and no exact zeros: a zero in T
    would declare a confusion impossible and zero out every posterior that needs it, however strongly
    the image disagrees with its label.
    """
    transition = np.asarray(transition, dtype=np.float64)
    n_classes = transition.shape[0]
    counts = np.clip(np.asarray(row_counts, dtype=np.float64), 0.0, None)[:, None]
    return (transition * counts + prior_count / n_classes) / (counts + prior_count)


def anchor_transition(pred_probs, *, percentile: float = 97.0) -> np.ndarray:
    """T from anchor points (Patrini et al. 2017, forward correction).

    For each class i: discard the samples with ``p_i`` at or above the ``percentile``-th
    percentile of ``p_i`` (the upper order statistic, as in the paper's code) to drop
    over-confident outliers, take the remaining sample with the highest ``p_i``, and use its
    probability row as ``T[i, :]``. If nothing remains (all ``p_i`` equal), the sample with the
    highest ``p_i`` overall is used.

    Parameters
    ----------
    pred_probs : array_like, shape (N, K)
        Predicted probabilities of the noisy label from a model trained on noisy labels.
    percentile : float
        In [0, 100].

    Returns
    -------
    np.ndarray, shape (K, K)
        Row-stochastic.
    """
    probs = validate_pred_probs(pred_probs)
    if probs.shape[0] == 0:
        raise ValueError("pred_probs has no rows")
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    k = probs.shape[1]
    transition = np.empty((k, k))
    for i in range(k):
        column = probs[:, i]
        cutoff = np.percentile(column, percentile, method="higher")
        kept = np.where(column < cutoff, column, -np.inf)
        anchor = kept.argmax() if np.isfinite(kept.max()) else column.argmax()
        transition[i] = probs[anchor]
    return transition / transition.sum(axis=1, keepdims=True)


def glc_transition(trusted_labels, pred_probs, *, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Gold-loss-correction estimate of T from trusted rows (Hendrycks et al. 2018).

    ``Ĉ[i, :]`` = mean predicted probability (of a model trained on the untrusted, noisy rows)
    over the trusted rows whose true class is i.

    Parameters
    ----------
    trusted_labels : array_like, shape (M,)
        True labels of the trusted rows.
    pred_probs : array_like, shape (M, K)
        The noisy-trained model's probabilities on those rows.
    n_classes : int

    Returns
    -------
    transition : np.ndarray, shape (K, K)
        Row-stochastic; classes with no trusted row get an identity row.
    missing : np.ndarray, shape (K,), bool
        True for classes that had no trusted row.
    """
    probs = validate_pred_probs(pred_probs)
    k = _resolve_n_classes(probs, n_classes)
    labels = validate_labels(trusted_labels, k, name="trusted_labels")
    if labels.shape[0] != probs.shape[0]:
        raise ValueError(f"trusted_labels has {labels.shape[0]} rows but pred_probs has {probs.shape[0]}")
    counts = np.bincount(labels, minlength=k)
    sums = np.zeros((k, k))
    np.add.at(sums, labels, probs)
    missing = counts == 0
    transition = np.eye(k)
    present = ~missing
    transition[present] = sums[present] / counts[present, None]
    transition /= transition.sum(axis=1, keepdims=True)
    return transition, missing


def bootstrap_transition_ci(
    estimator: Callable[..., np.ndarray],
    arrays: tuple[np.ndarray, ...],
    *,
    n_resamples: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile-bootstrap interval for each entry of an estimated T.

    Rows of all ``arrays`` are resampled jointly with replacement; ``estimator(*resampled)``
    must return a (K, K) matrix.

    Parameters
    ----------
    estimator : callable
        e.g. ``lambda y, p: transition_from_confident_joint(y, p)``.
    arrays : tuple of arrays
        Each with the same first dimension N.
    n_resamples : int
    confidence : float
        In (0, 1).
    seed : int

    Returns
    -------
    low, high : np.ndarray, shape (K, K)
        Entry-wise ``(1−confidence)/2`` and ``(1+confidence)/2`` quantiles. These are plain
        percentile intervals: for a biased estimator they need not contain the full-data estimate.
    """
    if not arrays:
        raise ValueError("arrays must contain at least one array")
    arrays = tuple(np.asarray(a) for a in arrays)
    n_rows = arrays[0].shape[0] if arrays[0].ndim else 0
    if n_rows == 0:
        raise ValueError("arrays must have at least one row")
    if any(a.ndim == 0 or a.shape[0] != n_rows for a in arrays):
        raise ValueError("all arrays must have the same number of rows")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")

    rng = np.random.default_rng(seed)
    estimates = []
    for _ in range(n_resamples):
        rows = rng.integers(0, n_rows, size=n_rows)
        estimates.append(np.asarray(estimator(*(a[rows] for a in arrays)), dtype=np.float64))
    stacked = np.stack(estimates)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(stacked, [tail, 1.0 - tail], axis=0)
    return low, high
