"""``labelaudit scan`` as a library call: decode, train, score, write the run directory."""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from . import __version__
from .core.folds import stratified_folds
from .core.selfcheck import SelfCheck, plant_flips, planted_flip_metrics, reliability
from .core.transition import bootstrap_transition_ci, confident_joint, smoothed_confident_joint_transition
from .data.cache import CACHE_DIR_NAME
from .data.dataset import LabelledImages, load_labelled_images, read_classes_file
from .errors import LabelAuditError
from .issues import DataIssueSettings, DataIssues, find_data_issues, split_values
from .methods.registry import create_method
from .report.files import write_json
from .report.parquet import write_parquet
from .report.stream import write_frame_in_batches
from .report.rundir import RunRecord, check_can_write, save_predictions, sha256_of_file, write_run_record
from .report.schema import (
    CLASSES_FILE, CLASSES_SCHEMA, MODEL_DIR, SAMPLES_FILE, SAMPLES_SCHEMA, SUMMARY_FILE, TRANSITION_FILE,
    TRANSITION_SCHEMA,
)
from .report.tables import (
    AuditVerdicts, TransitionEstimate, audit_scores, classes_frame, samples_frame, transition_frame,
)
from .train import distributed
from .train.checkpoint import save_model
from .train.loop import DEFAULT_LR, ProgressReporter, SilentProgress, TrainConfig, fit, predict_proba
from .train.resume import (
    Checkpointing, FoldCheckpoint, FoldProgress, checkpoint_path, require_checkpoint, run_fingerprint,
)

BOOTSTRAP_RESAMPLES = 200
#: samples.parquet with more rows is converted and written in batches (bounded extra memory)
STREAMING_ROWS = 100_000


@dataclass
class DatasetSpec:
    """Where the labelled images are and how to read the CSV."""

    images: Path
    labels_csv: Path
    path_column: str = "path"
    label_column: str = "label"
    delimiter: str = ","
    classes_file: Path | None = None
    max_pixels: int | None = None
    workers: int | None = None
    cache: bool = True  # reuse (and update) the decode cache in the run directory


@dataclass
class ScanSettings:
    dataset: DatasetSpec
    out: Path = Path("labelaudit-out")
    train: TrainConfig = field(default_factory=TrainConfig)
    method: str = "elr"
    method_options: dict[str, Any] = field(default_factory=dict)
    folds: int = 1
    force: bool = False
    resume: bool = False  # continue the interrupted training saved in out/checkpoint-{scan,train}.pt
    freeze_backbone: bool = False  # fast mode: cached backbone embeddings + a linear head (labelaudit.frozen)
    self_check: bool = False  # audit a copy with planted flips too and measure how they are found
    data_issues: bool = True  # duplicates, leakage, outliers, image quality (labelaudit.issues)
    issues: DataIssueSettings = field(default_factory=DataIssueSettings)


@dataclass
class ScanResult:
    out: Path
    summary: dict[str, Any]
    samples: pd.DataFrame
    classes: pd.DataFrame


def load_dataset(spec: DatasetSpec, image_size: int,
                 decode_progress: Callable[[int, int], None] | None = None, *,
                 out: Path | None = None) -> LabelledImages:
    """The labelled images of ``spec``, through the decode cache of run directory ``out`` (unless
    ``spec.cache`` is False or ``out`` is None)."""
    classes = read_classes_file(spec.classes_file) if spec.classes_file else None
    cache_dir = Path(out) / CACHE_DIR_NAME if out is not None and spec.cache else None
    return load_labelled_images(
        spec.images, spec.labels_csv, image_size=image_size, path_column=spec.path_column,
        label_column=spec.label_column, delimiter=spec.delimiter, classes=classes,
        max_pixels=spec.max_pixels, workers=spec.workers, progress=decode_progress, cache_dir=cache_dir,
    )


