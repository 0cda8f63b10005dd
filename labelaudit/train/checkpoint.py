"""Saved models: safetensors weights (no pickle) + JSON config, and loading them back for prediction."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import LabelAuditError
from ..methods.base import TrainingMethod
from ..methods.registry import create_method
from ..report.files import atomic_directory, json_text
from ..report.rundir import require_model_files
from .device import Accelerator, select_device
from .loop import TrainConfig, create_network, normalisation_of, predict_proba

from ..report.schema import MODEL_CLASSES_FILE as CLASSES_FILE
from ..report.schema import MODEL_CONFIG_FILE as CONFIG_FILE
from ..report.schema import MODEL_METRICS_FILE as METRICS_FILE
from ..report.schema import MODEL_WEIGHTS_FILE as WEIGHTS_FILE


def save_model(directory: str | Path, method: TrainingMethod, config: TrainConfig, classes: list[str],
               *, metrics: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors``, ``config.json``, ``classes.json`` and ``metrics.json`` as ``directory``.

    The four files are written into a hidden folder beside ``directory`` that then replaces it (see
    :func:`~labelaudit.report.files.atomic_directory`): a run killed while saving leaves the previous
    complete model (or none), never new weights beside an old ``config.json``.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in method.networks().state_dict().items()}
    mean, std = normalisation_of(method.networks()[0])
    model_config = {
        "labelaudit_version": __version__,
        "architecture": config.model,
        "method": method.name,
        "method_settings": method.settings(),
        "num_classes": len(classes),
        "image_size": config.image_size,
        "mean": list(mean),
        "std": list(std),
        "classes": classes,
        "train": config.to_dict(),
    }
    with atomic_directory(directory) as temporary:
        save_file(state, str(temporary / WEIGHTS_FILE), metadata={"format": "pt", "labelaudit_version": __version__})
        _write_json_file(temporary / CONFIG_FILE, model_config)
        _write_json_file(temporary / CLASSES_FILE, classes)
        _write_json_file(temporary / METRICS_FILE, metrics or {})
    return directory


def _write_json_file(path: Path, payload: Any) -> None:
    """A JSON file inside a folder that is not visible yet (so no rename of its own is needed)."""
    path.write_text(json_text(payload), encoding="utf-8")


@dataclass
class LoadedModel:
    """A trained labelaudit model, ready to predict on images."""

    method: TrainingMethod
    config: TrainConfig
    classes: list[str]
    info: dict[str, Any]
    directory: Path

    @property
    def image_size(self) -> int:
        return self.config.image_size

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 at ``image_size`` -> (N, K) float32 class probabilities."""
        return predict_proba(self.method, images, self.config)

    def predict_folder(self, folder: str | Path) -> "Any":
        """Predict every image file under ``folder``; a DataFrame with path, label, confidence, status."""
        import pandas as pd

        from ..data.images import decode_images

        folder = Path(folder)
        if not folder.is_dir():
            raise LabelAuditError(f"not a folder: {folder}")
        paths = sorted(p for p in folder.rglob("*") if p.is_file())
        images, reasons = decode_images(paths, self.image_size)
        ok = np.array([reason is None for reason in reasons], dtype=bool)
        probs = self.predict_proba(images[ok]) if ok.any() else np.zeros((0, len(self.classes)), np.float32)
        labels = np.full(len(paths), None, dtype=object)
        confidence = np.full(len(paths), np.nan)
        labels[ok] = np.asarray(self.classes, dtype=object)[probs.argmax(axis=1)] if ok.any() else []
        confidence[ok] = probs.max(axis=1) if ok.any() else []
        return pd.DataFrame({
            "path": [str(p.relative_to(folder)) for p in paths],
            "label": labels,
            "confidence": confidence,
            "status": ["ok" if r is None else r for r in reasons],
        })


def load_model(directory: str | Path, *, device: str = "cpu") -> LoadedModel:
    """Load a model directory written by ``labelaudit train`` or ``scan``; explain any mismatch.

    Only ``directory`` itself is read: hidden ``.NAME.*.tmp`` folders beside it, left by a save that
    was killed, are never looked at.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    require_model_files(directory)
    try:
        info = json.loads(config_path.read_text(encoding="utf-8"))
        classes = list(info["classes"])
        known = {f.name for f in fields(TrainConfig)}
        # The saved weights replace any starting weights, so none are fetched or read again.
        config = TrainConfig(**{**{k: v for k, v in info["train"].items() if k in known},
                                "pretrained": False, "weights": None, "device": device})
        method = create_method(info["method"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise LabelAuditError(f"{config_path} is not a valid labelaudit model config: {exc}") from None
    if info.get("num_classes", len(classes)) != len(classes):
        raise LabelAuditError(f"{config_path}: num_classes {info['num_classes']} but {len(classes)} classes listed")
    method.build_networks(lambda: create_network(config, len(classes)), len(classes))
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as exc:
        raise LabelAuditError(f"cannot read {weights_path}: {exc}") from None
    expected = method.networks().state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong_shape:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong_shape:
            key = wrong_shape[0]
            problems.append(f"{len(wrong_shape)} of the wrong shape (e.g. {key}: file "
                            f"{tuple(state[key].shape)}, {config.model} {tuple(expected[key].shape)})")
        raise LabelAuditError(
            f"weights in {weights_path} do not match {config.model} with {len(classes)} classes for method "
            f"{info['method']}: " + "; ".join(problems)
        )
    method.networks().load_state_dict(state)
    Accelerator(select_device(device)).prepare_model(method.networks())  # moves the modules in place
    method.networks().eval()
    return LoadedModel(method=method, config=config, classes=classes, info=info, directory=directory)

