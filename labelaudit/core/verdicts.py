"""Turning scores into verdicts: which rows to flag as likely label errors.

DESIGN.md §4, "verdicts must add up": ``is_issue`` flags about as many rows as the estimated error rate
says are wrong, taken in ``rank`` order. With calibrated error probabilities their sum is the expected
number of wrong labels, so the flagged rows are the ``round(sum)`` most probable errors.
"""

from __future__ import annotations

import numpy as np


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
