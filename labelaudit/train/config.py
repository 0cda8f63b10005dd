"""Training settings, kept free of torch imports so the command line starts fast."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from ..errors import LabelAuditError

DEFAULT_MODEL = "resnet10t"
#: Chosen by measurement on 2 CPU cores (docs/performance.md, "Default batch size"): 128 images per step at
#: lr 0.2 train the same images as 32 at 0.05 (the linear scaling rule) faster, with equal detection quality.
DEFAULT_BATCH_SIZE = 128
DEFAULT_LR = 0.2
#: ``--batch-size auto`` never chooses more than this per process
AUTO_BATCH_CAP = 1024
#: ``--batch-size auto``: on CUDA the largest batch that fits (probed), elsewhere DEFAULT_BATCH_SIZE
AUTO_BATCH_SIZE = "auto"
#: With ``--epochs`` unset, train on about this many images (rows × epochs), in 10 to 200 epochs: a small
#: dataset needs many passes, a large one few. A budget of images, not of steps, so that a larger batch
#: trains as much, not more.
AUTO_IMAGES = 25_600
#: ... and for at least this many optimiser steps, which a GPU's large batches would otherwise not reach
MIN_AUTO_STEPS = 100
MIN_AUTO_EPOCHS, MAX_AUTO_EPOCHS = 10, 200


def auto_epochs(n_samples: int, batch_size: int, *, images: int = AUTO_IMAGES, min_steps: int = MIN_AUTO_STEPS) -> int:
    """Epochs that train on about ``images`` images and take at least ``min_steps`` optimiser steps of
    ``batch_size`` rows (the loop drops a ragged last batch), within MIN_AUTO_EPOCHS..MAX_AUTO_EPOCHS."""
    n_samples = max(1, n_samples)
    steps_per_epoch = max(1, n_samples // max(1, min(batch_size, n_samples)))
    epochs = max(math.ceil(images / n_samples), math.ceil(min_steps / steps_per_epoch))
    return int(min(MAX_AUTO_EPOCHS, max(MIN_AUTO_EPOCHS, epochs)))


@dataclass
class TrainConfig:
    """Every setting of a training run; saved beside the weights as config.json."""

    model: str = DEFAULT_MODEL
    pretrained: bool = False
    weights: str | None = None
    image_size: int = 32
    epochs: int | None = None  # None: auto_epochs (about AUTO_IMAGES images)
    batch_size: int | str = DEFAULT_BATCH_SIZE  # an int >= 2, or "auto" (fit() trains with a resolved copy)
    batch_size_choice: str | None = None  # how batch_size was chosen, in the copy fit() trained with
    lr: float | None = None  # None: DEFAULT_LR for a network (HEAD_LR for --freeze-backbone's linear head)
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

    def with_default_lr(self, default: float) -> "TrainConfig":
        """This config, or a copy with ``lr`` = ``default`` when no learning rate was given."""
        return self if self.lr is not None else replace(self, lr=default)

    def epochs_for(self, n_samples: int) -> int:
        """The number of epochs to train ``n_samples`` rows for (``epochs`` if set, else automatic)."""
        if self.epochs:
            return self.epochs
        # An unresolved "auto" counts as the default: it is what CPU runs use.
        return auto_epochs(n_samples, DEFAULT_BATCH_SIZE if self.auto_batch_size else int(self.batch_size))


def parse_batch_size(value: int | str) -> int | str:
    """``--batch-size``: an integer of at least 2 (a batch of one breaks BatchNorm), or ``"auto"``."""
    text = str(value).strip().lower()
    if text == AUTO_BATCH_SIZE:
        return AUTO_BATCH_SIZE
    number = int(text) if text.isascii() and text.isdigit() else 0
    if number < 2:
        raise LabelAuditError(f"batch size must be an integer of at least 2 or 'auto', not {value!r}")
    return number
