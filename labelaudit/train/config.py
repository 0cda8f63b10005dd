"""Training settings, kept free of torch imports so the command line starts fast."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from ..errors import LabelAuditError

DEFAULT_MODEL = "resnet10t"
DEFAULT_BATCH_SIZE = 32
#: ``--batch-size auto`` never chooses more than this per process
AUTO_BATCH_CAP = 1024
#: ``--batch-size auto``: on CUDA the largest batch that fits (probed), elsewhere DEFAULT_BATCH_SIZE
AUTO_BATCH_SIZE = "auto"
#: With ``--epochs`` unset, train for about this many optimiser steps, in 10 to 200 epochs: a small
#: dataset needs many passes to be learned, a large one few.
AUTO_STEPS = 800
MIN_AUTO_EPOCHS, MAX_AUTO_EPOCHS = 10, 200


@dataclass
class TrainConfig:
    """Every setting of a training run; saved beside the weights as config.json."""

    model: str = DEFAULT_MODEL
    pretrained: bool = False
    weights: str | None = None
    image_size: int = 32
    epochs: int | None = None  # None: enough epochs for about AUTO_STEPS optimiser steps
    batch_size: int | str = DEFAULT_BATCH_SIZE  # an int >= 2, or "auto" (fit() trains with a resolved copy)
    batch_size_choice: str | None = None  # how batch_size was chosen, in the copy fit() trained with
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    device: str = "auto"
    flip: bool = True
    crop_padding: int | None = None  # None: image_size // 8
    compile: bool = False

    def __post_init__(self) -> None:
        self.batch_size = parse_batch_size(self.batch_size)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def auto_batch_size(self) -> bool:
        """True while ``--batch-size auto`` waits to be resolved by the training loop."""
        return self.batch_size == AUTO_BATCH_SIZE

    def with_batch_size(self, batch_size: int, choice: str) -> "TrainConfig":
        """A copy that trains with ``batch_size``, recording how it was chosen (``fit`` returns it as
        ``FitResult.config``: what callers save, and what later fits pass to skip probing again)."""
        return replace(self, batch_size=parse_batch_size(batch_size), batch_size_choice=choice)

    def epochs_for(self, n_samples: int) -> int:
        """The number of epochs to train ``n_samples`` rows for (``epochs`` if set, else automatic)."""
        if self.epochs:
            return self.epochs
        # An unresolved "auto" counts as the default: it is what CPU runs use.
        batch_size = DEFAULT_BATCH_SIZE if self.auto_batch_size else int(self.batch_size)
        steps_per_epoch = max(1, n_samples // max(1, min(batch_size, n_samples)))
        return int(min(MAX_AUTO_EPOCHS, max(MIN_AUTO_EPOCHS, math.ceil(AUTO_STEPS / steps_per_epoch))))


def parse_batch_size(value: int | str) -> int | str:
    """``--batch-size``: an integer of at least 2 (a batch of one breaks BatchNorm), or ``"auto"``."""
    text = str(value).strip().lower()
    if text == AUTO_BATCH_SIZE:
        return AUTO_BATCH_SIZE
    number = int(text) if text.isascii() and text.isdigit() else 0
    if number < 2:
        raise LabelAuditError(f"batch size must be an integer of at least 2 or 'auto', not {value!r}")
    return number
