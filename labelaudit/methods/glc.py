"""Gold Loss Correction (Hendrycks et al., NeurIPS 2018), step 3.

With Ĉ[i, j] ≈ P(noisy j | true i) estimated from trusted rows (steps 1–2, :mod:`labelaudit.gold`),
a fresh network is trained on trusted and untrusted rows in shared batches: trusted rows with plain
cross-entropy on their expert label, untrusted rows through the noise channel, ``−log((Ĉᵀp)_ỹ)``,
so p learns the clean class while Ĉᵀp explains the noisy labels. Prediction uses p.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import LabelAuditError
from .base import Batch, TrainingMethod
from .registry import register

if TYPE_CHECKING:  # pragma: no cover
    from ..train.loop import TrainContext

# Ĉ entries are floored here before the log: a zero column would make the loss infinite.
LOG_FLOOR = 1e-12


class CorruptionMatrix(torch.nn.Module):
    """Holds Ĉ (K, K) as a buffer, so it is saved in the model's state and loaded back with it."""

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.register_buffer("matrix", torch.eye(n_classes))


def corrected_loss(logits: torch.Tensor, labels: torch.Tensor, trusted: torch.Tensor,
                   corruption: torch.Tensor) -> torch.Tensor:
    """Mean GLC loss of one batch.

    logits: (B, K); labels: (B,) int64 (the expert label on trusted rows, the given label elsewhere);
    trusted: (B,) bool; corruption: (K, K) Ĉ, rows = true class. Trusted rows: ``CE(p, y)``;
    untrusted rows: ``−log(Σ_i p_i Ĉ[i, ỹ])``, computed in log space.
    """
    log_probs = F.log_softmax(logits.float(), dim=1)
    trusted_term = -log_probs.gather(1, labels[:, None])[:, 0]
    log_channel = torch.log(corruption.float().clamp_min(LOG_FLOOR))  # (K, K)
    untrusted_term = -torch.logsumexp(log_probs + log_channel[:, labels].T, dim=1)
    return torch.where(trusted, trusted_term, untrusted_term).mean()


@register
class GoldLossCorrection(TrainingMethod):
    """``corruption``: Ĉ (K, K), rows = true class. None: estimated in ``prepare`` from the trusted
    rows of the training set (a CE model on the untrusted rows, averaged over the trusted ones)."""

    name = "glc"

    def __init__(self, corruption: Any = None) -> None:
        super().__init__()
        self.corruption = None if corruption is None else _check_corruption(corruption)
        self.source = "given" if corruption is not None else "estimated from trusted rows"

    def build_networks(self, create_network: Callable[[], torch.nn.Module], n_classes: int | None = None) -> None:
        """The backbone and Ĉ; ``n_classes`` None (older callers): read from the backbone."""
        network = create_network()
        if n_classes is None:
            n_classes = _output_classes(network)
        holder = CorruptionMatrix(n_classes)
        if self.corruption is not None:
            if self.corruption.shape != (n_classes, n_classes):
                raise LabelAuditError(f"the GLC corruption matrix is {self.corruption.shape[0]}×"
                                      f"{self.corruption.shape[1]} but the model has {n_classes} classes")
            holder.matrix.copy_(torch.as_tensor(self.corruption, dtype=torch.float32))
        parameter = next(network.parameters(), None)
        self.nets = torch.nn.ModuleList([network, holder.to(parameter.device if parameter is not None else "cpu")])

    def prepare(self, ctx: "TrainContext") -> None:
        if self.corruption is None:
            self.corruption = self._estimate_corruption(ctx)
        self.build_networks(ctx.create_network, n_classes=ctx.n_classes)

    def _estimate_corruption(self, ctx: "TrainContext") -> np.ndarray:
        from ..core.transition import glc_transition
        from ..train.loop import predict_proba
        from .registry import create_method

        trusted = np.asarray(ctx.trusted, bool)
        if not trusted.any():
            raise LabelAuditError("GLC needs trusted rows (e.g. --trusted gold.csv) or a given corruption matrix")
        if (~trusted).sum() < 2:
            raise LabelAuditError("GLC needs untrusted rows too: every training row is trusted")
        first = ctx.fit(create_method("ce"), rows=~trusted, description="GLC: cross-entropy on untrusted rows")
        probs = predict_proba(first.method, ctx.images[trusted], ctx.config, accelerator=ctx.accelerator)
        matrix, _ = glc_transition(ctx.labels[trusted], probs, n_classes=ctx.n_classes)
        return matrix

    def corruption_matrix(self) -> torch.Tensor:
        """Ĉ (K, K) as used by the loss (and as saved with the model)."""
        return self.nets[1].matrix

    def loss(self, batch: Batch, progress: float) -> torch.Tensor:
        logits = self.nets[0](batch.images)
        return corrected_loss(logits, batch.labels, batch.trusted, self.corruption_matrix())

    def settings(self) -> dict[str, Any]:
        matrix = self.corruption if self.corruption is not None else None
        if matrix is None and len(self.nets) > 1:
            matrix = self.corruption_matrix().detach().cpu().numpy()
        return {"glc_corruption": None if matrix is None else np.round(matrix, 6).tolist(),
                "glc_corruption_source": self.source}


def _check_corruption(corruption: Any) -> np.ndarray:
    matrix = np.asarray(corruption, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 2:
        raise LabelAuditError(f"the GLC corruption matrix must be K×K with K ≥ 2, got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)) or np.any(matrix < 0) or not np.allclose(matrix.sum(axis=1), 1.0, atol=1e-3):
        raise LabelAuditError("the GLC corruption matrix must have non-negative rows that sum to 1")
    return matrix


def _output_classes(network: torch.nn.Module) -> int:
    """Number of outputs of a timm classifier (used when loading a saved model)."""
    n_classes = getattr(network, "num_classes", None)
    if isinstance(n_classes, int) and n_classes > 0:
        return n_classes
    raise LabelAuditError("cannot tell how many classes the GLC model has; pass n_classes to build_networks")
