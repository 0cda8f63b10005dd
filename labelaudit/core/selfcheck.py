"""The audit's checks on itself: planted flips shaped like the believed errors, and when not to trust a verdict.

``plant_flips`` chooses rows the audit believes correct and gives them a wrong label drawn like the errors
the audit believes are there; :func:`planted_flip_metrics` measures how a second audit of the planted copy
finds them. :func:`reliability` turns the model's agreement with the given labels, the estimated error rate
and (when run) the self-check into one verdict: can the audit's numbers be trusted at all?

Conventions as in :mod:`labelaudit.core.scoring`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metrics import average_precision, precision_recall
from .scoring import _labels_and_probs, validate_transition

#: share of the audited rows the self-check flips
SELF_CHECK_RATE = 0.05
#: the audit is unreliable when the model agrees with the given labels on fewer rows than
#: chance + this share of the way from chance to 1
MIN_AGREEMENT_ABOVE_CHANCE = 0.25
#: ... or when it believes more than this share of the labels are wrong
MAX_BELIEVABLE_ERROR_RATE = 0.5
#: ... or when the self-check finds fewer than this share of its planted flips
MIN_SELF_CHECK_RECALL = 0.5


def plant_flips(labels, pred_probs, transition, believed_correct, *, rate: float = SELF_CHECK_RATE,
                confusion_share: float = 0.5, confusable_rows: bool = False,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A copy of ``labels`` with ``round(rate × N)`` flips among the rows believed correct.

    Rows are drawn uniformly, or with ``confusable_rows`` with probability proportional to the model's
    probability of their most likely other class (annotators err on ambiguous images: the more the model
    hesitates, the likelier a planted error there).

    Each chosen row (true label taken to be its given label g) gets label j ≠ g with probability
    (1 − c)·T[g, j]/Σ_{k≠g} T[g, k] + c·q(j|x)/Σ_{k≠g} q(k|x), c = ``confusion_share``: the audit's
    estimated noise structure, mixed with the model's own confusion for that image. For noise the audit
    reads as symmetric, pass a T with equal off-diagonal cells and c = 0.

    Parameters
    ----------
    labels : array_like, shape (N,)
    pred_probs : array_like, shape (N, K)
    transition : array_like, shape (K, K)
    believed_correct : array_like of bool, shape (N,)
        Rows that may be flipped (e.g. not flagged by the audit).
    rate : float
    confusion_share : float in [0, 1]
    confusable_rows : bool
    seed : int

    Returns
    -------
    planted_labels : np.ndarray, shape (N,), int64
    planted : np.ndarray, shape (N,), bool
        The rows whose label was changed.
    """
    labels, probs = _labels_and_probs(labels, pred_probs, probs_name="pred_probs")
    n_classes = probs.shape[1]
    t = validate_transition(transition, n_classes)
    pool = np.flatnonzero(np.asarray(believed_correct, dtype=bool))
    planted = np.zeros(labels.shape[0], dtype=bool)
    planted_labels = labels.copy()
    n_flips = min(len(pool), int(round(rate * labels.shape[0])))
    if n_classes < 2 or n_flips == 0:
        return planted_labels, planted
    rng = np.random.default_rng(seed)
    weights = None
    if confusable_rows:
        other = _other_class_shares(probs[pool], labels[pool]) * (1.0 - probs[pool, labels[pool]])[:, None]
        hesitation = other.max(axis=1) + 1e-6
        weights = hesitation / hesitation.sum()
    chosen = rng.choice(pool, size=n_flips, replace=False, p=weights)
    given = labels[chosen]
    structure = _other_class_shares(t[given], given)
    confusion = _other_class_shares(probs[chosen], given)
    mix = (1.0 - confusion_share) * structure + confusion_share * confusion
    cumulative = np.cumsum(mix, axis=1)
    draws = rng.random(n_flips)[:, None] * cumulative[:, -1:]
    new = np.minimum((cumulative < draws).sum(axis=1), n_classes - 1)
    planted_labels[chosen] = new
    planted[chosen] = new != given
    return planted_labels, planted


def _other_class_shares(weights: np.ndarray, given: np.ndarray) -> np.ndarray:
    """Rows of ``weights`` (n, K) with the given class zeroed and renormalised (uniform if nothing is left)."""
    shares = np.clip(np.asarray(weights, dtype=np.float64), 0.0, None).copy()
    shares[np.arange(len(given)), given] = 0.0
    totals = shares.sum(axis=1, keepdims=True)
    uniform = np.ones_like(shares)
    uniform[np.arange(len(given)), given] = 0.0
    uniform /= uniform.sum(axis=1, keepdims=True)
    return np.where(totals > 0, shares / np.where(totals > 0, totals, 1.0), uniform)


