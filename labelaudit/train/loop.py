"""The training loop: one function, top to bottom, shared by every method.

Images arrive decoded once as a (N, H, W, 3) uint8 array; batches are sliced from it, moved to the
device, normalised and augmented there. The method supplies the loss; the loop owns data order,
optimiser, cosine schedule, autocast and progress.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import LabelAuditError
from ..methods.base import Batch, TrainingMethod
from .augment import normalise, random_crop_flip
from .config import DEFAULT_MODEL, TrainConfig  # noqa: F401  (re-exported)
from .progress import ProgressReporter, SilentProgress  # noqa: F401  (re-exported)
from .device import Accelerator, seed_everything, select_device

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class FitResult:
    method: TrainingMethod
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def create_network(config: TrainConfig, n_classes: int) -> torch.nn.Module:
    """A timm model with ``n_classes`` outputs; local ``weights`` win over downloading ``pretrained`` ones."""
    import timm

    if not timm.is_model(config.model):
        close = timm.list_models(f"*{config.model}*")[:5]
        hint = f" (did you mean {', '.join(close)}?)" if close else " (see timm.list_models())"
        raise LabelAuditError(f"unknown timm model {config.model!r}{hint}")
    kwargs: dict[str, Any] = {"num_classes": n_classes}
    if config.weights:
        weights = Path(config.weights)
        if not weights.is_file():
            raise LabelAuditError(f"weights file not found: {weights}")
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(weights)})
    else:
        kwargs["pretrained"] = config.pretrained
    try:
        return timm.create_model(config.model, **kwargs)
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        if config.weights:
            raise LabelAuditError(f"could not load weights {config.weights} into {config.model}: {_first_line(exc)}") from None
        if config.pretrained:
            raise LabelAuditError(
                f"could not get pretrained weights for {config.model} ({_first_line(exc)}); "
                "offline? pass --weights FILE"
            ) from None
        raise LabelAuditError(f"could not create {config.model}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def normalisation_of(network: torch.nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    cfg = getattr(network, "pretrained_cfg", None) or {}
    return tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))


class TrainContext:
    """What a method may use while it trains: the data's shape, a network factory, predictions, sub-fits."""

    def __init__(
        self, images: np.ndarray, labels: np.ndarray, n_classes: int, config: TrainConfig,
        accelerator: Accelerator, trusted: np.ndarray, progress: ProgressReporter,
    ) -> None:
        self.images = images
        self.labels = labels
        self.n_samples = len(labels)
        self.n_classes = n_classes
        self.config = config
        self.epochs = config.epochs_for(len(labels))
        self.accelerator = accelerator
        self.device = accelerator.device
        self.trusted = trusted
        self.progress = progress
        self.method: TrainingMethod | None = None

    def create_network(self) -> torch.nn.Module:
        return self.accelerator.prepare_model(create_network(self.config, self.n_classes))

    def predict_train(self, method: TrainingMethod | None = None) -> np.ndarray:
        """(N, K) class probabilities on the un-augmented training images, of ``method`` (e.g. a
        first-stage model from ``fit``) or by default of the method being trained."""
        method = method or self.method
        assert method is not None  # set by fit() before any hook runs
        return predict_proba(method, self.images, self.config, accelerator=self.accelerator)

    def fit(self, method: TrainingMethod, *, labels: np.ndarray | None = None,
            rows: np.ndarray | None = None, description: str = "") -> FitResult:
        """Train another method on (a subset of) the same images, e.g. a first CE model."""
        images = self.images if rows is None else self.images[rows]
        use_labels = self.labels if labels is None else labels
        if rows is not None:
            use_labels = use_labels[rows]
        return fit(method, images, use_labels, self.n_classes, self.config, progress=self.progress,
                   description=description or method.name)


