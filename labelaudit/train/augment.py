"""Batched augmentation and normalisation on tensors (on whichever device the batch is on)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def normalise(images_uint8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> (B, 3, H, W) float32, scaled to [0, 1] then standardised per channel."""
    return (images_uint8.float().div_(255.0) - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


def random_crop_flip(
    images: torch.Tensor, *, padding: int, flip: bool, generator: torch.Generator
) -> torch.Tensor:
    """Random crop after zero padding by ``padding`` pixels, then a random horizontal flip.

    images: (B, C, H, W); returns the same shape. The random numbers come from ``generator``
    (a CPU generator) so a seeded run is reproducible whatever the device.
    """
    batch, _, height, width = images.shape
    if padding > 0:
        padded = F.pad(images, (padding, padding, padding, padding))
        top = torch.randint(0, 2 * padding + 1, (batch,), generator=generator).to(images.device)
        left = torch.randint(0, 2 * padding + 1, (batch,), generator=generator).to(images.device)
        rows = (top[:, None] + torch.arange(height, device=images.device)[None, :])  # (B, H)
        cols = (left[:, None] + torch.arange(width, device=images.device)[None, :])  # (B, W)
        batch_index = torch.arange(batch, device=images.device)[:, None, None, None]
        channel_index = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
        images = padded[batch_index, channel_index, rows[:, None, :, None], cols[:, None, None, :]]
    if flip:
        flipped = torch.rand(batch, generator=generator).to(images.device) < 0.5
        images = torch.where(flipped[:, None, None, None], images.flip(3), images)
    return images
