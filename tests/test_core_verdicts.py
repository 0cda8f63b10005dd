"""Verdicts that add up (core/verdicts.py, core/selfcheck.py, report.tables.audit_scores) on planted noise."""

from __future__ import annotations

import numpy as np
import pytest

from labelaudit.core.metrics import average_precision, expected_calibration_error, precision_recall
from labelaudit.core.scoring import suspicion_rank
from labelaudit.core.selfcheck import SelfCheck, plant_flips, planted_flip_metrics, reliability
from labelaudit.core.transition import smoothed_confident_joint_transition
from labelaudit.core.scoring import error_probability, self_confidence
from labelaudit.core.transition import confident_joint
from labelaudit.core.verdicts import (
    calibrate_to_total, concentration_weight, flag_top_estimated, suggested_labels, symmetric_error_count,
)
from labelaudit.report.tables import audit_scores


def planted(n: int = 3000, k: int = 6, rate: float = 0.2, strength: float = 4.0, seed: int = 0):
    """True labels, labels with ``rate`` symmetric flips, and a model's probabilities of the true class
    (softmax of noisy logits whose true-class logit is raised by ``strength``)."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    noisy = true.copy()
    flipped = rng.choice(n, int(round(rate * n)), replace=False)
    noisy[flipped] = (true[flipped] + rng.integers(1, k, len(flipped))) % k
    logits = rng.normal(0.0, 1.0, (n, k))
    logits[np.arange(n), true] += strength
    probs = np.exp(logits - logits.max(1, keepdims=True))
    return true, noisy, probs / probs.sum(1, keepdims=True)


def test_calibrate_to_total_keeps_order_and_hits_the_total():
    rng = np.random.default_rng(1)
    raw = rng.random(500)
    for total in (0.5, 37.0, 250.0, 499.0):
        shifted = calibrate_to_total(raw, total)
        assert shifted.sum() == pytest.approx(total, abs=1e-3)
        assert np.array_equal(np.argsort(raw, kind="stable"), np.argsort(shifted, kind="stable"))
        assert np.all((shifted > 0) & (shifted < 1))
    assert calibrate_to_total(np.array([]), 3.0).shape == (0,)


def symmetric_joint(rng, n_classes: int, noisy_per_row: int, clean_per_row: int = 300) -> np.ndarray:
    joint = np.zeros((n_classes, n_classes))
    for i in range(n_classes):
        others = [j for j in range(n_classes) if j != i]
        joint[i, others] = rng.multinomial(noisy_per_row, np.full(n_classes - 1, 1.0 / (n_classes - 1)))
        joint[i, i] = clean_per_row
    return joint


@pytest.mark.parametrize("n_classes", [3, 5, 10, 20])
@pytest.mark.parametrize("noisy_per_row", [4, 30, 120])
def test_symmetric_error_count_on_planted_symmetric_noise(n_classes, noisy_per_row):
    joint = symmetric_joint(np.random.default_rng(n_classes * noisy_per_row), n_classes, noisy_per_row)
    truth = n_classes * noisy_per_row
    assert symmetric_error_count(joint) == pytest.approx(truth, rel=0.12)


def test_symmetric_error_count_ignores_the_models_own_confusion():
    rng = np.random.default_rng(5)
    joint = symmetric_joint(rng, 10, 45)
    for a, b in [(0, 6), (6, 0), (2, 4), (4, 2), (6, 4)]:  # a model confusing look-alike classes
        joint[a, b] += 40
    plain = joint.sum() - np.trace(joint)
    assert plain == pytest.approx(650)
    assert symmetric_error_count(joint) == pytest.approx(450, rel=0.1)


def test_audit_scores_add_up():
    true, noisy, probs = planted()
    transition = smoothed_confident_joint_transition(noisy, probs)
    verdicts = audit_scores(noisy, probs, transition)
    scores, n_errors = verdicts.scores, verdicts.n_errors
    assert not verdicts.structure.concentrated and verdicts.ranked_by == "self-confidence"
    n_flagged = int(round(n_errors))
    # one claim, not three: the count, the flags and the mean probability agree
    assert scores.is_issue.sum() == n_flagged
    assert np.array_equal(scores.is_issue, scores.rank <= n_flagged)
    assert scores.error_probability.astype(np.float64).sum() == pytest.approx(n_errors, rel=1e-3)
    assert np.array_equal(scores.rank, suspicion_rank(scores.error_probability.astype(np.float64)))
    # ... and they agree with the truth on this well-separated planted noise
    is_error = true != noisy
    assert n_errors / len(noisy) == pytest.approx(is_error.mean(), abs=0.03)
    precision, recall = precision_recall(is_error, scores.is_issue)
    assert precision > 0.85 and recall > 0.85
    assert expected_calibration_error(scores.error_probability, is_error) < 0.06
    # suggestions: a flagged row's suggestion is another label (the true one, mostly); others keep theirs
    assert np.all(scores.suggested[scores.is_issue] != noisy[scores.is_issue])
    assert np.array_equal(scores.suggested[~scores.is_issue], noisy[~scores.is_issue])
    caught = scores.is_issue & is_error
    assert np.mean(scores.suggested[caught] == true[caught]) > 0.9


def test_audit_scores_take_a_given_count():
    _, noisy, probs = planted(n=200)
    verdicts = audit_scores(noisy, probs, np.eye(6), n_errors=17.4)
    assert verdicts.n_errors == 17.4 and verdicts.scores.is_issue.sum() == 17


def test_flag_top_estimated_follows_rank():
    scores = np.array([0.1, 0.9, 0.5, 0.9, 0.0])
    assert flag_top_estimated(scores, 2).tolist() == [False, True, False, True, False]
    assert flag_top_estimated(scores, 10).tolist() == [True, True, True, True, False]  # 0 is never flagged


def test_suggested_labels_never_contradict_the_flag():
    posterior = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3]])
    labels = np.array([0, 2, 1])
    assert suggested_labels(labels, posterior, np.array([True, False, True])).tolist() == [1, 2, 2]


def test_plant_flips_only_in_the_pool_and_shaped_like_the_structure():
    rng = np.random.default_rng(3)
    n, k = 4000, 4
    labels = rng.integers(0, k, n)
    uniform = np.full((n, k), 1.0 / k)
    structure = np.eye(k) * 0.8
    structure[0, 1] = structure[1, 0] = structure[2, 3] = structure[3, 2] = 0.2  # pairs
    pool = rng.random(n) < 0.7
    new, planted_rows = plant_flips(labels, uniform, structure, pool, rate=0.05, seed=0)
    assert planted_rows.sum() == 200 and not np.any(planted_rows & ~pool)
    assert np.array_equal(new[~planted_rows], labels[~planted_rows])
    partner = np.array([1, 0, 3, 2])
    structure_only, _ = plant_flips(labels, uniform, structure, pool, rate=0.05, seed=0, confusion_share=0.0)
    assert np.array_equal(structure_only[planted_rows], partner[labels[planted_rows]])
    # half the draw follows T (always the partner here), half the uniform model confusion (1/3 partner)
    share_to_partner = np.mean(new[planted_rows] == partner[labels[planted_rows]])
    assert share_to_partner == pytest.approx(0.5 + 0.5 / 3, abs=0.08)


def test_planted_flip_metrics():
    planted_rows = np.array([True, True, False, False, False, False])
    pool = np.array([True, True, True, True, True, False])
    flagged = np.array([True, False, True, False, False, True])
    scores = np.array([0.9, 0.4, 0.8, 0.1, 0.2, 0.99])
    check = planted_flip_metrics(planted_rows, pool, flagged, scores, estimated_rate_before=0.10,
                                 estimated_rate_after=0.30)
    assert check.planted == 2 and check.pool == 5
    assert check.recall == 0.5 and check.precision == 0.5  # row 5 is outside the pool
    assert check.auprc == pytest.approx(average_precision(planted_rows[:5], scores[:5]))
    assert check.error_rate_bias == pytest.approx(0.2 - 2 / 6)
    prior = np.array([0.0, 0.0, 0.6, 0.0, 0.0, 0.0])  # row 2 (flagged, not planted) was probably wrong already
    credited = planted_flip_metrics(planted_rows, pool, flagged, scores, estimated_rate_before=0.10,
                                    estimated_rate_after=0.30, prior_error_probability=prior)
    assert credited.precision == pytest.approx((1 + 0.6) / 2) and credited.recall == 0.5


def test_reliability_says_when_not_to_trust():
    true, noisy, probs = planted(k=10, strength=5.0)
    trusted = reliability(noisy, probs, 0.2)
    assert trusted.reliable and "agree with the given labels" in trusted.reason
    rng = np.random.default_rng(0)
    chance_probs = rng.dirichlet(np.ones(10), len(noisy))
    weak = reliability(noisy, chance_probs, 0.015)
    assert not weak.reliable and "cannot tell the classes apart" in weak.reason
    assert not reliability(noisy, probs, 0.62).reliable
    poor_check = SelfCheck(planted=100, pool=2000, precision=0.9, recall=0.2, auprc=0.5, estimated_added_rate=0.01,
                           planted_rate=0.05, error_rate_bias=-0.04, flagged_in_pool=22)
    flagged = reliability(noisy, probs, 0.2, self_check=poor_check)
    assert not flagged.reliable and "self-check found only 20%" in flagged.reason


def test_audit_scores_on_pair_noise_rank_by_the_posterior():
    rng = np.random.default_rng(7)
    n, k = 4000, 6
    true = rng.integers(0, k, n)
    partner = np.array([1, 0, 3, 2, 5, 4])
    noisy = np.where(rng.random(n) < 0.3, partner[true], true)
    logits = rng.normal(0.0, 1.0, (n, k))
    logits[np.arange(n), true] += 4.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    transition = smoothed_confident_joint_transition(noisy, probs)
    verdicts = audit_scores(noisy, probs, transition)
    is_error = true != noisy
    assert verdicts.structure.concentrated and verdicts.ranked_by == "T-posterior"
    assert verdicts.n_errors / n == pytest.approx(is_error.mean(), abs=0.03)
    precision, recall = precision_recall(is_error, verdicts.scores.is_issue)
    assert precision > 0.85 and recall > 0.85
    assert np.mean(verdicts.scores.suggested[is_error & verdicts.scores.is_issue] == true[is_error & verdicts.scores.is_issue]) > 0.95


def test_plant_flips_on_confusable_rows_prefers_images_the_model_hesitates_on():
    rng = np.random.default_rng(9)
    n, k = 2000, 3
    labels = rng.integers(0, k, n)
    confident = np.eye(k)[labels] * 0.97 + 0.01
    hesitant = rng.random(n) < 0.2  # a fifth of the images: 55/45 between the label and another class
    probs = confident.copy()
    probs[hesitant] = 0.0
    probs[hesitant, labels[hesitant]] = 0.55
    probs[hesitant, (labels[hesitant] + 1) % k] = 0.45
    structure = np.full((k, k), 1.0 / k)
    _, uniform_rows = plant_flips(labels, probs, structure, np.ones(n, bool), rate=0.05, seed=1)
    _, confusable = plant_flips(labels, probs, structure, np.ones(n, bool), rate=0.05, seed=1,
                                confusable_rows=True)
    assert np.mean(hesitant[uniform_rows]) < 0.35
    assert np.mean(hesitant[confusable]) > 0.8


def test_concentration_weight_rises_linearly_from_the_structure_threshold():
    assert concentration_weight(0.9, False, low=0.35) == 0.0  # not called concentrated: symmetric verdicts
    assert concentration_weight(0.35, True, low=0.35) == 0.0  # continuous at the threshold
    assert concentration_weight(0.5, True, low=0.35, high=0.65) == pytest.approx(0.5)
    assert concentration_weight(0.65, True, low=0.35, high=0.65) == 1.0
    assert concentration_weight(0.9, True, low=0.35, high=0.65) == 1.0


def mixed_noise(pair_share: float, n: int = 4000, k: int = 6, seed: int = 0):
    """20% label noise, ``pair_share`` of it to a fixed partner class, the rest to a uniform other class."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    partner = np.array([1, 0, 3, 2, 5, 4])
    other = (true + rng.integers(1, k, n)) % k
    to_partner = rng.random(n) < pair_share
    noisy = np.where(rng.random(n) < 0.2, np.where(to_partner, partner[true], other), true)
    logits = rng.normal(0.0, 1.0, (n, k))
    logits[np.arange(n), true] += 4.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return true, noisy, probs