def fit(
    method: TrainingMethod,
    images: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    config: TrainConfig,
    *,
    trusted: np.ndarray | None = None,
    progress: ProgressReporter | None = None,
    description: str = "",
    on_epoch: Callable[[int, TrainingMethod], dict[str, float]] | None = None,
) -> FitResult:
    """Train ``method`` on ``images`` (N, H, W, 3) uint8 with given ``labels`` (N,) int64.

    ``trusted`` (N,) bool marks expert-checked rows (GLC). ``on_epoch(epoch, method)`` may return
    extra metrics (e.g. validation accuracy) shown in the progress bar and kept in the history.
    """
    started = time.perf_counter()
    progress = progress or SilentProgress()
    accelerator = Accelerator(select_device(config.device), compile=config.compile)
    generator = seed_everything(config.seed)
    n_samples = len(labels)
    if n_samples < 2:
        raise LabelAuditError("need at least 2 images to train")
    trusted_mask = np.zeros(n_samples, bool) if trusted is None else np.asarray(trusted, bool)
    ctx = TrainContext(images, labels, n_classes, config, accelerator, trusted_mask, progress)
    ctx.method = method
    method.prepare(ctx)
    networks = method.networks()
    mean, std = (torch.tensor(v, device=accelerator.device) for v in normalisation_of(networks[0]))
    padding = config.image_size // 8 if config.crop_padding is None else config.crop_padding

    host_images = accelerator.host_tensor(torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2))
    host_labels = torch.as_tensor(labels, dtype=torch.int64)
    host_trusted = torch.as_tensor(trusted_mask)

    batch_size = min(config.batch_size, n_samples)
    # Drop a ragged last batch: a batch of one breaks BatchNorm, and ELR's targets do not need it.
    steps_per_epoch = max(1, n_samples // batch_size)
    epochs = ctx.epochs
    total_steps = steps_per_epoch * epochs
    optimizer = torch.optim.SGD(
        method.trainable_parameters(), lr=config.lr, momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    )
    result = FitResult(method)
    progress.start(description or method.name, total_steps)
    step = 0
    for epoch in range(1, epochs + 1):
        networks.train()
        order = torch.randperm(n_samples, generator=generator)
        loss_sum = torch.zeros((), device=accelerator.device)
        for start in range(0, steps_per_epoch * batch_size, batch_size):
            rows = order[start:start + batch_size]
            images_batch = normalise(accelerator.to_device(host_images[rows]), mean, std)
            batch = Batch(
                images=random_crop_flip(images_batch, padding=padding, flip=config.flip, generator=generator),
                labels=accelerator.to_device(host_labels[rows]),
                indices=accelerator.to_device(rows),
                trusted=accelerator.to_device(host_trusted[rows]),
            )
            with accelerator.autocast():
                loss = method.loss(batch, step / total_steps)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            method.after_step(step / total_steps)
            loss_sum += loss.detach()
            progress.advance()
        mean_loss = float(loss_sum) / steps_per_epoch
        if not math.isfinite(mean_loss):
            raise LabelAuditError(f"training diverged (loss is {mean_loss} in epoch {epoch}); try a lower --lr")
        method.on_epoch_end(epoch, ctx)
        metrics = {"epoch": epoch, "train_loss": mean_loss, "lr": optimizer.param_groups[0]["lr"]}
        if on_epoch is not None:
            metrics.update(on_epoch(epoch, method))
        result.history.append(metrics)
        progress.epoch_done(epoch, epochs, metrics)
    progress.finish()
    result.seconds = time.perf_counter() - started
    return result


@torch.no_grad()
def predict_proba(
    method: TrainingMethod, images: np.ndarray, config: TrainConfig, *,
    accelerator: Accelerator | None = None, batch_size: int = 256,
) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, K) float64 class probabilities, no augmentation."""
    accelerator = accelerator or Accelerator(select_device(config.device))
    networks = method.networks()
    was_training = networks.training
    networks.eval()
    mean, std = (torch.tensor(v, device=accelerator.device) for v in normalisation_of(networks[0]))
    host_images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = normalise(accelerator.to_device(host_images[start:start + batch_size]), mean, std)
        with accelerator.autocast():
            outputs.append(method.predict_proba(batch).double().cpu())
    networks.train(was_training)
    if not outputs:
        return np.zeros((0, 0), np.float32)
    return torch.cat(outputs).numpy()


def with_overrides(config: TrainConfig, **changes: Any) -> TrainConfig:
    return replace(config, **{k: v for k, v in changes.items() if v is not None})
