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

#: sorted unique uint64 content fingerprints of the training images (see :func:`image_fingerprints`)
FINGERPRINTS_FILE = "training_fingerprints.npy"
#: the temperature that calibrates the model's probabilities (see :func:`calibrate_on_training_rows`)
CALIBRATION_FILE = "calibration.json"
#: the calibration is fitted on at most this many training rows (a seeded random subset)
CALIBRATION_ROWS = 5_000
_CALIBRATION_CHUNK = 512
#: hashing is streamed in blocks of this many images (bounds memory when ``images`` is a memmap)
_FINGERPRINT_BLOCK = 4096


def image_fingerprints(images: np.ndarray) -> np.ndarray:
    """(N, H, W, C) uint8 -> (N,) uint64: a 64-bit BLAKE2b hash of each decoded image's pixels and shape.

    Two rows get the same fingerprint when their decoded pixel arrays are identical (the same picture
    under another file name, or a copy), which is how ``check`` recognises images a model trained on.
    A re-encoded or resized copy decodes to other pixels and is not recognised. Random collisions
    between different images have probability about N·M / 2^64 for N training and M batch images.
    """
    import hashlib

    images = np.asarray(images)
    if images.ndim < 2 or images.dtype != np.uint8:
        raise ValueError(f"expected (N, H, W, C) uint8 images, got {images.dtype} {images.shape}")
    shape = repr(tuple(images.shape[1:])).encode()
    out = np.empty(images.shape[0], dtype=np.uint64)
    for start in range(0, images.shape[0], _FINGERPRINT_BLOCK):
        block = np.ascontiguousarray(images[start:start + _FINGERPRINT_BLOCK])
        for offset, image in enumerate(block):
            digest = hashlib.blake2b(image.tobytes(), digest_size=8, person=b"labelaudit-img")
            digest.update(shape)
            out[start + offset] = int.from_bytes(digest.digest(), "little")
    return out


