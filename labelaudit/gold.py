"""Trusted (expert-checked) labels and the GLC estimate of the noise transition matrix.

A trusted CSV (``gold.csv``: ``path,label`` rows an expert checked) names some of the scan's images
and their true labels. :func:`read_trusted` matches it to the scan's audited rows;
:func:`glc_corruption` runs steps 1–2 of Gold Loss Correction (Hendrycks et al., NeurIPS 2018):
train the backbone with plain cross-entropy on the *untrusted* rows, then average that model's
softmax over the trusted rows of each true class. That model has learnt the noisy labels, so on
an image of true class i its softmax estimates P(noisy label | x), and the average estimates
row i of T. (The scan's ELR model would not do: it is built to ignore the noise.)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .core.transition import glc_transition
from .data.csvio import read_label_csv
from .data.dataset import LabelledImages
from .data.paths import PathConfiner
from .errors import LabelAuditError
from .report.files import write_json
from .report.rundir import sha256_of_file
from .train import distributed
from .train.loop import ProgressReporter, TrainConfig

GLC_DIR = "glc"
CE_MODEL_DIR = "ce_model"
ESTIMATE_FILE = "estimate.json"
# How many offending values / paths an error message or warning shows before "…".
SHOWN = 10


@dataclass
class TrustedSet:
    """Trusted labels of the scan's audited rows.

    mask: (M,) bool over the audited rows of ``LabelledImages`` (True = an expert label exists);
    labels: (M,) int64 trusted class index, -1 where not trusted;
    ignored_paths: trusted-CSV paths that are not among the audited rows (listed, counted, ignored);
    csv_sha256: hash of the trusted CSV file.
    """

    mask: np.ndarray
    labels: np.ndarray
    ignored_paths: list[str]
    csv_sha256: str

    @property
    def n_trusted(self) -> int:
        return int(self.mask.sum())


def read_trusted(trusted_csv: Path, data: LabelledImages, *, path_column: str = "path",
                 label_column: str = "label", delimiter: str = ",") -> TrustedSet:
    """Read a trusted-label CSV and match its paths to the audited rows of ``data``.

    Paths are matched by the file they name inside ``data.images_root`` (so ``cat/1.png``,
    ``./cat/1.png`` and ``cat\\1.png`` are the same row). Paths that name no audited row are
    returned in ``ignored_paths``.

    Raises
    ------
    LabelAuditError
        Unreadable or empty CSV; a matched row whose label is not a class of the scan (the
        message lists the offending values); one image given two different trusted labels;
        no row of the CSV names an audited image.
    """
    trusted_csv = Path(trusted_csv)
    try:
        table = read_label_csv(trusted_csv, path_column=path_column, label_column=label_column,
                               delimiter=delimiter)
    except LabelAuditError as exc:
        raise LabelAuditError(f"trusted labels: {exc}") from None
    resolve = PathConfiner(data.images_root).resolve  # the root and each folder resolved once, as in scan
    position_of_file = _audited_position_of_file(data, resolve)
    class_index = {name: k for k, name in enumerate(data.classes)}

    matched: dict[int, str] = {}
    ignored: list[str] = []
    unknown: dict[str, int] = {}
    for csv_path, raw_label in zip(table[path_column].tolist(), table[label_column].tolist()):
        label = raw_label.strip()
        file, _ = resolve(csv_path)
        position = position_of_file.get(file) if file is not None else None
        if position is None:
            ignored.append(csv_path)
            continue
        if label not in class_index:
            unknown[label] = unknown.get(label, 0) + 1
            continue
        previous = matched.setdefault(position, label)
        if previous != label:
            raise LabelAuditError(f"trusted labels file {trusted_csv} gives {csv_path!r} two labels: "
                                  f"{previous!r} and {label!r}")
    if unknown:
        values = ", ".join(f"{value!r} ({count} rows)" if count > 1 else repr(value)
                           for value, count in list(unknown.items())[:SHOWN])
        more = f" and {len(unknown) - SHOWN} more" if len(unknown) > SHOWN else ""
        raise LabelAuditError(f"trusted labels file {trusted_csv} has labels that are not classes of the scan: "
                              f"{values}{more}; classes are {', '.join(data.classes)}")
    if not matched:
        examples = ", ".join(ignored[:3])
        raise LabelAuditError(f"none of the {len(ignored)} rows of {trusted_csv} names an audited image of the "
                              f"scan (e.g. {examples}); paths are relative to {data.images_root}")

    mask = np.zeros(len(data.labels), bool)
    labels = np.full(len(data.labels), -1, np.int64)
    positions = np.fromiter(matched.keys(), np.int64, len(matched))
    mask[positions] = True
    labels[positions] = [class_index[name] for name in matched.values()]
    return TrustedSet(mask=mask, labels=labels, ignored_paths=ignored, csv_sha256=sha256_of_file(trusted_csv))


def _audited_position_of_file(data: LabelledImages,
                               resolve: Callable[[str], tuple[str | None, str | None]]) -> dict[str, int]:
    """Resolved image file (by ``resolve``, a :meth:`PathConfiner.resolve`) -> position among the audited
    rows (0..M-1)."""
    paths = data.rows["path"].to_numpy()[data.row_index]
    positions: dict[str, int] = {}
    for position, csv_path in enumerate(paths):
        file, _ = resolve(str(csv_path))
        if file is not None:
            positions.setdefault(file, position)
    return positions


@dataclass
class GlcEstimate:
    """GLC's Ĉ (K, K), rows = true class; ``missing`` (K,) marks classes with no trusted example
    (identity rows); ``ce_model_dir`` holds the cross-entropy model trained on the untrusted rows;
    ``trusted_probs`` (n_trusted, K) is that model's softmax on the trusted rows, in row order."""

    matrix: np.ndarray
    missing: np.ndarray
    ce_model_dir: Path
    trusted_probs: np.ndarray | None = None


