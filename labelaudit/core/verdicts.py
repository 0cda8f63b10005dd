"""From scores to verdicts: how many labels are wrong, which rows to flag, what each should be.

The rule (docs/how-it-scores.md; put together in ``report.tables.audit_scores``): estimate the number
of wrong labels n̂, rank rows by a score, shift that score on the logit scale so that it sums to n̂ (the
error probability), and flag the top round(n̂) rows. The count printed, the rows flagged and the mean error
probability are then one claim, not three: ``is_issue.sum() == round(n̂)``, the flagged rows are
``rank <= round(n̂)``, and ``mean(error_probability) == n̂ / N``.

Conventions as in :mod:`labelaudit.core.scoring`: ``labels`` (N,) ints in [0, K); ``pred_probs`` (N, K)
rows summing to 1.
"""

from __future__ import annotations

import numpy as np

from .scoring import _labels_and_probs

_LOGIT_CLIP = 1e-6
#: the noise structure's excess at and above which the verdicts are wholly the concentrated-noise ones; from
#: the structure test's threshold up to here they move linearly from the symmetric-noise ones (measured on
#: Fashion-MNIST: symmetric noise 0.09, half look-alike and half symmetric 0.34–0.38, look-alike and
#: instance-dependent noise 0.66–0.68; docs/how-it-scores.md)
FULLY_CONCENTRATED_EXCESS = 0.65
#: rows of the joint with fewer off-diagonal counts per cell keep their whole off-diagonal mass
MIN_COUNTS_PER_CELL = 3.0


def estimated_error_count(error_probability) -> int:
    """``round(Σ error_probability)``: the expected number of wrong labels, as a row count.

    error_probability: (N,) in [0, 1]; NaN entries (rows not scored) count as 0.
    """
    values = np.asarray(error_probability, dtype=np.float64)
    return int(np.rint(np.nansum(values)))


def flag_top_estimated(error_probability, n_flagged: int) -> np.ndarray:
    """Flag the ``n_flagged`` rows with the highest error probability.

    Parameters
    ----------
    error_probability : array_like, shape (N,)
        Higher = more likely a wrong label; the order in which rows are flagged. Ties keep index
        order (as :func:`~labelaudit.core.scoring.suspicion_rank` does), so passing the score the
        ranks were made from flags exactly the rows with ``rank <= n_flagged``. Rows with a score of
        0 or NaN are never flagged: nothing suggests they are wrong.
    n_flagged : int
        How many rows to flag, typically :func:`estimated_error_count`; clipped to [0, N].

    Returns
    -------
    np.ndarray, shape (N,), bool
    """
    values = np.asarray(error_probability, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"error_probability must be 1-D (N,), got shape {values.shape}")
    n_flagged = int(n_flagged)
    if n_flagged < 0:
        raise ValueError(f"n_flagged must be >= 0, got {n_flagged}")
    order = np.argsort(-values, kind="stable")  # NaN last
    flagged = np.zeros(values.shape[0], dtype=bool)
    flagged[order[:n_flagged]] = True
    flagged &= values > 0  # False for NaN too
    return flagged


