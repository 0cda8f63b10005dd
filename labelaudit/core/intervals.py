"""Intervals for error counts and rates (numpy + stdlib math only).

The number of label errors in a batch, given per-sample error probabilities p_n, is a sum of
independent Bernoulli(p_n) variables: a Poisson-binomial count. :func:`poisson_binomial_interval`
gives a central interval for the realised error *rate* of such a batch.
"""

from __future__ import annotations

import math

import numpy as np

# Above this many samples the exact count distribution (O(N · spread) work) is replaced by a
# normal approximation, which is accurate there unless nearly all p_n are ~0 or ~1.
EXACT_MAX_N = 20000
# Cells of the count distribution below this are dropped while convolving; the total mass lost
# is below 2 · N · 1e-18 and is renormalised away. This keeps the convolution to the cells
# that carry the distribution instead of all N + 1.
_PMF_TAIL_CUTOFF = 1e-18

# Acklam's rational approximation to the inverse normal CDF (relative error < 1.2e-9),
# refined below by one Halley step.
_ACKLAM_A = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02,
             1.383577518672690e02, -3.066479806614716e01, 2.506628277459239e00)
_ACKLAM_B = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02,
             6.680131188771972e01, -1.328068155288572e01)
_ACKLAM_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00,
             -2.549732539343734e00, 4.374664141464968e00, 2.938163982698783e00)
_ACKLAM_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00,
             3.754408661907416e00)
_ACKLAM_SPLIT = 0.02425


def _polynomial(coefficients: tuple[float, ...], x: float) -> float:
    result = 0.0
    for c in coefficients:
        result = result * x + c
    return result


def normal_quantile(p: float) -> float:
    """Inverse of the standard normal CDF.

    Parameters
    ----------
    p : float
        In (0, 1).

    Returns
    -------
    float
        z with Φ(z) = p (to about 1e-15 relative).
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p > 0.5:
        # 1 − p is exact here (Sterbenz), and the refinement is accurate in the lower tail
        return -normal_quantile(1.0 - p)
    if p < _ACKLAM_SPLIT:
        q = math.sqrt(-2.0 * math.log(p))
        x = _polynomial(_ACKLAM_C, q) / (_polynomial(_ACKLAM_D, q) * q + 1.0)
    else:
        q = p - 0.5
        r = q * q
        x = _polynomial(_ACKLAM_A, r) * q / (_polynomial(_ACKLAM_B, r) * r + 1.0)
    # one Halley step against the exact CDF
    error = 0.5 * math.erfc(-x / math.sqrt(2.0)) - p
    u = error * math.sqrt(2.0 * math.pi) * math.exp(x * x / 2.0)
    return x - u / (1.0 + x * u / 2.0)


def _validate_probabilities(probs) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"probs must be 1-D (N,), got shape {p.shape}")
    if p.shape[0] == 0:
        raise ValueError("probs is empty")
    if not np.all(np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("probs must be probabilities in [0, 1]")
    return p


def _validate_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def poisson_binomial_pmf(probs) -> np.ndarray:
    """Distribution of the number of successes among independent Bernoulli(p_n) trials.

    Exact dynamic programme (one convolution per trial), skipping cells whose probability
    has fallen below 1e-18 (total discarded mass < 2·N·1e-18, renormalised away).

    Parameters
    ----------
    probs : array_like, shape (N,)

    Returns
    -------
    np.ndarray, shape (N + 1,)
        ``pmf[k] = P(count = k)``; sums to 1.
    """
    p = _validate_probabilities(probs)
    pmf = np.zeros(p.shape[0] + 1)
    pmf[0] = 1.0
    lo, hi = 0, 0  # support currently tracked, inclusive
    for p_n in p:
        segment = pmf[lo:hi + 1].copy()
        pmf[lo:hi + 1] = segment * (1.0 - p_n)
        pmf[lo + 1:hi + 2] += segment * p_n
        hi += 1
        while lo < hi and pmf[lo] < _PMF_TAIL_CUTOFF:
            pmf[lo] = 0.0
            lo += 1
        while hi > lo and pmf[hi] < _PMF_TAIL_CUTOFF:
            pmf[hi] = 0.0
            hi -= 1
    return pmf / pmf.sum()


def poisson_binomial_interval(probs, *, confidence: float = 0.95) -> tuple[float, float, float]:
    """Expected error rate and a central interval for the realised error rate of a batch.

    The count of errors is Poisson-binomial with success probabilities ``probs``. For
    N <= 20000 the interval is read off the exact count distribution
    (:func:`poisson_binomial_pmf`): ``low`` is the smallest k with ``P(count <= k) >= α/2``,
    ``high`` the smallest k with ``P(count <= k) >= 1 − α/2`` (α = 1 − confidence), so the
    interval holds the count with probability at least ``confidence``. For larger N it is
    the normal approximation ``Σp ± z·sqrt(Σp(1−p))``, clipped to [0, N]. Counts are divided
    by N to give rates.

    Parameters
    ----------
    probs : array_like, shape (N,)
        Per-sample error probabilities.
    confidence : float
        In (0, 1).

    Returns
    -------
    expected, low, high : float
        Rates in [0, 1], ``low <= expected <= high`` up to the discreteness of the count.
    """
    p = _validate_probabilities(probs)
    _validate_confidence(confidence)
    n = p.shape[0]
    expected = float(p.sum())
    tail = (1.0 - confidence) / 2.0
    if n <= EXACT_MAX_N:
        cdf = np.cumsum(poisson_binomial_pmf(p))
        # rounding can leave the last cdf value a hair under 1; searchsorted then needs a cap
        low = min(int(np.searchsorted(cdf, tail, side="left")), n)
        high = min(int(np.searchsorted(cdf, 1.0 - tail, side="left")), n)
    else:
        z = normal_quantile(1.0 - tail)
        spread = z * math.sqrt(float(np.sum(p * (1.0 - p))))
        low = max(expected - spread, 0.0)
        high = min(expected + spread, float(n))
    return expected / n, low / n, high / n


def wilson_interval(successes: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion.

    Parameters
    ----------
    successes : int
        In [0, n].
    n : int
        Number of trials, > 0.
    confidence : float
        In (0, 1).

    Returns
    -------
    low, high : float
    """
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, {n}], got {successes}")
    _validate_confidence(confidence)
    z = normal_quantile(1.0 - (1.0 - confidence) / 2.0)
    proportion = successes / n
    denominator = 1.0 + z * z / n
    centre = (proportion + z * z / (2.0 * n)) / denominator
    half_width = z / denominator * math.sqrt(proportion * (1.0 - proportion) / n + z * z / (4.0 * n * n))
    return max(centre - half_width, 0.0), min(centre + half_width, 1.0)
