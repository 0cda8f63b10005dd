"""Per-sample label-error scores from class probabilities and a noise transition matrix.

Conventions used throughout :mod:`labelaudit.core`:

* ``labels``: int array, shape (N,), values in ``[0, K)`` — the given (possibly noisy) labels.
* ``pred_probs`` / ``clean_probs``: float array, shape (N, K), each row sums to 1.
* ``transition``: float array, shape (K, K), ``T[i, j] = P(noisy label j | true label i)``; rows sum to 1.

Shape and range problems raise ``ValueError``: they are programming errors, not user input.
"""

from __future__ import annotations

import numpy as np

_ROW_SUM_ATOL = 1e-3


def validate_pred_probs(pred_probs, *, name: str = "pred_probs") -> np.ndarray:
    """Check a probability matrix and return it as float64.

    Parameters
    ----------
    pred_probs : array_like, shape (N, K)
        Non-negative, finite, rows summing to 1 (within 1e-3).
    name : str
        Name used in error messages.

    Returns
    -------
    np.ndarray, shape (N, K), float64
    """
    probs = np.asarray(pred_probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, K), got shape {probs.shape}")
    if probs.shape[1] < 1:
        raise ValueError(f"{name} must have at least one class column")
    if not np.all(np.isfinite(probs)):
        raise ValueError(f"{name} contains nan or inf")
    if np.any(probs < 0) or np.any(probs > 1 + _ROW_SUM_ATOL):
        raise ValueError(f"{name} must lie in [0, 1]")
    if probs.shape[0] and not np.allclose(probs.sum(axis=1), 1.0, atol=_ROW_SUM_ATOL):
        raise ValueError(f"rows of {name} must sum to 1")
    return probs


def validate_labels(labels, n_classes: int, *, name: str = "labels") -> np.ndarray:
    """Check an integer label vector and return it as int64.

    Parameters
    ----------
    labels : array_like, shape (N,)
        Integer class indices in ``[0, n_classes)``.
    n_classes : int
        Number of classes K.
    name : str
        Name used in error messages.

    Returns
    -------
    np.ndarray, shape (N,), int64
    """
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (N,), got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be an integer array, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
        raise ValueError(f"{name} must lie in [0, {n_classes}), got range [{arr.min()}, {arr.max()}]")
    return arr


def validate_transition(transition, n_classes: int | None = None) -> np.ndarray:
    """Check a (K, K) row-stochastic matrix and return it as float64."""
    matrix = np.asarray(transition, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"transition must be square (K, K), got shape {matrix.shape}")
    if n_classes is not None and matrix.shape[0] != n_classes:
        raise ValueError(f"transition is {matrix.shape[0]}x{matrix.shape[0]} but there are {n_classes} classes")
    if not np.all(np.isfinite(matrix)) or np.any(matrix < 0):
        raise ValueError("transition must be finite and non-negative")
    if not np.allclose(matrix.sum(axis=1), 1.0, atol=_ROW_SUM_ATOL):
        raise ValueError("rows of transition must sum to 1")
    return matrix


def _labels_and_probs(labels, probs, *, probs_name: str) -> tuple[np.ndarray, np.ndarray]:
    probs = validate_pred_probs(probs, name=probs_name)
    labels = validate_labels(labels, probs.shape[1])
    if labels.shape[0] != probs.shape[0]:
        raise ValueError(f"labels has {labels.shape[0]} rows but {probs_name} has {probs.shape[0]}")
    return labels, probs


def self_confidence(labels, pred_probs) -> np.ndarray:
    """Probability the model gives to each sample's given label.

    Parameters
    ----------
    labels : array_like, shape (N,)
    pred_probs : array_like, shape (N, K)

    Returns
    -------
    np.ndarray, shape (N,)
        ``pred_probs[n, labels[n]]``.
    """
    labels, probs = _labels_and_probs(labels, pred_probs, probs_name="pred_probs")
    return probs[np.arange(labels.shape[0]), labels]


