"""Early-Learning Regularization (Liu et al., NeurIPS 2020).

Networks fit clean labels first and memorise wrong ones later. ELR keeps, per training sample, a running
average ``t`` of the model's own (detached, renormalised) predictions and adds ``λ·log(1 − ⟨t, p⟩)`` to
the cross-entropy: the term is lowest when ``p`` agrees with the early predictions, so gradients of
mislabelled samples are pulled back toward what the network learned before memorising.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from .base import Batch, TrainingMethod
from .registry import register

if TYPE_CHECKING:  # pragma: no cover
    from ..train.loop import TrainContext

PROB_CLAMP = 1e-4
# (β, λ) of the official CIFAR configurations.
SYMMETRIC_SETTING = (0.7, 3.0)
ASYMMETRIC_SETTING = (0.9, 1.0)
MANY_CLASSES_SETTING = (0.9, 7.0)
MANY_CLASSES = 50
#: share of the epochs after which ``auto`` looks at the noise structure and picks (β, λ)
PROBE_AT = 0.2


def elr_loss(
    logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor,
    *, beta: float, lam: float,
) -> torch.Tensor:
    """ELR loss for one batch; updates ``targets[indices]`` in place.

    logits: (B, K); labels: (B,) int64; targets: (N, K) buffer over the whole training set;
    indices: (B,) rows of ``targets`` belonging to this batch.
    """
    probs = F.softmax(logits, dim=1).clamp(PROB_CLAMP, 1.0 - PROB_CLAMP)
    with torch.no_grad():
        detached = probs.detach()
        targets[indices] = beta * targets[indices] + (1.0 - beta) * detached / detached.sum(dim=1, keepdim=True)
    regulariser = torch.log(1.0 - (targets[indices] * probs).sum(dim=1)).mean()
    return F.cross_entropy(logits, labels) + lam * regulariser


def noise_concentration(transition: np.ndarray) -> float:
    """How much of each class's label noise goes to a single other class, in [0, 1].

    transition: (K, K), T[i, j] = P(noisy j | true i). Symmetric noise gives about 1/(K−1);
    noise between look-alike pairs gives about 1. Rows with under 2% noise are ignored; 0 when all are.
    """
    off_diagonal = transition - np.diag(np.diag(transition))
    noise_mass = off_diagonal.sum(axis=1)
    noisy_rows = noise_mass > 0.02
    if not noisy_rows.any():
        return 0.0
    share_of_top = off_diagonal.max(axis=1)[noisy_rows] / noise_mass[noisy_rows]
    return float(np.average(share_of_top, weights=noise_mass[noisy_rows]))


def concentration_threshold(n_classes: int) -> float:
    """Noise concentration above which the noise is treated as class-dependent: √(1/(K−1)).

    The geometric midpoint between symmetric noise (1/(K−1)) and pair noise (1). Not the arithmetic
    one: early in training the model's own confusion adds spread-out mass to every row of the
    estimated T, which pulls both kinds of noise down (measured with 8 classes after 20% of the
    epochs: 0.21 and 0.34 for 50% and 20% symmetric noise, 0.50 for 40% pairs noise).
    """
    return float(np.sqrt(1.0 / max(n_classes - 1, 1)))


@register
class ELR(TrainingMethod):
    """``beta``/``lam`` None means auto: chosen from the class count and the noise structure."""

    name = "elr"

    def __init__(self, beta: float | None = None, lam: float | None = None) -> None:
        super().__init__()
        self.user_beta, self.user_lam = beta, lam
        self.beta, self.lam = SYMMETRIC_SETTING
        self.choice = "default"
        self.probe_epoch: int | None = None
        self.targets = torch.zeros(0)

    def prepare(self, ctx: "TrainContext") -> None:
        super().prepare(ctx)
        self.targets = torch.zeros(ctx.n_samples, ctx.n_classes, device=ctx.device)
        if self.user_beta is not None and self.user_lam is not None:
            self.beta, self.lam, self.choice = self.user_beta, self.user_lam, "given"
        elif ctx.n_classes >= MANY_CLASSES:
            self.beta, self.lam = MANY_CLASSES_SETTING
            self.choice = f"auto: {ctx.n_classes} classes (official 100-class setting)"
        else:
            self.beta, self.lam = SYMMETRIC_SETTING
            self.choice = "auto: symmetric setting until the noise structure is probed"
            self.probe_epoch = max(1, round(PROBE_AT * ctx.epochs)) if ctx.epochs > 1 else None
        if self.user_beta is not None:
            self.beta = self.user_beta
        if self.user_lam is not None:
            self.lam = self.user_lam

    def loss(self, batch: Batch, progress: float) -> torch.Tensor:
        logits = self.nets[0](batch.images).float()
        return elr_loss(logits, batch.labels, self.targets, batch.indices, beta=self.beta, lam=self.lam)

    def on_epoch_end(self, epoch: int, ctx: "TrainContext") -> None:
        if epoch != self.probe_epoch:
            return
        from ..core.transition import transition_from_confident_joint

        probs = ctx.predict_train()
        transition = transition_from_confident_joint(ctx.labels, probs, n_classes=ctx.n_classes)
        concentration = noise_concentration(transition)
        threshold = concentration_threshold(ctx.n_classes)
        asymmetric = ctx.n_classes > 2 and concentration > threshold
        beta, lam = ASYMMETRIC_SETTING if asymmetric else SYMMETRIC_SETTING
        self.beta = self.user_beta if self.user_beta is not None else beta
        self.lam = self.user_lam if self.user_lam is not None else lam
        kind = "class-dependent (asymmetric)" if asymmetric else "symmetric"
        self.choice = (
            f"auto: noise looks {kind} after epoch {epoch} "
            f"(concentration {concentration:.2f}, threshold {threshold:.2f})"
        )

    def settings(self) -> dict[str, Any]:
        return {"elr_beta": self.beta, "elr_lambda": self.lam, "elr_setting": self.choice}

    def state_dict(self) -> dict[str, Any]:
        """Networks, the (N, K) targets, and the (β, λ) chosen so far with the epoch of the noise probe."""
        return {**super().state_dict(), "targets": self.targets, "beta": self.beta, "lam": self.lam,
                "choice": self.choice, "probe_epoch": self.probe_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.targets = state["targets"].to(self.network_device(), copy=True)
        self.beta, self.lam = float(state["beta"]), float(state["lam"])
        self.choice, self.probe_epoch = str(state["choice"]), state["probe_epoch"]

    def per_sample_buffers(self) -> list[torch.Tensor]:
        return [self.targets]

    def training_probs(self) -> np.ndarray:
        """(N, K) the running-average targets, renormalised: ELR's non-memorised view of each sample."""
        targets = self.targets.detach().float().cpu().numpy()
        totals = targets.sum(axis=1, keepdims=True)
        return np.divide(targets, totals, out=np.full_like(targets, 1.0 / targets.shape[1]), where=totals > 0)
