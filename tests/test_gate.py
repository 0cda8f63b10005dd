"""The gate's numbers without a model: batch noise rate, intervals, limits, baseline, T lookup, JUnit."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from labelaudit.core.calibration import (
    fit_noise_channel, fit_temperature_to_targets, temperature_scale, training_calibration,
)
from labelaudit.errors import LabelAuditError
from labelaudit.gate import (
    ClassOutcome,
    LabelEvidence,
    Limits,
    RateEstimate,
    class_outcomes,
    compare_with_baseline,
    evaluate_limits,
    find_training_transition,
    fit_batch_noise_rate,
    fit_structure_weight,
    off_diagonal_structure,
    percent,
    rate_estimate,
    score_batch,
)
from labelaudit.report.parquet import write_parquet
from labelaudit.report.schema import SAMPLES_SCHEMA


def planted_batch(seed: int, n: int, *, noise_rate: float, n_classes: int = 5, concentration: float = 0.3):
    """Calibrated clean probabilities q, true labels drawn from q, and given labels with a planted
    share of uniform flips. Returns (q, given, is_wrong)."""
    rng = np.random.default_rng(seed)
    q = rng.dirichlet(np.full(n_classes, concentration), size=n)
    true = (q.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    wrong = rng.random(n) < noise_rate
    given = true.copy()
    given[wrong] = (true[wrong] + rng.integers(1, n_classes, wrong.sum())) % n_classes
    return q, given, wrong


@pytest.mark.parametrize("noise_rate", [0.0, 0.1, 0.3])
def test_batch_noise_rate_recovers_planted_rate(noise_rate):
    q, given, wrong = planted_batch(1, 4000, noise_rate=noise_rate)
    fitted = fit_batch_noise_rate(given, q, off_diagonal_structure(None, 5))
    assert fitted == pytest.approx(wrong.mean(), abs=0.025)


def test_batch_noise_rate_is_not_pulled_to_the_training_rate():
    """A batch three times noisier than the training data (T with 10% noise) is scored as such."""
    q, given, wrong = planted_batch(2, 3000, noise_rate=0.3)
    training_t = np.full((5, 5), 0.1 / 4) + np.eye(5) * (0.9 - 0.1 / 4)
    scores = score_batch(given, q, training_t)
    assert scores.rows.error_probability.mean() == pytest.approx(wrong.mean(), abs=0.03)
    # and the rows the noise hit are the ones scored as likely errors
    assert scores.rows.error_probability[wrong].mean() > 3 * scores.rows.error_probability[~wrong].mean()


@pytest.mark.parametrize("n_rows", [60, 250])
@pytest.mark.parametrize("noise_rate", [0.0, 0.05, 0.2])
def test_gate_interval_covers_realised_error_rate(n_rows, noise_rate):
    """The 95% interval of the batch's error rate, with ε estimated from the batch itself, holds the
    share of rows whose label was really flipped in at least 90% of 60 seeded batches."""
    covered = 0
    for seed in range(60):
        q, given, wrong = planted_batch(100 + seed, n_rows, noise_rate=noise_rate)
        scores = score_batch(given, q)
        estimate = rate_estimate(scores.rows.error_probability, scores.error_probability_draws)
        assert estimate.low <= estimate.rate <= estimate.high
        covered += estimate.low <= wrong.mean() <= estimate.high
    assert covered >= 54


def test_mixture_interval_is_wider_than_fixed_rate_interval():
    """Uncertainty in ε widens the interval: for a large batch it dominates the Bernoulli noise."""
    q, given, _ = planted_batch(5, 3000, noise_rate=0.15)
    scores = score_batch(given, q)
    fixed = rate_estimate(scores.rows.error_probability)
    mixed = rate_estimate(scores.rows.error_probability, scores.error_probability_draws)
    assert fixed.method == "poisson_binomial" and mixed.method == "poisson_binomial_mixture"
    assert mixed.high - mixed.low > 1.2 * (fixed.high - fixed.low)


def test_clean_small_batch_is_not_certain():
    """A confident model agreeing with every label still gives an interval above 0 (no '0% ± 0')."""
    q = np.full((30, 3), 0.01)
    labels = np.arange(30) % 3
    q[np.arange(30), labels] = 0.98
    scores = score_batch(labels, q)
    estimate = rate_estimate(scores.rows.error_probability, scores.error_probability_draws)
    assert estimate.rate < 0.05
    assert estimate.high > 0


def test_off_diagonal_structure():
    uniform = off_diagonal_structure(None, 4)
    np.testing.assert_allclose(uniform.sum(axis=1), 1.0)
    np.testing.assert_allclose(np.diag(uniform), 0.0)
    t = np.array([[0.8, 0.2, 0.0], [0.0, 1.0, 0.0], [0.1, 0.3, 0.6]])
    s = off_diagonal_structure(t, 3)
    np.testing.assert_allclose(s[0], [0.0, 1.0, 0.0])
    np.testing.assert_allclose(s[1], [0.5, 0.0, 0.5])  # no off-diagonal mass: uniform
    np.testing.assert_allclose(s[2], [0.25, 0.75, 0.0])


def test_structure_from_training_t_moves_suggestions_to_confused_class():
    """With T saying class 0 is mislabelled as 1 (never 2), a row given 1 whose image is ambiguous
    between 0 and 2 is suggested as 0."""
    t = np.array([[0.7, 0.3, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    q = np.tile([[0.95, 0.03, 0.02]], (40, 1))
    q[0] = [0.45, 0.05, 0.5]
    labels = np.ones(40, dtype=int)
    scores = score_batch(labels, q, t)
    assert scores.rows.suggested[0] == 0


def estimate(rate, low, high, n=100):
    return RateEstimate(rate=rate, low=low, high=high, errors=rate * n, n=n)


def flagged_rows(n):
    return pd.DataFrame({"path": [f"img{i}.png" for i in range(n)], "given_label": ["a"] * n,
                         "suggested_label": ["b"] * n, "error_probability": [0.9] * n, "rank": range(1, n + 1)})


def test_limits_on_estimate_or_upper_bound():
    rate = estimate(0.04, 0.02, 0.07)
    on_estimate = evaluate_limits(Limits(max_error_rate=0.05), rate, [], flagged_rows(4), 100)
    on_upper = evaluate_limits(Limits(max_error_rate=0.05, on="upper"), rate, [], flagged_rows(4), 100)
    assert on_estimate[0].passed and on_estimate[0].value == 0.04
    assert not on_upper[0].passed and on_upper[0].value == 0.07
    assert on_upper[0].offenders[0].startswith("img0.png: given a, suggested b")


def test_class_limit_names_the_classes_over_it():
    classes = [ClassOutcome("cat", 50, 2, estimate(0.04, 0.01, 0.1, 50)),
               ClassOutcome("dog", 50, 9, estimate(0.2, 0.12, 0.3, 50))]
    [outcome] = evaluate_limits(Limits(max_class_error_rate=0.1), estimate(0.12, 0.08, 0.16), classes,
                                flagged_rows(11), 100)
    assert not outcome.passed
    assert "dog" in outcome.message and "cat" not in outcome.message
    assert len(outcome.offenders) == 1 and outcome.offenders[0].startswith("dog: 20.0%")


def test_issue_and_image_count_limits():
    outcomes = evaluate_limits(Limits(max_issues=3, min_images=150), estimate(0.1, 0.05, 0.15), [],
                               flagged_rows(5), 100)
    by_name = {o.name: o for o in outcomes}
    assert not by_name["max_issues"].passed and by_name["max_issues"].value == 5
    assert len(by_name["max_issues"].offenders) == 5
    assert not by_name["min_images"].passed and "fewer than 150" in by_name["min_images"].message
    assert all(o.passed for o in evaluate_limits(Limits(max_issues=5, min_images=100), estimate(0.1, 0.05, 0.15),
                                                 [], flagged_rows(5), 100))


@pytest.mark.parametrize("limits", [Limits(max_error_rate=1.5), Limits(on="lower"), Limits(max_issues=-1)])
def test_bad_limits_are_input_errors(limits):
    with pytest.raises(LabelAuditError):
        limits.validate()


def test_class_outcomes_only_for_present_classes():
    labels = np.array([0, 0, 2, 2])
    outcomes = class_outcomes(["a", "b", "c"], labels, np.array([0.1, 0.3, 0.9, 0.7]),
                              np.array([False, False, True, True]), limit=0.5)
    assert [o.label for o in outcomes] == ["a", "c"]
    assert outcomes[0].error_rate.rate == pytest.approx(0.2) and not outcomes[0].over_limit
    assert outcomes[1].over_limit and outcomes[1].n_issues == 2


def test_baseline_comparison(tmp_path):
    frame = pd.DataFrame({
        "path": [f"{i}.png" for i in range(6)], "given_label": ["a", "a", "a", "b", "b", None],
        "suggested_label": ["a"] * 6, "p_given": [0.9] * 6, "label_quality": [0.9] * 6,
        "error_probability": [0.0, 0.1, 0.2, 0.0, 0.0, None], "is_issue": [False] * 6, "rank": [1] * 6,
        "status": ["audited"] * 5 + ["missing_file"], "fold": [0] * 6,
    })
    path = write_parquet(frame, tmp_path / "samples.parquet", schema=SAMPLES_SCHEMA)
    classes = [ClassOutcome("a", 40, 4, estimate(0.12, 0.05, 0.2, 40)),
               ClassOutcome("b", 40, 12, estimate(0.3, 0.2, 0.4, 40)),
               ClassOutcome("c", 40, 0, estimate(0.0, 0.0, 0.02, 40))]
    comparison = compare_with_baseline(path, estimate(0.14, 0.1, 0.18), classes)
    assert comparison.audited == 5
    assert comparison.error_rate == pytest.approx(0.06)
    assert comparison.change == pytest.approx(0.08)
    by_label = {c.label: c for c in comparison.classes}
    assert by_label["a"].baseline_rate == pytest.approx(0.1) and not by_label["a"].worse  # within interval
    assert by_label["b"].worse and by_label["b"].change == pytest.approx(0.3)
    assert by_label["c"].baseline_rate is None and not by_label["c"].worse
    assert [c.label for c in comparison.worse_classes] == ["b"]


def test_baseline_must_be_a_report(tmp_path):
    (tmp_path / "other.parquet").write_bytes(b"not parquet")
    with pytest.raises(LabelAuditError, match="not a labelaudit samples or check report"):
        compare_with_baseline(tmp_path / "other.parquet", estimate(0.1, 0.0, 0.2), [])
    with pytest.raises(LabelAuditError, match="does not exist"):
        compare_with_baseline(tmp_path / "missing.parquet", estimate(0.1, 0.0, 0.2), [])


def write_transition(path: Path, classes, matrices: dict[str, np.ndarray]) -> None:
    records = []
    for estimator, matrix in matrices.items():
        for i, true in enumerate(classes):
            for j, noisy in enumerate(classes):
                records.append({"true_label": true, "noisy_label": noisy, "probability": matrix[i, j],
                                "ci_low": matrix[i, j], "ci_high": matrix[i, j], "count": 1.0,
                                "estimator": estimator})
    write_parquet(pd.DataFrame.from_records(records), path)


def test_training_transition_prefers_glc_and_follows_model_class_order(tmp_path):
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    glc = np.array([[0.9, 0.1], [0.2, 0.8]])
    write_transition(run / "transition.parquet", ["x", "y"],
                     {"confident_joint": np.eye(2), "glc": glc})
    model = SimpleNamespace(directory=run / "model", classes=["y", "x"])
    matrix, source = find_training_transition(model)
    np.testing.assert_allclose(matrix, [[0.8, 0.2], [0.1, 0.9]])  # reordered to the model's classes
    assert source.startswith("glc from")


def test_training_transition_absent_or_for_other_classes(tmp_path):
    model = SimpleNamespace(directory=tmp_path / "model", classes=["x", "y"])
    assert find_training_transition(model) == (None, "uniform (no transition.parquet beside the model)")
    write_transition(tmp_path / "transition.parquet", ["x", "z"], {"confident_joint": np.eye(2)})
    matrix, source = find_training_transition(model)
    assert matrix is None and "differ" in source


def test_percent():
    assert percent(0.073) == "7.3%"
    assert percent(0.0025) == "0.25%"
    assert percent(0.0) == "0.0%"


def test_junit_from_outcomes(tmp_path):
    """JUnit built from a hand-made result: one case per limit, failures carry offenders, and
    characters XML cannot hold are replaced instead of breaking the file."""
    from labelaudit.gate import CheckResult, NoiseModel
    from labelaudit.report.junit import write_junit

    limits = evaluate_limits(Limits(max_error_rate=0.05, max_issues=10), estimate(0.2, 0.1, 0.3),
                             [], flagged_rows(3).assign(path=["ok.png", "bad\x01name.png", "a&b<c>.png"]), 100)
    result = CheckResult(
        batch_csv=Path("batch.csv"), model_dir=Path("model"), report_path=Path("r.parquet"), rows=100,
        audited=100, status_counts={"audited": 100}, error_rate=estimate(0.2, 0.1, 0.3), n_issues=3,
        classes=[], limits=limits, on="estimate", worst_rows=flagged_rows(0), samples=pd.DataFrame(),
        noise_model=NoiseModel(0.2, 0.2, 0.1, 0.3, "uniform", None), baseline=None, timings={},
    )
    root = ET.parse(write_junit(result, tmp_path / "out" / "junit.xml")).getroot()
    cases = root.findall("./testsuite/testcase")
    assert [c.get("name") for c in cases] == ["--max-error-rate 0.05", "--max-issues 10"]
    failure = cases[0].find("failure")
    assert failure is not None and "exceeds 5.0%" in failure.get("message")
    assert "bad\ufffdname.png" in failure.text and "a&b<c>.png" in failure.text
    assert cases[1].find("failure") is None
    assert root.get("failures") == "1" and root.find("testsuite").get("tests") == "2"


# --------------------------------------------------------------------------- calibration and structure


def overconfident_batch(seed: int, n: int, *, noise_rate: float, temperature: float, n_classes: int = 10,
                        pairs: bool = False):
    """A model whose probabilities are ``softmax(z)`` while the true class is drawn from
    ``softmax(z / temperature)`` (overconfident for temperature > 1), given labels with a planted share
    of flips: uniform over the other classes, or to the class's partner (0↔1, 2↔3, …) with ``pairs``.
    Returns (model probs, given labels, true labels, is_wrong)."""
    from labelaudit.core.calibration import softmax

    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 4.0, size=(n, n_classes))
    calibrated = softmax(logits / temperature)
    true = (calibrated.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    wrong = rng.random(n) < noise_rate
    given = true.copy()
    if pairs:
        given[wrong] = true[wrong] ^ 1
    else:
        given[wrong] = (true[wrong] + rng.integers(1, n_classes, wrong.sum())) % n_classes
    return softmax(logits), given, true, wrong


def test_temperature_scale_and_fit_recover_a_planted_temperature():
    probs, _, true, _ = overconfident_batch(10, 6000, noise_rate=0.0, temperature=2.0)
    assert fit_temperature_to_targets(probs, np.eye(10)[true]) == pytest.approx(2.0, rel=0.08)
    np.testing.assert_allclose(temperature_scale(probs, 1.0), probs, atol=1e-12)
    softer = temperature_scale(probs, 2.0)
    np.testing.assert_allclose(softer.sum(axis=1), 1.0)
    assert softer.max(axis=1).mean() < probs.max(axis=1).mean()


def test_training_calibration_finds_the_temperature_from_noisy_labels():
    """Fitted to the posterior of the true class (not to the noisy given labels) on rows with 20% planted
    flips, the temperature is the one the true labels call for; the given labels alone would say more."""
    probs, given, true, _ = overconfident_batch(11, 6000, noise_rate=0.2, temperature=1.6)
    method_probs = temperature_scale(probs, 1.6)  # the method's non-memorised, calibrated view
    calibration = training_calibration(given, probs, method_probs)
    assert calibration["fitted"] and calibration["rows"] == 6000
    assert calibration["temperature"] == pytest.approx(1.6, rel=0.05)
    assert calibration["training_noise_rate"] == pytest.approx(0.2, abs=0.03)
    assert fit_temperature_to_targets(probs, np.eye(10)[given]) > 2.0  # what the noisy labels would say


@pytest.mark.parametrize("noise_rate", [0.0, 0.2])
def test_calibrated_probabilities_fix_the_batch_estimate(noise_rate):
    """An overconfident model counts its own mistakes as wrong labels (the estimate is far too high);
    scored with the fitted temperature the estimate is within 3 points of the planted rate."""
    errors = {"raw": [], "calibrated": []}
    for seed in range(4):
        probs, given, _, wrong = overconfident_batch(20 + seed, 500, noise_rate=noise_rate, temperature=1.6)
        for name, q in (("raw", probs), ("calibrated", temperature_scale(probs, 1.6))):
            errors[name].append(score_batch(given, q).rows.error_probability.mean() - wrong.mean())
    assert np.mean(errors["raw"]) > 0.05
    assert abs(np.mean(errors["calibrated"])) < 0.03
    assert max(abs(e) for e in errors["calibrated"]) < 0.05


def test_structure_weight_follows_the_batch():
    """With a training T that confuses only partner classes, a batch with uniform flips is scored with
    a mostly uniform structure and a batch with partner flips with the training one; both estimates
    are within 3 points. The training structure alone misjudges the uniform batch."""
    n_classes = 10
    training_t = np.eye(n_classes) * 0.8
    training_t[np.arange(n_classes), np.arange(n_classes) ^ 1] = 0.2
    uniform_probs, uniform_given, _, uniform_wrong = overconfident_batch(30, 2000, noise_rate=0.2, temperature=1.0)
    pair_probs, pair_given, _, pair_wrong = overconfident_batch(31, 2000, noise_rate=0.2, temperature=1.0,
                                                                pairs=True)
    trained = off_diagonal_structure(training_t, n_classes)
    assert fit_structure_weight(uniform_given, uniform_probs, trained) < 0.3
    assert fit_structure_weight(pair_given, pair_probs, trained) > 0.7
    for probs, given, wrong in ((uniform_probs, uniform_given, uniform_wrong), (pair_probs, pair_given, pair_wrong)):
        scores = score_batch(given, probs, training_t)
        assert scores.rows.error_probability.mean() == pytest.approx(wrong.mean(), abs=0.03)
    fixed = LabelEvidence.of(uniform_given, uniform_probs, trained)  # the training structure alone is off
    assert abs(fixed.error_probability(fixed.most_likely_noise_rate()).mean() - uniform_wrong.mean()) > 0.05


def test_noise_channel_is_the_planted_one():
    """EM recovers pair-wise flips (0 → 1 at 30%) from calibrated clean probabilities."""
    rng = np.random.default_rng(40)
    from labelaudit.core.calibration import softmax

    q = softmax(rng.normal(0.0, 5.0, size=(8000, 4)))
    true = (q.cumsum(axis=1) > rng.random((8000, 1))).argmax(axis=1)
    given = true.copy()
    flip = (true == 0) & (rng.random(8000) < 0.3)
    given[flip] = 1
    transition = fit_noise_channel(given, q)
    np.testing.assert_allclose(transition.sum(axis=1), 1.0)
    assert transition[0, 1] == pytest.approx(0.3, abs=0.04)
    assert transition[2, 2] > 0.97 and transition[1, 1] > 0.97


def test_no_row_to_estimate_from_fails_the_error_rate_limits_only():
    unavailable = RateEstimate.unavailable()
    assert not unavailable.available
    assert unavailable.to_dict()["estimate"] is None and unavailable.to_dict()["high"] is None
    outcomes = evaluate_limits(Limits(max_error_rate=0.1, max_class_error_rate=0.2, max_issues=0, min_images=0),
                               unavailable, [], flagged_rows(0), 0, unavailable_reason="all 5 rows were seen")
    by_name = {o.name: o for o in outcomes}
    assert not by_name["max_error_rate"].passed and not by_name["max_class_error_rate"].passed
    assert by_name["max_error_rate"].message == "cannot be checked: all 5 rows were seen"
    assert by_name["max_error_rate"].to_dict()["value"] is None  # JSON has no NaN
    assert by_name["max_issues"].passed and by_name["min_images"].passed


def test_batch_flags_add_up_to_the_estimate():
    from labelaudit.gate import flag_estimated_count

    rng = np.random.default_rng(4)
    n, k = 600, 5
    true = rng.integers(0, k, n)
    labels = np.where(rng.random(n) < 0.2, (true + rng.integers(1, k, n)) % k, true)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), true] += 3.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    transition = np.full((k, k), 0.2 / (k - 1))
    np.fill_diagonal(transition, 0.8)
    rows = flag_estimated_count(labels, probs, transition)
    n_flagged = int(np.rint(rows.error_probability.astype(np.float64).sum()))
    assert rows.is_issue.sum() == n_flagged
    assert np.array_equal(rows.is_issue, rows.rank <= n_flagged)
    assert np.all(rows.suggested[rows.is_issue] != labels[rows.is_issue])
    assert np.array_equal(rows.suggested[~rows.is_issue], labels[~rows.is_issue])
