"""``labelaudit train`` as a library call: train one noise-robust method and save it as a reusable model.

Without a dataset the images, CSV, columns and training settings of the scan recorded in the run
directory are reused; ``train_overrides`` change individual training settings.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from . import __version__
from .audit import DatasetSpec, load_dataset
from .core.metrics import accuracy
from .data.dataset import LabelledImages, load_labelled_images
from .errors import LabelAuditError
from .methods.base import TrainingMethod
from .methods.registry import create_method, method_names
from .report.parquet import read_metadata, write_parquet
from .report.rundir import RunRecord, check_can_write, read_run_record, sha256_of_file
from .report.schema import AUDITED, MODEL_DIR, RUN_FILE, TRANSITION_FILE, TRANSITION_SCHEMA
from .report.tables import TransitionEstimate, transition_frame
from .train import distributed
from .train.checkpoint import save_model
from .train.loop import ProgressReporter, SilentProgress, TrainConfig, fit, predict_proba, with_overrides
from .train.resume import Checkpointing, checkpoint_path, require_checkpoint

#: probabilities are floored here before the log in the validation loss
MIN_PROBABILITY = 1e-12


@dataclass
class TrainSettings:
    """What to train and where.

    dataset: None reuses the images and CSV of the scan recorded in ``out`` (its ``run.json``).
    train_overrides: TrainConfig fields to change, over the scan's settings (or the defaults when
    ``dataset`` is given); None values are ignored. trusted: CSV of expert-checked labels (``glc``).
    val: a clean CSV whose paths are under the same images folder; rows whose class the training
    set does not have are skipped and counted. workers, max_pixels: decoding threads and the image
    size limit, applied to the reused scan's dataset too (``dataset``'s own values when None).
    """

    out: Path = Path("labelaudit-out")
    dataset: DatasetSpec | None = None
    method: str = "elr"
    method_options: dict[str, Any] = field(default_factory=dict)
    train_overrides: dict[str, Any] = field(default_factory=dict)
    trusted: Path | None = None
    val: Path | None = None
    force: bool = False
    workers: int | None = None
    max_pixels: int | None = None
    resume: bool = False  # continue the interrupted training saved in out/checkpoint-{scan,train}.pt
    cache: bool = True  # reuse (and update) the decode cache in out/cache


@dataclass
class TrainResult:
    out: Path
    model_dir: Path
    method: TrainingMethod
    config: TrainConfig
    classes: list[str]
    metrics: dict[str, Any]
    summary: dict[str, Any]


@dataclass
class ValidationSet:
    """The usable rows of a --val CSV: (M, H, W, 3) images, (M,) labels, and what was skipped."""

    images: np.ndarray
    labels: np.ndarray
    rows: int
    skipped: dict[str, int]


def run_train(settings: TrainSettings, *, progress: ProgressReporter | None = None,
              decode_progress: Callable[[int, int], None] | None = None) -> TrainResult:
    """Train ``settings.method``, write ``out/model/`` (and for ``nal`` its channel to transition.parquet)."""
    progress = progress or SilentProgress()
    started = time.perf_counter()
    out = Path(settings.out)
    _check_method(settings)
    if settings.resume:
        require_checkpoint(out, "train")
    spec, config, scan = _resolve_inputs(settings, out)
    spec = replace(spec, workers=settings.workers or spec.workers, max_pixels=settings.max_pixels or spec.max_pixels,
                   cache=settings.cache and spec.cache)
    with distributed.main_process_first(spec.cache):  # torchrun: the others then read process 0's decode cache
        data = load_dataset(spec, config.image_size, decode_progress, out=out)
    notes: list[str] = []
    if scan is None:
        check_can_write(out, _run_record(spec, data, settings.method, config), force=settings.force)
    elif scan.labels_sha256 != sha256_of_file(spec.labels_csv):
        notes.append(f"{spec.labels_csv} changed since the scan; trained on its current contents")
    validation = load_validation(settings.val, data, spec) if settings.val is not None else None
    n_classes = len(data.classes)

    def on_epoch(epoch: int, method: TrainingMethod) -> dict[str, float]:
        if validation is None:
            return {}
        metrics = validation_metrics(validation.labels, predict_proba(method, validation.images, config),
                                     data.classes)
        return {"val_accuracy": metrics["val_accuracy"], "val_loss": metrics["val_loss"]}

    labels, trusted_mask, glc_info = data.labels, None, None
    if settings.method == "glc":
        method, labels, trusted_mask, glc_info = _prepare_glc(settings, spec, data, config, out, progress)
    else:
        method = create_method(settings.method, **settings.method_options)
    fitted = fit(method, data.images, labels, n_classes, config, trusted=trusted_mask, progress=progress,
                 description=f"training {settings.method}", on_epoch=on_epoch,
                 checkpoint=_checkpointing(settings, spec, out))
    trained_config = fitted.config  # as trained: --batch-size auto resolved

    metrics: dict[str, Any] = {
        "method": settings.method,
        "method_settings": fitted.method.settings(),
        "history": fitted.history,
        "train_loss": [row["train_loss"] for row in fitted.history],
        "final_train_loss": fitted.history[-1]["train_loss"] if fitted.history else None,
        "train_seconds": round(fitted.seconds, 3),
    }
    if validation is not None:
        final = validation_metrics(validation.labels, predict_proba(fitted.method, validation.images, trained_config),
                                   data.classes)
        metrics.update(final, val_rows=validation.rows, val_used=int(len(validation.labels)),
                       val_skipped=sum(validation.skipped.values()), val_skipped_reasons=validation.skipped)
    if not distributed.is_main_process():  # under torchrun process 0 alone writes the model
        distributed.barrier()  # ... and all processes leave together (one leaving early can abort at exit)
        return TrainResult(out=out, model_dir=out / MODEL_DIR, method=fitted.method, config=trained_config,
                           classes=data.classes, metrics=metrics, summary={})
    model_dir = save_model(out / MODEL_DIR, fitted.method, trained_config, data.classes, metrics=metrics,
                           training_images=data.images, training_labels=labels)
    transition_path = None
    if settings.method == "nal":
        transition_path = write_nal_transition(out, data.classes, fitted.method.transition(),
                                               _metadata(spec, data, settings.method, trained_config, fitted.method))
    summary = _summary(settings.method, fitted.method, trained_config, data, metrics, model_dir, out, transition_path,
                       glc_info, notes, time.perf_counter() - started)
    distributed.barrier()
    return TrainResult(out=out, model_dir=model_dir, method=fitted.method, config=trained_config, classes=data.classes,
                       metrics=metrics, summary=summary)


def _checkpointing(settings: TrainSettings, spec: DatasetSpec, out: Path) -> Checkpointing:
    """Ctrl-C saves to out/checkpoint-train.pt; a resume must come from the same dataset, method and files."""
    def file_hash(path: Path | None) -> str | None:
        return sha256_of_file(path) if path is not None else None

    method_options = {k: v for k, v in settings.method_options.items() if v is not None}
    inputs = {"command": "train", "method": settings.method, "method_options": method_options,
              "images_root": str(Path(spec.images).resolve()), "labels_sha256": file_hash(spec.labels_csv),
              "path_column": spec.path_column, "label_column": spec.label_column, "delimiter": spec.delimiter,
              "classes_file": file_hash(spec.classes_file), "trusted_sha256": file_hash(settings.trusted),
              "val_sha256": file_hash(settings.val)}
    return Checkpointing(checkpoint_path(out, "train"), resume=settings.resume, inputs=inputs)


def _check_method(settings: TrainSettings) -> None:
    names = method_names()
    if settings.method not in names:
        raise LabelAuditError(f"unknown method {settings.method!r}; choose one of {', '.join(names)}")
    if settings.method == "glc" and settings.trusted is None:
        raise LabelAuditError("--method glc needs --trusted CSV: GLC estimates the label corruption from rows "
                              "whose true label an expert confirmed")
    if settings.method != "glc" and settings.trusted is not None:
        raise LabelAuditError(f"--trusted is used by --method glc only, not by {settings.method}")
    if settings.trusted is not None and not Path(settings.trusted).is_file():
        raise LabelAuditError(f"trusted CSV {settings.trusted} does not exist")
    if settings.val is not None and not Path(settings.val).is_file():
        raise LabelAuditError(f"validation CSV {settings.val} does not exist")
    if settings.method != "glc":
        create_method(settings.method, **settings.method_options)  # bad options fail before decoding


def _resolve_inputs(settings: TrainSettings, out: Path) -> tuple[DatasetSpec, TrainConfig, RunRecord | None]:
    """The dataset and training settings: given (record None), or those of the scan recorded in ``out``."""
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(settings.train_overrides) - known)
    if unknown:
        raise LabelAuditError(f"unknown training setting {unknown[0]!r}; known: {', '.join(sorted(known))}")
    if settings.dataset is not None:
        return settings.dataset, with_overrides(TrainConfig(), **settings.train_overrides), None
    if not (out / RUN_FILE).is_file():
        raise LabelAuditError(f"no scan in {out} to reuse: pass IMAGES LABELS.csv, or run `labelaudit scan "
                              f"IMAGES LABELS.csv -o {out}` first")
    record = read_run_record(out)
    spec = DatasetSpec(images=Path(record.images_root), labels_csv=Path(record.labels_csv),
                       path_column=record.path_column, label_column=record.label_column,
                       delimiter=record.delimiter,
                       classes_file=Path(record.classes_file) if record.classes_file else None)
    for required in (spec.images, spec.labels_csv):
        if not required.exists():
            raise LabelAuditError(f"the scan in {out} used {required}, which no longer exists; "
                                  "pass IMAGES LABELS.csv")
    scan_config = TrainConfig(**{k: v for k, v in record.train.items() if k in known})
    return spec, with_overrides(scan_config, **settings.train_overrides), record


def load_validation(val_csv: Path, data: LabelledImages, spec: DatasetSpec) -> ValidationSet:
    """Decode a clean validation CSV under the training images folder, with the training classes.

    Rows whose label is not a training class (``unknown_label``) or that cannot be used for another
    reason are skipped and counted by reason.
    """
    image_size = int(data.images.shape[1])
    val = load_labelled_images(data.images_root, val_csv, image_size=image_size, path_column=spec.path_column,
                               label_column=spec.label_column, delimiter=spec.delimiter, classes=data.classes,
                               max_pixels=spec.max_pixels, workers=spec.workers)
    skipped = {reason: n for reason, n in val.status_counts().items() if reason != AUDITED}
    return ValidationSet(images=val.images, labels=val.labels, rows=int(len(val.rows)), skipped=skipped)


def validation_metrics(labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Accuracy, mean cross-entropy and per-class accuracy of (M, K) ``probs`` against (M,) true ``labels``.

    Per-class accuracy is None for a class with no validation row.
    """
    labels = np.asarray(labels, dtype=np.int64)
    predicted = probs.argmax(axis=1)
    per_class = {}
    for index, name in enumerate(classes):
        rows = labels == index
        per_class[name] = float(np.mean(predicted[rows] == index)) if rows.any() else None
    true_probs = probs[np.arange(len(labels)), labels]
    return {
        "val_accuracy": accuracy(labels, probs),
        "val_loss": float(-np.mean(np.log(np.maximum(true_probs, MIN_PROBABILITY)))),
        "val_per_class_accuracy": per_class,
    }