def posterior_true_label(labels, clean_probs, transition) -> np.ndarray:
    """Posterior over the true label given the image and its given label.

    ``P(true = i | x, given = g) ∝ q(i | x) · T[i, g]`` (Bayes with the noise channel T).
    When every term is zero (the model and T rule out the given label entirely) the
    posterior falls back to ``q(· | x)``.

    Parameters
    ----------
    labels : array_like, shape (N,)
        Given labels g.
    clean_probs : array_like, shape (N, K)
        Clean-class probabilities q(i | x).
    transition : array_like, shape (K, K)
        ``T[i, j] = P(noisy j | true i)``.

    Returns
    -------
    np.ndarray, shape (N, K)
        Rows sum to 1.
    """
    labels, q = _labels_and_probs(labels, clean_probs, probs_name="clean_probs")
    t = validate_transition(transition, q.shape[1])
    joint = q * t[:, labels].T  # joint[n, i] = q(i|x_n) · T[i, g_n]
    evidence = joint.sum(axis=1, keepdims=True)
    degenerate = evidence[:, 0] <= 0
    safe_evidence = np.where(evidence > 0, evidence, 1.0)
    posterior = joint / safe_evidence
    posterior[degenerate] = q[degenerate]
    return posterior


def error_probability(labels, clean_probs, transition) -> np.ndarray:
    """Probability that each given label is wrong.

    ``1 − q(g|x)·T[g,g] / Σ_i q(i|x)·T[i,g]``; if the denominator is 0 this is ``1 − q(g|x)``.
    With the uniform T (every entry 1/K: the given label carries no information) it is
    ``1 − q(g|x)``; with the identity T (no noise) it is 0 wherever q(g|x) > 0.

    Parameters
    ----------
    labels : array_like, shape (N,)
    clean_probs : array_like, shape (N, K)
    transition : array_like, shape (K, K)

    Returns
    -------
    np.ndarray, shape (N,), values in [0, 1]
    """
    posterior = posterior_true_label(labels, clean_probs, transition)
    labels = np.asarray(labels, dtype=np.int64)
    p_correct = posterior[np.arange(labels.shape[0]), labels]
    return np.clip(1.0 - p_correct, 0.0, 1.0)


def suspicion_rank(scores) -> np.ndarray:
    """Rank samples by a suspicion score.

    Parameters
    ----------
    scores : array_like, shape (N,)
        Higher = more suspicious. NaN scores are ranked last.

    Returns
    -------
    np.ndarray, shape (N,), int64
        1 = highest score; ties keep index order.
    """
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"scores must be 1-D (N,), got shape {values.shape}")
    # argsort puts NaN last; negating keeps it last while sorting descending.
    order = np.argsort(-values, kind="stable")
    ranks = np.empty(values.shape[0], dtype=np.int64)
    ranks[order] = np.arange(1, values.shape[0] + 1)
    return ranks


def estimate_noise_rates(labels, error_prob, *, n_classes: int) -> np.ndarray:
    """Mean error probability per given class.

    Parameters
    ----------
    labels : array_like, shape (N,)
        Given labels.
    error_prob : array_like, shape (N,)
        Per-sample probability that the given label is wrong.
    n_classes : int

    Returns
    -------
    np.ndarray, shape (K,)
        NaN for classes with no samples.
    """
    labels = validate_labels(labels, n_classes)
    errors = np.asarray(error_prob, dtype=np.float64)
    if errors.shape != labels.shape:
        raise ValueError(f"error_prob has shape {errors.shape} but labels has {labels.shape}")
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    sums = np.bincount(labels, weights=errors, minlength=n_classes)
    rates = np.full(n_classes, np.nan)
    present = counts > 0
    rates[present] = sums[present] / counts[present]
    return rates


def most_confused_with(transition) -> np.ndarray:
    """For each true class, the noisy label it is most often written as (other than itself).

    Parameters
    ----------
    transition : array_like, shape (K, K)

    Returns
    -------
    np.ndarray, shape (K,), int64
        Column index of the largest off-diagonal entry of each row (first on ties);
        **-1** when the row has no off-diagonal mass (the class is never mislabelled),
        and for K = 1.
    """
    t = validate_transition(transition)
    off_diagonal = t.copy()
    np.fill_diagonal(off_diagonal, -np.inf)
    result = np.full(t.shape[0], -1, dtype=np.int64)
    if t.shape[0] < 2:
        return result
    best = off_diagonal.argmax(axis=1)
    has_confusion = off_diagonal[np.arange(t.shape[0]), best] > 0
    result[has_confusion] = best[has_confusion]
    return result
