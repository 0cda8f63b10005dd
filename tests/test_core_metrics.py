"""Detection and calibration metrics, and the intervals used by the `check` gate."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labelaudit.core.intervals import (
    EXACT_MAX_N,
    normal_quantile,
    poisson_binomial_interval,
    poisson_binomial_pmf,
    wilson_interval,
)
from labelaudit.core.metrics import accuracy, average_precision, expected_calibration_error, precision_recall

# --- average precision -------------------------------------------------------------------------


def test_average_precision_by_hand():
    """Errors at ranks 1 and 3: precision 1/1 and 2/3, each adding recall 1/2 → AP = 5/6."""
    is_error = np.array([True, False, True, False, False])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    assert average_precision(is_error, scores) == pytest.approx(5 / 6)


def test_average_precision_tied_scores_enter_together():
    """Threshold 0.9 flags two samples (1 error): P = 1/2, R = 1/2. Threshold 0.1 adds the
    second error: P = 2/3, R = 1. AP = 0.5·0.5 + 0.5·2/3 = 7/12."""
    assert average_precision(np.array([True, False, True]), np.array([0.9, 0.9, 0.1])) == pytest.approx(7 / 12)


def test_average_precision_extremes():
    is_error = np.array([False, True, False, True])
    assert average_precision(is_error, np.array([0.1, 0.9, 0.2, 0.8])) == pytest.approx(1.0)
    assert average_precision(is_error, np.array([0.9, 0.1, 0.8, 0.2])) == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert math.isnan(average_precision(np.zeros(3, bool), np.array([0.1, 0.2, 0.3])))


def test_average_precision_matches_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(5):
        is_error = rng.random(400) < 0.15
        scores = np.round(rng.random(400) + 0.5 * is_error, 1)  # rounding creates ties
        assert average_precision(is_error, scores) == pytest.approx(
            metrics.average_precision_score(is_error, scores), abs=1e-12
        )


# --- precision / recall / accuracy -------------------------------------------------------------


def test_precision_recall_by_hand_and_undefined_cases():
    is_error = np.array([True, True, False, False, True])
    flagged = np.array([True, False, True, False, False])
    assert precision_recall(is_error, flagged) == pytest.approx((0.5, 1 / 3))
    precision, recall = precision_recall(is_error, np.zeros(5, bool))
    assert math.isnan(precision) and recall == 0.0
    precision, recall = precision_recall(np.zeros(5, bool), flagged)
    assert precision == 0.0 and math.isnan(recall)


def test_accuracy_by_hand():
    probs = np.array([[0.6, 0.4], [0.3, 0.7], [0.8, 0.2]])
    assert accuracy(np.array([0, 0, 0]), probs) == pytest.approx(2 / 3)


# --- expected calibration error ---------------------------------------------------------------


def test_ece_by_hand():
    """Two bins: [0, 0.5) holds probs 0.2, 0.4 (mean 0.3) with 1 event of 2 → |0.3 − 0.5| · 2/4;
    [0.5, 1] holds 0.6, 1.0 (mean 0.8) with 2 events of 2 → |0.8 − 1| · 2/4. ECE = 0.2."""
    probs = np.array([0.2, 0.4, 0.6, 1.0])
    outcomes = np.array([True, False, True, True])
    assert expected_calibration_error(probs, outcomes, n_bins=2) == pytest.approx(0.2)


def test_ece_small_when_calibrated_and_large_when_not():
    rng = np.random.default_rng(0)
    probs = rng.random(20000)
    calibrated = rng.random(20000) < probs
    overconfident = rng.random(20000) < probs**2  # true frequency p² < stated p
    assert expected_calibration_error(probs, calibrated) < 0.02
    assert expected_calibration_error(probs, overconfident) > 0.1  # ≈ E|p − p²| = 1/6


# --- normal quantile and Wilson ------------------------------------------------------------------


@pytest.mark.parametrize(
    "p,z", [(0.5, 0.0), (0.975, 1.959963984540054), (0.995, 2.5758293035489004), (0.05, -1.6448536269514729)]
)
def test_normal_quantile_known_values(p, z):
    assert normal_quantile(p) == pytest.approx(z, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(st.floats(1e-300, 1 - 1e-12))
def test_normal_quantile_inverts_the_cdf(p):
    z = normal_quantile(p)
    assert 0.5 * math.erfc(-z / math.sqrt(2)) == pytest.approx(p, rel=1e-9)


def test_wilson_interval_matches_newcombe_1998():
    """Newcombe (1998), Statistics in Medicine 17:857, Table I, method 3 (Wilson score)."""
    for (successes, n), expected in [
        ((81, 263), (0.2553, 0.3662)),
        ((15, 148), (0.0624, 0.1605)),
        ((0, 20), (0.0, 0.1611)),
        ((1, 29), (0.0061, 0.1718)),
    ]:
        assert wilson_interval(successes, n) == pytest.approx(expected, abs=5e-5)


def test_wilson_rejects_bad_counts():
    for successes, n in [(1, 0), (-1, 5), (6, 5)]:
        with pytest.raises(ValueError):
            wilson_interval(successes, n)


# --- Poisson-binomial --------------------------------------------------------------------------


def test_poisson_binomial_pmf_by_hand():
    """p = (0.5, 0.2): P(0) = 0.5·0.8, P(1) = 0.5·0.8 + 0.5·0.2, P(2) = 0.5·0.2."""
    np.testing.assert_allclose(poisson_binomial_pmf(np.array([0.5, 0.2])), [0.4, 0.5, 0.1])
    np.testing.assert_allclose(poisson_binomial_pmf(np.array([1.0, 0.0, 1.0])), [0, 0, 1, 0])


def test_poisson_binomial_pmf_equal_probs_is_binomial():
    n, p = 40, 0.3
    binomial = [math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(n + 1)]
    np.testing.assert_allclose(poisson_binomial_pmf(np.full(n, p)), binomial, atol=1e-15)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=300))
def test_poisson_binomial_pmf_sums_to_one_with_right_mean(probs):
    probs = np.array(probs)
    pmf = poisson_binomial_pmf(probs)
    assert pmf.shape == (probs.shape[0] + 1,) and np.all(pmf >= 0)
    assert pmf.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.dot(np.arange(pmf.shape[0]), pmf) == pytest.approx(probs.sum(), abs=1e-9)


def test_poisson_binomial_interval_covers_realised_rate():
    """200 seeded batches of 300 samples with heterogeneous error probabilities; the 95%
    interval must hold the realised error rate in at least 90% of them."""
    covered = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        probs = rng.beta(0.5, 3.0, size=300)
        realised = np.mean(rng.random(300) < probs)
        expected, low, high = poisson_binomial_interval(probs)
        assert low <= expected <= high
        assert expected == pytest.approx(probs.mean())
        covered += low <= realised <= high
    assert covered >= 180


def test_poisson_binomial_interval_exact_quantiles_by_hand():
    """Two fair coins: P(0) = 1/4, P(≤1) = 3/4. The 50% interval (tails 1/4) is counts [0, 1]."""
    assert poisson_binomial_interval(np.array([0.5, 0.5]), confidence=0.5) == pytest.approx((0.5, 0.0, 0.5))


def test_poisson_binomial_normal_branch_agrees_with_exact_distribution():
    """Above EXACT_MAX_N the interval uses the normal approximation; compare it with the
    quantiles of the exact distribution of the same probabilities."""
    rng = np.random.default_rng(3)
    probs = rng.beta(1.0, 6.0, size=EXACT_MAX_N + 5000)
    expected, low, high = poisson_binomial_interval(probs)
    cdf = np.cumsum(poisson_binomial_pmf(probs))
    exact_low = np.searchsorted(cdf, 0.025) / probs.shape[0]
    exact_high = np.searchsorted(cdf, 0.975) / probs.shape[0]
    assert low == pytest.approx(exact_low, abs=2e-4)
    assert high == pytest.approx(exact_high, abs=2e-4)
    assert high - low > 0.005  # not degenerate


def test_poisson_binomial_rejects_bad_input():
    for bad in [np.array([]), np.array([0.5, 1.5]), np.array([[0.5]]), np.array([np.nan])]:
        with pytest.raises(ValueError):
            poisson_binomial_interval(bad)
    with pytest.raises(ValueError):
        poisson_binomial_interval(np.array([0.5]), confidence=1.0)
