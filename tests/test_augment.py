"""Batched crop-and-flip augmentation on uint8 tensors, checked against a plain numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from labelaudit.train.augment import mean_colour, normalise, random_crop_flip

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406])
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225])


def random_batch(seed: int, shape=(6, 3, 8, 8)) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8))


def reference_crop_flip(images: np.ndarray, padding: int, fill: np.ndarray, seed: int) -> np.ndarray:
    """The same draws from a generator seeded alike, applied image by image with numpy."""
    generator = torch.Generator().manual_seed(seed)
    batch, channels, height, width = images.shape
    top = torch.randint(0, 2 * padding + 1, (batch,), generator=generator).numpy()
    left = torch.randint(0, 2 * padding + 1, (batch,), generator=generator).numpy()
    flipped = (torch.rand(batch, generator=generator) < 0.5).numpy()
    out = np.empty_like(images)
    for i in range(batch):
        padded = np.empty((channels, height + 2 * padding, width + 2 * padding), images.dtype)
        padded[:] = fill[:, None, None]
        padded[:, padding:padding + height, padding:padding + width] = images[i]
        window = padded[:, top[i]:top[i] + height, left[i]:left[i] + width]
        out[i] = window[:, :, ::-1] if flipped[i] else window
    return out


@pytest.mark.parametrize("padding", [1, 2, 4])
def test_crop_and_flip_of_a_uint8_batch_match_the_numpy_reference(padding):
    images = random_batch(padding)
    fill = np.array([124, 116, 104], np.uint8)
    augmented = random_crop_flip(images, padding=padding, flip=True, generator=torch.Generator().manual_seed(5),
                                 fill=torch.from_numpy(fill))
    assert augmented.dtype == torch.uint8 and augmented.shape == images.shape
    np.testing.assert_array_equal(augmented.numpy(), reference_crop_flip(images.numpy(), padding, fill, seed=5))


def test_a_large_padding_shows_the_fill_colour_and_no_padding_or_flip_is_the_identity():
    images = random_batch(1, (32, 3, 4, 4))
    fill = torch.tensor([7, 8, 9], dtype=torch.uint8)
    augmented = random_crop_flip(images, padding=4, flip=False, generator=torch.Generator().manual_seed(0), fill=fill)
    shifted = augmented.permute(0, 2, 3, 1).reshape(-1, 3)
    assert (shifted == fill).all(dim=1).any()  # some crops moved fill pixels into view
    unchanged = random_crop_flip(images, padding=0, flip=False, generator=torch.Generator().manual_seed(0))
    assert torch.equal(unchanged, images)


def test_flip_mirrors_about_half_of_the_images_horizontally():
    images = random_batch(2, (200, 3, 5, 5))
    augmented = random_crop_flip(images, padding=0, flip=True, generator=torch.Generator().manual_seed(3))
    mirrored = np.array([torch.equal(a, i.flip(2)) for a, i in zip(augmented, images)])
    kept = np.array([torch.equal(a, i) for a, i in zip(augmented, images)])
    assert (mirrored | kept).all()
    assert 70 <= mirrored.sum() <= 130


def test_padding_uint8_with_the_mean_colour_is_padding_the_normalised_batch_with_zero():
    """Why the loop may augment before normalising: the padding lands within rounding of what it was."""
    images = random_batch(4)
    fill = mean_colour(IMAGENET_MEAN)
    before = random_crop_flip(images, padding=2, flip=True, generator=torch.Generator().manual_seed(9), fill=fill)
    after = random_crop_flip(normalise(images, IMAGENET_MEAN, IMAGENET_STD), padding=2, flip=True,
                             generator=torch.Generator().manual_seed(9))
    difference = (normalise(before, IMAGENET_MEAN, IMAGENET_STD) - after).abs()
    assert difference.max() <= 0.5 / 255 / IMAGENET_STD.min() + 1e-6  # half a grey level, at padded pixels only
    assert (difference > 1e-6).any()  # the check would pass vacuously if no crop moved padding into view
