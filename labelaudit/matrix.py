"""``labelaudit matrix`` as a library call: estimate T every available way, re-score the scan with the best.

Estimators (long format in ``transition.parquet``, T[i, j] = P(noisy j | true i)):

* ``glc`` (with trusted rows): Gold Loss Correction steps 1–2, see :mod:`labelaudit.gold`. ``count`` =
  trusted rows of true class i whose given label is j; ``no_trusted_examples`` marks identity rows of
  classes with no trusted row.
* ``confident_joint``: on the scan's probabilities; ``count`` = the calibrated confident joint.
* ``anchor``: Patrini's anchor points need probabilities of the *noisy* label from held-out rows. With
  trusted rows they come from the GLC cross-entropy model on the trusted rows (which it never saw).
  Without, the scan's probabilities are all there is: from a ``--method ce`` scan (best with
  ``--folds``) they are the right kind; from ELR (the default) they estimate the clean class, so the
  anchor estimate is pulled towards the identity and is only a weak lower bound on the noise.
  ``count`` is null (no counts behind it).

Every cell gets a percentile-bootstrap interval over rows (``ci_low``, ``ci_high``; widened to contain
the estimate). ``samples.parquet`` is then re-scored with the best T: GLC, unless the confident joint
predicts the trusted rows' given labels better, both judged out of sample and floored alike
(:func:`choose_transition`); a class with no trusted example is scored with its confident-joint row.
error_probability is the posterior of DESIGN.md §4, Platt-calibrated on the trusted rows when there are
enough (:func:`fit_calibration`), else scored by the scan's rule; trusted rows get ``trusted_label`` and
their known answer; ``is_issue`` flags the round(Σ error_probability) most probable errors in rank order,
as scan does (:func:`rescore`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pyarrow as pa

from .audit import DatasetSpec, load_dataset
from .core.calibration import apply_platt, fit_platt
from .core.scoring import error_probability, posterior_true_label, suspicion_rank
from .core.transition import (
    anchor_transition,
    bootstrap_transition_ci,
    confident_joint,
    confusion_counts,
    glc_transition,
    smoothed_confident_joint_transition,
)
from .core.verdicts import estimated_error_count, flag_top_estimated, suggested_labels
from .data.dataset import LabelledImages
from .errors import LabelAuditError
from .gold import SHOWN, GlcEstimate, TrustedSet, glc_corruption, read_trusted
from .report.files import write_json
from .report.heatmap import plot_transition
from .report.parquet import read_metadata, write_parquet
from .report.rundir import RunRecord, load_predictions, read_run_record, sha256_of_file
from .report.schema import (
    CLASSES_FILE, CLASSES_SCHEMA, SAMPLES_FILE, SAMPLES_SCHEMA, SUMMARY_FILE, TRANSITION_FILE,
    TRANSITION_SCHEMA,
)
from .report.tables import RowScores, TransitionEstimate, audit_scores, classes_frame, transition_frame
from .train.loop import ProgressReporter, SilentProgress, TrainConfig

HEATMAP_FILE = "transition.png"
TRUSTED_LABEL = "trusted_label"
SAMPLES_WITH_TRUSTED_SCHEMA = SAMPLES_SCHEMA.append(pa.field(TRUSTED_LABEL, pa.string()))
BOOTSTRAP_RESAMPLES = 200
CONFIDENCE = 0.95
#: trusted rows needed (and at least this many of each outcome) before error probabilities are calibrated
MIN_CALIBRATION_ROWS = 20
MIN_CALIBRATION_OUTCOMES = 3
#: folds of the cross-fitting that keeps each trusted row out of the Ĉ it is scored with
CROSSFIT_FOLDS = 5
ESTIMATOR_ORDER = ("glc", "confident_joint", "anchor")


@dataclass
class MatrixSettings:
    """out: the scan's run directory; trusted_csv: expert labels (path,label) of some of its rows;
    train: settings of the GLC cross-entropy model (None: the scan's); bootstrap: resamples per
    interval (0: no intervals)."""

    out: Path = Path("labelaudit-out")
    trusted_csv: Path | None = None
    path_column: str = "path"
    label_column: str = "label"
    delimiter: str = ","
    train: TrainConfig | None = None
    bootstrap: int = BOOTSTRAP_RESAMPLES
    workers: int | None = None
    cache: bool = True  # reuse (and update) the decode cache in out/cache


@dataclass
class Calibration:
    """How error probabilities were calibrated: ``method`` "platt" or "none", with its parameters."""

    method: str
    reason: str
    a: float = 1.0
    b: float = 0.0
    n_rows: int = 0

    def apply(self, error_prob: np.ndarray) -> np.ndarray:
        if self.method != "platt":
            return error_prob
        return apply_platt(np.clip(error_prob, 0.0, 1.0), self.a, self.b)

    def to_dict(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"method": self.method, "reason": self.reason}
        if self.method == "platt":
            payload.update(a=self.a, b=self.b, n_rows=self.n_rows)
        return payload


@dataclass
class MatrixResult:
    """What ``run_matrix`` computed and wrote. ``estimates`` by estimator name; ``best`` the one used for
    scoring (``summary["transition_choice"]`` says why); ``transition`` (K, K) the T rows were scored
    with (``best``'s, with confident-joint rows for classes that had no trusted example); ``warnings``
    one line each, for the user."""

    out: Path
    classes: list[str]
    estimates: dict[str, TransitionEstimate]
    best: str
    transition: np.ndarray
    summary: dict[str, Any]
    samples: pd.DataFrame
    classes_table: pd.DataFrame
    transition_path: Path
    heatmap_path: Path
    warnings: list[str] = field(default_factory=list)


def run_matrix(settings: MatrixSettings, *, progress: ProgressReporter | None = None,
               decode_progress: Callable[[int, int], None] | None = None) -> MatrixResult:
    """Estimate T, write transition.parquet/.png, re-score samples.parquet, classes.parquet, summary.json."""
    progress = progress or SilentProgress()
    started = time.perf_counter()
    out = Path(settings.out)
    if settings.bootstrap < 0:
        raise LabelAuditError("--bootstrap must be 0 or more")
    record = read_run_record(out)
    predictions = load_predictions(out)
    samples = pd.read_parquet(out / SAMPLES_FILE)
    metadata = read_metadata(out / SAMPLES_FILE)
    classes = list(record.classes)
    labels, pred_probs, row_index = _check_predictions(predictions, classes, len(samples), out)
    config = settings.train or scan_train_config(record)
    warnings: list[str] = []

    trusted: TrustedSet | None = None
    glc: GlcEstimate | None = None
    if settings.trusted_csv is not None:
        data = _reload_scan_data(record, config, out, settings.workers, decode_progress, cache=settings.cache)
        _check_same_rows(data, labels, row_index, classes, out)
        trusted = read_trusted(Path(settings.trusted_csv), data, path_column=settings.path_column,
                               label_column=settings.label_column, delimiter=settings.delimiter)
        glc = glc_corruption(data, trusted, config, out, progress=progress)
        warnings += _trusted_warnings(trusted, glc, classes, Path(settings.trusted_csv))
        del data  # the decoded images are no longer needed

    estimates = estimate_transitions(labels, pred_probs, trusted, glc, n_classes=len(classes),
                                     n_resamples=settings.bootstrap, seed=config.seed)
    choice = choose_transition(labels, trusted, glc, estimates, pred_probs=pred_probs)
    best = choice.estimator
    transition = scoring_transition(estimates[best], estimates["confident_joint"].matrix)

    if trusted is not None and glc is not None:
        trusted_scores = trusted_error_probability(labels, pred_probs, trusted, glc, choice, transition,
                                                   seed=config.seed)
        calibration = fit_calibration(trusted_scores, trusted.labels[trusted.mask] != labels[trusted.mask])
    else:
        calibration = fit_calibration(None, None)
    scores = rescore(labels, pred_probs, transition, calibration, trusted, seed=config.seed)

    new_samples = updated_samples(samples, row_index, classes, scores, trusted, metadata)
    classes_table = classes_frame(classes, labels, scores, transition)
    metadata = {**metadata, "matrix": {
        "transition_estimator": best, "calibration": calibration.to_dict(),
        "trusted_csv": str(settings.trusted_csv) if settings.trusted_csv else None,
        "trusted_sha256": trusted.csv_sha256 if trusted else None,
    }}
    write_parquet(new_samples, out / SAMPLES_FILE, schema=SAMPLES_WITH_TRUSTED_SCHEMA, metadata=metadata)
    write_parquet(classes_table, out / CLASSES_FILE, schema=CLASSES_SCHEMA, metadata=metadata)
    ordered = [estimates[name] for name in ESTIMATOR_ORDER if name in estimates]
    transition_path = write_transition(out, classes, ordered, metadata)
    missing = estimates[best].no_trusted_examples
    heatmap_path = plot_transition(estimates[best].matrix, classes, out / HEATMAP_FILE, missing_rows=missing,
                                   title=f"Noise transition matrix ({best})")

    summary = _updated_summary(out, scores, labels, choice, list(estimates), calibration, trusted, glc, classes,
                               settings, pred_source=_anchor_source(record, trusted),
                               seconds=time.perf_counter() - started, heatmap_path=heatmap_path)
    write_json(out / SUMMARY_FILE, summary)
    return MatrixResult(out=out, classes=classes, estimates=estimates, best=best, transition=transition,
                        summary=summary,
                        samples=new_samples, classes_table=classes_table, transition_path=transition_path,
                        heatmap_path=heatmap_path, warnings=warnings)


def scan_train_config(record: RunRecord, **overrides: Any) -> TrainConfig:
    """The scan's training settings (from run.json), with ``overrides`` that are not None."""
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise LabelAuditError(f"unknown training setting {unknown[0]!r}")
    values = {k: v for k, v in record.train.items() if k in known}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**values)


# --------------------------------------------------------------------------- inputs


def _check_predictions(predictions: dict[str, np.ndarray], classes: list[str], n_rows: int,
                       out: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        labels = predictions["labels"].astype(np.int64)
        pred_probs = predictions["pred_probs"].astype(np.float64)
        row_index = predictions["row_index"].astype(np.int64)
    except KeyError as exc:
        raise LabelAuditError(f"predictions in {out} lack {exc}; run `labelaudit scan` again") from None
    consistent = (pred_probs.ndim == 2 and pred_probs.shape == (len(labels), len(classes))
                  and row_index.shape == labels.shape and (len(row_index) == 0 or row_index.max() < n_rows)
                  and (len(labels) == 0 or labels.max() < len(classes)))
    if not consistent or len(labels) < 2:
        raise LabelAuditError(f"the predictions in {out} do not match its samples.parquet; run `labelaudit scan` again")
    # float32 storage: renormalise so rows sum to 1 in float64
    pred_probs = np.clip(pred_probs, 0.0, None)
    pred_probs /= pred_probs.sum(axis=1, keepdims=True)
    return labels, pred_probs, row_index


def _reload_scan_data(record: RunRecord, config: TrainConfig, out: Path, workers: int | None,
                      decode_progress: Callable[[int, int], None] | None, *, cache: bool = True) -> LabelledImages:
    spec = DatasetSpec(images=Path(record.images_root), labels_csv=Path(record.labels_csv),
                       path_column=record.path_column, label_column=record.label_column,
                       delimiter=record.delimiter,
                       classes_file=Path(record.classes_file) if record.classes_file else None, workers=workers,
                       cache=cache)
    for required in (spec.images, spec.labels_csv):
        if not required.exists():
            raise LabelAuditError(f"the scan in {out} used {required}, which no longer exists")
    if sha256_of_file(spec.labels_csv) != record.labels_sha256:
        raise LabelAuditError(f"{spec.labels_csv} changed since the scan in {out}; run `labelaudit scan` again")
    return load_dataset(spec, config.image_size, decode_progress, out=out)


def _check_same_rows(data: LabelledImages, labels: np.ndarray, row_index: np.ndarray, classes: list[str],
                     out: Path) -> None:
    same = (data.classes == classes and np.array_equal(data.row_index, row_index)
            and np.array_equal(data.labels, labels))
    if not same:
        raise LabelAuditError(f"the images of the scan in {out} changed since it ran (other rows are usable "
                              "now); run `labelaudit scan` again")


def _trusted_warnings(trusted: TrustedSet, glc: GlcEstimate, classes: list[str], csv: Path) -> list[str]:
    warnings = []
    if trusted.ignored_paths:
        shown = ", ".join(trusted.ignored_paths[:SHOWN])
        more = f" and {len(trusted.ignored_paths) - SHOWN} more" if len(trusted.ignored_paths) > SHOWN else ""
        n = len(trusted.ignored_paths)
        what = "row of {} is not an audited row of the scan and was" if n == 1 else \
            "rows of {} are not audited rows of the scan and were"
        warnings.append(f"{n} {what.format(csv)} ignored: {shown}{more}")
    missing = [classes[i] for i in np.flatnonzero(glc.missing)]
    if missing:
        warnings.append(f"no trusted example of {', '.join(missing)}: their rows of the GLC matrix are the "
                        "identity (not estimated; marked no_trusted_examples in transition.parquet)")
    return warnings


def _anchor_source(record: RunRecord, trusted: TrustedSet | None) -> str:
    if trusted is not None:
        return "GLC cross-entropy model on the trusted rows (held out from its training)"
    if record.method == "ce":
        return "the scan's cross-entropy probabilities" + (" (out of fold)" if record.folds > 1 else " (in-sample)")
    return (f"the scan's {record.method} probabilities, which estimate the clean class: a weak estimate "
            "that understates the noise")


# --------------------------------------------------------------------------- estimators


def estimate_transitions(labels: np.ndarray, pred_probs: np.ndarray, trusted: TrustedSet | None,
                         glc: GlcEstimate | None, *, n_classes: int, n_resamples: int = BOOTSTRAP_RESAMPLES,
                         seed: int = 0) -> dict[str, TransitionEstimate]:
    """Every estimator the inputs allow, with bootstrap intervals.

    labels: (M,) given labels; pred_probs: (M, K) the scan's probabilities; trusted/glc: the trusted
    rows and the GLC model's softmax on them (both or neither).
    """
    k = n_classes
    estimates: dict[str, TransitionEstimate] = {}
    if trusted is not None and glc is not None and glc.trusted_probs is not None:
        trusted_labels = trusted.labels[trusted.mask]
        given = labels[trusted.mask]

        def glc_estimator(true_: np.ndarray, probs_: np.ndarray) -> np.ndarray:
            return glc_transition(true_, probs_, n_classes=k)[0]

        estimates["glc"] = _with_intervals(
            "glc", glc.matrix, glc_estimator, (trusted_labels, glc.trusted_probs), n_resamples, seed,
            counts=confusion_counts(trusted_labels, given, n_classes=k).astype(np.float64),
            no_trusted_examples=glc.missing,
        )
        anchor_probs = glc.trusted_probs
    else:
        anchor_probs = pred_probs

    cj_estimator = partial(smoothed_confident_joint_transition, n_classes=k)  # as the scan computes it

    estimates["confident_joint"] = _with_intervals(
        "confident_joint", cj_estimator(labels, pred_probs), cj_estimator, (labels, pred_probs), n_resamples, seed,
        counts=confident_joint(labels, pred_probs, n_classes=k),
    )
    anchor_probs = np.asarray(anchor_probs, np.float64)
    anchor_probs = anchor_probs / anchor_probs.sum(axis=1, keepdims=True)
    estimates["anchor"] = _with_intervals(
        "anchor", anchor_transition(anchor_probs), lambda probs_: anchor_transition(probs_), (anchor_probs,),
        n_resamples, seed, counts=np.full((k, k), np.nan),
    )
    return estimates


def _with_intervals(name: str, matrix: np.ndarray, estimator: Callable[..., np.ndarray],
                    arrays: tuple[np.ndarray, ...], n_resamples: int, seed: int, *, counts: np.ndarray,
                    no_trusted_examples: np.ndarray | None = None) -> TransitionEstimate:
    if n_resamples > 0:
        low, high = bootstrap_transition_ci(estimator, arrays, n_resamples=n_resamples, confidence=CONFIDENCE,
                                            seed=seed)
        # Percentile intervals of a biased estimator can miss the estimate itself; keep them ordered.
        low, high = np.minimum(low, matrix), np.maximum(high, matrix)
    else:
        low = high = np.full(matrix.shape, np.nan)
    return TransitionEstimate(name, matrix, low, high, counts, no_trusted_examples=no_trusted_examples)


# --------------------------------------------------------------------------- scoring


def scoring_transition(estimate: TransitionEstimate, fallback: np.ndarray) -> np.ndarray:
    """The T used to score rows: ``estimate``'s, except that placeholder identity rows (classes with no
    trusted example) are taken from ``fallback`` (the confident joint): an identity row would declare
    that class never mislabelled."""
    matrix = estimate.matrix.copy()
    if estimate.no_trusted_examples is not None:
        missing = np.asarray(estimate.no_trusted_examples, bool)
        matrix[missing] = fallback[missing]
    return matrix


@dataclass
class Choice:
    """Which estimate scores the rows, and why. ``log_likelihood``: mean log T[trusted label, given label]
    over the trusted rows, per candidate, each row scored by a matrix it did not help make
    (:func:`held_out_given_probability`); empty without trusted rows."""

    estimator: str
    reason: str
    log_likelihood: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"estimator": self.estimator, "reason": self.reason,
                "trusted_log_likelihood": {k: round(v, 4) for k, v in self.log_likelihood.items()}}


def crossfit_glc(trusted_labels: np.ndarray, noisy_probs: np.ndarray, *, n_classes: int, fallback: np.ndarray,
                 seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """GLC matrices that leave each trusted row out.

    trusted_labels: (n,); noisy_probs: (n, K) the GLC model's softmax on those rows; fallback: (K, K)
    rows for classes absent from the other folds. Returns (n,) the fold of each row and, per fold, the
    (K, K) GLC estimate from the other folds.
    """
    n = len(trusted_labels)
    n_folds = max(2, min(CROSSFIT_FOLDS, n))
    folds = np.random.default_rng(seed).permutation(n) % n_folds
    matrices = []
    for fold in range(n_folds):
        rest = folds != fold
        matrix, missing = glc_transition(trusted_labels[rest], noisy_probs[rest], n_classes=n_classes)
        matrix[missing] = fallback[missing]
        matrices.append(matrix)
    return folds, matrices


def held_out_given_probability(true_labels: np.ndarray, given: np.ndarray, noisy_probs: np.ndarray,
                               fallback: np.ndarray) -> np.ndarray:
    """(n,) GLC's T[true, given] for each trusted row, from the other trusted rows only (leave one out).

    true_labels, given: (n,) trusted and given labels; noisy_probs: (n, K) the GLC model's softmax on the
    trusted rows; fallback: (K, K) the row used for a class with no other trusted row (the confident
    joint, as in scoring). GLC's row i is a mean of softmax vectors, so leaving row r out is
    (Σ_i − p_r) / (n_i − 1): the held-out matrix differs from the one that scores the rows by a single
    row's worth, which 5-fold cross-fitting (a fifth of each class left out) does not.
    """
    n_classes = noisy_probs.shape[1]
    totals = np.zeros((n_classes, n_classes))
    np.add.at(totals, true_labels, noisy_probs)
    counts = np.bincount(true_labels, minlength=n_classes)[true_labels]
    others = counts - 1
    summed = totals[true_labels, given] - noisy_probs[np.arange(len(given)), given]
    # rows of the softmax sum to 1 (up to float32 storage): renormalise as glc_transition does
    row_total = totals[true_labels].sum(axis=1) - noisy_probs.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        glc = summed / row_total
    return np.where(others > 0, glc, fallback[true_labels, given])


def choose_transition(labels: np.ndarray, trusted: TrustedSet | None, glc: GlcEstimate | None,
                      estimates: dict[str, TransitionEstimate], *, pred_probs: np.ndarray | None = None) -> Choice:
    """GLC or the confident joint: whichever better predicts the trusted rows' given labels from their
    true labels (mean log T[true, given]), both scored out of sample and smoothed alike.

    GLC is preferred when available (DESIGN.md), but it is only as good as the backbone's cross-entropy
    model: a backbone that cannot tell the classes apart makes Ĉ measure its own confusion, not the
    annotators'. The trusted rows show which estimate to believe, if both are judged the same way:

    * out of sample: GLC leaves each trusted row out of the matrix that scores it
      (:func:`held_out_given_probability`); the confident joint is rebuilt from the untrusted rows
      (``pred_probs`` (M, K), the scan's probabilities; without them the full-data estimate is used),
      so neither has seen the given label it is asked to predict;
    * the matrices compared are the ones that would score the rows (GLC's mean softmax, with a class
      that has no other trusted row taking the confident joint's row, as in scoring; the confident joint
      smoothed as the scan computes it), and both get the same floor: a mix with the flat row of weight
      1/(n_trusted + 1), so that neither loses everything on one pair it calls impossible. (Smoothing GLC
      with a prior worth one row of its few trusted rows per class, and the confident joint with one of
      its hundreds, penalised GLC's diagonal — where most trusted rows land — and chose the confident
      joint on every benchmark row, also where GLC was closer to the true T.)
    """
    if trusted is None or glc is None or glc.trusted_probs is None or "glc" not in estimates:
        return Choice("confident_joint", "no trusted rows")
    mask = trusted.mask
    true_labels = trusted.labels[mask]
    given = labels[mask]
    n_classes = len(glc.missing)
    cj = estimates["confident_joint"].matrix
    if pred_probs is not None and np.count_nonzero(~mask) >= 2:
        cj = smoothed_confident_joint_transition(labels[~mask], pred_probs[~mask], n_classes=n_classes)
    noisy_probs = np.asarray(glc.trusted_probs, np.float64)
    floor = 1.0 / (len(given) + 1)

    def log_likelihood(probability: np.ndarray) -> float:
        return float(np.mean(np.log((1.0 - floor) * probability + floor / n_classes)))

    likelihood = {"glc": log_likelihood(held_out_given_probability(true_labels, given, noisy_probs, cj)),
                  "confident_joint": log_likelihood(cj[true_labels, given])}
    if likelihood["glc"] >= likelihood["confident_joint"]:
        return Choice("glc", "GLC predicts the trusted rows' given labels at least as well as the confident joint "
                             "(both held out)", likelihood)
    return Choice("confident_joint", "the confident joint predicts the trusted rows' given labels better than "
                                     "GLC, both held out (GLC's cross-entropy model may not tell the classes "
                                     "apart well)",
                  likelihood)


def trusted_error_probability(labels: np.ndarray, pred_probs: np.ndarray, trusted: TrustedSet, glc: GlcEstimate,
                              choice: Choice, transition: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """(n,) error probability of each trusted row as if its trusted label were unknown: under the confident
    joint as is (it uses no trusted label), under GLC with a matrix estimated from the other folds."""
    given = labels[trusted.mask]
    clean_probs = pred_probs[trusted.mask]
    if choice.estimator != "glc":
        return error_probability(given, clean_probs, transition)
    true_labels = trusted.labels[trusted.mask]
    fallback = transition  # rows of classes without trusted examples already come from the confident joint
    folds, matrices = crossfit_glc(true_labels, glc.trusted_probs, n_classes=len(glc.missing),
                                   fallback=fallback, seed=seed)
    scores = np.empty(len(given))
    for fold, matrix in enumerate(matrices):
        held_out = folds == fold
        scores[held_out] = error_probability(given[held_out], clean_probs[held_out], matrix)
    return scores


def fit_calibration(scores: np.ndarray | None, outcomes: np.ndarray | None) -> Calibration:
    """Platt scaling of the error probability on the trusted rows, or none.

    scores: (n,) error probabilities of the trusted rows scored without their trusted label
    (:func:`trusted_error_probability`); outcomes: (n,) trusted label ≠ given label. Needs
    ``MIN_CALIBRATION_ROWS`` rows with at least ``MIN_CALIBRATION_OUTCOMES`` of each outcome.
    """
    if scores is None or outcomes is None:
        return Calibration("none", "no trusted rows")
    n_wrong = int(outcomes.sum())
    if len(outcomes) < MIN_CALIBRATION_ROWS or min(n_wrong, len(outcomes) - n_wrong) < MIN_CALIBRATION_OUTCOMES:
        return Calibration("none", f"too few trusted rows to calibrate ({len(outcomes)} rows, {n_wrong} with a "
                                   f"wrong given label; need {MIN_CALIBRATION_ROWS} and "
                                   f"{MIN_CALIBRATION_OUTCOMES} of each kind)")
    a, b = fit_platt(np.clip(scores, 0.0, 1.0), outcomes)
    return Calibration("platt", f"Platt scaling on {len(outcomes)} trusted rows (outcome: trusted label ≠ given "
                                "label), each scored without its own trusted label", a=a, b=b, n_rows=len(outcomes))


def rescore(labels: np.ndarray, pred_probs: np.ndarray, transition: np.ndarray, calibration: Calibration,
            trusted: TrustedSet | None, *, seed: int = 0) -> RowScores:
    """Scores of the M audited rows under ``transition``, with verdicts that add up (DESIGN.md §4).

    ``error_probability``: with a Platt calibration (enough trusted rows), the T-posterior of DESIGN.md §4
    calibrated on the trusted rows; without one, the scan's rule (:func:`~labelaudit.report.tables.audit_scores`:
    a ranking score chosen by the noise structure, shifted to sum to the estimated number of wrong labels),
    so that ``matrix`` without trusted rows gives the scan's verdicts again. Trusted rows get their known
    answer: 1 where the trusted label differs from the given one (suggested = the trusted label), else 0.

    ``is_issue`` then follows the error probabilities as ``scan`` flags: the round(Σ error probability)
    rows first in ``rank`` order (:func:`~labelaudit.core.verdicts.flag_top_estimated`), never a row at 0;
    so confirmed errors are always flagged and confirmed-correct rows never. A flagged row's suggestion is
    its most probable other label under the T-posterior, an unflagged row's its given label.
    """
    base = audit_scores(labels, pred_probs, transition, seed=seed).scores
    if trusted is None and calibration.method == "none":
        return base
    confidence = base.p_given.astype(np.float64)
    if calibration.method == "none":
        errors = base.error_probability.astype(np.float64)
    else:
        errors = calibration.apply(error_probability(labels, pred_probs, transition))
    if trusted is not None:
        mask = trusted.mask
        errors[mask] = np.where(trusted.labels[mask] != labels[mask], 1.0, 0.0)
    # Most probable errors first; among equals, lower self-confidence first.
    order_key = errors + (1.0 - confidence) * 1e-9
    is_issue = flag_top_estimated(order_key, estimated_error_count(errors)) & (errors > 0)
    suggested = suggested_labels(labels, posterior_true_label(labels, pred_probs, transition), is_issue)
    if trusted is not None:
        suggested[trusted.mask] = trusted.labels[trusted.mask]
    return RowScores(p_given=base.p_given, label_quality=base.label_quality,
                     error_probability=errors.astype(np.float32), suggested=suggested, is_issue=is_issue,
                     rank=suspicion_rank(order_key).astype(np.int32))


# --------------------------------------------------------------------------- output


def updated_samples(samples: pd.DataFrame, row_index: np.ndarray, classes: list[str], scores: RowScores,
                    trusted: TrustedSet | None, metadata: dict[str, Any]) -> pd.DataFrame:
    """``samples`` (the scan's table, one row per CSV row) with the audited rows re-scored and a
    ``trusted_label`` column after the report columns (null where no trusted label)."""
    frame = samples.copy()
    if TRUSTED_LABEL in frame.columns and "matrix" not in metadata:
        # The CSV itself had a trusted_label column: keep it under another name.
        frame = frame.rename(columns={TRUSTED_LABEL: f"csv_{TRUSTED_LABEL}"})
    names = np.asarray(classes, dtype=object)
    for column, values in (("suggested_label", names[scores.suggested]),
                           ("error_probability", scores.error_probability),
                           ("is_issue", scores.is_issue), ("rank", scores.rank)):
        updated = np.array(frame[column].astype(object).to_numpy(), dtype=object)  # a writable copy
        updated[row_index] = list(values)
        frame[column] = updated
    trusted_column = np.full(len(frame), None, dtype=object)
    if trusted is not None:
        trusted_column[row_index[trusted.mask]] = list(names[trusted.labels[trusted.mask]])
    frame[TRUSTED_LABEL] = trusted_column
    extras = [c for c in frame.columns if c not in SAMPLES_WITH_TRUSTED_SCHEMA.names]
    return frame[[*SAMPLES_WITH_TRUSTED_SCHEMA.names, *extras]]


def write_transition(out: Path, classes: list[str], estimates: list[TransitionEstimate],
                     metadata: dict[str, Any]) -> Path:
    """Write ``transition.parquet``; rows of estimators this command does not compute (e.g. ``nal``
    from ``labelaudit train``) are kept when they describe the same classes."""
    frame = transition_frame(classes, estimates)
    path = out / TRANSITION_FILE
    if path.is_file() and read_metadata(path).get("classes") == classes:
        previous = pd.read_parquet(path)
        others = previous[~previous["estimator"].isin([e.estimator for e in estimates] + list(ESTIMATOR_ORDER))]
        if len(others):
            others = others.assign(no_trusted_examples=others.get("no_trusted_examples", False))
            frame = pd.concat([frame, others[frame.columns]], ignore_index=True)
    write_parquet(frame, path, schema=TRANSITION_SCHEMA, metadata=metadata)
    return path


def top_confusions(matrix: np.ndarray, classes: list[str], *, top: int = 5, minimum: float = 0.01,
                   skip_rows: np.ndarray | None = None) -> list[tuple[str, str, float]]:
    """The largest off-diagonal cells of T as (true class, labelled as, share), largest first;
    cells below ``minimum`` and rows in ``skip_rows`` (K,) bool are left out."""
    off = np.asarray(matrix, dtype=np.float64).copy()
    np.fill_diagonal(off, -np.inf)
    if skip_rows is not None:
        off[np.asarray(skip_rows, bool)] = -np.inf
    order = np.argsort(-off, axis=None, kind="stable")[:top]
    pairs = []
    for flat in order:
        i, j = divmod(int(flat), len(classes))
        if off[i, j] >= minimum:
            pairs.append((classes[i], classes[j], float(off[i, j])))
    return pairs


def _updated_summary(out: Path, scores: RowScores, labels: np.ndarray, choice: Choice, computed: list[str],
                     calibration: Calibration, trusted: TrustedSet | None, glc: GlcEstimate | None,
                     classes: list[str], settings: MatrixSettings, *, pred_source: str, seconds: float,
                     heatmap_path: Path) -> dict[str, Any]:
    import json

    try:
        summary = json.loads((out / SUMMARY_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        summary = {}
    errors = scores.error_probability.astype(np.float64)
    estimated_error_rate = float(errors.mean()) if len(errors) else 0.0
    summary.update({
        "n_issues": int(scores.is_issue.sum()),
        "estimated_error_rate": estimated_error_rate,
        "estimated_errors": float(errors.sum()),
        "label_health": 1.0 - estimated_error_rate,
        "transition_estimator": choice.estimator,
        "transition_choice": choice.to_dict(),
        # classes whose row of the scoring T came from the confident joint (no trusted example)
        "scoring_rows_from_confident_joint": ([classes[i] for i in np.flatnonzero(glc.missing)]
                                              if choice.estimator == "glc" and glc is not None else []),
        "transition_estimators": computed,
        "calibration": calibration.to_dict(),
        "anchor_probabilities": pred_source,
        "transition_png": str(heatmap_path),
        "bootstrap_resamples": settings.bootstrap,
    })
    if trusted is not None and glc is not None:
        mask = trusted.mask
        wrong = int(np.sum(trusted.labels[mask] != labels[mask]))
        summary["trusted"] = {
            "csv": str(settings.trusted_csv),
            "sha256": trusted.csv_sha256,
            "rows": trusted.n_trusted,
            "confirmed_errors": wrong,
            "confirmed_correct": trusted.n_trusted - wrong,
            "ignored": len(trusted.ignored_paths),
            "ignored_paths": trusted.ignored_paths[:100],
            "classes_without_trusted_examples": [classes[i] for i in np.flatnonzero(glc.missing)],
            "glc_ce_model": str(glc.ce_model_dir),
        }
    else:
        summary["trusted"] = None
    timings = dict(summary.get("timings") or {})
    timings["matrix_seconds"] = round(seconds, 3)
    summary["timings"] = timings
    return summary
