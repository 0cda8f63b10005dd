"""Post-hoc calibration (numpy only): temperature scaling of logits and of probabilities, Platt scaling of
scores, and the temperature a trained model gets from its training rows for ``check``."""

from __future__ import annotations

import numpy as np

from typing import Any

from labelaudit.core.scoring import posterior_true_label, validate_labels
from labelaudit.core.transition import smoothed_confident_joint_transition

# Temperature search range; a minimum at an end of it returns that end.
_LOG_TEMPERATURE_RANGE = (np.log(1e-2), np.log(1e2))
_TEMPERATURE_GRID_POINTS = 81
_GOLDEN_TOLERANCE = 1e-7
# Platt: L2 pull of (a, b) towards the identity map (a = 1, b = 0), on the summed log-likelihood,
# i.e. a Gaussian prior worth about one sample. Keeps (a, b) finite on separable or one-sided data.
_PLATT_L2 = 1.0
_PLATT_SCORE_CLIP = 1e-7
# Keeps log p finite when temperature-scaling probabilities that underflowed to 0.
_LOG_FLOOR = 1e-300
# Temperatures a calibration may choose.
TEMPERATURE_RANGE = (0.05, 20.0)
# Most EM steps of the training rows' noise channel (it usually settles well before).
EM_ITERATIONS = 200


