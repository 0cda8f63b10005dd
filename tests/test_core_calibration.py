"""Temperature scaling and Platt scaling."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labelaudit.core.calibration import apply_platt, apply_temperature, fit_platt, fit_temperature, softmax
from labelaudit.core.metrics import expected_calibration_error


def calibrated_logits(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits): temperature 1 is exactly right."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.0, (n, k))
    cumulative = np.cumsum(softmax(logits, axis=1), axis=1)
    labels = np.minimum((rng.random(n)[:, None] > cumulative).sum(axis=1), k - 1)
    return logits, labels


def test_softmax_is_stable_and_normalised():
    probs = softmax(np.array([[1000.0, 1000.0, -1000.0], [0.0, np.log(3.0), -np.inf]]), axis=1)
    np.testing.assert_allclose(probs, [[0.5, 0.5, 0.0], [0.25, 0.75, 0.0]])


@pytest.mark.parametrize("planted", [0.5, 2.0, 3.0])
def test_fit_temperature_recovers_planted_temperature(planted):
    """Labels drawn from softmax(z); the model reports z · planted, so T = planted undoes it.
    N=4000, K=6: measured relative error ≤ 1% on seed 0; tolerance 5%."""
    logits, labels = calibrated_logits(4000, 6, seed=0)
    fitted = fit_temperature(logits * planted, labels)
    assert fitted == pytest.approx(planted, rel=0.05)


def test_temperature_scaling_improves_calibration_of_overconfident_logits():
    logits, labels = calibrated_logits(4000, 4, seed=1)
    overconfident = logits * 3.0
    fitted = fit_temperature(overconfident, labels)

    def top_class_ece(probs):
        return expected_calibration_error(probs.max(axis=1), probs.argmax(axis=1) == labels)

    assert top_class_ece(apply_temperature(overconfident, fitted)) < 0.5 * top_class_ece(softmax(overconfident))


@pytest.mark.parametrize("temperature", [0.0, -1.0, np.inf, np.nan])
def test_apply_temperature_rejects_non_positive(temperature):
    with pytest.raises(ValueError):
        apply_temperature(np.zeros((2, 3)), temperature)


def test_fit_temperature_rejects_bad_shapes():
    with pytest.raises(ValueError):
        fit_temperature(np.zeros((3, 2)), np.array([0, 1]))
    with pytest.raises(ValueError):
        fit_temperature(np.zeros((0, 2)), np.array([], dtype=int))


def test_fit_platt_recovers_planted_parameters():
    """Outcomes ~ Bernoulli(sigmoid(2·logit(s) − 0.5)), N=20000. Measured (2.03, −0.50)."""
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.01, 0.99, 20000)
    logit = np.log(scores / (1 - scores))
    outcomes = rng.random(20000) < 1 / (1 + np.exp(-(2.0 * logit - 0.5)))
    a, b = fit_platt(scores, outcomes)
    assert a == pytest.approx(2.0, abs=0.1)
    assert b == pytest.approx(-0.5, abs=0.1)


def test_fit_platt_stays_near_identity_for_calibrated_scores():
    rng = np.random.default_rng(1)
    scores = rng.uniform(0.01, 0.99, 20000)
    a, b = fit_platt(scores, rng.random(20000) < scores)
    assert a == pytest.approx(1.0, abs=0.06) and b == pytest.approx(0.0, abs=0.06)
    np.testing.assert_allclose(apply_platt(scores, 1.0, 0.0), scores, rtol=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 1.0), st.booleans()), min_size=1, max_size=50))
def test_fit_platt_is_finite_on_any_data_including_separable_and_one_sided(rows):
    scores = np.array([s for s, _ in rows])
    outcomes = np.array([o for _, o in rows])
    a, b = fit_platt(scores, outcomes)
    assert np.isfinite(a) and np.isfinite(b)
    calibrated = apply_platt(scores, a, b)
    assert np.all((calibrated >= 0) & (calibrated <= 1))


def test_fit_platt_moves_towards_the_outcome_frequency_when_all_outcomes_agree():
    scores = np.full(30, 0.5)
    assert np.all(apply_platt(scores, *fit_platt(scores, np.ones(30, bool))) > 0.8)
    assert np.all(apply_platt(scores, *fit_platt(scores, np.zeros(30, bool))) < 0.2)


def test_platt_rejects_bad_input():
    with pytest.raises(ValueError):
        fit_platt(np.array([0.2, 1.2]), np.array([True, False]))
    with pytest.raises(ValueError):
        fit_platt(np.array([0.2, 0.3]), np.array([True]))
