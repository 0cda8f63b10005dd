"""``labelaudit check`` as a library call: score a new annotation batch with a trained model and
hold it against agreed limits (the CI gate).

How a batch is scored
---------------------
The saved model gives clean-class probabilities q(i | x) for every usable row (inference only).
The given labels are explained by a noise channel T (``T[i, j] = P(given j | true i)``) whose
*shape* comes from the training audit and whose *size* is fitted to the batch:

    T[i, i] = 1 − ε,    T[i, j] = ε · S[i, j]  (j ≠ i)

S is the off-diagonal part of the training run's T (``transition.parquet`` beside the model),
each row renormalised to sum to 1: which classes get confused with which; uniform over the other
classes when there is no T. ε, the batch's noise rate, is learnt from the batch alone: its
likelihood ``Π_n (a_n + ε (b_n − a_n))`` with ``a_n = q(g_n | x_n)`` and
``b_n = Σ_{i≠g_n} q(i | x_n) S[i, g_n]`` is computed on a grid over [0, 1] (flat prior), which
gives its posterior mean and D equally likely values. Fitting ε to the batch matters for a
gate: scored with the training run's T as it is, a batch much noisier than the training data
would look about as noisy as the training data.

Each row's error probability is the posterior ``P(true ≠ given | x, given)`` under T at the
posterior mean of ε (``report.tables.score_rows``: the same columns as ``samples.parquet``). The
batch's estimated error rate is their mean.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from . import __version__
from .core.intervals import EXACT_MAX_N, normal_quantile, poisson_binomial_interval, poisson_binomial_pmf
from .data.csvio import read_label_csv
from .data.dataset import load_labelled_images
from .errors import LabelAuditError
from .report.parquet import write_parquet
from .report.rundir import sha256_of_file
from .report.schema import AUDITED, MODEL_CONFIG_FILE, SAMPLES_SCHEMA, TRANSITION_FILE
from .report.tables import RowScores, samples_frame, score_rows
from .train.progress import ProgressReporter, SilentProgress

if TYPE_CHECKING:  # pragma: no cover
    from .train.checkpoint import LoadedModel

ON_CHOICES = ("estimate", "upper")
CONFIDENCE = 0.95
CHECK_DIR = "check"
# Preferred transition estimator when the run directory holds several (trusted data first).
ESTIMATOR_PREFERENCE = ("glc", "confident_joint", "nal", "anchor")
INFERENCE_CHUNK = 1024
LISTED_OFFENDERS = 20
# Equally likely noise rates the intervals average over (posterior slices).
POSTERIOR_DRAWS = 11
# Keeps log-likelihood terms finite when the model gives a class probability 0 in float32.
_PROBABILITY_FLOOR = 1e-12


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

    def validate(self) -> None:
        if self.on not in ON_CHOICES:
            raise LabelAuditError(f"--on must be one of {', '.join(ON_CHOICES)}, got {self.on!r}")
        for option, rate in (("--max-error-rate", self.max_error_rate),
                             ("--max-class-error-rate", self.max_class_error_rate)):
            if rate is not None and not (isinstance(rate, (int, float)) and 0.0 <= rate <= 1.0):
                raise LabelAuditError(f"{option} must be a rate between 0 and 1, got {rate!r}")
        for option, count in (("--max-issues", self.max_issues), ("--min-images", self.min_images)):
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

    def gated_value(self, on: str) -> float:
        return self.high if on == "upper" else self.rate

    def to_dict(self) -> dict[str, Any]:
        return {"estimate": self.rate, "low": self.low, "high": self.high, "expected_errors": self.errors,
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
        return dict(self.__dict__)


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
    """The noise channel used to score the batch (see the module docstring)."""

    batch_noise_rate: float
    most_likely_noise_rate: float
    noise_rate_low: float
    noise_rate_high: float
    structure_source: str
    training_noise_rate: float | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


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
    def skipped(self) -> int:
        return self.rows - self.audited

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
            "error_rate": self.error_rate.to_dict(),
            "n_issues": self.n_issues,
            "on": self.on,
            "limits": [limit.to_dict() for limit in self.limits],
            "classes": [c.to_dict() for c in self.classes],
            "worst_rows": _records(self.worst_rows),
            "noise_model": self.noise_model.to_dict(),
            "baseline": self.baseline.to_dict() if self.baseline else None,
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


@dataclass
class BatchScores:
    """Per-row scores of a batch (at the posterior mean of ε) and the noise model behind them.

    ``error_probability_draws`` (D, M): each row's error probability at each of the D equally
    likely noise rates in ``noise.draws``; the intervals mix over them.
    """

    rows: RowScores
    noise: NoiseRatePosterior
    transition: np.ndarray
    error_probability_draws: np.ndarray


def score_batch(labels: np.ndarray, clean_probs: np.ndarray,
                training_transition: np.ndarray | None = None) -> BatchScores:
    """Fit the batch's noise rate and score every row (see the module docstring).

    labels: (M,) given class indices; clean_probs: (M, K); training_transition: (K, K) T of the
    training run (which classes are confused with which), or None.
    """
    n_classes = np.asarray(clean_probs).shape[1]
    structure = off_diagonal_structure(training_transition, n_classes)
    evidence = LabelEvidence.of(labels, clean_probs, structure)
    noise = noise_rate_posterior(evidence)
    transition = batch_transition(noise.mean, structure)
    return BatchScores(rows=score_rows(labels, clean_probs, transition), noise=noise, transition=transition,
                       error_probability_draws=evidence.error_probability(noise.draws))


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
                    flagged: pd.DataFrame, audited: int) -> list[LimitOutcome]:
    """Hold each set limit against the batch, in a fixed order.

    ``flagged``: the flagged rows (columns path, given_label, suggested_label, error_probability),
    most suspicious first; they are named when a limit on errors fails.
    """
    outcomes = []
    which = "upper bound" if limits.on == "upper" else "estimate"
    row_names = _row_descriptions(flagged)
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
        message = f"{audited} usable rows; {'at least' if passed else 'fewer than'} {limits.min_images} required"
        outcomes.append(LimitOutcome("min_images", "--min-images", limits.min_images, audited, passed, message))
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
    from .train.checkpoint import load_model  # torch loads here, not when the CLI starts

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
    clean_probs = predict_in_chunks(model, data.images, progress)
    timings["inference_seconds"] = time.perf_counter() - stage

    stage = time.perf_counter()
    training_transition, source = find_training_transition(model)
    batch_scores = score_batch(data.labels, clean_probs, training_transition)
    scores = batch_scores.rows
    samples = samples_frame(data.rows, data.row_index, model.classes, scores,
                            np.zeros(len(data.labels), np.int16))
    draws = batch_scores.error_probability_draws
    error_rate = rate_estimate(scores.error_probability, draws)
    limits = settings.limits
    classes = class_outcomes(model.classes, data.labels, scores.error_probability, scores.is_issue, draws,
                             limit=limits.max_class_error_rate, on=limits.on)
    flagged = (samples[samples["is_issue"] == True]  # noqa: E712 (object column holding None for skipped rows)
               .sort_values("rank")[["path", "given_label", "suggested_label", "error_probability", "rank"]])
    outcomes = evaluate_limits(limits, error_rate, classes, flagged, len(data.labels))
    baseline = compare_with_baseline(settings.baseline, error_rate, classes) if settings.baseline else None
    noise = batch_scores.noise
    noise_model = NoiseModel(
        batch_noise_rate=noise.mean, most_likely_noise_rate=noise.most_likely, noise_rate_low=noise.low,
        noise_rate_high=noise.high, structure_source=source,
        training_noise_rate=None if training_transition is None else
        float(1.0 - np.mean(np.diag(training_transition))),
    )
    timings["scoring_seconds"] = time.perf_counter() - stage
    timings["total_seconds"] = time.perf_counter() - started

    result = CheckResult(
        batch_csv=Path(settings.batch_csv), model_dir=model.directory, report_path=settings.report_path(),
        rows=len(data.rows), audited=len(data.labels), status_counts=data.status_counts(),
        error_rate=error_rate, n_issues=int(scores.is_issue.sum()), classes=classes, limits=outcomes,
        on=limits.on, worst_rows=flagged.head(max(settings.worst, 0)).reset_index(drop=True),
        samples=samples, noise_model=noise_model, baseline=baseline, timings=timings,
    )
    write_batch_report(result, settings, model, data.images_root)
    return result


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
        "check": {k: summary[k] for k in ("passed", "rows", "audited", "error_rate", "n_issues", "limits")},
    }
    try:
        write_parquet(result.samples, result.report_path, schema=SAMPLES_SCHEMA, metadata=metadata)
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


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    records = []
    for row in frame.to_dict(orient="records"):
        records.append({k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()})
    return records
