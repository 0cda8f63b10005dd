"""Numeric core of labelaudit: pure numpy functions, no torch, no I/O.

Conventions: ``labels`` are int arrays (N,) in [0, K); ``pred_probs`` are float arrays (N, K)
whose rows sum to 1; ``T[i, j] = P(noisy label j | true label i)``, rows sum to 1.
"""

from labelaudit.core.calibration import apply_platt, apply_temperature, fit_platt, fit_temperature, softmax
from labelaudit.core.intervals import normal_quantile, poisson_binomial_interval, poisson_binomial_pmf, wilson_interval
from labelaudit.core.metrics import accuracy, average_precision, expected_calibration_error, precision_recall
from labelaudit.core.scoring import (
    error_probability,
    estimate_noise_rates,
    most_confused_with,
    posterior_true_label,
    self_confidence,
    suspicion_rank,
    validate_labels,
    validate_pred_probs,
    validate_transition,
)
from labelaudit.core.transition import (
    anchor_transition,
    bootstrap_transition_ci,
    confident_joint,
    confusion_counts,
    glc_transition,
    realised_transition,
    smooth_transition,
    smoothed_confident_joint_transition,
    transition_from_confident_joint,
)

__all__ = [
    "accuracy",
    "anchor_transition",
    "apply_platt",
    "apply_temperature",
    "average_precision",
    "bootstrap_transition_ci",
    "confident_joint",
    "confusion_counts",
    "error_probability",
    "estimate_noise_rates",
    "expected_calibration_error",
    "fit_platt",
    "fit_temperature",
    "glc_transition",
    "most_confused_with",
    "normal_quantile",
    "poisson_binomial_interval",
    "poisson_binomial_pmf",
    "posterior_true_label",
    "precision_recall",
    "realised_transition",
    "smooth_transition",
    "self_confidence",
    "softmax",
    "suspicion_rank",
    "smoothed_confident_joint_transition",
    "transition_from_confident_joint",
    "validate_labels",
    "validate_pred_probs",
    "validate_transition",
    "wilson_interval",
]
