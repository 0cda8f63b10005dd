"""Plain cross-entropy: the baseline every noise-robust method is compared with."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Batch, TrainingMethod
from .registry import register


@register
class CrossEntropy(TrainingMethod):
    name = "ce"

    def loss(self, batch: Batch, progress: float) -> torch.Tensor:
        return F.cross_entropy(self.nets[0](batch.images).float(), batch.labels)
