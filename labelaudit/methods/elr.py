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
#: share of the epochs after which ``auto`` looks at the noise structure and picks (β, λ) ...
PROBE_AT = 0.2
#: ... or, when that first look is not conclusive, looks again
REPROBE_AT = 0.4


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
        self.reprobe_epoch: int | None = None  # a second look, when the first is not conclusive
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
            later = round(REPROBE_AT * ctx.epochs)
            usable = self.probe_epoch is not None and self.probe_epoch < later < ctx.epochs
            self.reprobe_epoch = later if usable else None
        if self.user_beta is not None:
            self.beta = self.user_beta
        if self.user_lam is not None:
            self.lam = self.user_lam

    def loss(self, batch: Batch, progress: float) -> torch.Tensor:
        logits = self.nets[0](batch.images).float()
        return elr_loss(logits, batch.labels, self.targets, batch.indices, beta=self.beta, lam=self.lam)

    def on_epoch_end(self, epoch: int, ctx: "TrainContext") -> None:
        """At the probe epoch, pick (β, λ) from the noise structure of the model's predictions on the
        training images: :func:`~labelaudit.core.noise_structure.noise_structure` of their confident-joint
        counts. Concentrated noise (each class's noise going mostly to one other class, beyond what
        symmetric noise gives at the same counts, by a clear margin) gets the asymmetric setting, anything
        else the symmetric one. A first look that is not conclusive
        (:func:`~labelaudit.core.noise_structure.settled_early`) keeps the symmetric setting and looks
        again at ``REPROBE_AT`` of the epochs, which decides."""
        apply_noise_probe(self, epoch, ctx)

    def settings(self) -> dict[str, Any]:
        return {"elr_beta": self.beta, "elr_lambda": self.lam, "elr_setting": self.choice}

    def state_dict(self) -> dict[str, Any]:
        """Networks, the (N, K) targets, and the (β, λ) chosen so far with the epoch of the noise probe."""
        return {**super().state_dict(), "targets": self.targets, "beta": self.beta, "lam": self.lam,
                "choice": self.choice, "probe_epoch": self.probe_epoch, "reprobe_epoch": self.reprobe_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.targets = state["targets"].to(self.network_device(), copy=True)
        self.beta, self.lam = float(state["beta"]), float(state["lam"])
        self.choice, self.probe_epoch = str(state["choice"]), state["probe_epoch"]
        self.reprobe_epoch = state.get("reprobe_epoch")  # absent from checkpoints of earlier versions

    def per_sample_buffers(self) -> list[torch.Tensor]:
        return [self.targets]

    def training_probs(self) -> np.ndarray:
        """(N, K) the running-average targets, renormalised: ELR's non-memorised view of each sample."""
        targets = self.targets.detach().float().cpu().numpy()
        totals = targets.sum(axis=1, keepdims=True)
        return np.divide(targets, totals, out=np.full_like(targets, 1.0 / targets.shape[1]), where=totals > 0)


def apply_noise_probe(method: Any, epoch: int, ctx: "TrainContext") -> None:
    """The probe of ``elr`` and ``elr+`` (see ``ELR.on_epoch_end``): at ``method.probe_epoch``, set
    ``method.beta``/``method.lam`` (unless the user gave them) and ``method.choice`` from the noise structure
    of ``ctx.predict_train()``, or move the probe to ``method.reprobe_epoch`` when the first look is unclear."""
    if epoch != method.probe_epoch:
        return
    from ..core.noise_structure import confident_counts, noise_structure, settled_early

    structure = noise_structure(confident_counts(ctx.labels, ctx.predict_train()))
    if method.reprobe_epoch is not None and epoch < method.reprobe_epoch and not settled_early(structure):
        method.choice = (f"auto: symmetric setting so far; the noise structure was unclear after epoch {epoch} "
                         f"({structure.reason}); looking again at epoch {method.reprobe_epoch}")
        method.probe_epoch = method.reprobe_epoch
        return
    beta, lam = ASYMMETRIC_SETTING if structure.concentrated else SYMMETRIC_SETTING
    method.beta = method.user_beta if method.user_beta is not None else beta
    method.lam = method.user_lam if method.user_lam is not None else lam
    kind = "class-dependent (asymmetric)" if structure.concentrated else "symmetric"
    method.choice = f"auto: noise looks {kind} after epoch {epoch}: {structure.reason}"