def _prepare_glc(settings: TrainSettings, spec: DatasetSpec, data: LabelledImages, config: TrainConfig,
                 out: Path, progress: ProgressReporter):
    """GLC: trusted rows, the corruption estimate Ĉ, and labels with the trusted ones substituted."""
    from .gold import glc_corruption, read_trusted

    trusted = read_trusted(Path(settings.trusted), data, path_column=spec.path_column,
                           label_column=spec.label_column, delimiter=spec.delimiter)
    estimate = glc_corruption(data, trusted, config, out, progress=progress)
    labels = np.where(trusted.mask, trusted.labels, data.labels).astype(np.int64)
    method = create_method("glc", corruption=estimate.matrix, **settings.method_options)
    info = {
        "trusted_rows": int(np.sum(trusted.mask)),
        "trusted_rows_ignored": len(trusted.ignored_paths),
        "trusted_csv_sha256": trusted.csv_sha256,
        "classes_without_trusted_rows": [data.classes[i] for i in np.flatnonzero(estimate.missing)],
        "ce_model_dir": str(estimate.ce_model_dir),
    }
    return method, labels, trusted.mask, info


def write_nal_transition(out: Path, classes: list[str], matrix: np.ndarray, metadata: dict[str, Any]) -> Path:
    """Put the learned channel θ into ``out/transition.parquet`` as estimator ``nal``.

    Rows of other estimators already there (from ``scan`` or ``matrix``) are kept when they describe
    the same classes; earlier ``nal`` rows are replaced.
    """
    missing = np.full(matrix.shape, np.nan)
    frame = transition_frame(classes, [TransitionEstimate("nal", matrix, missing, missing, missing)])
    path = out / TRANSITION_FILE
    if path.is_file():
        previous_metadata = read_metadata(path)
        if previous_metadata.get("classes") == classes:
            previous = pd.read_parquet(path)
            frame = pd.concat([previous[previous["estimator"] != "nal"], frame], ignore_index=True)
            metadata = {**previous_metadata, "nal": metadata["config"]}
    write_parquet(frame, path, schema=TRANSITION_SCHEMA, metadata=metadata)
    return path


