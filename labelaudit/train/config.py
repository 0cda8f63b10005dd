"""Training settings, kept free of torch imports so the command line starts fast."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

DEFAULT_MODEL = "resnet10t"
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
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    device: str = "auto"
    flip: bool = True
    crop_padding: int | None = None  # None: image_size // 8
    compile: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def epochs_for(self, n_samples: int) -> int:
        """The number of epochs to train ``n_samples`` rows for (``epochs`` if set, else automatic)."""
        if self.epochs:
            return self.epochs
        steps_per_epoch = max(1, n_samples // max(1, min(self.batch_size, n_samples)))
        return int(min(MAX_AUTO_EPOCHS, max(MIN_AUTO_EPOCHS, math.ceil(AUTO_STEPS / steps_per_epoch))))
