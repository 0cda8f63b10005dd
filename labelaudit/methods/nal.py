"""Noise adaptation layer, s-model (Goldberger & Ben-Reuven, ICLR 2017).

A learned K×K channel θ = row-softmax(b) sits after the base network's softmax and models how true
labels turn into noisy ones: p(z|x) = Σ_i p(y=i|x)·θ[i, z]. The whole stack is trained with
cross-entropy against the noisy labels; the base network alone then predicts the clean class, and θ
is itself an estimate of T (estimator ``nal``). b starts from the log of the row-normalised confusion
between a cross-entropy base model's predictions and the noisy labels on the training set.

The base must not have memorised the noisy labels when the channel starts: the official code early-stops
it on a noisy validation split. Here it is the same run's first ``base_share`` of the epochs (plain
cross-entropy), and the channel trains through the rest of the same schedule. Measured on Fashion-MNIST with
50% symmetric noise (test_resnet, batch 32, lr 0.05): a separate CE run to the end, then a second full run
through the channel, let θ drift toward the identity (1,000 rows, 40 epochs: mean diagonal 0.73 against the
true 0.50) while the base learned the noise: 67.1% clean-test accuracy against CE's 71.4%. Switching after
half of one run kept θ near the truth (71.2%) but at 13 epochs (2,000 rows) started the channel from a base
too weak to tell label noise from its own confusions (67.2% against CE's 71.6%); after three quarters:
71.9% at 40 epochs and 73.1% at 13. See docs/commands/train.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..core.transition import realised_transition
from ..errors import LabelAuditError
from .base import Batch, TrainingMethod
from .registry import register

if TYPE_CHECKING:  # pragma: no cover
    from ..train.loop import TrainContext

#: added before the log so that confusions never seen get a finite, very negative b
LOG_FLOOR = 1e-8
BASE_SHARE = 0.75


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
    """``base_share``: share of the epochs (rounded, at least one) the base network trains with plain
    cross-entropy before the channel is initialised from its confusion; training then goes on through the
    channel in the same run (one cosine schedule, one optimiser), as the official code goes on training its
    early-stopped base.
    """

    name = "nal"

    def __init__(self, base_share: float = BASE_SHARE) -> None:
        super().__init__()
        if not 0.0 < base_share < 1.0:
            raise LabelAuditError(f"nal option base_share must be in (0, 1), got {base_share:g}")
        self.base_share = base_share
        self.initial_channel: np.ndarray | None = None
        self.switch_epoch = 0  # the channel is in use after this epoch (set by prepare)
        self.channel_active = False

    def build_networks(self, create_network: Callable[[], torch.nn.Module], n_classes: int) -> None:
        network = create_network()
        device = next(network.parameters()).device
        self.nets = torch.nn.ModuleList([network, NoiseChannel(n_classes).to(device)])

    def prepare(self, ctx: "TrainContext") -> None:
        super().prepare(ctx)
        self.switch_epoch = min(ctx.epochs, max(1, round(self.base_share * ctx.epochs)))
        self.channel_active = False

    def on_epoch_end(self, epoch: int, ctx: "TrainContext") -> None:
        if self.channel_active or epoch < self.switch_epoch:
            return
        # The base's predictions on the training images stand in for the true class.
        init = channel_init(ctx.predict_train().argmax(axis=1), ctx.labels, ctx.n_classes)
        with torch.no_grad():
            self.channel.b.copy_(torch.as_tensor(init, dtype=self.channel.b.dtype))
        self.initial_channel = init
        self.channel_active = True

    @property
    def channel(self) -> NoiseChannel:
        return self.nets[1]

    def trainable_parameters(self) -> list[dict[str, Any]]:
        # θ is a probability model, not a weight to shrink: weight decay would pull it toward uniform noise.
        # Until the switch b gets no gradient, so SGD leaves it alone.
        return [
            {"params": [p for p in self.nets[0].parameters() if p.requires_grad]},
            {"params": [self.channel.b], "weight_decay": 0.0},
        ]

    def loss(self, batch: Batch, progress: float) -> torch.Tensor:
        logits = self.nets[0](batch.images)
        if not self.channel_active:
            return F.cross_entropy(logits.float(), batch.labels)
        return F.nll_loss(self.channel.log_noisy_probs(logits), batch.labels)

    def transition(self) -> np.ndarray:
        """(K, K) the learned channel θ: the method's estimate of T[i, j] = P(noisy j | true i)."""
        with torch.no_grad():
            return self.channel.theta().cpu().numpy().astype(np.float64)

    def settings(self) -> dict[str, Any]:
        return {"channel_init": "log(row-normalised confusion of the CE-trained base + 1e-8)",
                "base_share": self.base_share, "channel_from_epoch": self.switch_epoch + 1,
                "transition_estimator": "nal"}

    def state_dict(self) -> dict[str, Any]:
        """The networks (base and channel b), when the channel starts, whether it has, and its start value."""
        return {**super().state_dict(), "switch_epoch": self.switch_epoch, "channel_active": self.channel_active,
                "initial_channel": None if self.initial_channel is None else self.initial_channel.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.switch_epoch = int(state["switch_epoch"])
        self.channel_active = bool(state["channel_active"])
        initial = state["initial_channel"]
        self.initial_channel = None if initial is None else np.asarray(initial, dtype=np.float64)
