"""Batched augmentation and normalisation on tensors (on whichever device the batch is on).

The training loop crops and flips the uint8 batch, then normalises it to float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def normalise(images_uint8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> (B, 3, H, W) float32, scaled to [0, 1] then standardised per channel."""
    return (images_uint8.float().div_(255.0) - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


def random_crop_flip(
    images: torch.Tensor, *, padding: int, flip: bool, generator: torch.Generator,
    fill: torch.Tensor | None = None,
) -> torch.Tensor:
    """Random crop after padding by ``padding`` pixels, then a random horizontal flip.

    images: (B, C, H, W) of any dtype, typically uint8 before normalisation (a quarter of the memory
    traffic of float32); returns the same shape and dtype. fill: (C,) value of the padding in each
    channel (default 0). The random numbers come from ``generator`` (a CPU generator) so a seeded run
    is reproducible whatever the device.
    """
    batch, channels, height, width = images.shape
    if padding > 0:
        fill_values = (fill if fill is not None else torch.zeros(channels)).to(images).view(1, channels, 1, 1)
        padded = fill_values.expand(batch, channels, height + 2 * padding, width + 2 * padding).clone()
        padded[:, :, padding:padding + height, padding:padding + width] = images
        top = torch.randint(0, 2 * padding + 1, (batch,), generator=generator).to(images.device)
        left = torch.randint(0, 2 * padding + 1, (batch,), generator=generator).to(images.device)
        rows = (top[:, None] + torch.arange(height, device=images.device)[None, :])  # (B, H)
        cols = (left[:, None] + torch.arange(width, device=images.device)[None, :])  # (B, W)
        batch_index = torch.arange(batch, device=images.device)[:, None, None, None]
        channel_index = torch.arange(channels, device=images.device)[None, :, None, None]
        images = padded[batch_index, channel_index, rows[:, None, :, None], cols[:, None, None, :]]
    if flip:
        flipped = torch.rand(batch, generator=generator).to(images.device) < 0.5
        images = torch.where(flipped[:, None, None, None], images.flip(3), images)
    return images


def mean_colour(mean: torch.Tensor) -> torch.Tensor:
    """(3,) per-channel mean in [0, 1] -> (3,) uint8 colour: padding with it gives about 0 after
    :func:`normalise`, as zero-padding a normalised batch did."""
    return torch.round(mean * 255.0).clamp(0, 255).to(torch.uint8)
