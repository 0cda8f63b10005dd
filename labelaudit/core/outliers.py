"""Out-of-distribution rows: far from every other row (the scan compares grey thumbnails of the decoded
pixels, see :mod:`labelaudit.issues`), and not confidently any class.

``outlier_score`` multiplies two pieces of evidence, each relative to the dataset itself:

* the mean cosine distance ``1 - similarity`` to the row's k nearest other rows, divided by the
  median of that distance over all rows: about 1 for a typical row, several times more for a picture
  unlike anything else in the dataset;
* ``(2 - p_max)²``, where ``p_max`` is the model's highest class probability: 1 for a row the model
  is sure of, up to 4 for one it cannot place in any class.

A row is an outlier when its score lies above the dataset's upper fence on the log scale,
``Q3 + fence * IQR`` of log(score) (Tukey's rule, ``fence = 1.5``), and above ``min_score`` (so a
dataset without outliers, whose scores are all close to 1, flags nothing however tight its
distribution). Measured with the scan's thumbnails and ELR probabilities: on 2,000 Fashion-MNIST
images with 14 of scikit-image's sample photos planted (greyed, 28 px) it flagged 12 of the 14 and one
Fashion-MNIST image; on ``benchmarks/data_issues.py --n 2000`` (20 LFW faces and photo crops among
Fashion-MNIST) 14 of the 20 at precision 0.88. With the confidence term unsquared the figures were
12 and none, and 11 of 20 at precision 0.92; without it, 6 of 20; at ``fence = 1.25`` (squared) 16 of
20 at precision 0.64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_FENCE = 1.5
DEFAULT_MIN_SCORE = 3.0


@dataclass
class Outliers:
    """score: (N,) float64, higher = less like any class; is_outlier: (N,) bool; threshold: the
    score above which a row is an outlier."""

    score: np.ndarray
    is_outlier: np.ndarray
    threshold: float


def outlier_scores(similarities: np.ndarray, max_probability: np.ndarray | None = None) -> np.ndarray:
    """Outlier scores of N rows.

    Parameters
    ----------
    similarities
        ``(N, k)`` cosine similarities of each row to its k nearest other rows
        (:func:`labelaudit.core.neighbors.nearest_neighbors`), k >= 1.
    max_probability
        ``(N,)`` the model's highest class probability of each row, or None (no confidence term).

    Returns
    -------
    numpy.ndarray
        ``(N,)`` float64 scores, about 1 for a typical row.
    """
    similarities = np.asarray(similarities, dtype=np.float64)
    if similarities.ndim != 2 or similarities.shape[1] == 0:
        raise ValueError(f"similarities must be (N, k) with k >= 1, got {similarities.shape}")
    distance = np.clip(1.0 - similarities, 0.0, 2.0).mean(axis=1)
    typical = float(np.median(distance))
    relative = distance / typical if typical > 0 else np.where(distance > 0, np.inf, 1.0)
    if max_probability is None:
        return relative
    return relative * np.square(2.0 - np.clip(np.asarray(max_probability, dtype=np.float64), 0.0, 1.0))


def flag_outliers(scores: np.ndarray, *, fence: float = DEFAULT_FENCE,
                  min_score: float = DEFAULT_MIN_SCORE) -> Outliers:
    """Flag the scores beyond the dataset's far-out fence (see the module docstring).

    Parameters
    ----------
    scores
        ``(N,)`` positive outlier scores (:func:`outlier_scores`).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) == 0:
        return Outliers(scores, np.zeros(0, dtype=bool), float("inf"))
    logs = np.log(np.maximum(scores, 1e-12))
    q1, q3 = np.percentile(logs, [25, 75])
    threshold = max(float(np.exp(q3 + fence * (q3 - q1))), min_score)
    return Outliers(scores, scores > threshold, threshold)