def save_model(directory: str | Path, method: TrainingMethod, config: TrainConfig, classes: list[str],
               *, metrics: dict[str, Any] | None = None, training_images: np.ndarray | None = None,
               training_labels: np.ndarray | None = None) -> Path:
    """Write ``model.safetensors``, ``config.json``, ``classes.json`` and ``metrics.json`` as ``directory``.

    ``training_images``: the (N, H, W, 3) uint8 array the model trained on, as the training loop saw
    it, and ``training_labels`` (N,) its given class indices. With the images,
    ``training_fingerprints.npy`` (sorted unique uint64, :func:`image_fingerprints`, 8 bytes per image)
    is written too, so that ``check`` can recognise batch rows the model has seen; with both,
    ``calibration.json`` (:func:`calibrate_on_training_rows`), so that ``check`` scores new images
    with calibrated probabilities.

    The files are written into a hidden folder beside ``directory`` that then replaces it (see
    :func:`~labelaudit.report.files.atomic_directory`): a run killed while saving leaves the previous
    complete model (or none), never new weights beside an old ``config.json`` or old fingerprints.
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
        if training_images is not None:
            _write_training_records(temporary, method, config, training_images, training_labels,
                                    method.training_probs() if training_labels is not None else None)
    return directory


def record_training_data(directory: str | Path, images: np.ndarray, labels: np.ndarray,
                         training_probs: np.ndarray | None, *, device: str = "cpu") -> Path:
    """Add the training fingerprints and the calibration to a model folder saved without them.

    ``images``/``labels``: the rows the model trained on, in training order (e.g. the scan's CSV
    decoded again); ``training_probs``: the method's non-memorised probabilities of those rows (a
    scan's ``predictions.npz`` ``pred_probs`` when it scored with ELR's targets), or None. The folder
    is rewritten as a whole (atomically, as :func:`save_model` writes it).
    """
    import shutil

    directory = Path(directory)
    model = load_model(directory, device=device)
    with atomic_directory(directory) as temporary:
        for path in directory.iterdir():
            if path.is_file() and path.name not in (FINGERPRINTS_FILE, CALIBRATION_FILE):
                shutil.copy2(path, temporary / path.name)
        _write_training_records(temporary, model.method, model.config, images, labels, training_probs)
    return directory


def _write_training_records(folder: Path, method: TrainingMethod, config: TrainConfig, images: np.ndarray,
                            labels: np.ndarray | None, training_probs: np.ndarray | None) -> None:
    np.save(folder / FINGERPRINTS_FILE, np.unique(image_fingerprints(images)), allow_pickle=False)
    if labels is not None:
        calibration = calibrate_on_training_rows(method, config, images, labels, training_probs)
        _write_json_file(folder / CALIBRATION_FILE, calibration)


def calibrate_on_training_rows(method: TrainingMethod, config: TrainConfig, images: np.ndarray,
                               labels: np.ndarray, training_probs: np.ndarray | None) -> dict[str, Any]:
    """The temperature ``check`` applies to the model's probabilities (``core.calibration.training_calibration``).

    The final model predicts (un-augmented) up to :data:`CALIBRATION_ROWS` training images, a seeded
    random subset, and the temperature is fitted to the method's belief about their true classes.
    Without ``training_probs`` (methods other than ELR keep none; their final model has memorised its
    training rows, whose probabilities then say nothing about new images) nothing is fitted:
    temperature 1 with the reason.
    """
    from ..core.calibration import training_calibration
    from . import distributed

    labels = np.asarray(labels, dtype=np.int64)
    if training_probs is None:
        return {"temperature": 1.0, "fitted": False,
                "reason": f"method {method.name} keeps no non-memorised probabilities of its training rows"}
    training_probs = np.asarray(training_probs)
    if training_probs.shape != (len(labels), training_probs.shape[-1]) or len(images) != len(labels):
        raise ValueError(f"{len(images)} images, {len(labels)} labels and training probabilities of shape "
                         f"{training_probs.shape} do not match")
    rng = np.random.default_rng(config.seed)
    rows = np.sort(rng.choice(len(labels), size=min(len(labels), CALIBRATION_ROWS), replace=False))
    parts = []
    with distributed.local_only():  # only process 0 saves; the others must not be waited for
        for start in range(0, len(rows), _CALIBRATION_CHUNK):
            chunk = rows[start:start + _CALIBRATION_CHUNK]
            parts.append(predict_proba(method, np.asarray(images[chunk]), config))
    model_probs = np.concatenate(parts) if parts else np.zeros((0, training_probs.shape[1]))
    return training_calibration(labels[rows], model_probs, training_probs[rows])


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
    #: sorted uint64 fingerprints of the training images; None for a model saved without them
    training_fingerprints: np.ndarray | None = None
    #: ``calibration.json`` (``temperature``, ``fitted``, …); None for a model saved without it
    calibration: dict[str, Any] | None = None

    @property
    def temperature(self) -> float:
        """The temperature that calibrates :meth:`predict_proba` (1 when none was fitted)."""
        return float((self.calibration or {}).get("temperature", 1.0))

    @property
    def image_size(self) -> int:
        return self.config.image_size

    def seen_in_training(self, images: np.ndarray) -> np.ndarray | None:
        """(N, H, W, 3) uint8 at ``image_size`` -> (N,) bool: the image's pixels are those of a training
        image. None when the model folder records no fingerprints (it cannot tell)."""
        return self.seen_fingerprints(image_fingerprints(images))

    def seen_fingerprints(self, fingerprints: np.ndarray) -> np.ndarray | None:
        """(N,) :func:`image_fingerprints` of images -> (N,) bool: a training image's; None when the model
        folder records no fingerprints."""
        if self.training_fingerprints is None:
            return None
        return np.isin(fingerprints, self.training_fingerprints, assume_unique=False)

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
    return LoadedModel(method=method, config=config, classes=classes, info=info, directory=directory,
                       training_fingerprints=load_training_fingerprints(directory),
                       calibration=load_calibration(directory))


def load_calibration(directory: str | Path) -> dict[str, Any] | None:
    """The model folder's ``calibration.json``, or None when it has none."""
    path = Path(directory) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        calibration = json.loads(path.read_text(encoding="utf-8"))
        temperature = float(calibration["temperature"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise LabelAuditError(f"{path} is not a labelaudit calibration file ({type(exc).__name__}: "
                              f"{str(exc).strip()[:120]})") from None
    if not (np.isfinite(temperature) and temperature > 0):
        raise LabelAuditError(f"{path}: the temperature must be a positive number, got {temperature!r}")
    return calibration


def load_training_fingerprints(directory: str | Path) -> np.ndarray | None:
    """The model folder's ``training_fingerprints.npy`` (sorted uint64), or None when it has none
    (a model saved before fingerprints were recorded, or without its training images)."""
    path = Path(directory) / FINGERPRINTS_FILE
    if not path.is_file():
        return None
    try:
        fingerprints = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise LabelAuditError(f"cannot read {path}: {str(exc).strip()[:150] or type(exc).__name__}") from None
    if fingerprints.dtype != np.uint64 or fingerprints.ndim != 1:
        raise LabelAuditError(f"{path} is not a labelaudit fingerprint file (expected a 1-D uint64 array, got "
                              f"{fingerprints.dtype} {fingerprints.shape})")
    return fingerprints

