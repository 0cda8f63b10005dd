"""Noise adaptation layer, s-model (Goldberger & Ben-Reuven, ICLR 2017).

A learned K×K channel θ = row-softmax(b) sits after the base network's softmax and models how true
labels turn into noisy ones: p(z|x) = Σ_i p(y=i|x)·θ[i, z]. The whole stack is trained with
cross-entropy against the noisy labels; the base network alone then predicts the clean class, and θ
is itself an estimate of T (estimator ``nal``). b starts from the log of the row-normalised confusion
between a cross-entropy base model's predictions and the noisy labels on the training set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..core.transition import realised_transition
from .base import Batch, TrainingMethod
from .registry import create_method, register

if TYPE_CHECKING:  # pragma: no cover
    from ..train.loop import TrainContext

#: added before the log so that confusions never seen get a finite, very negative b
LOG_FLOOR = 1e-8


def channel_init(predicted: np.ndarray, noisy_labels: np.ndarray, n_classes: int) -> np.ndarray:
    """b = log(row-normalised confusion + 1e-8), shape (K, K).

    predicted: (N,) the base model's predicted classes (rows, standing in for the true class);
    noisy_labels: (N,) given labels (columns). A class never predicted gets an identity row.
    """
    confusion = realised_transition(predicted, noisy_labels, n_classes=n_classes)
    return np.log(confusion + LOG_FLOOR)


class NoiseChannel(torch.nn.Module):
    """θ = row-softmax(b): θ[i, z] = P(noisy z | true i); b is the trainable (K, K) parameter."""

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.b = torch.nn.Parameter(torch.zeros(n_classes, n_classes))

    def theta(self) -> torch.Tensor:
        return F.softmax(self.b.float(), dim=1)

    def log_noisy_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, K) base logits -> (B, K) log p(z|x) = log Σ_i p(y=i|x)·θ[i, z], in log space."""
        log_probs = F.log_softmax(logits.float(), dim=1)  # (B, K_true)
        log_theta = F.log_softmax(self.b.float(), dim=1)  # (K_true, K_noisy)
        return torch.logsumexp(log_probs[:, :, None] + log_theta[None, :, :], dim=1)


@register
class NoiseAdaptationLayer(TrainingMethod):
    name = "nal"

    def __init__(self) -> None:
        super().__init__()
        self.initial_channel: np.ndarray | None = None

    def build_networks(self, create_network: Callable[[], torch.nn.Module], n_classes: int) -> None:
        network = create_network()
        device = next(network.parameters()).device
        self.nets = torch.nn.ModuleList([network, NoiseChannel(n_classes).to(device)])

    def prepare(self, ctx: "TrainContext") -> None:
        base = ctx.fit(create_method("ce"), description="nal: CE base model")
        predicted = ctx.predict_train(base.method).argmax(axis=1)
        super().prepare(ctx)
        # The s-model goes on training the CE base, now through the channel.
        self.nets[0].load_state_dict(base.method.networks()[0].state_dict())
        init = channel_init(predicted, ctx.labels, ctx.n_classes)
        with torch.no_grad():
            self.channel.b.copy_(torch.as_tensor(init, dtype=self.channel.b.dtype))
        self.initial_channel = init

    @property
    def channel(self) -> NoiseChannel:
        return self.nets[1]

    def trainable_parameters(self) -> list[dict[str, Any]]:
        # θ is a probability model, not a weight to shrink: weight decay would pull it toward uniform noise.
        return [
            {"params": [p for p in self.nets[0].parameters() if p.requires_grad]},
            {"params": [self.channel.b], "weight_decay": 0.0},
        ]

    def loss(self, batch: Batch, progress: float) -> torch.Tensor:
        return F.nll_loss(self.channel.log_noisy_probs(self.nets[0](batch.images)), batch.labels)

    def transition(self) -> np.ndarray:
        """(K, K) the learned channel θ: the method's estimate of T[i, j] = P(noisy j | true i)."""
        with torch.no_grad():
            return self.channel.theta().cpu().numpy().astype(np.float64)

    def settings(self) -> dict[str, Any]:
        return {"channel_init": "log(row-normalised confusion of the CE base model + 1e-8)",
                "transition_estimator": "nal"}