def glc_corruption(data: LabelledImages, trusted: TrustedSet, config: TrainConfig, out: Path, *,
                   progress: ProgressReporter | None = None) -> GlcEstimate:
    """GLC steps 1–2 on the scan's data; the CE model is kept in ``out/glc/ce_model``.

    The model is trained with ``config`` on the untrusted rows only (given labels) and reused by
    later calls whose trusted CSV, data and settings are the same (recorded in ``out/glc/estimate.json``).
    """
    from .methods.registry import create_method
    from .train.checkpoint import load_model, save_model
    from .train.loop import fit, predict_proba

    n_classes = len(data.classes)
    untrusted = ~trusted.mask
    if untrusted.sum() < 2:
        raise LabelAuditError(f"GLC needs untrusted rows to learn the noise from, but {trusted.n_trusted} of "
                              f"{len(data.labels)} audited rows are trusted")
    glc_dir = Path(out) / GLC_DIR
    model_dir = glc_dir / CE_MODEL_DIR
    fingerprint = _fingerprint(data, trusted, config)
    method = None
    if _cached(glc_dir, fingerprint):
        try:
            method = load_model(model_dir, device=config.device).method
        except LabelAuditError:
            method = None  # damaged or from another version: train again
    if method is None:
        fitted = fit(create_method("ce"), data.images[untrusted], data.labels[untrusted], n_classes, config,
                     progress=progress, description="GLC: cross-entropy on untrusted rows")
        method = fitted.method
        if distributed.is_main_process():  # under torchrun every process has the same model; one writes it
            save_model(model_dir, method, fitted.config, data.classes,
                       metrics={"history": fitted.history, "trained_on": "untrusted rows (given labels)"},
                       training_images=data.images[untrusted], training_labels=data.labels[untrusted])

    trusted_probs = predict_proba(method, data.images[trusted.mask], config)
    matrix, missing = glc_transition(trusted.labels[trusted.mask], trusted_probs, n_classes=n_classes)
    if not distributed.is_main_process():
        return GlcEstimate(matrix=matrix, missing=missing, ce_model_dir=model_dir, trusted_probs=trusted_probs)
    write_json(glc_dir / ESTIMATE_FILE, {
        "fingerprint": fingerprint,
        "trusted_sha256": trusted.csv_sha256,
        "n_trusted": trusted.n_trusted,
        "n_untrusted": int(untrusted.sum()),
        "train": config.to_dict(),
        "classes": data.classes,
        "matrix": matrix.tolist(),
        "classes_without_trusted_examples": [c for c, m in zip(data.classes, missing) if m],
    })
    return GlcEstimate(matrix=matrix, missing=missing, ce_model_dir=model_dir, trusted_probs=trusted_probs)


def _fingerprint(data: LabelledImages, trusted: TrustedSet, config: TrainConfig) -> str:
    """Everything the CE model and Ĉ depend on: trusted CSV, which rows and labels, classes, settings."""
    digest = hashlib.sha256()
    digest.update(trusted.csv_sha256.encode())
    for array in (trusted.mask, trusted.labels, data.labels):
        digest.update(np.ascontiguousarray(array).tobytes())
    # Where it runs does not change what it learns.
    train = {k: v for k, v in config.to_dict().items() if k not in ("device", "compile", "batch_size_choice")}
    settings: dict[str, Any] = {"classes": data.classes, "train": train, "images_root": str(data.images_root),
                                "image_shape": list(data.images.shape)}
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _cached(glc_dir: Path, fingerprint: str) -> bool:
    try:
        recorded = json.loads((glc_dir / ESTIMATE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return recorded.get("fingerprint") == fingerprint and (glc_dir / CE_MODEL_DIR / "model.safetensors").is_file()
