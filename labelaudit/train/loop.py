"""The training loop: one function, top to bottom (:func:`train_epochs`), shared by every method.

:func:`fit` trains a network: images arrive decoded once as a (N, H, W, 3) uint8 array; batches are
sliced from it, moved to the device, augmented (as uint8) and normalised there. The fast mode's linear head
(``labelaudit.train.head``) runs the same loop on embeddings. The method supplies the loss; the loop
owns data order, optimiser, cosine schedule, autocast, checkpoints on Ctrl-C and progress.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import timm
import torch

from ..errors import LabelAuditError
from ..methods.base import Batch, TrainingMethod
from .augment import mean_colour, normalise, random_crop_flip
from .config import DEFAULT_LR, DEFAULT_MODEL, TrainConfig  # noqa: F401  (re-exported)
from .progress import ProgressReporter, SilentProgress  # noqa: F401  (re-exported)
from .resume import (
    Checkpointing, TrainingInterrupted, capture_state, load_checkpoint, restore_state, run_fingerprint,
    save_checkpoint,
)
from .device import Accelerator, seed_everything, select_device
from . import distributed

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class FitResult:
    """The trained method; ``config``: the settings it trained with (batch size resolved)."""

    method: TrainingMethod
    config: TrainConfig
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def check_model_name(name: str) -> None:
    """Refuse a name timm does not know, suggesting close ones (commands call it before decoding any image)."""
    if not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:5]
        hint = f" (did you mean {', '.join(close)}?)" if close else " (see timm.list_models())"
        raise LabelAuditError(f"unknown timm model {name!r}{hint}")


def create_network(config: TrainConfig, n_classes: int) -> torch.nn.Module:
    """A timm model with ``n_classes`` outputs; local ``weights`` win over downloading ``pretrained`` ones."""
    check_model_name(config.model)
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
    checkpoint: Checkpointing | None = None,
) -> FitResult:
    """Train ``method`` on ``images`` (N, H, W, 3) uint8 with given ``labels`` (N,) int64.

    ``trusted`` (N,) bool marks expert-checked rows (GLC). ``on_epoch(epoch, method)`` may return
    extra metrics (e.g. validation accuracy) shown in the progress bar and kept in the history.

    ``checkpoint``: on Ctrl-C, save the state as of the last epoch boundary to ``checkpoint.path``
    and raise :class:`~labelaudit.train.resume.TrainingInterrupted`; with ``checkpoint.resume``,
    continue from that file (same inputs and settings required) instead of starting over. The file
    is removed when training finishes.
    """
    started = time.perf_counter()
    progress = progress or SilentProgress()
    accelerator = Accelerator(select_device(config.device), compile=config.compile)
    generator = seed_everything(config.seed)
    n_samples = len(labels)
    if n_samples < 2:
        raise LabelAuditError("need at least 2 images to train")
    trusted_mask = np.zeros(n_samples, bool) if trusted is None else np.asarray(trusted, bool)
    # --batch-size auto becomes a number, and an unset --lr the default, in the copy returned for callers to save
    requested = config.with_default_lr(DEFAULT_LR)
    config = accelerator.resolve_batch_size(
        requested, method, n_samples=n_samples, n_classes=n_classes,
        create_network=lambda: accelerator.prepare_model(create_network(requested, n_classes)))
    ctx = TrainContext(images, labels, n_classes, config, accelerator, trusted_mask, progress)
    ctx.method = method
    epochs = ctx.epochs
    # Called only when a checkpoint is read or written: it hashes every training image.
    fingerprint = None if checkpoint is None else partial(
        run_fingerprint, checkpoint.inputs, method_name=method.name, config=config.to_dict(), images=images,
        labels=labels, trusted=trusted_mask, n_classes=n_classes)
    saved = load_checkpoint(checkpoint.path, fingerprint()) if checkpoint is not None and checkpoint.resume else None
    if saved is not None:
        # Everything prepare() set up (a first-stage model's result included) is in the saved state.
        method.build_networks(ctx.create_network, n_classes)
    else:
        try:
            method.prepare(ctx)
        except KeyboardInterrupt:
            if checkpoint is None:
                raise
            raise TrainingInterrupted(None, 0, epochs) from None
    networks = method.networks()
    distributed.broadcast_from_main(networks)  # under torchrun: every process starts from the same weights
    mean, std = (torch.tensor(v, device=accelerator.device) for v in normalisation_of(networks[0]))
    padding = config.image_size // 8 if config.crop_padding is None else config.crop_padding

    padding_colour = mean_colour(mean)

    def augmented_batch(rows: torch.Tensor) -> torch.Tensor:
        # Gathered from the uint8 array (often a memory map of the decode cache) as needed: the
        # images are never copied whole, nor pinned whole for a GPU. Augmented as uint8 on the device.
        images_batch = accelerator.to_device(accelerator.host_batch(images, rows))
        images_batch = random_crop_flip(images_batch, padding=padding, flip=config.flip, generator=generator,
                                        fill=padding_colour)
        return accelerator.network_input(normalise(images_batch, mean, std))

    rows_per_process = distributed.shard_size(n_samples)  # n_samples unless data-parallel
    batch_size = min(config.batch_size, rows_per_process)
    # Drop a ragged last batch: a batch of one breaks BatchNorm, and ELR's targets do not need it.
    steps_per_epoch = max(1, rows_per_process // batch_size)
    return train_epochs(method, ctx, augmented_batch, batch_size=batch_size, steps_per_epoch=steps_per_epoch,
                        generator=generator, description=description, on_epoch=on_epoch, checkpoint=checkpoint,
                        saved=saved, fingerprint=fingerprint, started=started)


def train_epochs(
    method: TrainingMethod,
    ctx: Any,
    inputs_of: Callable[[torch.Tensor], torch.Tensor],
    *,
    batch_size: int,
    steps_per_epoch: int,
    generator: torch.Generator,
    description: str = "",
    on_epoch: Callable[[int, TrainingMethod], dict[str, float]] | None = None,
    checkpoint: Checkpointing | None = None,
    saved: dict[str, Any] | None = None,
    fingerprint: Callable[[], dict[str, Any]] | None = None,
    started: float | None = None,
) -> FitResult:
    """The training loop of every method, for :func:`fit` (images) and the fast mode's linear head
    (``labelaudit.train.head``, embeddings): SGD with a cosine schedule over ``ctx.epochs`` epochs.

    ``ctx`` (a :class:`TrainContext` or the head's) gives labels, trusted mask, config, accelerator,
    progress and epochs, and is what the method's hooks see; ``method.prepare`` has run. Each
    epoch draws a permutation of the rows from ``generator`` and takes ``steps_per_epoch`` slices
    of ``batch_size`` rows (the last may be shorter); ``inputs_of(rows)`` gives the (B, …) network
    inputs on the device. ``saved``: a checkpoint's state to continue from. ``fingerprint()``:
    what a checkpoint written on Ctrl-C must match (see :func:`fit`).
    """
    started = time.perf_counter() if started is None else started
    config, accelerator, progress, epochs = ctx.config, ctx.accelerator, ctx.progress, ctx.epochs
    n_samples = len(ctx.labels)
    networks = method.networks()
    host_labels = torch.as_tensor(ctx.labels, dtype=torch.int64)
    host_trusted = torch.as_tensor(ctx.trusted)
    total_steps = steps_per_epoch * epochs
    optimizer = torch.optim.SGD(
        method.trainable_parameters(), lr=config.lr, momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    )
    result = FitResult(method, config)
    first_epoch = 1
    if saved is not None:
        restore_state(saved, method=method, optimizer=optimizer, schedule=schedule, generator=generator)
        result.history = list(saved["history"])
        first_epoch = int(saved["epochs_done"]) + 1
    progress.start(description or method.name, total_steps)
    step = (first_epoch - 1) * steps_per_epoch
    if step:
        progress.advance(step)
    boundary_state = None  # the state at the start of the current epoch, saved on Ctrl-C
    try:
        for epoch in range(first_epoch, epochs + 1):
            if checkpoint is not None:
                boundary_state = capture_state(method=method, optimizer=optimizer, schedule=schedule,
                                               generator=generator, epochs_done=epoch - 1, history=result.history)
            networks.train()
            order = distributed.shard(torch.randperm(n_samples, generator=generator))
            loss_sum = torch.zeros((), device=accelerator.device)
            for start in range(0, steps_per_epoch * batch_size, batch_size):
                rows = order[start:start + batch_size]
                batch = Batch(
                    images=inputs_of(rows),
                    labels=accelerator.to_device(host_labels[rows]),
                    indices=accelerator.to_device(rows),
                    trusted=accelerator.to_device(host_trusted[rows]),
                )
                with accelerator.autocast():
                    loss = method.loss(batch, step / total_steps)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                distributed.average_gradients(parameters)
                optimizer.step()
                schedule.step()
                step += 1
                method.after_step(step / total_steps)
                loss_sum += loss.detach()
                progress.advance()
            mean_loss = distributed.average_over_processes(float(loss_sum) / steps_per_epoch)
            if not math.isfinite(mean_loss):
                raise LabelAuditError(f"training diverged (loss is {mean_loss} in epoch {epoch}); try a lower --lr")
            distributed.sync_epoch_state(networks, method.per_sample_buffers(), order[:steps_per_epoch * batch_size])
            method.on_epoch_end(epoch, ctx)
            metrics = {"epoch": epoch, "train_loss": mean_loss, "lr": optimizer.param_groups[0]["lr"]}
            if on_epoch is not None:
                metrics.update(on_epoch(epoch, method))
            result.history.append(metrics)
            progress.epoch_done(epoch, epochs, metrics)
    except KeyboardInterrupt:
        if checkpoint is None or fingerprint is None or boundary_state is None:
            raise
        if distributed.is_main_process():
            save_checkpoint(checkpoint.path, boundary_state, fingerprint())
        raise TrainingInterrupted(checkpoint.path, boundary_state["epochs_done"], epochs) from None
    progress.finish()
    if checkpoint is not None:
        checkpoint.path.unlink(missing_ok=True)
    result.seconds = time.perf_counter() - started
    return result


@torch.no_grad()
def predict_proba(
    method: TrainingMethod, images: np.ndarray, config: TrainConfig, *,
    accelerator: Accelerator | None = None, batch_size: int = 256,
) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, K) float64 class probabilities, no augmentation."""
    accelerator = accelerator or Accelerator(select_device(config.device))
    if distributed.data_parallel():  # each process predicts a block of rows; all get every row
        return distributed.predict_in_shards(
            lambda part: predict_proba(method, part, config, accelerator=accelerator, batch_size=batch_size), images)
    networks = method.networks()
    was_training = networks.training
    networks.eval()
    mean, std = (torch.tensor(v, device=accelerator.device) for v in normalisation_of(networks[0]))
    outputs = []
    for start in range(0, len(images), batch_size):
        rows = slice(start, start + batch_size)
        batch = normalise(accelerator.to_device(accelerator.host_batch(images, rows)), mean, std)
        with accelerator.autocast():
            outputs.append(method.predict_proba(batch).double().cpu())
    networks.train(was_training)
    if not outputs:
        return np.zeros((0, 0), np.float32)
    return torch.cat(outputs).numpy()


def with_overrides(config: TrainConfig, **changes: Any) -> TrainConfig:
    return replace(config, **{k: v for k, v in changes.items() if v is not None})
