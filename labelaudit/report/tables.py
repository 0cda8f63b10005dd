"""Build the report tables (samples, classes, transition) from the data rows and the numeric scores."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..core.scoring import (
    error_probability,
    most_confused_with,
    posterior_true_label,
    self_confidence,
    suspicion_rank,
)
from ..core.noise_structure import MIN_EXCESS, NoiseStructure, confident_counts, noise_structure
from ..core.transition import confident_joint
from ..core.verdicts import (
    calibrate_to_total, concentration_weight, flag_top_estimated, suggested_labels, symmetric_error_count,
)
from .schema import AUDITED, DATA_ISSUE_COLUMNS, SAMPLES_COLUMNS

#: a class with fewer rows than this share of the median class's is underrepresented
UNDERREPRESENTED_RATIO = 0.2
#: a class whose agreement (mean p(given | image)) is below this share of the median class's is weak
WEAK_CLASS_RATIO = 0.75


@dataclass
class RowScores:
    """Scores of the M audited rows. All arrays have length M; ``suggested`` holds class indices."""

    p_given: np.ndarray
    label_quality: np.ndarray
    error_probability: np.ndarray
    suggested: np.ndarray
    is_issue: np.ndarray
    rank: np.ndarray


def score_rows(labels: np.ndarray, clean_probs: np.ndarray, transition: np.ndarray) -> RowScores:
    """Score every audited row.

    labels: (M,) given class indices; clean_probs: (M, K) probabilities of the clean class
    (out-of-fold, or ELR's non-memorised ones); transition: (K, K) with T[i, j] = P(given j | true i).
    The suggested label is the most probable true label given the image *and* the given label;
    a row is an issue when that is not the given label.
    """
    posterior = posterior_true_label(labels, clean_probs, transition)
    errors = error_probability(labels, clean_probs, transition)
    suggested = posterior.argmax(axis=1)
    confidence = self_confidence(labels, clean_probs)
    # Rank by error probability; among equals, lower self-confidence first.
    order_key = errors.astype(np.float64) + (1.0 - confidence) * 1e-9
    return RowScores(
        p_given=confidence.astype(np.float32),
        label_quality=confidence.astype(np.float32),
        error_probability=errors.astype(np.float32),
        suggested=suggested,
        is_issue=suggested != labels,
        rank=suspicion_rank(order_key).astype(np.int32),
    )


@dataclass
class AuditVerdicts:
    """What a scan claims: row scores, n̂ (the estimated number of wrong labels) and the noise structure
    that chose how rows are ranked and counted (``concentration``: the weight w of the concentrated-noise
    verdicts, :func:`~labelaudit.core.verdicts.concentration_weight`)."""

    scores: RowScores
    n_errors: float
    structure: NoiseStructure
    ranked_by: str
    concentration: float


def audit_scores(labels: np.ndarray, clean_probs: np.ndarray, transition: np.ndarray, *,
                 n_errors: float | None = None, seed: int = 0) -> AuditVerdicts:
    """Verdicts that add up (docs/how-it-scores.md).

    labels: (M,); clean_probs: (M, K) out-of-fold or ELR's non-memorised probabilities; transition: (K, K).
    The confident joint of ``clean_probs`` is tested for symmetric against concentrated noise
    (:func:`~labelaudit.core.noise_structure.noise_structure`). Concentrated noise: rows are ranked by the
    T-posterior error probability and n̂ is its sum. Symmetric noise: rows are ranked by
    1 − p(given | x) shifted on the logit scale to sum to n̂ = :func:`~labelaudit.core.verdicts.symmetric_error_count`
    (the joint without the model's own confusions). Each was measured the better of the two on that kind of
    noise (docs/benchmarks.md); between the two (mixed noise) the error probability is
    (1 − w)·symmetric + w·concentrated with w = :func:`~labelaudit.core.verdicts.concentration_weight`, and n̂
    is its sum. ``error_probability`` is shifted on the logit scale to sum to ``n_errors`` when given; the
    round(n̂) first rows in rank order are flagged; a flagged row's suggestion is its most probable other label
    under the T-posterior.
    """
    n_classes = clean_probs.shape[1]
    joint = confident_joint(labels, clean_probs, n_classes=n_classes) if len(labels) else np.zeros((n_classes,) * 2)
    counts = confident_counts(labels, clean_probs) if len(labels) else joint
    structure = noise_structure(counts, seed=seed)  # on whole rows, as ELR's probe reads it
    confidence = self_confidence(labels, clean_probs)
    weight = concentration_weight(structure.excess, structure.concentrated, low=MIN_EXCESS)
    raw = np.zeros(len(labels))
    if weight < 1.0:
        raw += (1.0 - weight) * calibrate_to_total(1.0 - confidence, symmetric_error_count(joint, seed=seed))
    if weight > 0.0:
        raw += weight * error_probability(labels, clean_probs, transition)
    ranked_by = ("self-confidence" if weight == 0.0 else "T-posterior" if weight == 1.0
                 else f"{1.0 - weight:.0%} self-confidence + {weight:.0%} T-posterior")
    estimated = float(raw.sum())
    n_errors = estimated if n_errors is None else n_errors
    errors = calibrate_to_total(raw, n_errors)
    is_issue = flag_top_estimated(errors, int(round(n_errors)))
    posterior = posterior_true_label(labels, clean_probs, transition)
    scores = RowScores(
        p_given=confidence.astype(np.float32), label_quality=confidence.astype(np.float32),
        error_probability=errors.astype(np.float32), suggested=suggested_labels(labels, posterior, is_issue),
        is_issue=is_issue, rank=suspicion_rank(errors).astype(np.int32),
    )
    return AuditVerdicts(scores, float(n_errors), structure, ranked_by, weight)


def samples_frame(rows: pd.DataFrame, row_index: np.ndarray, classes: list[str], scores: RowScores,
                  folds: np.ndarray, *, issues: dict[str, np.ndarray] | None = None,
                  issue_index: np.ndarray | None = None) -> pd.DataFrame:
    """One row per CSV row in CSV order: the report columns, then the CSV's other columns.

    rows: the data layer's table (``path``, ``given_label``, ``status`` and extra columns);
    row_index: (M,) position in ``rows`` of each scored row; folds: (M,) fold that scored it.
    issues: data-issue columns (names from ``DATA_ISSUE_COLUMNS``), each (M',) for the rows at
    ``issue_index`` (default ``row_index``); columns not given are null.
    """
    n_rows = len(rows)
    frame = pd.DataFrame({
        "path": rows["path"].astype(object).to_numpy(),
        "given_label": rows["given_label"].astype(object).to_numpy(),
        "suggested_label": scatter_rows(n_rows, row_index, np.asarray(classes, dtype=object)[scores.suggested], None),
        "p_given": scatter_rows(n_rows, row_index, scores.p_given, np.nan),
        "label_quality": scatter_rows(n_rows, row_index, scores.label_quality, np.nan),
        "error_probability": scatter_rows(n_rows, row_index, scores.error_probability, np.nan),
        "is_issue": scatter_rows(n_rows, row_index, scores.is_issue, None),
        "rank": scatter_rows(n_rows, row_index, scores.rank, None),
        "status": rows["status"].astype(object).to_numpy(),
        "fold": scatter_rows(n_rows, row_index, folds, None),
    })
    issues = issues or {}
    unknown = set(issues) - set(DATA_ISSUE_COLUMNS)
    if unknown:
        raise ValueError(f"not data-issue columns: {sorted(unknown)}")
    at = row_index if issue_index is None else issue_index
    for column in DATA_ISSUE_COLUMNS:
        values = issues.get(column)
        frame[column] = (np.full(n_rows, None, dtype=object) if values is None
                         else scatter_rows(n_rows, at, missing_as_none(values), None))
    for column in rows.columns:
        if column not in SAMPLES_COLUMNS:
            frame[column] = rows[column].to_numpy()
    return frame


def missing_as_none(values) -> np.ndarray:
    """(M,) object array of ``values``, NaN floats as None (nullable columns); list values stay lists."""
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = None if isinstance(value, (float, np.floating)) and np.isnan(value) else value
    return out


def scatter_rows(n_rows: int, row_index: np.ndarray, values: np.ndarray, missing) -> np.ndarray:
    """(n_rows,) object array: ``values`` (M,) at the positions ``row_index`` (M,), ``missing`` elsewhere."""
    out = np.full(n_rows, missing, dtype=object)
    if isinstance(values, np.ndarray) and values.dtype == object:
        out[row_index] = values
    else:
        out[row_index] = list(values)
    return out


def classes_frame(classes: list[str], labels: np.ndarray, scores: RowScores, transition: np.ndarray) -> pd.DataFrame:
    """Per class: rows given that label, how many are issues, the estimated share of wrong labels
    among them (mean error probability), the class its true members are most often labelled as, and
    class balance: ``share`` of the audited rows, ``is_underrepresented`` (fewer rows than
    ``UNDERREPRESENTED_RATIO`` x the median class's), ``agreement`` (mean p(given label | image) over the
    class's rows) and ``is_weak`` (agreement below ``WEAK_CLASS_RATIO`` x the median class's)."""
    confused = most_confused_with(transition)
    counts = np.bincount(labels, minlength=len(classes)).astype(np.float64)
    total = max(1.0, float(counts.sum()))
    present = counts > 0
    median_count = float(np.median(counts[present])) if present.any() else 0.0
    agreement = np.array([float(scores.p_given[labels == k].mean()) if counts[k] else np.nan
                          for k in range(len(classes))])
    median_agreement = float(np.median(agreement[present])) if present.any() else np.nan
    records = []
    for index, label in enumerate(classes):
        given_here = labels == index
        n = int(given_here.sum())
        records.append({
            "label": label,
            "n": n,
            "n_issues": int(scores.is_issue[given_here].sum()),
            "estimated_noise_rate": float(scores.error_probability[given_here].mean()) if n else np.nan,
            "most_confused_with": classes[int(confused[index])] if confused[index] >= 0 else None,
            "share": counts[index] / total,
            "is_underrepresented": bool(counts[index] < UNDERREPRESENTED_RATIO * median_count),
            "agreement": agreement[index],
            "is_weak": bool(n and agreement[index] < WEAK_CLASS_RATIO * median_agreement),
        })
    return pd.DataFrame.from_records(records)


@dataclass
class TransitionEstimate:
    """One estimator's T (K, K) with per-cell interval bounds and supporting counts;
    ``no_trusted_examples`` (K,) bool marks placeholder identity rows (GLC classes with no trusted row)."""

    estimator: str
    matrix: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    counts: np.ndarray
    no_trusted_examples: np.ndarray | None = None


def transition_frame(classes: list[str], estimates: list[TransitionEstimate]) -> pd.DataFrame:
    """Long format, K×K rows per estimator: true_label, noisy_label, probability, ci_low, ci_high, count,
    estimator, no_trusted_examples."""
    n_classes = len(classes)
    true_index, noisy_index = np.divmod(np.arange(n_classes * n_classes), n_classes)
    parts = [
        pd.DataFrame({
            "true_label": np.asarray(classes, dtype=object)[true_index],
            "noisy_label": np.asarray(classes, dtype=object)[noisy_index],
            "probability": est.matrix.ravel(),
            "ci_low": est.ci_low.ravel(),
            "ci_high": est.ci_high.ravel(),
            "count": est.counts.ravel().astype(float),
            "estimator": est.estimator,
            "no_trusted_examples": (np.zeros(n_classes, bool) if est.no_trusted_examples is None
                                    else np.asarray(est.no_trusted_examples, bool))[true_index],
        })
        for est in estimates
    ]
    return pd.concat(parts, ignore_index=True)


def audited_mask(frame: pd.DataFrame) -> np.ndarray:
    return (frame["status"] == AUDITED).to_numpy()
