"""A linear head trained on frozen-backbone embeddings by an ordinary training method (fast mode).

The method (ELR or CE) is the same object a full run trains: its ``prepare`` builds the head through
``HeadContext.create_network``, its ``loss`` sees batches whose ``images`` are (B, D) embeddings,
and ELR keeps its per-sample targets and probes the noise structure exactly as in a full run. After
training, the head is folded into the backbone's own classifier so the saved model is a plain timm
network that ``labelaudit.load_model`` and ``check --model`` use like any other.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from ..errors import LabelAuditError
from ..methods.base import TrainingMethod
from .config import TrainConfig, auto_epochs
from .device import Accelerator, seed_everything, select_device
from .loop import FitResult, train_epochs
from .progress import ProgressReporter, SilentProgress

#: rows per optimiser step of the head; larger than a network's batch, as a step costs almost nothing
HEAD_BATCH_SIZE = 256
#: with ``--epochs`` unset, the head trains for about this many steps (10 to 200 epochs)
HEAD_AUTO_STEPS = 800
#: the head's learning rate when ``--lr`` is not given (the fast mode was measured with it)
HEAD_LR = 0.05
PREDICT_BATCH_SIZE = 8192
#: features whose spread on the training rows is below this are left unscaled
MIN_SCALE = 1e-6


class LinearHead(torch.nn.Module):
    """(B, D) features -> (B, K) logits: standardised with fixed training statistics, then linear.

    mean, scale: (D,) per-feature mean and standard deviation of the training rows.
    """

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor, n_classes: int) -> None:
        super().__init__()
        self.register_buffer("mean", mean.detach().clone().float())
        self.register_buffer("scale", scale.detach().clone().float())
        self.linear = torch.nn.Linear(mean.numel(), n_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear((features - self.mean) / self.scale)

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, D) weight and (K,) bias of one linear layer on the raw features giving the same logits."""
        weight = self.linear.weight / self.scale
        return weight, self.linear.bias - weight @ self.mean


def feature_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) -> (D,) mean and (D,) standard deviation (constant features get 1)."""
    mean = features.mean(dim=0)
    scale = features.std(dim=0, unbiased=False)
    return mean, torch.where(scale > MIN_SCALE, scale, torch.ones_like(scale))


class HeadContext:
    """The part of ``labelaudit.train.loop.TrainContext`` that ELR and CE use, over embeddings."""

    def __init__(self, features: torch.Tensor, labels: np.ndarray, n_classes: int, config: TrainConfig,
                 epochs: int, accelerator: Accelerator, progress: ProgressReporter) -> None:
        self.features = features
        self.labels = labels
        self.n_samples = len(labels)
        self.n_classes = n_classes
        self.config = config
        self.epochs = epochs
        self.accelerator = accelerator
        self.progress = progress
        self.device = accelerator.device
        self.trusted = np.zeros(len(labels), bool)
        self.method: TrainingMethod | None = None
        self._mean, self._scale = feature_statistics(features)

    def create_network(self) -> torch.nn.Module:
        return LinearHead(self._mean, self._scale, self.n_classes).to(self.device)

    def predict_train(self, method: TrainingMethod | None = None) -> np.ndarray:
        method = method or self.method
        if method is None:
            raise RuntimeError("predict_train before fit_head set the method")
        return predict_head(method, self.features, accelerator=self.accelerator)


def head_epochs(config: TrainConfig, n_samples: int) -> int:
    """``--epochs`` when given, else enough epochs for HEAD_AUTO_STEPS steps of ``HEAD_BATCH_SIZE`` rows."""
    return config.epochs or auto_epochs(n_samples, HEAD_BATCH_SIZE, images=0, min_steps=HEAD_AUTO_STEPS)


def fit_head(method: TrainingMethod, features: np.ndarray, labels: np.ndarray, n_classes: int,
             config: TrainConfig, *, progress: ProgressReporter | None = None, description: str = "") -> FitResult:
    """Train ``method`` with a linear head on (N, D) float32 ``features`` and (N,) int64 given ``labels``.

    The loop of a full run (:func:`labelaudit.train.loop.train_epochs`: SGD with the settings of
    ``config``, cosine schedule, seed, the method's hooks, ELR's noise probe included) on batches of
    ``HEAD_BATCH_SIZE`` embeddings, without augmentation; the last batch of an epoch may be shorter.
    """
    started = time.perf_counter()
    n_samples = len(labels)
    if n_samples < 2:
        raise LabelAuditError("need at least 2 images to train")
    accelerator = Accelerator(select_device(config.device))
    generator = seed_everything(config.seed)
    features_on_device = accelerator.to_device(
        accelerator.host_tensor(torch.as_tensor(np.asarray(features, dtype=np.float32))))
    batch_size = min(HEAD_BATCH_SIZE, n_samples)
    head_config = config.with_default_lr(HEAD_LR).with_batch_size(
        batch_size, f"the linear head's batch of {HEAD_BATCH_SIZE} rows")
    ctx = HeadContext(features_on_device, labels, n_classes, head_config, head_epochs(config, n_samples),
                      accelerator, progress or SilentProgress())
    ctx.method = method
    method.prepare(ctx)
    result = train_epochs(method, ctx, lambda rows: features_on_device[accelerator.to_device(rows)],
                          batch_size=batch_size, steps_per_epoch=math.ceil(n_samples / batch_size),
                          generator=generator, description=description or f"training {method.name} head",
                          started=started)
    method.networks().eval()
    return result


@torch.no_grad()
def predict_head(method: TrainingMethod, features: np.ndarray | torch.Tensor, *,
                 accelerator: Accelerator | None = None) -> np.ndarray:
    """(N, D) features -> (N, K) float64 class probabilities of the method's head."""
    accelerator = accelerator or Accelerator(method.network_device())
    networks = method.networks()
    was_training = networks.training
    networks.eval()
    features = torch.as_tensor(np.asarray(features, dtype=np.float32)) if isinstance(features, np.ndarray) else features
    outputs = [method.predict_proba(accelerator.to_device(features[start:start + PREDICT_BATCH_SIZE])).cpu()
               for start in range(0, len(features), PREDICT_BATCH_SIZE)]
    networks.train(was_training)
    return torch.cat(outputs).numpy() if outputs else np.zeros((0, 0), np.float64)


def attach_head(backbone: torch.nn.Module, head: LinearHead) -> torch.nn.Module:
    """Give the timm ``backbone`` (made with ``num_classes=0``) a classifier equal to ``head``.

    Returns the backbone, now a K-class network whose state dict matches
    ``create_network(config, K)``. Raises LabelAuditError when the model's classifier is not one
    linear layer on the pooled features (then the head cannot be folded into it).
    """
    weight, bias = head.folded()
    n_classes, dim = weight.shape
    if not hasattr(backbone, "reset_classifier"):
        raise LabelAuditError(f"{type(backbone).__name__} has no timm classifier to put the head into")
    backbone.reset_classifier(n_classes)
    classifier = backbone.get_classifier()
    if not isinstance(classifier, torch.nn.Linear) or classifier.in_features != dim:
        raise LabelAuditError(f"the classifier of {type(backbone).__name__} is not one linear layer on its "
                              f"{dim} pooled features")
    with torch.no_grad():
        classifier.weight.copy_(weight.to(classifier.weight))
        classifier.bias.copy_(bias.to(classifier.bias))
    return backbone
