"""Forward loss correction (Patrini et al., CVPR 2017), with the anchor-point estimate of T.

Without trusted data: train a cross-entropy model on the noisy labels, estimate T̂ from anchor points
of its probabilities on the training images (``core.transition.anchor_transition``), then train a
fresh network whose clean-class probabilities p, pushed through T̂, explain the noisy labels:
loss = −log((T̂ᵀp)_ỹ). The network itself then predicts the clean class.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..core.transition import anchor_transition
from ..errors import LabelAuditError
from .base import Batch, TrainingMethod
from .registry import create_method, register

if TYPE_CHECKING:  # pragma: no cover
    from ..train.loop import TrainContext

ANCHOR_PERCENTILE = 97.0
#: floor for entries of T before taking logs, so a zero entry gives a large finite loss, not inf
MIN_TRANSITION = 1e-12


class TransitionMatrix(torch.nn.Module):
    """A fixed (K, K) matrix T[i, j] = P(noisy j | true i), kept as a buffer so it is saved with the weights."""

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.register_buffer("matrix", torch.eye(n_classes))


def forward_corrected_loss(logits: torch.Tensor, labels: torch.Tensor, transition: torch.Tensor) -> torch.Tensor:
    """−mean over the batch of log((Tᵀp)_ỹ) = −log Σ_i p_i·T[i, ỹ], with p = softmax(logits).

    logits: (B, K); labels: (B,) int64 noisy labels ỹ; transition: (K, K). Computed in log space.
    """
    log_probs = F.log_softmax(logits.float(), dim=1)  # (B, K)
    log_transition_to_label = torch.log(transition.float().clamp_min(MIN_TRANSITION))[:, labels].T  # (B, K)
    return -torch.logsumexp(log_probs + log_transition_to_label, dim=1).mean()


@register
class ForwardCorrection(TrainingMethod):
    """``anchor_percentile``: p_i at or above this percentile is discarded before picking class i's anchor."""

    name = "forward"

    def __init__(self, anchor_percentile: float = ANCHOR_PERCENTILE) -> None:
        super().__init__()
        if not 0.0 <= anchor_percentile <= 100.0:
            raise LabelAuditError(f"forward option anchor_percentile must be in [0, 100], got {anchor_percentile:g}")
        self.anchor_percentile = anchor_percentile

    def build_networks(self, create_network: Callable[[], torch.nn.Module], n_classes: int) -> None:
        network = create_network()
        device = next(network.parameters()).device
        self.nets = torch.nn.ModuleList([network, TransitionMatrix(n_classes).to(device)])

    def prepare(self, ctx: "TrainContext") -> None:
        first = ctx.fit(create_method("ce"), description="forward: CE model for T̂")
        estimate = anchor_transition(ctx.predict_train(first.method), percentile=self.anchor_percentile)
        super().prepare(ctx)  # a fresh network, trained with the corrected loss
        self.set_transition(estimate)

    def set_transition(self, matrix: np.ndarray) -> None:
        buffer = self.nets[1].matrix
        buffer.copy_(torch.as_tensor(matrix, dtype=buffer.dtype, device=buffer.device))

    def transition(self) -> np.ndarray:
        """(K, K) the T̂ the network was trained with."""
        return self.nets[1].matrix.detach().cpu().numpy().astype(np.float64)

    def loss(self, batch: Batch, progress: float) -> torch.Tensor:
        return forward_corrected_loss(self.nets[0](batch.images), batch.labels, self.nets[1].matrix)

    def settings(self) -> dict[str, Any]:
        return {"anchor_percentile": self.anchor_percentile, "transition_estimator": "anchor"}