def softmax(logits, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax.

    Parameters
    ----------
    logits : array_like
    axis : int

    Returns
    -------
    np.ndarray
        Same shape as ``logits``; sums to 1 along ``axis``.
    """
    z = np.asarray(logits, dtype=np.float64)
    shifted = z - np.max(z, axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=axis, keepdims=True)


def _validate_logits(logits) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] < 1:
        raise ValueError(f"logits must be 2-D (N, K), got shape {z.shape}")
    if not np.all(np.isfinite(z)):
        raise ValueError("logits contain nan or inf")
    return z


def _mean_nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    scaled = logits / temperature
    top = scaled.max(axis=1)
    log_norm = top + np.log(np.exp(scaled - top[:, None]).sum(axis=1))
    return float(np.mean(log_norm - scaled[np.arange(labels.shape[0]), labels]))


def fit_temperature(logits, labels) -> float:
    """Temperature minimising the NLL of ``softmax(logits / T)``.

    The NLL is convex in 1/T, hence unimodal in log T: a coarse grid over
    log T ∈ [log 0.01, log 100] picks the bracket, golden-section search refines it.

    Parameters
    ----------
    logits : array_like, shape (N, K)
    labels : array_like, shape (N,)
        True labels (e.g. trusted rows).

    Returns
    -------
    float
        T in [0.01, 100]; > 1 means the logits were over-confident.
    """
    z = _validate_logits(logits)
    y = validate_labels(labels, z.shape[1])
    if y.shape[0] != z.shape[0]:
        raise ValueError(f"labels has {y.shape[0]} rows but logits has {z.shape[0]}")
    if y.shape[0] == 0:
        raise ValueError("cannot fit a temperature on zero rows")

    def objective(log_t: float) -> float:
        return _mean_nll(z, y, float(np.exp(log_t)))

    return float(np.exp(minimise_unimodal(objective, *_LOG_TEMPERATURE_RANGE)))


def minimise_unimodal(objective, low: float, high: float, *, grid_points: int = _TEMPERATURE_GRID_POINTS,
                      tolerance: float = _GOLDEN_TOLERANCE) -> float:
    """The x in [low, high] minimising a unimodal ``objective(x)``: a grid picks the bracket, golden-section
    search refines it (a minimum at an end of the range returns that end)."""
    grid = np.linspace(low, high, grid_points)
    values = np.array([objective(g) for g in grid])
    best = int(values.argmin())
    lo = grid[max(best - 1, 0)]
    hi = grid[min(best + 1, grid.shape[0] - 1)]

    inv_phi = (np.sqrt(5.0) - 1.0) / 2.0
    left, right = hi - inv_phi * (hi - lo), lo + inv_phi * (hi - lo)
    f_left, f_right = objective(left), objective(right)
    while hi - lo > tolerance:
        if f_left <= f_right:
            hi, right, f_right = right, left, f_left
            left = hi - inv_phi * (hi - lo)
            f_left = objective(left)
        else:
            lo, left, f_left = left, right, f_right
            right = lo + inv_phi * (hi - lo)
            f_right = objective(right)
    candidates = [(values[best], grid[best]), (f_left, left), (f_right, right)]
    return float(min(candidates)[1])


def apply_temperature(logits, temperature: float) -> np.ndarray:
    """``softmax(logits / temperature)``.

    Parameters
    ----------
    logits : array_like, shape (N, K)
    temperature : float
        > 0.

    Returns
    -------
    np.ndarray, shape (N, K)
    """
    if not np.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a positive number, got {temperature}")
    return softmax(_validate_logits(logits) / temperature, axis=1)


def _score_logit(scores) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D (N,), got shape {s.shape}")
    if not np.all(np.isfinite(s)) or np.any((s < 0) | (s > 1)):
        raise ValueError("scores must be probabilities in [0, 1]")
    clipped = np.clip(s, _PLATT_SCORE_CLIP, 1.0 - _PLATT_SCORE_CLIP)
    return np.log(clipped) - np.log1p(-clipped)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -x))


def fit_platt(scores, outcomes) -> tuple[float, float]:
    """Fit ``P(outcome) = sigmoid(a · logit(score) + b)`` by penalised Newton iterations.

    The penalty ``(λ/2)·((a − 1)² + b²)`` with λ = 1 on the summed log-likelihood shrinks
    towards the identity map, so the fit stays finite on separable or one-sided outcomes and
    barely moves the scores when there are few rows.

    Parameters
    ----------
    scores : array_like, shape (N,)
        Probabilities in [0, 1] (e.g. ``error_probability`` on trusted rows); clipped to
        [1e-7, 1 − 1e-7] before the logit.
    outcomes : array_like of bool, shape (N,)
        Whether the event happened (e.g. the given label really is wrong).

    Returns
    -------
    a, b : float
    """
    x = _score_logit(scores)
    y = np.asarray(outcomes)
    if y.shape != x.shape:
        raise ValueError(f"outcomes must have shape {x.shape}, got {y.shape}")
    if y.size and not (y.dtype == bool or np.all((y == 0) | (y == 1))):
        raise ValueError("outcomes must be boolean (or 0/1)")
    y = y.astype(np.float64)
    features = np.column_stack([x, np.ones_like(x)])
    prior_mean = np.array([1.0, 0.0])

    def objective(theta: np.ndarray) -> float:
        margin = features @ theta
        nll = np.sum(np.logaddexp(0.0, margin) - y * margin)
        return float(nll + 0.5 * _PLATT_L2 * np.sum((theta - prior_mean) ** 2))

    theta = prior_mean.copy()
    current = objective(theta)
    for _ in range(100):
        p = _sigmoid(features @ theta)
        gradient = features.T @ (p - y) + _PLATT_L2 * (theta - prior_mean)
        hessian = (features * (p * (1.0 - p))[:, None]).T @ features + _PLATT_L2 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        scale = 1.0
        while scale >= 1e-10:
            candidate = theta - scale * step
            value = objective(candidate)
            if value <= current:
                break
            scale *= 0.5
        else:
            break  # no step decreases the objective: converged up to rounding
        improvement = current - value
        theta, current = candidate, value
        if np.max(np.abs(scale * step)) < 1e-10 or improvement < 1e-12 * max(1.0, abs(current)):
            break
    return float(theta[0]), float(theta[1])


def apply_platt(scores, a: float, b: float) -> np.ndarray:
    """``sigmoid(a · logit(score) + b)``.

    Parameters
    ----------
    scores : array_like, shape (N,)
        Probabilities in [0, 1].
    a, b : float

    Returns
    -------
    np.ndarray, shape (N,)
    """
    return _sigmoid(a * _score_logit(scores) + b)


def temperature_scale(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log p / τ)`` row-wise: (M, K) -> (M, K) float64. τ > 1 softens, τ = 1 is the identity.

    The same as dividing the logits by τ (log p differs from the logits by a per-row constant).
    """
    return apply_temperature(np.log(np.maximum(np.asarray(probs, dtype=np.float64), _LOG_FLOOR)), temperature)


def fit_temperature_to_targets(probs: np.ndarray, targets: np.ndarray) -> float:
    """Temperature τ minimising the cross-entropy ``−Σ_n Σ_i targets[n, i] log softmax(log probs[n] / τ)_i``.

    Parameters
    ----------
    probs : np.ndarray, shape (N, K)
        A model's class probabilities.
    targets : np.ndarray, shape (N, K)
        What they should agree with: one-hot true labels, or a distribution over the true class.

    Returns
    -------
    float
        τ in [0.05, 20]. The loss is convex in 1/τ, hence unimodal in log τ: a grid picks the
        bracket, golden-section search refines it.
    """
    log_p = np.log(np.maximum(np.asarray(probs, dtype=np.float64), _LOG_FLOOR))
    weights = np.asarray(targets, dtype=np.float64)
    if log_p.shape != weights.shape or log_p.ndim != 2:
        raise ValueError(f"probs and targets must both be (N, K), got {log_p.shape} and {weights.shape}")
    if log_p.shape[0] == 0:
        return 1.0

    def loss(log_temperature: float) -> float:
        scaled = log_p / np.exp(log_temperature)
        top = scaled.max(axis=1, keepdims=True)
        log_norm = top + np.log(np.exp(scaled - top).sum(axis=1, keepdims=True))
        return float(-(weights * (scaled - log_norm)).sum())

    return float(np.exp(minimise_unimodal(loss, np.log(TEMPERATURE_RANGE[0]), np.log(TEMPERATURE_RANGE[1]),
                                          grid_points=41, tolerance=1e-6)))


def training_calibration(labels: np.ndarray, model_probs: np.ndarray, method_probs: np.ndarray) -> dict[str, Any]:
    """The temperature that calibrates a trained model, fitted on its training rows.

    Parameters
    ----------
    labels : np.ndarray, shape (N,)
        The given (noisy) labels of the training rows.
    model_probs : np.ndarray, shape (N, K)
        The final model's probabilities on those rows' images (un-augmented), as ``check`` will see
        new images.
    method_probs : np.ndarray, shape (N, K)
        The training method's non-memorised probabilities of the same rows (ELR's targets): what the
        scan scores the rows with.

    Returns
    -------
    dict
        ``temperature``, ``fitted`` (True), ``rows``, ``target`` (what τ was fitted to) and
        ``training_noise_rate`` (1 − mean diagonal of the T used).

    Notes
    -----
    The given labels are not trustworthy, so τ is not fitted to them: the target is the posterior
    ``P(true = i | image, given label)`` from ``method_probs`` and T (``core.scoring.posterior_true_label``),
    i.e. each label weighted by how far the method's view of the image supports it. T is the maximum-
    likelihood noise channel given ``method_probs`` (:func:`fit_noise_channel`, EM from the smoothed
    confident joint). With ELR's targets this recovers, on Fashion-MNIST with 20% symmetric noise, most
    of the temperature the held-out images' true labels call for (benchmarks/check.py --accuracy).
    """
    labels = np.asarray(labels, dtype=np.int64)
    method_probs = np.asarray(method_probs, dtype=np.float64)
    transition = fit_noise_channel(labels, method_probs)
    posterior = posterior_true_label(labels, method_probs, transition)
    return {
        "temperature": fit_temperature_to_targets(model_probs, posterior),
        "fitted": True,
        "rows": int(labels.shape[0]),
        "target": "posterior of the true class given the image and the given label (the method's training "
                  "probabilities and their maximum-likelihood noise channel)",
        "training_noise_rate": float(1.0 - np.mean(np.diag(transition))),
    }


def fit_noise_channel(labels: np.ndarray, clean_probs: np.ndarray, *, iterations: int = EM_ITERATIONS,
                      tolerance: float = 1e-6) -> np.ndarray:
    """Maximum-likelihood T of ``P(given = j | x) = Σ_i q(i | x) T[i, j]`` with q fixed, by EM.

    Parameters
    ----------
    labels : np.ndarray, shape (N,)
        Given class indices.
    clean_probs : np.ndarray, shape (N, K)
        q(i | x).

    Returns
    -------
    np.ndarray, shape (K, K)
        Row-stochastic. Starts from the smoothed confident-joint T; each step sets row i to where the
        rows whose true class is i (by the posterior) were labelled. A class no row is believed to
        belong to keeps an identity row.
    """
    labels = np.asarray(labels, dtype=np.int64)
    clean_probs = np.asarray(clean_probs, dtype=np.float64)
    n_classes = clean_probs.shape[1]
    transition = smoothed_confident_joint_transition(labels, clean_probs, n_classes=n_classes)
    for _ in range(iterations):
        posterior = posterior_true_label(labels, clean_probs, transition)
        joint = np.zeros((n_classes, n_classes))
        np.add.at(joint.T, labels, posterior)  # joint[i, j] = Σ_{n: given j} P(true i | x_n, j)
        mass = joint.sum(axis=1, keepdims=True)
        updated = np.where(mass > 0, joint / np.where(mass > 0, mass, 1.0), np.eye(n_classes))
        change = float(np.abs(updated - transition).max())
        transition = updated
        if change < tolerance:
            break
    return transition
