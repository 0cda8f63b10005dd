"""The run directory: what ``scan`` records so later commands can reuse it without dataset arguments."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LabelAuditError
from .files import atomic_path, write_json
from .schema import MODEL_CONFIG_FILE, MODEL_WEIGHTS_FILE, PREDICTIONS_FILE, RUN_FILE, SAMPLES_FILE


def require_model_files(directory: str | Path) -> None:
    """Refuse, in one line, a folder without a saved model's files (checked before torch is imported)."""
    directory = Path(directory)
    for name in (MODEL_CONFIG_FILE, MODEL_WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise LabelAuditError(f"{directory} is not a labelaudit model directory (no {name})")


def sha256_of_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class RunRecord:
    """Contents of ``run.json``: the dataset and settings of the scan that made the directory.

    ``image_cache``: whether the scan read and updated the decode cache in ``OUT/cache`` (False with
    ``--no-cache`` or when the folder could not be used; None in a run.json written before it was
    recorded).
    """

    images_root: str
    labels_csv: str
    labels_sha256: str
    path_column: str
    label_column: str
    delimiter: str
    classes_file: str | None
    classes: list[str]
    method: str
    folds: int
    train: dict[str, Any]
    image_cache: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def check_can_write(out: Path, record: RunRecord, *, force: bool) -> None:
    """Refuse to mix a different dataset into an existing run directory unless ``force``."""
    previous = out / RUN_FILE
    if force or not previous.is_file():
        return
    try:
        old = json.loads(previous.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return
    same_inputs = (old.get("images_root") == record.images_root
                   and old.get("labels_sha256") == record.labels_sha256)
    if not same_inputs:
        raise LabelAuditError(
            f"{out} holds a run on other inputs ({old.get('labels_csv')}); use another --out or pass --force"
        )


def write_run_record(out: Path, record: RunRecord) -> None:
    write_json(out / RUN_FILE, record.to_dict())


def read_run_record(out: str | Path) -> RunRecord:
    out = Path(out)
    path = out / RUN_FILE
    if not path.is_file() or not (out / SAMPLES_FILE).is_file():
        raise LabelAuditError(f"no scan in {out}: run `labelaudit scan IMAGES LABELS.csv -o {out}` first")
    try:
        return RunRecord(**json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError) as exc:
        raise LabelAuditError(f"{path} is damaged ({exc}); run `labelaudit scan` again") from None


def save_predictions(out: Path, *, pred_probs: np.ndarray, labels: np.ndarray, row_index: np.ndarray,
                     folds: np.ndarray) -> None:
    """(M, K) probabilities, (M,) labels, CSV row positions and folds of the audited rows."""
    with atomic_path(out / PREDICTIONS_FILE) as temporary:
        with open(temporary, "wb") as handle:
            np.savez(handle, pred_probs=pred_probs, labels=labels, row_index=row_index, folds=folds)


def load_predictions(out: str | Path) -> dict[str, np.ndarray]:
    path = Path(out) / PREDICTIONS_FILE
    if not path.is_file():
        raise LabelAuditError(f"no saved predictions in {out}: run `labelaudit scan` first")
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}
