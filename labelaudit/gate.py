"""``labelaudit check`` as a library call: score a new annotation batch with a trained model and
hold it against agreed limits (the CI gate).

How a batch is scored
---------------------
Rows the model trained on are set aside first. A model folder written with its training images holds
``training_fingerprints.npy``: a 64-bit hash of each training image's decoded pixels. A usable batch
row whose decoded image has one of those hashes is kept in the report with status
``seen_in_training`` (column ``seen_in_training`` true) but not scored: the model's probabilities on
an image it trained on say little about a label's quality. The estimate, the per-class figures and
the flagged rows cover the other rows. A folder without fingerprints (saved before they were
recorded) cannot tell; ``seen_in_training`` is then null and the summary says so.

The saved model gives class probabilities for every other row (inference only), scaled by the
temperature in the model folder's ``calibration.json`` (:func:`temperature_scale`): a network is
typically overconfident on new images, and every confident mistake of its own would otherwise be
counted as a wrong label (on Fashion-MNIST a clean batch looked 9% wrong). The temperature is fitted
when the model is saved, on its training rows, to the posterior of each row's true class given the
image and its label (:func:`training_calibration`). These calibrated probabilities are q(i | x).

The given labels are explained by a noise channel T (``T[i, j] = P(given j | true i)``) whose
*shape* is partly learnt from the training audit and whose *size* is fitted to the batch:

    T[i, i] = 1 − ε,    T[i, j] = ε · S[i, j]  (j ≠ i),    S = (1 − w) U + w S_train

S_train is the off-diagonal part of the training run's T (``transition.parquet`` beside the model),
each row renormalised to sum to 1: which classes get confused with which; U spreads a wrong label
uniformly over the other classes. w (:func:`fit_structure_weight`) is fitted to the batch: a batch
whose errors follow the training run's confusions gets w near 1, one with errors anywhere w near 0
(the training structure alone would misjudge it by several points). Without a training T, S = U.
ε, the batch's noise rate, is learnt from the batch alone: its likelihood
``Π_n (a_n + ε (b_n − a_n))`` with ``a_n = q(g_n | x_n)`` and
``b_n = Σ_{i≠g_n} q(i | x_n) S[i, g_n]`` is computed on a grid over [0, 1] (flat prior), which
gives its posterior mean and D equally likely values. Fitting ε to the batch matters for a
gate: scored with the training run's T as it is, a batch much noisier than the training data
would look about as noisy as the training data.

Each row's error probability is the posterior ``P(true ≠ given | x, given)`` under T at the
posterior mean of ε (``report.tables.score_rows``: the same columns as ``samples.parquet``). The
batch's estimated error rate is their mean.

What it cannot see: when the training labels themselves had systematic confusions (shirt written
for T-shirt on a third of the T-shirts), the network learns them, and a batch with the same
confusions looks about as clean as the training data. Only trusted labels separate the two.

The 95% interval
----------------
For a fixed ε the number of wrong labels is a sum of independent Bernoulli(p_n) variables, a
Poisson-binomial count (``core.intervals``). Because ε is itself estimated, the count's
distribution is taken as the equal mixture of the Poisson-binomial distributions at the D
equally likely values of ε (exact up to 20,000 rows; above, a normal with the mixture's mean
and variance). The interval is the central 95% of that distribution divided by the number of
audited rows; per-class intervals use the class's rows. It describes the batch given the
model's probabilities; it does not cover the model's own systematic mistakes, which even a
clean batch's estimate includes (compare with a ``--baseline``). On synthetic batches with
calibrated probabilities it holds the realised error rate in about 95% of batches
(``tests/test_gate.py``).
"""

from __future__ import annotations

import datetime as dt
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import __version__
from .core.calibration import temperature_scale
from .core.intervals import EXACT_MAX_N, normal_quantile, poisson_binomial_interval, poisson_binomial_pmf
from .core.scoring import posterior_true_label, suspicion_rank
from .core.verdicts import estimated_error_count, flag_top_estimated, suggested_labels
from .data.csvio import read_label_csv
from .data.dataset import load_labelled_images
from .errors import LabelAuditError
from .report.parquet import write_parquet
from .report.rundir import sha256_of_file
from .report.schema import AUDITED, MODEL_CONFIG_FILE, SAMPLES_COLUMNS, SAMPLES_SCHEMA, TRANSITION_FILE
from .report.tables import RowScores, samples_frame, score_rows
from .train.progress import ProgressReporter, SilentProgress

if TYPE_CHECKING:  # pragma: no cover
    from .train.checkpoint import LoadedModel

ON_CHOICES = ("estimate", "upper")
#: status of a usable batch row whose image the model trained on (kept in the report, not scored)
SEEN_IN_TRAINING = "seen_in_training"
#: the batch report's column saying so (after the samples columns; null when the model cannot tell)
SEEN_COLUMN = "seen_in_training"
CONFIDENCE = 0.95
CHECK_DIR = "check"
# Preferred transition estimator when the run directory holds several (trusted data first).
ESTIMATOR_PREFERENCE = ("glc", "confident_joint", "nal", "anchor")
INFERENCE_CHUNK = 1024
#: the batch report: the samples columns, then ``seen_in_training``, then the CSV's other columns
CHECK_REPORT_SCHEMA = SAMPLES_SCHEMA.append(pa.field(SEEN_COLUMN, pa.bool_()))
LISTED_OFFENDERS = 20
# Equally likely noise rates the intervals average over (posterior slices).
POSTERIOR_DRAWS = 11
# Keeps log-likelihood terms finite when the model gives a class probability 0 in float32.
_PROBABILITY_FLOOR = 1e-12
# Grid of the training structure's weight in the batch's noise structure (0, 1/50, …, 1).
STRUCTURE_GRID_POINTS = 51