def test_audit_scores_on_mixed_noise_lie_between_the_two_rules():
    true, noisy, probs = mixed_noise(pair_share=0.5)
    transition = smoothed_confident_joint_transition(noisy, probs)
    verdicts = audit_scores(noisy, probs, transition)
    assert 0.0 < verdicts.concentration < 1.0
    assert "self-confidence +" in verdicts.ranked_by and "T-posterior" in verdicts.ranked_by
    symmetric_count = symmetric_error_count(confident_joint(noisy, probs, n_classes=6))
    posterior_count = error_probability(noisy, probs, transition).sum()
    assert min(symmetric_count, posterior_count) < verdicts.n_errors < max(symmetric_count, posterior_count)
    assert verdicts.scores.is_issue.sum() == round(verdicts.n_errors)
    is_error = true != noisy
    both = average_precision(is_error, verdicts.scores.error_probability)
    assert both >= min(average_precision(is_error, 1 - self_confidence(noisy, probs)),
                       average_precision(is_error, error_probability(noisy, probs, transition))) - 0.01


@pytest.mark.parametrize("pair_share, weight", [(0.3, 0.0), (0.7, 1.0)])
def test_audit_scores_on_nearly_pure_noise_use_one_rule(pair_share, weight):
    true, noisy, probs = mixed_noise(pair_share=pair_share)
    assert audit_scores(noisy, probs, smoothed_confident_joint_transition(noisy, probs)).concentration == weight