def symmetric_error_count(joint, *, n_draws: int = 400, seed: int = 0) -> float:
    """Wrong labels in a confident joint whose noise is symmetric, robust to the model's own confusions.

    Symmetric noise spreads each true class's wrong labels evenly over the other K − 1 classes; a model
    that confuses look-alike classes adds counts to a few cells of a row on top of that (measured: with
    Fashion-MNIST's shirts and T-shirts, 10 points of a 20% symmetric rate). So each row's noise is read
    from its off-diagonal cells without the largest half of them: m̂_i = (K − 1) × their
    mean ÷ c(m̂_i), where c(m) = E[that trimmed mean] / (m / (K − 1)) under symmetric noise at m counts
    (seeded multinomial draws; three fixed-point steps from the row's whole off-diagonal mass, which
    also bounds the result). Rows with under MIN_COUNTS_PER_CELL counts per off-diagonal cell, and every
    row when K ≤ 3, keep their whole off-diagonal mass: there the trimmed cells are mostly empty.

    Parameters
    ----------
    joint : array_like, shape (K, K)
        Counts ``joint[true, given]`` (e.g. :func:`~labelaudit.core.transition.confident_joint`).

    Returns
    -------
    float, the estimated number of wrong labels
    """
    joint = np.asarray(joint, dtype=np.float64)
    n_classes = joint.shape[0]
    off_diagonal = joint[~np.eye(n_classes, dtype=bool)].reshape(n_classes, n_classes - 1)
    n_cells = n_classes - 1
    n_dropped = n_cells // 2
    if n_dropped == 0:
        return float(off_diagonal.sum())
    kept = np.sort(off_diagonal, axis=1)[:, : n_cells - n_dropped]
    naive = kept.mean(axis=1) * n_cells  # (K,) rows' noise if the kept cells were typical
    rng = np.random.default_rng(seed)
    estimate = off_diagonal.sum(axis=1)
    for _ in range(3):
        for row, count in enumerate(np.rint(estimate).astype(np.int64)):
            if count < 1:
                continue
            draws = np.sort(rng.multinomial(count, np.full(n_cells, 1.0 / n_cells), size=n_draws), axis=1)
            ratio = draws[:, : n_cells - n_dropped].mean() / (count / n_cells)
            estimate[row] = naive[row] / max(ratio, 1e-3)
    whole = off_diagonal.sum(axis=1)
    too_few = whole < MIN_COUNTS_PER_CELL * n_cells  # a few counts per cell: the trimmed cells say nothing
    return float(np.where(too_few, whole, np.minimum(estimate, whole)).sum())


def concentration_weight(excess: float, concentrated: bool, *, low: float,
                         high: float = FULLY_CONCENTRATED_EXCESS) -> float:
    """Weight w in [0, 1] of the concentrated-noise verdicts against the symmetric-noise ones.

    0 when the structure test did not call the noise concentrated (``concentrated`` False, which needs
    ``excess`` ≥ ``low``), then rising linearly with ``excess`` to 1 at ``high``. Mixed noise (part
    symmetric, part between look-alike classes) lands between the two, where a hard switch would let a
    difference of a few counts decide the whole ranking.
    """
    if not concentrated:
        return 0.0
    return float(np.clip((excess - low) / max(high - low, 1e-9), 0.0, 1.0))


def calibrate_to_total(error_probability, total: float) -> np.ndarray:
    """Shift error probabilities on the logit scale by one constant so that they sum to ``total``.

    Keeps the order of the rows (so ranks and AUPRC are unchanged) and moves every probability the same
    way on the logit scale, the one-parameter recalibration that makes the mean agree with an independent
    estimate of the error count.

    Parameters
    ----------
    error_probability : array_like, shape (N,)
        Values in [0, 1].
    total : float
        Target sum, clipped to [0, N].

    Returns
    -------
    np.ndarray, shape (N,), float64, in (0, 1); sums to ``total`` within 1e-6·N.
    """
    p = np.clip(np.asarray(error_probability, dtype=np.float64), _LOGIT_CLIP, 1.0 - _LOGIT_CLIP)
    if p.ndim != 1:
        raise ValueError(f"error_probability must be 1-D (N,), got shape {p.shape}")
    n = p.shape[0]
    if n == 0:
        return p
    target = float(np.clip(total, n * _LOGIT_CLIP, n * (1.0 - _LOGIT_CLIP)))
    logits = np.log(p) - np.log1p(-p)
    low, high = -40.0, 40.0
    for _ in range(100):  # the sum is increasing in the shift: bisection
        shift = 0.5 * (low + high)
        if _sigmoid(logits + shift).sum() > target:
            high = shift
        else:
            low = shift
    return _sigmoid(logits + 0.5 * (low + high))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def suggested_labels(labels, posterior, flagged) -> np.ndarray:
    """The label to suggest for each row: the most probable *other* label where the row is flagged,
    the given label elsewhere (a flag and its suggestion never contradict each other).

    Parameters
    ----------
    labels : array_like, shape (N,)
    posterior : array_like, shape (N, K)
        P(true = i | image, given label).
    flagged : array_like of bool, shape (N,)

    Returns
    -------
    np.ndarray, shape (N,), int64
    """
    labels, post = _labels_and_probs(labels, posterior, probs_name="posterior")
    flags = np.asarray(flagged, dtype=bool)
    others = post.copy()
    others[np.arange(labels.shape[0]), labels] = -np.inf
    best_other = others.argmax(axis=1) if post.shape[1] > 1 else labels
    return np.where(flags, best_other, labels)
