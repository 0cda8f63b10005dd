"""Fast mode of ``scan`` (``--freeze-backbone``): cached backbone embeddings, then only a linear head.

The backbone runs once over the audited images (see ``labelaudit.train.embeddings``); the method
(ELR by default) then trains a linear head on the cached (N, D) features, with out-of-fold heads
under ``--folds``. A re-run with other head settings reads the cache and takes seconds. The
scores go through the same scoring and report path as a full scan.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .data.cache import CACHE_DIR_NAME
from .data.dataset import LabelledImages
from .errors import LabelAuditError
from .methods.registry import create_method
from .train.device import Accelerator, select_device
from .train.embeddings import create_backbone, embeddings_for, forward_images, is_random_backbone
from .train.head import attach_head, fit_head, predict_head
from .train.progress import ProgressReporter

if TYPE_CHECKING:  # pragma: no cover
    from .audit import ScanSettings, TrainedScores

MODE = "frozen backbone"
#: methods whose training only needs a network factory and the labels, so they can drive a head
FROZEN_METHODS = ("elr", "ce")
RANDOM_FEATURES_NOTE = ("--freeze-backbone without --pretrained/--weights uses random features "
                        "(a randomly initialised backbone)")
#: images used to check that the saved network reproduces the head's logits
CHECK_IMAGES = 8


def check_frozen_settings(method: str, *, resume: bool = False) -> None:
    """Refuse settings the fast mode does not support, before any image is decoded."""
    if method not in FROZEN_METHODS:
        raise LabelAuditError(f"--freeze-backbone trains a linear head with {' or '.join(FROZEN_METHODS)}; "
                              f"--method {method} needs the full network (leave out --freeze-backbone)")
    if resume:
        raise LabelAuditError("--resume is not used with --freeze-backbone: the embeddings are cached in the "
                              "run directory and the head trains in seconds; run the scan again without --resume")


def frozen_backbone_scores(data: LabelledImages, settings: "ScanSettings", progress: ProgressReporter, *,
                           folds: np.ndarray | None = None) -> "TrainedScores":
    """Class probabilities of the audited rows from linear heads on cached backbone embeddings.

    folds: (M,) fold of each row for out-of-fold heads, or None for one head whose method's own view
    of its training rows (ELR's targets) scores them; that head is put into the backbone's classifier
    and returned as ``method`` so the run directory gets a complete model.
    """
    from .audit import TrainedScores

    config = settings.train
    paths = data.rows["path"].to_numpy()[data.row_index].tolist()
    embedded = embeddings_for(data.images, data.images_root, paths, config,
                              Path(settings.out) / CACHE_DIR_NAME, progress=progress)
    features = np.asarray(embedded.features, dtype=np.float32)
    n_classes = len(data.classes)
    notes = [RANDOM_FEATURES_NOTE] if is_random_backbone(config) else []
    started = time.perf_counter()
    if folds is not None:
        n_folds = int(folds.max()) + 1
        pred_probs = np.zeros((len(data.labels), n_classes), np.float64)
        method_settings: dict[str, Any] = {}
        histories = []
        for fold in range(n_folds):
            held_out = folds == fold
            method = create_method(settings.method, **settings.method_options)
            fitted = fit_head(method, features[~held_out], data.labels[~held_out], n_classes, config,
                              progress=progress, description=f"head, fold {fold + 1}/{n_folds}")
            pred_probs[held_out] = predict_head(fitted.method, features[held_out])
            method_settings[f"fold_{fold}"] = fitted.method.settings()
            histories.append(fitted.history)
        extra = _extra(embedded.describe(), time.perf_counter() - started, notes)
        return TrainedScores(pred_probs, folds.astype(np.int16), {**method_settings, "scored_with": "out of fold"},
                             [], config, extra=extra)

    method = create_method(settings.method, **settings.method_options)
    fitted = fit_head(method, features, data.labels, n_classes, config, progress=progress,
                      description=f"training {settings.method} head")
    kept = fitted.method.training_probs()
    pred_probs = kept if kept is not None else predict_head(fitted.method, features)
    method_settings = {**fitted.method.settings(),
                       "scored_with": "method targets" if kept is not None else "final model"}
    head_seconds = time.perf_counter() - started
    saved_method = None
    try:
        saved_method = _with_backbone(fitted.method, data.images[:CHECK_IMAGES], features[:CHECK_IMAGES], config)
    except LabelAuditError as error:
        notes.append(f"model/ not written: {error}")
    extra = _extra(embedded.describe(), head_seconds, notes)
    return TrainedScores(pred_probs, np.zeros(len(data.labels), np.int16), method_settings, fitted.history,
                         config, saved_method, extra=extra)


def _extra(embeddings: dict[str, Any], head_seconds: float, notes: list[str]) -> dict[str, Any]:
    return {"mode": MODE, "embeddings": embeddings, "head_seconds": round(head_seconds, 3), "notes": notes}


def _with_backbone(method, images: np.ndarray, features: np.ndarray, config) -> Any:
    """Put the trained head into the backbone's classifier, so ``method`` saves a complete network.

    images: (C, H, W, 3) uint8 and features: (C, D) their cached embeddings, used to check that the
    network gives the head's logits. Raises LabelAuditError when the head cannot be folded in.
    """
    head = method.networks()[0].cpu().eval()
    with torch.no_grad():
        expected = head(torch.as_tensor(features))
    network = attach_head(create_backbone(config), head).eval()
    accelerator = Accelerator(select_device(config.device))
    got = forward_images(accelerator.prepare_model(network), images, accelerator)
    tolerance = 1e-2 * (1.0 + float(expected.abs().max()))
    if not torch.allclose(got, expected, rtol=1e-2, atol=tolerance):
        raise LabelAuditError(f"{config.model} with the head as its classifier does not reproduce the head's "
                              f"outputs (largest difference {float((got - expected).abs().max()):.3g})")
    method.nets = torch.nn.ModuleList([network.cpu()])
    return method