def _run_record(spec: DatasetSpec, data: LabelledImages, method: str, config: TrainConfig) -> RunRecord:
    return RunRecord(
        images_root=str(Path(spec.images).resolve()), labels_csv=str(Path(spec.labels_csv).resolve()),
        labels_sha256=sha256_of_file(spec.labels_csv), path_column=spec.path_column,
        label_column=spec.label_column, delimiter=spec.delimiter,
        classes_file=str(spec.classes_file) if spec.classes_file else None, classes=data.classes,
        method=method, folds=1, train=config.to_dict(),
    )


def _metadata(spec: DatasetSpec, data: LabelledImages, method_name: str, config: TrainConfig,
              method: TrainingMethod) -> dict[str, Any]:
    return {
        "labelaudit_version": __version__,
        "config": {"method": method_name, "method_settings": method.settings(), "train": config.to_dict()},
        "classes": data.classes,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "images_root": str(data.images_root),
        "labels_sha256": sha256_of_file(spec.labels_csv),
    }


def _summary(method_name: str, method: TrainingMethod, config: TrainConfig, data: LabelledImages,
             metrics: dict[str, Any], model_dir: Path, out: Path, transition_path: Path | None,
             glc_info: dict[str, Any] | None, notes: list[str], seconds: float) -> dict[str, Any]:
    val_keys = ("val_accuracy", "val_loss", "val_per_class_accuracy", "val_rows", "val_used", "val_skipped",
                "val_skipped_reasons")
    return {
        "labelaudit_version": __version__,
        "method": method_name,
        "method_settings": method.settings(),
        "train": config.to_dict(),
        "classes": data.classes,
        "rows": int(len(data.rows)),
        "trained_on": int(len(data.labels)),
        "skipped": int(len(data.rows) - len(data.labels)),
        "epochs": len(metrics["history"]),
        "final_train_loss": metrics["final_train_loss"],
        **{key: metrics[key] for key in val_keys if key in metrics},
        "glc": glc_info,
        "model_dir": str(model_dir),
        "transition_file": str(transition_path) if transition_path else None,
        "run_directory": str(out),
        "notes": notes,
        "image_cache": data.decoding.to_dict() if data.decoding is not None else None,
        "seconds": round(seconds, 3),
    }