@dataclass
class Limits:
    """Quality limits of a batch; None means not checked.

    ``on`` says which number the two error-rate limits are compared with: the estimate, or the
    upper end of its 95% interval (stricter: fail unless the batch is clearly within the limit).
    """

    max_error_rate: float | None = None
    max_class_error_rate: float | None = None
    max_issues: int | None = None
    min_images: int | None = None
    on: str = "estimate"
    max_duplicates: int | None = None  # rows of the batch in duplicate sets within the batch
    fail_on_leakage: bool = False  # fail when a batch row shows an image the model trained on

    def validate(self) -> None:
        if self.on not in ON_CHOICES:
            raise LabelAuditError(f"--on must be one of {', '.join(ON_CHOICES)}, got {self.on!r}")
        for option, rate in (("--max-error-rate", self.max_error_rate),
                             ("--max-class-error-rate", self.max_class_error_rate)):
            if rate is not None and not (isinstance(rate, (int, float)) and 0.0 <= rate <= 1.0):
                raise LabelAuditError(f"{option} must be a rate between 0 and 1, got {rate!r}")
        for option, count in (("--max-issues", self.max_issues), ("--min-images", self.min_images),
                              ("--max-duplicates", self.max_duplicates)):
            if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
                raise LabelAuditError(f"{option} must be a whole number >= 0, got {count!r}")


@dataclass
class CheckSettings:
    """Everything ``run_check`` needs. ``report`` defaults to ``out/check/<batch stem>.parquet``."""

    images: Path
    batch_csv: Path
    model_dir: Path
    limits: Limits = field(default_factory=Limits)
    out: Path = Path("labelaudit-out")
    report: Path | None = None
    baseline: Path | None = None
    path_column: str = "path"
    label_column: str = "label"
    delimiter: str = ","
    device: str = "auto"
    max_pixels: int | None = None
    workers: int | None = None
    worst: int = 10

    def report_path(self) -> Path:
        if self.report is not None:
            return Path(self.report)
        return Path(self.out) / CHECK_DIR / f"{Path(self.batch_csv).stem}.parquet"


@dataclass
class RateEstimate:
    """An estimated error rate with its central interval; ``errors`` is the expected count."""

    rate: float
    low: float
    high: float
    errors: float
    n: int
    confidence: float = CONFIDENCE
    method: str = "poisson_binomial"

    @classmethod
    def unavailable(cls) -> "RateEstimate":
        """No row to estimate from (e.g. every row was in the model's training set): NaN figures."""
        nan = float("nan")
        return cls(rate=nan, low=nan, high=nan, errors=nan, n=0, method="none")

    @property
    def available(self) -> bool:
        return self.n > 0

    def gated_value(self, on: str) -> float:
        return self.high if on == "upper" else self.rate

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; the figures are null when unavailable."""
        return {"estimate": _finite_or_none(self.rate), "low": _finite_or_none(self.low),
                "high": _finite_or_none(self.high), "expected_errors": _finite_or_none(self.errors),
                "n": self.n, "confidence": self.confidence, "method": self.method}


@dataclass
class ClassOutcome:
    """Rows of the batch given one label: their estimated error rate and flagged rows."""

    label: str
    n: int
    n_issues: int
    error_rate: RateEstimate
    over_limit: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "n": self.n, "n_issues": self.n_issues,
                "error_rate": self.error_rate.rate, "low": self.error_rate.low, "high": self.error_rate.high,
                "over_limit": self.over_limit}


@dataclass
class LimitOutcome:
    """One limit held against the batch. ``offenders`` names what made it fail (rows or classes)."""

    name: str
    option: str
    limit: float
    value: float
    passed: bool
    message: str
    offenders: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: _finite_or_none(v) if isinstance(v, float) else v for k, v in self.__dict__.items()}


@dataclass
class ClassChange:
    label: str
    baseline_rate: float | None
    batch_rate: float
    change: float | None
    worse: bool

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class BaselineComparison:
    """The batch against an earlier report. A class is ``worse`` when its baseline error rate lies
    below the batch's 95% interval for that class (a rise larger than chance explains)."""

    path: Path
    audited: int
    error_rate: float
    change: float
    classes: list[ClassChange]

    @property
    def worse_classes(self) -> list[ClassChange]:
        return [c for c in self.classes if c.worse]

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "audited": self.audited, "error_rate": self.error_rate,
                "change": self.change, "worse_classes": [c.label for c in self.worse_classes],
                "classes": [c.to_dict() for c in self.classes]}


@dataclass
class NoiseModel:
    """The noise channel and calibration used to score the batch (see the module docstring).

    The noise-rate fields are None when no row could be scored (every row was in the training set).
    ``structure_weight``: w in ``S = (1 − w) U + w S_train`` (None: no training T, S uniform).
    ``temperature``: applied to the model's probabilities (1: uncalibrated, ``calibration`` says why).
    """

    batch_noise_rate: float | None
    most_likely_noise_rate: float | None
    noise_rate_low: float | None
    noise_rate_high: float | None
    structure_source: str
    training_noise_rate: float | None
    structure_weight: float | None = None
    temperature: float = 1.0
    calibration: str = "none"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class TrainingOverlap:
    """How many usable batch rows show an image the model trained on (the same decoded pixels).

    ``known`` is False for a model folder without ``training_fingerprints.npy``: it cannot tell.
    Rows seen in training are kept in the report (status ``seen_in_training``) but not scored: the
    model's probabilities on images it trained on say little about their labels' quality.
    """

    known: bool
    seen: int
    usable: int

    @property
    def estimated(self) -> int:
        """Usable rows the estimate covers."""
        return self.usable - self.seen

    @property
    def message(self) -> str:
        if not self.known:
            return ("the model folder records no training fingerprints (saved before labelaudit recorded them): "
                    "cannot tell whether any rows were in its training set")
        if self.seen == 0:
            return f"none of the {self.usable} usable rows were in the model's training set"
        if self.estimated == 0:
            return f"all {self.usable} usable rows were in the model's training set"
        return (f"{self.seen} of {self.usable} usable rows were in the model's training set; the estimate covers "
                f"the other {self.estimated}")

    def to_dict(self) -> dict[str, Any]:
        return {"known": self.known, "rows": self.seen if self.known else None, "of": self.usable,
                "estimate_covers": self.estimated, "message": self.message}