def run_scan(settings: ScanSettings, *, progress: ProgressReporter | None = None,
             decode_progress: Callable[[int, int], None] | None = None) -> ScanResult:
    """Train on the labelled images, score every CSV row and write the run directory."""
    progress = progress or SilentProgress()
    spec, out = settings.dataset, Path(settings.out)
    if settings.folds < 1:
        raise LabelAuditError("--folds must be at least 1")
    create_method(settings.method, **settings.method_options)  # fail on a bad method before decoding
    if settings.freeze_backbone:
        from .frozen import check_frozen_settings

        check_frozen_settings(settings.method, resume=settings.resume)
        if distributed.world_size() > 1:
            raise LabelAuditError("--freeze-backbone runs in one process; start it without torchrun")
    if settings.issues.split_column and not settings.data_issues:
        raise LabelAuditError("--split-column needs the data checks; drop --no-data-checks")
    if settings.self_check and distributed.world_size() > 1:
        raise LabelAuditError("--self-check runs in one process; start it without torchrun")
    if settings.resume:
        if settings.folds > 1 and distributed.world_size() > 1:
            raise LabelAuditError("--resume with --folds works in one process only; start it without torchrun, "
                                  "or run without --resume")
        require_checkpoint(out, "scan")
    timings: dict[str, float] = {}
    started = time.perf_counter()
    with distributed.main_process_first(spec.cache):  # torchrun: the others then read process 0's decode cache
        data = load_dataset(spec, settings.train.image_size, decode_progress, out=out)
    timings["decode_seconds"] = time.perf_counter() - started
    if settings.issues.split_column:
        split_values(data.rows, settings.issues.split_column)  # an unknown column is refused before training
    record = RunRecord(
        images_root=str(Path(spec.images).resolve()), labels_csv=str(Path(spec.labels_csv).resolve()),
        labels_sha256=sha256_of_file(spec.labels_csv), path_column=spec.path_column,
        label_column=spec.label_column, delimiter=spec.delimiter,
        classes_file=str(spec.classes_file) if spec.classes_file else None, classes=data.classes,
        method=settings.method, folds=settings.folds, train=settings.train.to_dict(),
    )
    check_can_write(out, record, force=settings.force)

    stage = time.perf_counter()
    # What the checkpoint must match on --resume (fit adds the training settings and a hash of the data).
    inputs = {**{k: v for k, v in record.to_dict().items() if k != "train"}, "command": "scan",
              "method_options": {k: v for k, v in settings.method_options.items() if v is not None}}
    checkpoint = Checkpointing(checkpoint_path(out, "scan"), resume=settings.resume, inputs=inputs)
    trained = train_and_score_inputs(data, settings, progress, checkpoint=checkpoint)
    timings["train_seconds"] = time.perf_counter() - stage

    stage = time.perf_counter()
    estimate = confident_joint_estimate(data.labels, trained.pred_probs, len(data.classes), seed=settings.train.seed)
    verdicts = audit_scores(data.labels, trained.pred_probs, estimate.matrix, seed=settings.train.seed)
    scores, n_errors = verdicts.scores, verdicts.n_errors
    timings["score_seconds"] = time.perf_counter() - stage
    self_check = None
    if settings.self_check:
        stage = time.perf_counter()
        self_check = run_self_check(data, settings, progress, trained, verdicts, estimate.matrix)
        timings["self_check_seconds"] = time.perf_counter() - stage
    if not distributed.is_main_process():  # under torchrun process 0 alone scores and writes the run directory
        distributed.barrier()  # ... and all processes leave together (one leaving early can abort at exit)
        return ScanResult(out=out, summary={}, samples=pd.DataFrame(), classes=pd.DataFrame())
    model_dir = None
    if trained.method is not None:
        model_dir = save_model(out / MODEL_DIR, trained.method, trained.config, data.classes,
                               metrics={"history": trained.history, **trained.extra},
                               training_images=data.images, training_labels=data.labels)
    issues = None
    if settings.data_issues:
        stage = time.perf_counter()
        issues = find_issues(data, trained, settings)
        timings["data_issues_seconds"] = time.perf_counter() - stage
    samples = samples_frame(data.rows, data.row_index, data.classes, scores, trained.folds,
                            issues=issues.columns if issues else None, issue_index=np.arange(len(data.rows)))
    classes = classes_frame(data.classes, data.labels, scores, estimate.matrix)
    timings["total_seconds"] = time.perf_counter() - started

    config = {
        "method": settings.method, "method_settings": trained.method_settings, "folds": settings.folds,
        "freeze_backbone": settings.freeze_backbone,
        "train": trained.config.to_dict(), "dataset": {k: str(v) for k, v in spec.__dict__.items()},
    }
    metadata = {
        "labelaudit_version": __version__, "config": config, "classes": data.classes,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "images_root": record.images_root, "labels_sha256": record.labels_sha256,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_samples = write_frame_in_batches if len(samples) > STREAMING_ROWS else write_parquet
    write_samples(samples, out / SAMPLES_FILE, schema=SAMPLES_SCHEMA, metadata=metadata)
    write_parquet(classes, out / CLASSES_FILE, schema=CLASSES_SCHEMA, metadata=metadata)
    write_parquet(transition_frame(data.classes, [estimate]), out / TRANSITION_FILE,
                  schema=TRANSITION_SCHEMA, metadata=metadata)
    save_predictions(out, pred_probs=trained.pred_probs, labels=data.labels, row_index=data.row_index,
                     folds=trained.folds)
    summary = build_summary(data, n_errors, scores.is_issue, timings, config, out,
                            model_dir=model_dir, history=trained.history)
    summary.update(trained.extra)
    summary["noise_structure"] = {"concentrated": verdicts.structure.concentrated, "ranked_by": verdicts.ranked_by,
                                  "concentration_weight": round(verdicts.concentration, 3),
                                  "reason": verdicts.structure.reason}
    trust = reliability(data.labels, trained.pred_probs, summary["estimated_error_rate"], self_check=self_check,
                        held_out=settings.folds > 1)
    summary.update(reliable=trust.reliable, reliability_reason=trust.reason, label_agreement=trust.label_agreement,
                   chance_agreement=trust.chance_agreement)
    if self_check is not None:
        summary["self_check"] = self_check.to_dict()
    summary["data_issues"] = issues.summary if issues else None
    summary["class_balance"] = class_balance_summary(classes)
    if distributed.world_size() > 1:  # torchrun: the batch size is per process
        summary["processes"] = distributed.world_size()
    write_json(out / SUMMARY_FILE, summary)
    record.image_cache = data.decoding.cache_used if data.decoding is not None else None
    write_run_record(out, record)
    distributed.barrier()
    return ScanResult(out=out, summary=summary, samples=samples, classes=classes)


@dataclass
class TrainedScores:
    """Class probabilities of the audited rows and how they were made.

    pred_probs: (M, K) float64; folds: (M,) int16 fold that scored each row; config: the training
    settings used (batch size resolved); method: the single-run
    model (None with folds); history: per-epoch metrics of the single run; extra: what
    the run adds to summary.json and the model's metrics.json (the fast mode's ``embeddings``, …).
    """

    pred_probs: np.ndarray
    folds: np.ndarray
    method_settings: dict[str, Any]
    history: list[dict[str, float]]
    config: TrainConfig
    method: Any = None
    extra: dict[str, Any] = field(default_factory=lambda: {"mode": "full network"})


def train_and_score_inputs(data: LabelledImages, settings: ScanSettings, progress: ProgressReporter, *,
                           checkpoint: Checkpointing | None = None) -> TrainedScores:
    """Train once and score every row with the method's own view of it, or out of fold with ``folds``.

    ``checkpoint``: save on Ctrl-C / resume, see :func:`labelaudit.train.loop.fit` (single run) and
    :func:`out_of_fold_scores` (folds).
    """
    n_classes = len(data.classes)
    if settings.freeze_backbone:
        from .frozen import frozen_backbone_scores

        folds = _check_folds(data, settings.folds, settings.train.seed) if settings.folds > 1 else None
        return frozen_backbone_scores(data, settings, progress, folds=folds)
    if settings.folds > 1:
        folds = _check_folds(data, settings.folds, settings.train.seed)
        return out_of_fold_scores(data, settings, progress, folds, checkpoint=checkpoint)
    method = create_method(settings.method, **settings.method_options)
    fitted = fit(method, data.images, data.labels, n_classes, settings.train, progress=progress,
                 description=f"training {settings.method}", checkpoint=checkpoint)
    kept = fitted.method.training_probs()
    pred_probs = kept if kept is not None else predict_proba(fitted.method, data.images, fitted.config)
    method_settings = {**fitted.method.settings(),
                       "scored_with": "method targets" if kept is not None else "final model"}
    return TrainedScores(pred_probs, np.zeros(len(data.labels), np.int16), method_settings, fitted.history,
                         fitted.config, fitted.method)


def out_of_fold_scores(data: LabelledImages, settings: ScanSettings, progress: ProgressReporter,
                       assignment: np.ndarray, *, checkpoint: Checkpointing | None = None) -> TrainedScores:
    """Train one model per fold on the other folds and score the fold's rows with it.

    assignment: (M,) int fold of each audited row. ``checkpoint`` (one process only; under torchrun
    it is ignored): Ctrl-C saves the finished folds' predictions and the current fold's training
    in ``checkpoint.path`` and raises :class:`~labelaudit.train.resume.FoldsInterrupted`; with
    ``checkpoint.resume`` the finished folds are skipped and the interrupted one continues.
    """
    n_classes = len(data.classes)
    saved = None
    if checkpoint is not None and distributed.world_size() == 1:
        fingerprint = partial(run_fingerprint, checkpoint.inputs, method_name=settings.method,
                              config=settings.train.with_default_lr(DEFAULT_LR).to_dict(), images=data.images,
                              labels=data.labels,
                              trusted=np.zeros(len(data.labels), bool), n_classes=n_classes)
        saved = FoldCheckpoint.open(checkpoint, fingerprint, assignment, n_classes)
    done = saved.progress if saved is not None else FoldProgress.empty(assignment, n_classes)
    config = settings.train  # after the first fold: as that fold resolved it (no second batch-size probe)
    for fold in distributed.assigned_folds(settings.folds):  # under torchrun: fold k on process k mod N
        if fold in done.completed:
            continue
        held_out = assignment == fold
        try:
            method = create_method(settings.method, **settings.method_options)
            with distributed.local_only():
                fitted = fit(method, data.images[~held_out], data.labels[~held_out], n_classes, config,
                             progress=progress, description=f"fold {fold + 1}/{settings.folds}",
                             checkpoint=saved.for_fold(fold) if saved is not None else None)
                config = fitted.config
                fold_probs = predict_proba(fitted.method, data.images[held_out], config)
        except KeyboardInterrupt as interruption:
            if saved is None:
                raise
            raise saved.interrupted(fold, interruption, n_folds=settings.folds,
                                    epochs=config.epochs_for(int(np.sum(~held_out)))) from None
        done.add(fold, fold_probs, fitted.method.settings())
    if saved is not None:
        saved.finished()
    pred_probs, method_settings = distributed.merge_fold_results(done.pred_probs, done.method_settings)
    return TrainedScores(pred_probs, assignment, {**method_settings, "scored_with": "out of fold"}, [], config)


def run_self_check(data: LabelledImages, settings: ScanSettings, progress: ProgressReporter,
                   trained: TrainedScores, verdicts: AuditVerdicts, transition: np.ndarray) -> SelfCheck:
    """Plant SELF_CHECK_RATE flips among the rows the audit believes correct, shaped like the errors it
    believes are there (:func:`~labelaudit.core.selfcheck.plant_flips`): on random rows, a uniformly drawn
    other class, when it reads the noise as symmetric; on rows drawn by how much the model hesitates, half
    the estimated T and half the model's own confusion for the image, when it reads it as concentrated
    (look-alike and instance-dependent errors sit on ambiguous images). Audit that copy the same way and
    measure how the planted flips are found. Mixed noise is planted as the kind whose verdicts weigh more."""
    believed_correct = ~verdicts.scores.is_issue
    concentrated = verdicts.concentration >= 0.5
    if concentrated:
        structure, confusion_share = transition, 0.5
    else:
        n_classes = len(data.classes)
        structure, confusion_share = np.full((n_classes, n_classes), 1.0 / n_classes), 0.0
    planted_labels, planted = plant_flips(data.labels, trained.pred_probs, structure, believed_correct,
                                          confusion_share=confusion_share,
                                          confusable_rows=concentrated,
                                          seed=settings.train.seed + 1)
    copy = replace(data, labels=planted_labels)
    again = train_and_score_inputs(copy, settings, progress)
    transition_again = smoothed_confident_joint_transition(planted_labels, again.pred_probs,
                                                           n_classes=len(data.classes))
    verdicts_again = audit_scores(planted_labels, again.pred_probs, transition_again, seed=settings.train.seed)
    n_rows = max(1, len(data.labels))
    return planted_flip_metrics(planted, believed_correct, verdicts_again.scores.is_issue,
                                verdicts_again.scores.error_probability,
                                estimated_rate_before=verdicts.n_errors / n_rows,
                                estimated_rate_after=verdicts_again.n_errors / n_rows,
                                prior_error_probability=verdicts.scores.error_probability)


def find_issues(data: LabelledImages, trained: TrainedScores, settings: ScanSettings) -> DataIssues:
    """The data-issue checks on what the scan has: the decoded pixels, the measures taken while decoding
    and the class probabilities the rows were scored with."""
    from .train.checkpoint import image_fingerprints

    return find_data_issues(data, fingerprints=image_fingerprints(data.images), pred_probs=trained.pred_probs,
                            settings=settings.issues)


def class_balance_summary(classes: pd.DataFrame) -> dict[str, Any]:
    """summary.json ``class_balance``: the largest over the smallest class, the underrepresented and weak
    classes (classes.parquet's flags)."""
    counts = classes["n"].to_numpy()
    present = counts[counts > 0]
    return {
        "imbalance_ratio": float(present.max() / present.min()) if len(present) else None,
        "underrepresented": classes.loc[classes["is_underrepresented"], "label"].tolist(),
        "weak": classes.loc[classes["is_weak"], "label"].tolist(),
    }


def confident_joint_estimate(labels: np.ndarray, pred_probs: np.ndarray, n_classes: int, *,
                             seed: int = 0) -> TransitionEstimate:
    """T from the confident joint (rows smoothed by a one-row flat prior), with bootstrap intervals."""

    estimator = partial(smoothed_confident_joint_transition, n_classes=n_classes)
    matrix = estimator(labels, pred_probs)
    low, high = bootstrap_transition_ci(estimator, (labels, pred_probs), n_resamples=BOOTSTRAP_RESAMPLES, seed=seed)
    # Percentile intervals of a biased estimator can miss the point estimate; keep them ordered.
    low, high = np.minimum(low, matrix), np.maximum(high, matrix)
    counts = confident_joint(labels, pred_probs, n_classes=n_classes)
    return TransitionEstimate("confident_joint", matrix, low, high, counts)


def _check_folds(data: LabelledImages, n_folds: int, seed: int) -> np.ndarray:
    counts = np.bincount(data.labels, minlength=len(data.classes))
    too_small = [f"{data.classes[i]} ({counts[i]})" for i in np.flatnonzero(counts < n_folds)]
    if too_small:
        raise LabelAuditError(f"--folds {n_folds} needs at least {n_folds} rows per class; too few: "
                              + ", ".join(too_small))
    return stratified_folds(data.labels, n_folds, seed=seed)


def build_summary(data: LabelledImages, n_errors: float, is_issue: np.ndarray,
                  timings: dict[str, float], config: dict[str, Any], out: Path, *,
                  model_dir: Path | None, history: list[dict[str, float]]) -> dict[str, Any]:
    status_counts = data.status_counts()
    audited = int(len(data.labels))
    estimated_error_rate = n_errors / audited if audited else 0.0
    return {
        "labelaudit_version": __version__,
        "run_directory": str(out),
        "rows": int(len(data.rows)),
        "audited": audited,
        "skipped": int(len(data.rows) - audited),
        "status_counts": status_counts,
        "classes": data.classes,
        "n_issues": int(is_issue.sum()),
        "estimated_error_rate": estimated_error_rate,
        "estimated_errors": float(n_errors),
        "label_health": 1.0 - estimated_error_rate,
        "transition_estimator": "confident_joint",
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "image_cache": data.decoding.to_dict() if data.decoding is not None else None,
        "final_train_loss": history[-1]["train_loss"] if history else None,
        "model_dir": str(model_dir) if model_dir else None,
        "settings": json.loads(json.dumps(config, default=str)),
    }
