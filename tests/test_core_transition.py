"""Transition-matrix estimators on planted noise.

Synthetic data: true labels uniform over K classes, noisy label drawn from a planted T[true],
clean probabilities q = softmax(signal · onehot(true) + N(0, 1) noise). A model trained on the
noisy labels is stood in for by the noisy-class posterior q @ T.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labelaudit.core.calibration import softmax
from labelaudit.core.transition import (
    anchor_transition,
    bootstrap_transition_ci,
    confident_joint,
    confusion_counts,
    glc_transition,
    realised_transition,
    transition_from_confident_joint,
)


def planted_transition(n_classes: int, kind: str, rate: float) -> np.ndarray:
    """'symmetric': flip to any other class with total probability `rate`.
    'pairs': classes (0,1), (2,3), … confused: 2i → 2i+1 with `rate`, 2i+1 → 2i with rate/2."""
    if kind == "symmetric":
        t = np.full((n_classes, n_classes), rate / (n_classes - 1))
        np.fill_diagonal(t, 1.0 - rate)
        return t
    t = np.eye(n_classes)
    for i in range(0, n_classes - 1, 2):
        t[i, i], t[i, i + 1] = 1.0 - rate, rate
        t[i + 1, i + 1], t[i + 1, i] = 1.0 - rate / 2, rate / 2
    return t


def noisy_dataset(n: int, transition: np.ndarray, *, signal: float, seed: int):
    """Returns (true_labels, noisy_labels, clean_probs)."""
    rng = np.random.default_rng(seed)
    k = transition.shape[0]
    true = rng.integers(0, k, n)
    cumulative = np.cumsum(transition[true], axis=1)
    noisy = np.minimum((rng.random(n)[:, None] > cumulative).sum(axis=1), k - 1)
    clean_probs = softmax(signal * np.eye(k)[true] + rng.normal(0.0, 1.0, (n, k)), axis=1)
    return true, noisy, clean_probs


def assert_row_stochastic(matrix: np.ndarray) -> None:
    assert np.all(np.isfinite(matrix))
    assert np.all((matrix >= 0) & (matrix <= 1))
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-9)


PLANTED = [("symmetric", 0.2), ("pairs", 0.4)]


def test_confusion_counts_and_realised_transition_by_hand():
    true = np.array([0, 0, 0, 1, 1, 2])
    noisy = np.array([0, 0, 1, 1, 0, 2])
    np.testing.assert_array_equal(
        confusion_counts(true, noisy, n_classes=4),
        [[2, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]],
    )
    np.testing.assert_allclose(
        realised_transition(true, noisy, n_classes=4),
        [[2 / 3, 1 / 3, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]],  # class 3 absent: identity
    )


def test_confident_joint_by_hand():
    """Thresholds t0 = mean(0.9, 0.3) = 0.6, t1 = mean(0.8, 0.6) = 0.7.
    Sample 0 → (true 0, given 0); sample 1 has p1 = 0.7 = t1 → (1, 0); sample 2 → (1, 1);
    sample 3 is confident in nothing. Column 1 holds 1 count for 2 labels → scaled to 2."""
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.2, 0.8], [0.4, 0.6]])
    np.testing.assert_allclose(confident_joint(labels, probs), [[1.0, 0.0], [1.0, 2.0]])
    np.testing.assert_allclose(transition_from_confident_joint(labels, probs), [[1.0, 0.0], [1 / 3, 2 / 3]])


def test_confident_joint_class_never_given_is_never_a_true_class():
    """t0 = mean(0.8, 0.3) = 0.55, t1 = 0.6, class 2 is never a given label (no threshold).
    Sample 1 looks like class 2 but is confident in nothing; column 0 (1 count, 2 labels) is
    scaled to 2."""
    labels = np.array([0, 0, 1])
    probs = np.array([[0.8, 0.1, 0.1], [0.3, 0.1, 0.6], [0.1, 0.6, 0.3]])
    np.testing.assert_allclose(confident_joint(labels, probs, n_classes=3), [[2, 0, 0], [0, 1, 0], [0, 0, 0]])
    np.testing.assert_allclose(transition_from_confident_joint(labels, probs)[2], [0, 0, 1])


@pytest.mark.parametrize("kind,rate", PLANTED)
@pytest.mark.parametrize("noisy_posterior", [False, True])
def test_confident_joint_recovers_planted_transition(kind, rate, noisy_posterior):
    """N=5000, K=5, signal 3 (clean accuracy ≈ 94%). Measured mean |T̂ − T_realised| ≤ 0.0064
    over 5 seeds for both kinds and both kinds of pred_probs; tolerance 0.015."""
    t = planted_transition(5, kind, rate)
    true, noisy, clean_probs = noisy_dataset(5000, t, signal=3.0, seed=11)
    pred_probs = clean_probs @ t if noisy_posterior else clean_probs
    estimate = transition_from_confident_joint(noisy, pred_probs, n_classes=5)
    realised = realised_transition(true, noisy, n_classes=5)
    assert np.abs(estimate - realised).mean() <= 0.015
    joint = confident_joint(noisy, pred_probs)
    np.testing.assert_allclose(joint.sum(axis=0), np.bincount(noisy, minlength=5))


@pytest.mark.parametrize("kind,rate", PLANTED)
def test_glc_recovers_planted_transition_from_5_percent_trusted(kind, rate):
    """pred_probs = q @ T with signal 6; 5% of N=5000 rows trusted. Measured mean
    |T̂ − T| ≤ 0.009 over 10 seeds; tolerance 0.02."""
    t = planted_transition(5, kind, rate)
    true, _, clean_probs = noisy_dataset(5000, t, signal=6.0, seed=3)
    trusted = np.random.default_rng(4).random(5000) < 0.05
    estimate, missing = glc_transition(true[trusted], (clean_probs @ t)[trusted], n_classes=5)
    assert not missing.any()
    assert np.abs(estimate - t).mean() <= 0.02


def test_glc_class_without_trusted_rows_gets_identity_row():
    trusted_labels = np.array([0, 0, 2])
    probs = np.array([[0.7, 0.2, 0.1], [0.9, 0.1, 0.0], [0.1, 0.1, 0.8]])
    estimate, missing = glc_transition(trusted_labels, probs, n_classes=3)
    np.testing.assert_array_equal(missing, [False, True, False])
    np.testing.assert_allclose(estimate, [[0.8, 0.15, 0.05], [0, 1, 0], [0.1, 0.1, 0.8]])


@pytest.mark.parametrize("kind,rate", PLANTED)
def test_anchor_recovers_planted_transition_when_anchor_points_exist(kind, rate):
    """30% of rows are near-anchors (signal 10), the rest signal 2, pred_probs = q @ T.
    Measured mean |T̂ − T| ≤ 1e-4 with anchors and ≥ 0.054 without them; tolerances 0.005 / 0.02."""
    t = planted_transition(5, kind, rate)
    true, _, clean_probs = noisy_dataset(5000, t, signal=2.0, seed=5)
    rng = np.random.default_rng(6)
    anchors = rng.random(5000) < 0.3
    with_anchors = clean_probs.copy()
    with_anchors[anchors] = softmax(10.0 * np.eye(5)[true[anchors]] + rng.normal(0, 1, (anchors.sum(), 5)), axis=1)
    assert np.abs(anchor_transition(with_anchors @ t) - t).mean() <= 0.005
    assert np.abs(anchor_transition(clean_probs @ t) - t).mean() > 0.02


def test_anchor_percentile_discards_the_top_of_each_column():
    """With percentile 50 the two highest p_0 (0.9, 0.8) are discarded and row 0 comes from
    the 0.7 sample; with 100 only the maximum is discarded."""
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.1, 0.9]])
    np.testing.assert_allclose(anchor_transition(probs, percentile=50.0)[0], [0.7, 0.3])
    np.testing.assert_allclose(anchor_transition(probs, percentile=100.0)[0], [0.8, 0.2])
    with pytest.raises(ValueError):
        anchor_transition(probs, percentile=101.0)


def test_bootstrap_interval_contains_estimate_and_narrows_with_n():
    t = planted_transition(4, "pairs", 0.4)

    def width_and_check(n):
        true, noisy, _ = noisy_dataset(n, t, signal=3.0, seed=n)
        point = realised_transition(true, noisy, n_classes=4)
        low, high = bootstrap_transition_ci(
            lambda a, b: realised_transition(a, b, n_classes=4), (true, noisy), n_resamples=200, seed=1
        )
        assert np.all(low <= point + 1e-12) and np.all(point <= high + 1e-12)
        return (high - low).mean()

    small, large = width_and_check(250), width_and_check(4000)
    assert large < 0.5 * small  # 16x the data: width should shrink about 4x


def test_bootstrap_confident_joint_is_reproducible_and_ordered():
    t = planted_transition(3, "symmetric", 0.2)
    _, noisy, clean_probs = noisy_dataset(600, t, signal=3.0, seed=2)
    point = transition_from_confident_joint(noisy, clean_probs)
    first = bootstrap_transition_ci(transition_from_confident_joint, (noisy, clean_probs), n_resamples=60, seed=7)
    second = bootstrap_transition_ci(transition_from_confident_joint, (noisy, clean_probs), n_resamples=60, seed=7)
    np.testing.assert_array_equal(first[0], second[0])
    assert np.all(first[0] <= first[1])
    assert np.all(first[0] <= point + 1e-9) and np.all(point <= first[1] + 1e-9)


def test_bootstrap_rejects_misaligned_arrays():
    with pytest.raises(ValueError):
        bootstrap_transition_ci(realised_transition, (np.zeros(5, int), np.zeros(4, int)))


@pytest.mark.parametrize(
    "call",
    [
        lambda: confident_joint(np.array([0, 1]), np.array([[0.5, 0.5]])),  # row count mismatch
        lambda: confident_joint(np.array([0, 2]), np.array([[0.5, 0.5], [0.5, 0.5]])),  # label out of range
        lambda: confident_joint(np.array([0.0, 1.0]), np.array([[0.5, 0.5], [0.5, 0.5]])),  # float labels
        lambda: confident_joint(np.array([0, 1]), np.array([[0.5, 0.6], [0.5, 0.5]])),  # row sum != 1
        lambda: confident_joint(np.array([0, 1]), np.eye(2), n_classes=3),
        lambda: glc_transition(np.array([0]), np.array([[0.5, 0.5]]), n_classes=3),
        lambda: realised_transition(np.array([0, 1]), np.array([0]), n_classes=2),
        lambda: anchor_transition(np.ones(3)),
    ],
)
def test_bad_shapes_raise_value_error(call):
    with pytest.raises(ValueError):
        call()


noise_cases = st.tuples(
    st.integers(2, 8),  # K
    st.sampled_from(["symmetric", "pairs"]),
    st.floats(0.0, 0.6),  # noise rate
    st.integers(1, 300),  # N
    st.floats(0.0, 6.0),  # signal
    st.integers(0, 2**31 - 1),  # seed
)


@settings(max_examples=60, deadline=None)
@given(noise_cases)
def test_estimators_always_return_row_stochastic_matrices(case):
    k, kind, rate, n, signal, seed = case
    t = planted_transition(k, kind, rate)
    true, noisy, clean_probs = noisy_dataset(n, t, signal=signal, seed=seed)
    noisy_probs = clean_probs @ t

    joint = confident_joint(noisy, noisy_probs, n_classes=k)
    assert np.all(np.isfinite(joint)) and np.all(joint >= 0)
    np.testing.assert_allclose(joint.sum(), n)
    np.testing.assert_allclose(joint.sum(axis=0), np.bincount(noisy, minlength=k))

    assert_row_stochastic(transition_from_confident_joint(noisy, noisy_probs, n_classes=k))
    assert_row_stochastic(anchor_transition(noisy_probs))
    assert_row_stochastic(realised_transition(true, noisy, n_classes=k))
    glc, missing = glc_transition(true, noisy_probs, n_classes=k)
    assert_row_stochastic(glc)
    np.testing.assert_array_equal(missing, np.bincount(true, minlength=k) == 0)


def test_smooth_transition_removes_impossible_confusions_and_fades_with_data():
    from labelaudit.core.scoring import error_probability
    from labelaudit.core.transition import smooth_transition

    hard = np.array([[1.0, 0.0], [0.2, 0.8]])
    few = smooth_transition(hard, np.array([4.0, 4.0]), prior_count=1.0)
    assert np.allclose(few.sum(axis=1), 1.0) and (few > 0).all()
    assert few[0, 1] == pytest.approx((0.0 * 4 + 0.5) / 5)
    many = smooth_transition(hard, np.array([1e6, 1e6]))
    assert np.allclose(many, hard, atol=1e-6)
    # A row labelled 1 whose image says class 0: with the raw T it cannot be an error, smoothed it is likely one.
    labels, probs = np.array([1]), np.array([[0.99, 0.01]])
    assert error_probability(labels, probs, np.array([[1.0, 0.0], [0.0, 1.0]]))[0] == 0.0
    assert error_probability(labels, probs, smooth_transition(np.eye(2), np.array([50.0, 50.0])))[0] > 0.3


@pytest.mark.parametrize("kind,rate", PLANTED)
def test_smoothed_confident_joint_recovers_planted_noise_with_no_impossible_confusion(kind, rate):
    """The scan's estimator: the confident-joint T with each row smoothed by one flat prior row."""
    from labelaudit.core.transition import smoothed_confident_joint_transition

    t = planted_transition(5, kind, rate)
    true, noisy, clean_probs = noisy_dataset(2000, t, signal=3.0, seed=3)
    estimate = smoothed_confident_joint_transition(noisy, clean_probs, n_classes=5)
    assert_row_stochastic(estimate)
    assert (estimate > 0).all()  # pairs noise has exact zeros in T; none survive the prior
    assert np.abs(estimate - realised_transition(true, noisy, n_classes=5)).mean() <= 0.02
    raw_few = transition_from_confident_joint(noisy[:20], clean_probs[:20], n_classes=5)
    few = smoothed_confident_joint_transition(noisy[:20], clean_probs[:20], n_classes=5)
    assert (raw_few == 0).any() and (few > 0).all()
    assert np.abs(few - raw_few).max() > 10 * np.abs(estimate - transition_from_confident_joint(
        noisy, clean_probs, n_classes=5)).max()  # the prior weighs more on 20 rows than on 2,000