@dataclass
class CheckResult:
    """Outcome of ``run_check``: the estimate, every limit's outcome, and the batch report."""

    batch_csv: Path
    model_dir: Path
    report_path: Path
    rows: int
    audited: int
    status_counts: dict[str, int]
    error_rate: RateEstimate
    n_issues: int
    classes: list[ClassOutcome]
    limits: list[LimitOutcome]
    on: str
    worst_rows: pd.DataFrame
    samples: pd.DataFrame
    noise_model: NoiseModel
    baseline: BaselineComparison | None
    timings: dict[str, float]
    training_overlap: TrainingOverlap | None = None
    data_issues: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return all(limit.passed for limit in self.limits)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    @property
    def failed_limits(self) -> list[LimitOutcome]:
        return [limit for limit in self.limits if not limit.passed]

    @property
    def seen_in_training(self) -> int:
        """Usable rows recognised as training images (0 when the model cannot tell)."""
        return self.training_overlap.seen if self.training_overlap is not None else 0

    @property
    def skipped(self) -> int:
        """Rows not usable (missing file, unreadable image, …); rows seen in training are not counted."""
        return self.rows - self.audited - self.seen_in_training

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (what ``--json`` prints)."""
        return {
            "labelaudit_version": __version__,
            "passed": self.passed,
            "exit_code": self.exit_code,
            "batch": str(self.batch_csv),
            "model": str(self.model_dir),
            "report": str(self.report_path),
            "rows": self.rows,
            "audited": self.audited,
            "skipped": self.skipped,
            "status_counts": self.status_counts,
            "seen_in_training": self.training_overlap.to_dict() if self.training_overlap else None,
            "error_rate": self.error_rate.to_dict(),
            "n_issues": self.n_issues,
            "on": self.on,
            "limits": [limit.to_dict() for limit in self.limits],
            "classes": [c.to_dict() for c in self.classes],
            "worst_rows": _records(self.worst_rows),
            "noise_model": self.noise_model.to_dict(),
            "baseline": self.baseline.to_dict() if self.baseline else None,
            "data_issues": self.data_issues,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


# --------------------------------------------------------------------------- numeric parts


def off_diagonal_structure(transition: np.ndarray | None, n_classes: int) -> np.ndarray:
    """Which classes a wrong label goes to: (K, K), zero diagonal, rows summing to 1.

    Row i is ``T[i, j≠i]`` renormalised; uniform over the other classes when ``transition``
    is None or row i has no off-diagonal mass.
    """
    uniform = (np.ones((n_classes, n_classes)) - np.eye(n_classes)) / max(n_classes - 1, 1)
    if transition is None:
        return uniform
    off = np.asarray(transition, dtype=np.float64) * (1.0 - np.eye(n_classes))
    mass = off.sum(axis=1, keepdims=True)
    has_mass = mass[:, 0] > 1e-12
    return np.where(has_mass[:, None], off / np.where(mass > 0, mass, 1.0), uniform)


@dataclass
class LabelEvidence:
    """What the model says about each row's given label, for the noise-rate model.

    ``given[n] = q(g_n | x_n)`` and ``other[n] = Σ_{i≠g_n} q(i | x_n) S[i, g_n]``, both (M,) and
    floored at 1e-12, so that ``P(given label | x, ε) = given + ε (other − given)``.
    """

    given: np.ndarray
    other: np.ndarray

    @classmethod
    def of(cls, labels: np.ndarray, clean_probs: np.ndarray, structure: np.ndarray) -> "LabelEvidence":
        labels = np.asarray(labels, dtype=np.int64)
        q = np.maximum(np.asarray(clean_probs, dtype=np.float64), _PROBABILITY_FLOOR)
        rows = np.arange(labels.shape[0])
        given = q[rows, labels]
        # (q S)[n, g] = Σ_i q(i | x_n) S[i, g]; S has a zero diagonal, so that is the sum over i ≠ g.
        other = np.maximum((q @ structure)[rows, labels], _PROBABILITY_FLOOR)
        return cls(given=given, other=other)

    def log_likelihood(self, noise_rates: np.ndarray, *, chunk: int = 4096) -> np.ndarray:
        """(G,) log-likelihood of the given labels at each of the (G,) ``noise_rates``."""
        eps = np.asarray(noise_rates, dtype=np.float64)[:, None]
        total = np.zeros(eps.shape[0])
        for start in range(0, self.given.shape[0], chunk):  # bounds memory to G × chunk
            given, other = self.given[start:start + chunk], self.other[start:start + chunk]
            total += np.log(given + eps * (other - given)).sum(axis=1)
        return total

    def most_likely_noise_rate(self) -> float:
        """Maximiser of the (concave) log-likelihood over [0, 1], by bisection on its derivative."""
        slope = self.other - self.given

        def derivative(eps: float) -> float:
            return float(np.sum(slope / (self.given + eps * slope)))

        if derivative(0.0) <= 0.0:
            return 0.0
        if derivative(1.0) >= 0.0:
            return 1.0
        low, high = 0.0, 1.0
        for _ in range(60):
            middle = 0.5 * (low + high)
            if derivative(middle) > 0.0:
                low = middle
            else:
                high = middle
        return 0.5 * (low + high)

    def error_probability(self, noise_rate: float | np.ndarray) -> np.ndarray:
        """P(true ≠ given | x, given) at ε: (M,) for a scalar, (G, M) for (G,) rates."""
        eps = np.asarray(noise_rate, dtype=np.float64)[..., None]
        wrong = eps * self.other
        return wrong / (self.given * (1.0 - eps) + wrong)


def fit_batch_noise_rate(labels: np.ndarray, clean_probs: np.ndarray, structure: np.ndarray) -> float:
    """Maximum-likelihood noise rate ε of a batch under ``T = (1 − ε) I + ε S``.

    Parameters
    ----------
    labels : np.ndarray, shape (M,)
        Given class indices.
    clean_probs : np.ndarray, shape (M, K)
        Clean-class probabilities q(i | x).
    structure : np.ndarray, shape (K, K)
        S from :func:`off_diagonal_structure`.

    Returns
    -------
    float
        ε in [0, 1]. The log-likelihood ``Σ log(a + ε (b − a))`` is concave, so its maximiser is
        0, 1 or the root of its derivative, found by bisection.
    """
    return LabelEvidence.of(labels, clean_probs, structure).most_likely_noise_rate()


@dataclass
class NoiseRatePosterior:
    """The batch noise rate ε under a flat prior on [0, 1]: its most likely value, its posterior
    mean, a central 95% interval (low, high), and ``draws`` (D,) equally likely values (the
    medians of D equal-probability slices of the posterior)."""

    most_likely: float
    mean: float
    low: float
    high: float
    draws: np.ndarray


def noise_rate_posterior(evidence: LabelEvidence, *, n_draws: int = POSTERIOR_DRAWS,
                         grid_points: int = 401) -> NoiseRatePosterior:
    """Posterior of ε on a grid that is narrowed until it resolves the posterior's mass."""
    mode = evidence.most_likely_noise_rate()
    low, high = 0.0, 1.0
    for _ in range(6):
        grid = np.linspace(low, high, grid_points)
        log_density = evidence.log_likelihood(grid)
        alive = np.flatnonzero(log_density > log_density.max() - 40.0)  # e^-40: no mass worth keeping
        first, last = max(alive[0] - 1, 0), min(alive[-1] + 1, grid_points - 1)
        if last - first >= grid_points // 4:
            break
        low, high = grid[first], grid[last]
    density = np.exp(log_density - log_density.max())
    masses = 0.5 * (density[1:] + density[:-1]) * np.diff(grid)
    if masses.sum() <= 0:
        return NoiseRatePosterior(most_likely=mode, mean=mode, low=mode, high=mode, draws=np.full(n_draws, mode))
    cdf = np.concatenate([[0.0], np.cumsum(masses)]) / masses.sum()
    mean = float(np.sum(masses * 0.5 * (grid[1:] + grid[:-1])) / masses.sum())
    levels = (np.arange(n_draws) + 0.5) / n_draws
    low, high = np.interp([(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2], cdf, grid)
    return NoiseRatePosterior(most_likely=mode, mean=mean, low=float(low), high=float(high),
                              draws=np.interp(levels, cdf, grid))


def batch_transition(noise_rate: float, structure: np.ndarray) -> np.ndarray:
    """``(1 − ε) I + ε S``: (K, K), rows summing to 1."""
    n_classes = structure.shape[0]
    return (1.0 - noise_rate) * np.eye(n_classes) + noise_rate * structure


def fit_structure_weight(labels: np.ndarray, clean_probs: np.ndarray, training_structure: np.ndarray, *,
                         grid_points: int = STRUCTURE_GRID_POINTS) -> float:
    """Weight w of the training run's structure in ``S_w = (1 − w) U + w S_train`` (U: uniform over
    the other classes) that, with ε at its maximum, makes the batch's given labels most likely.

    Parameters
    ----------
    labels : np.ndarray, shape (M,)
        Given class indices.
    clean_probs : np.ndarray, shape (M, K)
        Clean-class probabilities q(i | x), calibrated.
    training_structure : np.ndarray, shape (K, K)
        :func:`off_diagonal_structure` of the training run's T.

    Returns
    -------
    float
        w in [0, 1] on a grid of ``grid_points``; ties (e.g. a batch with no noise, where every w is
        as likely) go to the larger w, i.e. to the training run's structure.

    Notes
    -----
    With ``u = ε (1 − w)`` and ``v = ε w`` the log-likelihood ``Σ log(a (1 − u − v) + u b_U + v b_S)``
    is concave in (u, v), so its maximum along each ray w is unimodal in w and a grid finds it.
    A batch whose wrong labels go anywhere (symmetric noise) gets w near 0; one whose wrong labels
    follow the training run's confusions gets w near 1.
    """
    n_classes = np.asarray(clean_probs).shape[1]
    uniform = LabelEvidence.of(labels, clean_probs, off_diagonal_structure(None, n_classes))
    trained = LabelEvidence.of(labels, clean_probs, training_structure)
    best_weight, best = 1.0, -np.inf
    for weight in np.linspace(1.0, 0.0, grid_points):
        evidence = LabelEvidence(given=uniform.given, other=(1.0 - weight) * uniform.other + weight * trained.other)
        value = float(evidence.log_likelihood(np.array([evidence.most_likely_noise_rate()]))[0])
        if value > best + 1e-9:
            best_weight, best = float(weight), value
    return best_weight


@dataclass
class BatchScores:
    """Per-row scores of a batch (at the posterior mean of ε) and the noise model behind them.

    ``error_probability_draws`` (D, M): each row's error probability at each of the D equally
    likely noise rates in ``noise.draws``; the intervals mix over them. ``structure_weight``: w of
    :func:`fit_structure_weight` (None without a training T: the structure is uniform).
    """

    rows: RowScores
    noise: NoiseRatePosterior
    transition: np.ndarray
    error_probability_draws: np.ndarray
    structure_weight: float | None = None


def flag_estimated_count(labels: np.ndarray, clean_probs: np.ndarray, transition: np.ndarray) -> RowScores:
    """:func:`~labelaudit.report.tables.score_rows`, with the verdicts adding up as in a scan: the
    round(Σ error probability) rows first in rank order are flagged (so the rows flagged are as many as the
    batch estimate says are wrong), and a flagged row's suggestion is its most probable other label."""
    rows = score_rows(labels, clean_probs, transition)
    # the order score_rows ranks by: error probability, then lower self-confidence
    order_key = rows.error_probability.astype(np.float64) + (1.0 - rows.p_given.astype(np.float64)) * 1e-9
    is_issue = flag_top_estimated(order_key, estimated_error_count(rows.error_probability))
    suggested = suggested_labels(labels, posterior_true_label(labels, clean_probs, transition), is_issue)
    return replace(rows, is_issue=is_issue, suggested=suggested, rank=suspicion_rank(order_key).astype(np.int32))


def score_batch(labels: np.ndarray, clean_probs: np.ndarray,
                training_transition: np.ndarray | None = None) -> BatchScores:
    """Fit the batch's noise rate and score every row (see the module docstring).

    labels: (M,) given class indices; clean_probs: (M, K), calibrated (:func:`temperature_scale`);
    training_transition: (K, K) T of the training run (which classes are confused with which), or
    None. With a T, the structure is ``(1 − w) U + w S_train``, w fitted to the batch.
    """
    n_classes = np.asarray(clean_probs).shape[1]
    weight = None
    structure = off_diagonal_structure(None, n_classes)
    if training_transition is not None:
        trained = off_diagonal_structure(training_transition, n_classes)
        weight = fit_structure_weight(labels, clean_probs, trained)
        structure = (1.0 - weight) * structure + weight * trained
    evidence = LabelEvidence.of(labels, clean_probs, structure)
    noise = noise_rate_posterior(evidence)
    transition = batch_transition(noise.mean, structure)
    return BatchScores(rows=flag_estimated_count(labels, clean_probs, transition), noise=noise, transition=transition,
                       error_probability_draws=evidence.error_probability(noise.draws), structure_weight=weight)


def rate_estimate(error_probability: np.ndarray, draws: np.ndarray | None = None, *,
                  confidence: float = CONFIDENCE) -> RateEstimate:
    """Estimated error rate of N rows with its central interval.

    Parameters
    ----------
    error_probability : np.ndarray, shape (N,)
        Per-row error probabilities; the estimate is their mean.
    draws : np.ndarray, shape (D, N), optional
        The same probabilities at D equally likely noise rates. The count of wrong labels is then
        an equal mixture of D Poisson-binomial distributions (exact up to 20,000 rows, a normal
        with the mixture's mean and variance above). Without it: one Poisson-binomial of
        ``error_probability`` (``core.intervals.poisson_binomial_interval``).
    confidence : float
        In (0, 1).

    Returns
    -------
    RateEstimate
        ``low <= rate <= high``.
    """
    probs = np.clip(np.asarray(error_probability, dtype=np.float64), 0.0, 1.0)
    n = int(probs.shape[0])
    rate = float(probs.mean())
    if draws is None:
        _, low, high = poisson_binomial_interval(probs, confidence=confidence)
    else:
        low, high = _mixture_interval(np.clip(np.asarray(draws, dtype=np.float64), 0.0, 1.0), confidence)
    return RateEstimate(rate=rate, low=min(low, rate), high=max(high, rate), errors=float(probs.sum()), n=n,
                        confidence=confidence,
                        method="poisson_binomial" if draws is None else "poisson_binomial_mixture")


def _mixture_interval(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    n = draws.shape[1]
    tail = (1.0 - confidence) / 2.0
    if n <= EXACT_MAX_N:
        pmf = np.mean([poisson_binomial_pmf(row) for row in draws], axis=0)
        cdf = np.cumsum(pmf)
        low = min(int(np.searchsorted(cdf, tail, side="left")), n)
        high = min(int(np.searchsorted(cdf, 1.0 - tail, side="left")), n)
        return low / n, high / n
    means = draws.sum(axis=1)
    variance = float(np.mean((draws * (1.0 - draws)).sum(axis=1)) + np.var(means))
    spread = normal_quantile(1.0 - tail) * math.sqrt(variance)
    centre = float(means.mean())
    return max(centre - spread, 0.0) / n, min(centre + spread, float(n)) / n


def class_outcomes(classes: list[str], labels: np.ndarray, error_probability: np.ndarray,
                   is_issue: np.ndarray, draws: np.ndarray | None = None, *, limit: float | None = None,
                   on: str = "estimate") -> list[ClassOutcome]:
    """Per given class present in the batch (class order): rate, interval, flagged rows, over ``limit``.

    labels, error_probability, is_issue: (M,); draws: (D, M) as in :func:`rate_estimate`.
    """
    outcomes = []
    for index, label in enumerate(classes):
        here = labels == index
        if not here.any():
            continue
        estimate = rate_estimate(error_probability[here], None if draws is None else draws[:, here])
        over = limit is not None and estimate.gated_value(on) > limit
        outcomes.append(ClassOutcome(label=label, n=int(here.sum()), n_issues=int(is_issue[here].sum()),
                                     error_rate=estimate, over_limit=bool(over)))
    return outcomes


def evaluate_limits(limits: Limits, error_rate: RateEstimate, classes: list[ClassOutcome],
                    flagged: pd.DataFrame, audited: int, *, unavailable_reason: str = "no row could be scored",
                    seen: int = 0) -> list[LimitOutcome]:
    """Hold each set limit against the batch, in a fixed order.

    ``flagged``: the flagged rows (columns path, given_label, suggested_label, error_probability),
    most suspicious first; they are named when a limit on errors fails. When ``error_rate`` is
    unavailable (no row to estimate from), the two error-rate limits cannot be checked and fail,
    saying ``unavailable_reason``: a gate does not pass what it could not measure. ``audited``: the
    scored rows; ``seen``: usable rows not scored because the model trained on them (they do not
    count towards ``--min-images``).
    """
    outcomes = []
    which = "upper bound" if limits.on == "upper" else "estimate"
    row_names = _row_descriptions(flagged)
    if not error_rate.available:
        for name, option, limit in (("max_error_rate", "--max-error-rate", limits.max_error_rate),
                                    ("max_class_error_rate", "--max-class-error-rate", limits.max_class_error_rate)):
            if limit is not None:
                outcomes.append(LimitOutcome(name, option, limit, float("nan"), False,
                                             f"cannot be checked: {unavailable_reason}"))
        limits = replace(limits, max_error_rate=None, max_class_error_rate=None)
    if limits.max_error_rate is not None:
        value = error_rate.gated_value(limits.on)
        passed = value <= limits.max_error_rate
        message = (f"estimated error rate {percent(error_rate.rate)} (95% interval {percent(error_rate.low)}–"
                   f"{percent(error_rate.high)}); {which} {'within' if passed else 'exceeds'} "
                   f"{percent(limits.max_error_rate)}")
        outcomes.append(LimitOutcome("max_error_rate", "--max-error-rate", limits.max_error_rate, value, passed,
                                     message, [] if passed else row_names))
    if limits.max_class_error_rate is not None:
        over = [c for c in classes if c.error_rate.gated_value(limits.on) > limits.max_class_error_rate]
        over.sort(key=lambda c: -c.error_rate.gated_value(limits.on))
        worst_value = max((c.error_rate.gated_value(limits.on) for c in classes), default=0.0)
        if over:
            listed = ", ".join(f"{c.label} {percent(c.error_rate.gated_value(limits.on))}" for c in over[:5])
            more = f" and {len(over) - 5} more" if len(over) > 5 else ""
            message = (f"{len(over)} class{'es' if len(over) != 1 else ''} over {percent(limits.max_class_error_rate)}"
                       f" ({which}): {listed}{more}")
        else:
            message = f"every class within {percent(limits.max_class_error_rate)} ({which})"
        offenders = [f"{c.label}: {percent(c.error_rate.rate)} ({percent(c.error_rate.low)}–"
                     f"{percent(c.error_rate.high)}) of {c.n} rows, {c.n_issues} flagged" for c in over]
        outcomes.append(LimitOutcome("max_class_error_rate", "--max-class-error-rate", limits.max_class_error_rate,
                                     worst_value, not over, message, offenders))
    if limits.max_issues is not None:
        n_issues = len(flagged)
        passed = n_issues <= limits.max_issues
        message = f"{n_issues} rows flagged as likely errors; {'within' if passed else 'more than'} {limits.max_issues}"
        outcomes.append(LimitOutcome("max_issues", "--max-issues", limits.max_issues, n_issues, passed, message,
                                     [] if passed else row_names))
    if limits.min_images is not None:
        passed = audited >= limits.min_images
        besides = f" (besides {seen} seen in training)" if seen else ""
        message = (f"{audited} usable rows{besides}; {'at least' if passed else 'fewer than'} {limits.min_images} "
                   "required")
        outcomes.append(LimitOutcome("min_images", "--min-images", limits.min_images, audited, passed, message))
    return outcomes


def evaluate_data_limits(limits: Limits, samples: pd.DataFrame, overlap: TrainingOverlap) -> list[LimitOutcome]:
    """``--max-duplicates`` (rows of the batch in duplicate sets within the batch: the same picture twice,
    exactly or nearly) and ``--fail-on-leakage`` (a batch row shows an image the model trained on: the
    batch leaks into, or out of, the training set). A model folder without training fingerprints cannot
    tell, and ``--fail-on-leakage`` then fails as *cannot be checked*."""
    outcomes = []
    if limits.max_duplicates is not None:
        in_sets = samples[samples["is_duplicate"] == True]  # noqa: E712 (nullable)
        n_sets = in_sets["duplicate_set"].nunique()
        passed = len(in_sets) <= limits.max_duplicates
        message = (f"{len(in_sets)} rows in {n_sets} duplicate sets within the batch; "
                   f"{'within' if passed else 'more than'} {limits.max_duplicates}")
        offenders = [f"{row.path} (set {int(row.duplicate_set)}, {row.given_label})"
                     for row in in_sets.sort_values("duplicate_set").head(LISTED_OFFENDERS).itertuples(index=False)]
        outcomes.append(LimitOutcome("max_duplicates", "--max-duplicates", limits.max_duplicates, len(in_sets),
                                     passed, message, [] if passed else offenders))
    if limits.fail_on_leakage:
        if not overlap.known:
            outcomes.append(LimitOutcome("leakage", "--fail-on-leakage", 0, float("nan"), False,
                                         f"cannot be checked: {overlap.message}"))
        else:
            leaked = samples[samples["is_leak"] == True]  # noqa: E712 (nullable)
            passed = leaked.empty
            message = ("no batch row shows an image the model trained on" if passed else
                       f"leakage: {len(leaked)} batch rows show images the model trained on")
            offenders = [str(path) for path in leaked["path"].head(LISTED_OFFENDERS)]
            outcomes.append(LimitOutcome("leakage", "--fail-on-leakage", 0, len(leaked), passed, message,
                                         [] if passed else offenders))
    return outcomes


def compare_with_baseline(path: Path, error_rate: RateEstimate, classes: list[ClassOutcome]) -> BaselineComparison:
    """Read an earlier check report or a scan's samples.parquet and compare error rates."""
    path = Path(path)
    if not path.is_file():
        raise LabelAuditError(f"baseline {path} does not exist")
    try:
        table = pq.read_table(path, columns=["given_label", "error_probability", "status"]).to_pandas()
    except (OSError, KeyError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LabelAuditError(f"baseline {path} is not a labelaudit samples or check report ({first[:150]})") from None
    audited = table[(table["status"] == AUDITED) & table["error_probability"].notna()]
    if audited.empty:
        raise LabelAuditError(f"baseline {path} has no audited rows")
    baseline_by_class = audited.groupby("given_label")["error_probability"].mean()
    changes = []
    for outcome in classes:
        base = baseline_by_class.get(outcome.label)
        base_rate = None if base is None else float(base)
        changes.append(ClassChange(
            label=outcome.label, baseline_rate=base_rate, batch_rate=outcome.error_rate.rate,
            change=None if base_rate is None else outcome.error_rate.rate - base_rate,
            worse=base_rate is not None and outcome.error_rate.low > base_rate,
        ))
    base_overall = float(audited["error_probability"].astype(np.float64).mean())
    return BaselineComparison(path=path, audited=int(len(audited)), error_rate=base_overall,
                              change=error_rate.rate - base_overall, classes=changes)


# --------------------------------------------------------------------------- the check


def run_check(settings: CheckSettings, *, progress: ProgressReporter | None = None,
              decode_progress: Callable[[int, int], None] | None = None) -> CheckResult:
    """Score the batch with the saved model, write the batch report, hold it against the limits.

    Raises
    ------
    LabelAuditError
        Bad limits; missing or unreadable model directory, images folder, CSV or baseline;
        labels the model does not know (listed); no usable row.
    """
    progress = progress or SilentProgress()
    settings.limits.validate()
    if settings.baseline is not None and not Path(settings.baseline).is_file():
        raise LabelAuditError(f"baseline {settings.baseline} does not exist")  # before minutes of inference
    started = time.perf_counter()
    timings: dict[str, float] = {}
    from .train.checkpoint import image_fingerprints, load_model  # torch loads here, not when the CLI starts

    model = load_model(resolve_model_dir(settings.model_dir), device=settings.device)
    refuse_unknown_labels(settings, model)
    timings["load_seconds"] = time.perf_counter() - started

    stage = time.perf_counter()
    data = load_labelled_images(
        settings.images, settings.batch_csv, image_size=model.image_size, path_column=settings.path_column,
        label_column=settings.label_column, delimiter=settings.delimiter, classes=model.classes,
        max_pixels=settings.max_pixels, workers=settings.workers, progress=decode_progress,
    )
    timings["decode_seconds"] = time.perf_counter() - stage

    stage = time.perf_counter()
    fingerprints = image_fingerprints(data.images)  # also what the duplicate check compares
    seen = model.seen_fingerprints(fingerprints)  # None: the model folder cannot tell
    overlap = TrainingOverlap(known=seen is not None, seen=int(seen.sum()) if seen is not None else 0,
                              usable=len(data.labels))
    scored = ~seen if seen is not None else np.ones(len(data.labels), dtype=bool)
    timings["fingerprint_seconds"] = time.perf_counter() - stage

    stage = time.perf_counter()
    images = data.images if scored.all() else data.images[scored]
    probs = predict_in_chunks(model, images, progress) if len(images) else np.zeros((0, len(model.classes)))
    clean_probs = temperature_scale(probs, model.temperature) if model.temperature != 1.0 else probs
    timings["inference_seconds"] = time.perf_counter() - stage

    stage = time.perf_counter()
    labels = data.labels[scored]
    training_transition, source = find_training_transition(model)
    rows = mark_seen_rows(data.rows, data.row_index, seen)
    limits = settings.limits
    if len(labels):
        batch_scores = score_batch(labels, clean_probs, training_transition)
        scores, draws, noise = batch_scores.rows, batch_scores.error_probability_draws, batch_scores.noise
        error_rate = rate_estimate(scores.error_probability, draws)
        classes = class_outcomes(model.classes, labels, scores.error_probability, scores.is_issue, draws,
                                 limit=limits.max_class_error_rate, on=limits.on)
    else:
        batch_scores, scores, noise = None, _no_scores(), None
        error_rate, classes = RateEstimate.unavailable(), []
    issues = batch_data_issues(data, seen, fingerprints)
    samples = samples_frame(rows, data.row_index[scored], model.classes, scores, np.zeros(len(labels), np.int16),
                            issues=issues.columns, issue_index=np.arange(len(rows)))
    samples = _with_seen_column(samples, data.row_index, seen)
    flagged = (samples[samples["is_issue"] == True]  # noqa: E712 (object column holding None for skipped rows)
               .sort_values("rank")[["path", "given_label", "suggested_label", "error_probability", "rank"]])
    outcomes = evaluate_limits(limits, error_rate, classes, flagged, len(labels),
                               unavailable_reason=overlap.message, seen=overlap.seen)
    outcomes += evaluate_data_limits(limits, samples, overlap)
    baseline = (compare_with_baseline(settings.baseline, error_rate, classes)
                if settings.baseline and error_rate.available else None)
    noise_model = NoiseModel(
        batch_noise_rate=noise.mean if noise else None, most_likely_noise_rate=noise.most_likely if noise else None,
        noise_rate_low=noise.low if noise else None, noise_rate_high=noise.high if noise else None,
        structure_source=source,
        training_noise_rate=None if training_transition is None else
        float(1.0 - np.mean(np.diag(training_transition))),
        structure_weight=batch_scores.structure_weight if batch_scores else None,
        temperature=model.temperature, calibration=describe_calibration(model.calibration),
    )
    timings["scoring_seconds"] = time.perf_counter() - stage
    timings["total_seconds"] = time.perf_counter() - started

    result = CheckResult(
        batch_csv=Path(settings.batch_csv), model_dir=model.directory, report_path=settings.report_path(),
        rows=len(data.rows), audited=len(labels), status_counts=_status_counts(rows),
        error_rate=error_rate, n_issues=int(scores.is_issue.sum()), classes=classes, limits=outcomes,
        on=limits.on, worst_rows=flagged.head(max(settings.worst, 0)).reset_index(drop=True),
        samples=samples, noise_model=noise_model, baseline=baseline, timings=timings, training_overlap=overlap,
        data_issues={**issues.summary, "leakage": {"rows": overlap.seen if overlap.known else None,
                                                   "known": overlap.known}},
    )
    write_batch_report(result, settings, model, data.images_root)
    return result


def batch_data_issues(data: Any, seen: np.ndarray | None, fingerprints: np.ndarray) -> Any:
    """Duplicates within the batch, outliers and image quality (:func:`labelaudit.issues.find_data_issues`),
    with ``is_leak`` meaning *shows an image the model trained on* (null when the model cannot tell).
    ``fingerprints``: (M,) :func:`~labelaudit.train.checkpoint.image_fingerprints` of ``data.images``."""
    from .issues import find_data_issues

    issues = find_data_issues(data, fingerprints=fingerprints, pred_probs=None)
    leak = np.full(len(data.rows), None, dtype=object)
    if seen is not None:
        leak[data.row_index] = list(seen.astype(bool))
    issues.columns["is_leak"] = leak
    return issues


def mark_seen_rows(rows: pd.DataFrame, row_index: np.ndarray, seen: np.ndarray | None) -> pd.DataFrame:
    """``rows`` with status ``seen_in_training`` at the usable rows ``seen`` marks (a copy when any)."""
    if seen is None or not seen.any():
        return rows
    rows = rows.copy()
    rows.iloc[row_index[seen], rows.columns.get_loc("status")] = SEEN_IN_TRAINING
    return rows


def describe_calibration(calibration: dict[str, Any] | None) -> str:
    """One phrase saying where the temperature comes from."""
    if calibration is None:
        return "none (the model folder has no calibration.json: probabilities used as the model gives them)"
    if not calibration.get("fitted", False):
        return f"none ({calibration.get('reason', 'not fitted')})"
    return f"temperature fitted on {calibration.get('rows', '?')} training rows (calibration.json)"


def _with_seen_column(samples: pd.DataFrame, row_index: np.ndarray, seen: np.ndarray | None) -> pd.DataFrame:
    """Insert ``seen_in_training`` after the samples columns: True/False for usable rows, null for
    the others and for every row when the model cannot tell."""
    column = np.full(len(samples), None, dtype=object)
    if seen is not None:
        column[row_index] = list(seen.astype(bool))
    if SEEN_COLUMN in samples.columns:  # a CSV column of that name keeps its values under another name
        samples = samples.rename(columns={SEEN_COLUMN: f"csv_{SEEN_COLUMN}"})
    samples.insert(len(SAMPLES_COLUMNS), SEEN_COLUMN, column)
    return samples


def _status_counts(rows: pd.DataFrame) -> dict[str, int]:
    """Rows per status: ``audited`` first, then by count, largest first (as ``LabelledImages``)."""
    counts = rows["status"].value_counts()
    ordered = sorted(counts.items(), key=lambda item: (item[0] != AUDITED, -item[1], item[0]))
    return {str(status): int(n) for status, n in ordered}


def _no_scores() -> RowScores:
    empty = np.zeros(0)
    return RowScores(p_given=empty.astype(np.float32), label_quality=empty.astype(np.float32),
                     error_probability=empty.astype(np.float32), suggested=empty.astype(np.int64),
                     is_issue=empty.astype(bool), rank=empty.astype(np.int32))


def resolve_model_dir(directory: Path) -> Path:
    """The model directory itself, or ``directory/model`` when given a run directory."""
    directory = Path(directory)
    if not (directory / MODEL_CONFIG_FILE).is_file() and (directory / "model" / MODEL_CONFIG_FILE).is_file():
        return directory / "model"
    return directory


def refuse_unknown_labels(settings: CheckSettings, model: LoadedModel) -> None:
    """Fail before decoding when the batch uses labels the model was not trained on (listed)."""
    table = read_label_csv(settings.batch_csv, path_column=settings.path_column,
                           label_column=settings.label_column, delimiter=settings.delimiter)
    known = set(model.classes)
    counts = table[settings.label_column].str.strip().value_counts()
    unknown = sorted((label, int(n)) for label, n in counts.items() if label and label not in known)
    if not unknown:
        return
    listed = ", ".join(f"{label!r} ({n} row{'s' if n != 1 else ''})" for label, n in unknown[:10])
    more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
    shown = ", ".join(model.classes[:20]) + (" …" if len(model.classes) > 20 else "")
    raise LabelAuditError(
        f"{settings.batch_csv} has {len(unknown)} label{'s' if len(unknown) != 1 else ''} the model does not know: "
        f"{listed}{more}; the model in {model.directory} knows {shown}"
    )


def predict_in_chunks(model: LoadedModel, images: np.ndarray, progress: ProgressReporter) -> np.ndarray:
    """(M, H, W, 3) uint8 -> (M, K) float32 probabilities, reporting progress per chunk."""
    progress.start("scoring", len(images))
    parts = []
    for start in range(0, len(images), INFERENCE_CHUNK):
        chunk = images[start:start + INFERENCE_CHUNK]
        parts.append(model.predict_proba(chunk))
        progress.advance(len(chunk))
    progress.finish()
    return np.concatenate(parts) if parts else np.zeros((0, len(model.classes)), np.float32)


def find_training_transition(model: LoadedModel) -> tuple[np.ndarray | None, str]:
    """The training run's T for the model's classes, and where it came from.

    Looks for ``transition.parquet`` in the model directory, then in its parent (the run
    directory ``scan``/``train``/``matrix`` write); takes the first estimator present of
    glc, confident_joint, nal, anchor. None when there is none or its classes differ.
    """
    for path in (model.directory / TRANSITION_FILE, model.directory.parent / TRANSITION_FILE):
        if not path.is_file():
            continue
        try:
            frame = pq.read_table(path, columns=["true_label", "noisy_label", "probability", "estimator"]).to_pandas()
        except (OSError, KeyError, ValueError) as exc:
            raise LabelAuditError(f"cannot read {path}: {str(exc).strip()[:150]}") from None
        for estimator in ESTIMATOR_PREFERENCE:
            part = frame[frame["estimator"] == estimator]
            if part.empty:
                continue
            matrix = _matrix_for_classes(part, model.classes)
            if matrix is None:
                return None, f"uniform (the classes in {path} differ from the model's)"
            return matrix, f"{estimator} from {path}"
    return None, "uniform (no transition.parquet beside the model)"


def _matrix_for_classes(part: pd.DataFrame, classes: list[str]) -> np.ndarray | None:
    if set(part["true_label"]) != set(classes) or set(part["noisy_label"]) != set(classes):
        return None
    pivot = part.pivot_table(index="true_label", columns="noisy_label", values="probability", aggfunc="first")
    matrix = pivot.reindex(index=classes, columns=classes).to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(matrix)) or np.any(matrix < 0):
        return None
    sums = matrix.sum(axis=1, keepdims=True)
    return matrix / np.where(sums > 0, sums, 1.0)


def write_batch_report(result: CheckResult, settings: CheckSettings, model: LoadedModel, images_root: Path) -> None:
    """The batch's samples table as Parquet with the run metadata of DESIGN.md §4 plus the check summary."""
    summary = result.to_dict()
    metadata = {
        "labelaudit_version": __version__,
        "config": {
            "command": "check", "model_dir": str(model.directory), "architecture": model.info.get("architecture"),
            "method": model.info.get("method"), "image_size": model.image_size,
            "limits": settings.limits.__dict__, "noise_model": result.noise_model.to_dict(),
            "dataset": {"images": str(settings.images), "labels_csv": str(settings.batch_csv),
                        "path_column": settings.path_column, "label_column": settings.label_column,
                        "delimiter": settings.delimiter},
        },
        "classes": model.classes,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "images_root": str(images_root),
        "labels_sha256": sha256_of_file(settings.batch_csv),
        "check": {k: summary[k] for k in ("passed", "rows", "audited", "seen_in_training", "error_rate", "n_issues",
                                          "limits")},
    }
    try:
        write_parquet(result.samples, result.report_path, schema=CHECK_REPORT_SCHEMA, metadata=metadata)
    except OSError as exc:
        raise LabelAuditError(f"cannot write the batch report {result.report_path}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------- small helpers


def percent(rate: float) -> str:
    """0.073 -> '7.3%'; small non-zero rates keep two decimals ('0.25%')."""
    if rate is None or (isinstance(rate, float) and math.isnan(rate)):
        return "n/a"
    if 0 < abs(rate) < 0.01:
        return f"{rate:.2%}"
    return f"{rate:.1%}"


def _row_descriptions(flagged: pd.DataFrame, limit: int = LISTED_OFFENDERS) -> list[str]:
    described = [f"{row.path}: given {row.given_label}, suggested {row.suggested_label} "
                 f"(error probability {float(row.error_probability):.2f})"
                 for row in flagged.head(limit).itertuples(index=False)]
    if len(flagged) > limit:
        described.append(f"… and {len(flagged) - limit} more flagged rows")
    return described


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    records = []
    for row in frame.to_dict(orient="records"):
        records.append({k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()})
    return records
