"""What every training method provides to the one training loop (``labelaudit.train.loop``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # pragma: no cover
    from ..train.loop import TrainContext


@dataclass
class Batch:
    """One training batch on the training device.

    images: (B, 3, H, W) float, normalised and augmented; labels: (B,) int64 given labels;
    indices: (B,) int64 positions of the rows in the training set (ELR keeps per-sample state by them);
    trusted: (B,) bool, rows whose label an expert confirmed (GLC), else all False.
    """

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    trusted: torch.Tensor


class TrainingMethod:
    """A noise-robust training method.

    The loop calls, in order: ``prepare(ctx)`` once (methods that need a first model, such as forward
    correction, train it here with ``ctx.fit``), ``networks()`` to build the optimiser, then per step
    ``loss(batch, progress)`` and ``after_step(progress)``, and ``on_epoch_end(epoch, ctx)``.
    ``predict_logits`` is what scoring and saved models use. A saved model is the state of
    ``networks()`` plus ``settings()``; loading calls ``build_networks`` and restores the state.

    Resuming an interrupted run calls ``build_networks`` and ``load_state_dict`` *instead of*
    ``prepare`` (a first-stage model is not trained again), so ``state_dict`` must hold everything
    ``prepare`` and training set up besides the networks (ELR's targets and chosen (β, λ), …).
    """

    name: ClassVar[str]

    def __init__(self) -> None:
        self.nets: torch.nn.ModuleList = torch.nn.ModuleList()

    def build_networks(self, create_network: Callable[[], torch.nn.Module], n_classes: int) -> None:
        """Create every module whose weights are saved with the model (also used when loading one).

        ``create_network()`` gives a fresh backbone with ``n_classes`` outputs; methods with extra
        saved state of a size set by K (a transition matrix, a noise channel) build it here too.
        """
        self.nets = torch.nn.ModuleList([create_network()])

    def prepare(self, ctx: "TrainContext") -> None:
        self.build_networks(ctx.create_network, ctx.n_classes)

    def networks(self) -> torch.nn.ModuleList:
        return self.nets

    def trainable_parameters(self) -> list[torch.nn.Parameter] | list[dict[str, Any]]:
        """What the optimiser updates: parameters, or torch parameter groups (dicts) when some need
        other settings (e.g. no weight decay on a noise channel)."""
        return [p for p in self.nets.parameters() if p.requires_grad]

    def loss(self, batch: Batch, progress: float) -> torch.Tensor:
        raise NotImplementedError

    def after_step(self, progress: float) -> None:
        """Called after each optimiser step (EMA updates go here)."""

    def on_epoch_end(self, epoch: int, ctx: "TrainContext") -> None:
        """Called after each epoch; ``ctx.predict_train()`` gives current probabilities."""

    def predict_logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, K) logits of the clean class, networks in eval mode."""
        return self.nets[0](images)

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        return float64_softmax(self.predict_logits(images))

    def training_probs(self) -> np.ndarray | None:
        """(N, K) class probabilities the method itself keeps for its training rows (ELR's targets),
        used to score those rows instead of a forward pass; None when it keeps none."""
        return None

    def per_sample_buffers(self) -> list[torch.Tensor]:
        """(N, …) tensors indexed by training row that ``loss`` updates at the batch's rows only
        (ELR's targets). Data-parallel training gathers each process's updated rows every epoch."""
        return []

    def settings(self) -> dict[str, Any]:
        """Hyper-parameters actually used, for config.json and summary.json."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training from here: the networks' weights and buffers, plus
        (in subclasses) method state. Values are tensors, numbers, strings, None, lists and dicts only,
        so a checkpoint loads with ``torch.load(weights_only=True)``."""
        return {"networks": self.nets.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict()`` into networks already made by ``build_networks``."""
        self.nets.load_state_dict(state["networks"])

    def network_device(self) -> torch.device:
        """Where the networks are (CPU before any are built)."""
        parameter = next(self.nets.parameters(), None)
        return parameter.device if parameter is not None else torch.device("cpu")


def float64_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Softmax in float64, outside autocast: in float32 a confident prediction rounds to exactly 0 or 1,
    and the ties that makes would spoil the ranking of suspects."""
    with torch.autocast(device_type=logits.device.type, enabled=False):
        return F.softmax(logits.double(), dim=1)