@dataclass
class SelfCheck:
    """How a second audit found the planted flips, among the rows the first audit believed correct (where
    the flips were planted). recall: planted rows flagged; auprc: of the second audit's error probability
    for planted rows; precision: of the flags in that pool, counting a planted row as a hit and any other
    flagged row as a hit with the first audit's probability that its label is wrong (the pool still holds
    the real errors the first audit missed, and flagging those is right); ``error_rate_bias``: the change
    in the estimated error rate minus the planted rate, in rate units (0.01 = one point)."""

    planted: int
    pool: int
    precision: float
    recall: float
    auprc: float
    estimated_added_rate: float
    planted_rate: float
    error_rate_bias: float
    flagged_in_pool: int

    def to_dict(self) -> dict[str, float | int]:
        return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in self.__dict__.items()}


def planted_flip_metrics(planted, believed_correct, flagged, error_probability, *, estimated_rate_before: float,
                         estimated_rate_after: float, prior_error_probability=None) -> SelfCheck:
    """Score the second audit of a planted copy (see :class:`SelfCheck`).

    Parameters
    ----------
    planted : array_like of bool, shape (N,)
        Rows whose label :func:`plant_flips` changed.
    believed_correct : array_like of bool, shape (N,)
        The pool the flips were drawn from.
    flagged, error_probability : array_like, shape (N,)
        ``is_issue`` and ``error_probability`` of the second audit.
    estimated_rate_before, estimated_rate_after : float
        Estimated error rates of the first and second audits.
    prior_error_probability : array_like, shape (N,), optional
        The first audit's error probabilities; without them a flagged row that was not planted counts
        as a false positive.
    """
    planted = np.asarray(planted, dtype=bool)
    pool = np.asarray(believed_correct, dtype=bool)
    flags = np.asarray(flagged, dtype=bool)
    scores = np.asarray(error_probability, dtype=np.float64)
    _, recall = precision_recall(planted[pool], flags[pool])
    prior = np.zeros(planted.shape[0]) if prior_error_probability is None else np.asarray(
        prior_error_probability, dtype=np.float64)
    flagged_pool = flags & pool
    hits = planted[flagged_pool].sum() + prior[flagged_pool & ~planted].sum()
    precision = float(hits / flagged_pool.sum()) if flagged_pool.any() else float("nan")
    n = planted.shape[0]
    planted_rate = planted.sum() / n if n else 0.0
    added = estimated_rate_after - estimated_rate_before
    return SelfCheck(
        planted=int(planted.sum()), pool=int(pool.sum()), precision=precision, recall=recall,
        auprc=average_precision(planted[pool], scores[pool]) if planted.any() else float("nan"),
        estimated_added_rate=float(added), planted_rate=float(planted_rate),
        error_rate_bias=float(added - planted_rate), flagged_in_pool=int(flags[pool].sum()),
    )


@dataclass
class Reliability:
    reliable: bool
    reason: str
    label_agreement: float
    chance_agreement: float

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def reliability(labels, pred_probs, estimated_error_rate: float, *, self_check: SelfCheck | None = None,
                held_out: bool = False) -> Reliability:
    """Whether the model can support the audit's verdicts, with the reason in one sentence.

    Unreliable when the model's most probable class agrees with the given label hardly more often than
    always answering the commonest class would (``MIN_AGREEMENT_ABOVE_CHANCE``), when more than half of
    the labels look wrong, or when the self-check found fewer than half of its planted flips.

    Parameters
    ----------
    labels : array_like, shape (N,)
    pred_probs : array_like, shape (N, K)
        The probabilities the audit scored with.
    estimated_error_rate : float
    self_check : SelfCheck, optional
    held_out : bool
        Whether ``pred_probs`` are out-of-sample (said in the reason).
    """
    labels, probs = _labels_and_probs(labels, pred_probs, probs_name="pred_probs")
    n = labels.shape[0]
    if n == 0:
        return Reliability(False, "no rows were audited", float("nan"), float("nan"))
    agreement = float(np.mean(probs.argmax(axis=1) == labels))
    chance = float(np.bincount(labels, minlength=probs.shape[1]).max() / n)
    needed = chance + MIN_AGREEMENT_ABOVE_CHANCE * (1.0 - chance)
    view = "held-out predictions" if held_out else "predictions"
    if agreement < needed:
        reason = (f"the model's {view} agree with the given labels on {agreement:.0%} of rows, "
                  f"close to the {chance:.0%} of always answering the commonest class: it cannot tell the "
                  "classes apart well enough to judge labels")
        return Reliability(False, reason, agreement, chance)
    if estimated_error_rate > MAX_BELIEVABLE_ERROR_RATE:
        reason = (f"the audit believes {estimated_error_rate:.0%} of the labels are wrong; more likely the model "
                  "is too weak for these images than most labels wrong")
        return Reliability(False, reason, agreement, chance)
    if self_check is not None and not np.isnan(self_check.recall) and self_check.recall < MIN_SELF_CHECK_RECALL:
        reason = (f"the self-check found only {self_check.recall:.0%} of {self_check.planted} planted label "
                  "errors")
        return Reliability(False, reason, agreement, chance)
    reason = f"the model's {view} agree with the given labels on {agreement:.0%} of rows (chance {chance:.0%})"
    if self_check is not None:
        reason += f"; the self-check found {self_check.recall:.0%} of its planted errors"
    return Reliability(True, reason, agreement, chance)
