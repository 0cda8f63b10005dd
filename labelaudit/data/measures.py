"""Raw image-quality measures, taken while an image is decoded (no second pass over the files).

Every measure is taken on the decoded, upright picture's grey version squashed to ``WORK_SIZE x
WORK_SIZE`` (32, the same plain resize as the training pixels; colour on a 16 x 16 thumbnail), so it
does not depend on the training image size and costs the same (about 0.2 ms) for a 28-pixel scan and a
24-megapixel photo. The decision which values are
defects is taken later, against the dataset's own distribution (:mod:`labelaudit.core.quality`).

=================  ==========================================================================
``brightness``     mean grey level, 0 (black) .. 1 (white)
``brightness_p99`` the grey level 1% of the pixels are brighter than: low when even the
                   brightest part of the picture is dark (``dark``)
``brightness_p05`` the grey level 5% of the pixels are darker than: high when even the darkest
                   part is bright (``bright``, over-exposed)
``sharpness``      standard deviation of the grey picture's 4-neighbour Laplacian divided by the
                   grey picture's own standard deviation: how much of the picture's contrast is in
                   fine detail. Dividing by the contrast keeps a darkened (or faded) picture as
                   sharp as its original; a blurred one loses the fine detail (``blurry``)
``entropy``        Shannon entropy of the 256-level grey histogram in bits, 0 .. 8 (``low_information``)
``colourfulness``  Hasler and Süsstrunk's colourfulness of the RGB picture / 255: 0 for a grey
                   picture (``grayscale``)
``width``,         of the original picture as it is shown (EXIF orientation applied), in pixels
``height``         (``odd_aspect``, ``odd_size``)
=================  ==========================================================================
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: Bump whenever the measures change: the decode cache (labelaudit.data.cache) discards entries made
#: under another version.
MEASURES_VERSION = 2
#: side of the square every measure is taken at
WORK_SIZE = 32
COLOUR_SIZE = 16  # colour thumbnail side
_LEVELS = np.arange(256, dtype=np.float64)
MEASURE_NAMES = ("brightness", "brightness_p99", "brightness_p05", "sharpness", "entropy", "colourfulness",
                 "width", "height")
N_MEASURES = len(MEASURE_NAMES)
_RESIZE_FILTER = Image.Resampling.BILINEAR


def measure_inputs(rgb: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """What the measures are computed from, taken from one decoded picture (cheap Pillow work, done by the
    decode workers): its grey version at ``WORK_SIZE`` and a ``COLOUR_SIZE`` colour thumbnail.

    Returns ``(WORK_SIZE, WORK_SIZE)`` uint8 and ``(COLOUR_SIZE, COLOUR_SIZE, 3)`` uint8.
    """
    grey = rgb.convert("L").resize((WORK_SIZE, WORK_SIZE), _RESIZE_FILTER, reducing_gap=3.0)
    colour = rgb.resize((COLOUR_SIZE, COLOUR_SIZE), _RESIZE_FILTER, reducing_gap=3.0)
    return np.asarray(grey, dtype=np.uint8), np.asarray(colour, dtype=np.uint8)


def measures_from(grey: np.ndarray, colour: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The raw measures of B pictures at once (vectorised: the per-picture cost is Pillow's, not numpy's).

    Parameters
    ----------
    grey
        ``(B, WORK_SIZE, WORK_SIZE)`` uint8 grey pictures (:func:`measure_inputs`).
    colour
        ``(B, c, c, 3)`` uint8 colour thumbnails.
    sizes
        ``(B, 2)`` original ``(width, height)`` as shown.

    Returns
    -------
    numpy.ndarray
        ``(B, N_MEASURES)`` float32 in the order of ``MEASURE_NAMES``.
    """
    n_pictures = len(grey)
    out = np.empty((n_pictures, N_MEASURES), dtype=np.float32)
    if n_pictures == 0:
        return out
    flat = grey.reshape(n_pictures, -1).astype(np.int64)
    n_pixels = flat.shape[1]
    histograms = np.bincount((flat + 256 * np.arange(n_pictures)[:, None]).ravel(),
                             minlength=256 * n_pictures).reshape(n_pictures, 256)
    shares = histograms / n_pixels
    cumulative = np.cumsum(histograms, axis=1)
    p99 = (cumulative < 0.99 * n_pixels).sum(axis=1)  # first level whose cumulative count reaches 99%
    p05 = (cumulative < 0.05 * n_pixels).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(shares > 0, shares * np.log2(shares), 0.0).sum(axis=1)
    mean = shares @ _LEVELS
    contrast = np.sqrt(np.maximum((shares * np.square(_LEVELS[None, :] - mean[:, None])).sum(axis=1), 0.0))

    g = grey.astype(np.float32)
    laplacian = 4.0 * g[:, 1:-1, 1:-1] - g[:, :-2, 1:-1] - g[:, 2:, 1:-1] - g[:, 1:-1, :-2] - g[:, 1:-1, 2:]
    spread = laplacian.reshape(n_pictures, -1).std(axis=1)
    sharpness = np.where(contrast >= 1.0, spread / np.maximum(contrast, 1.0), 0.0)

    c = colour.reshape(n_pictures, -1, 3).astype(np.float32)
    rg = c[:, :, 0] - c[:, :, 1]
    yb = 0.5 * (c[:, :, 0] + c[:, :, 1]) - c[:, :, 2]
    colourfulness = (np.hypot(rg.std(axis=1), yb.std(axis=1)) + 0.3 * np.hypot(rg.mean(axis=1), yb.mean(axis=1)))

    out[:, 0] = mean / 255.0
    out[:, 1] = p99 / 255.0
    out[:, 2] = p05 / 255.0
    out[:, 3] = sharpness
    out[:, 4] = entropy
    out[:, 5] = colourfulness / 255.0
    out[:, 6:8] = sizes
    return out


def image_measures(rgb: Image.Image, original_size: tuple[int, int]) -> np.ndarray:
    """The raw measures of one decoded picture: ``(N_MEASURES,)`` float32 (see :func:`measures_from`).

    ``rgb``: the upright RGB picture (possibly decoded at a reduced JPEG scale); ``original_size``:
    ``(width, height)`` of the original as shown.
    """
    grey, colour = measure_inputs(rgb)
    return measures_from(grey[None], colour[None], np.array([original_size], dtype=np.float32))[0]


def empty_measures(n_rows: int) -> np.ndarray:
    """``(n_rows, N_MEASURES)`` float32 of NaN: the measures of images not (yet) decoded."""
    return np.full((n_rows, N_MEASURES), np.nan, dtype=np.float32)


#: side of the grey thumbnails compared for near duplicates and outliers
PERCEPTUAL_SIDE = 16
_GREY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_PERCEPTUAL_BLOCK = 4096


def perceptual_vectors(images: np.ndarray, side: int = PERCEPTUAL_SIDE, *, zoom: float = 1.0) -> np.ndarray:
    """Grey ``side x side`` thumbnails of decoded images, each minus its own mean, as vectors.

    Their cosine similarity is close to 1 for two files of the same picture (a JPEG re-encode, a
    resized copy) and lower for different pictures of the same kind; subtracting the mean keeps a
    uniformly brighter copy similar and keeps plain backgrounds from making every pair similar.

    Parameters
    ----------
    images
        ``(N, S, S, 3)`` uint8 decoded images (e.g. a memory map of the decode cache; read in blocks).
    side
        Thumbnail side; S must be a multiple of it or the thumbnails are made with Pillow's bilinear
        resize.
    zoom
        Share of the picture's width and height the thumbnail shows, centred: below 1, a thumbnail of the
        middle of the picture, as a copy cropped by (1 - zoom) / 2 on each side would show it whole.

    Returns
    -------
    numpy.ndarray
        ``(N, side * side)`` float32.
    """
    n_images = len(images)
    out = np.empty((n_images, side * side), dtype=np.float32)
    size = images.shape[1] if images.ndim == 4 else side
    for start in range(0, n_images, _PERCEPTUAL_BLOCK):
        block = np.asarray(images[start:start + _PERCEPTUAL_BLOCK])
        grey = block.astype(np.float32) @ _GREY_WEIGHTS
        if zoom != 1.0:
            resample = _zoom_matrix(size, side, zoom)
            small = np.einsum("ij,njk,lk->nil", resample, grey, resample, optimize=True)
        elif size % side == 0:
            factor = size // side
            small = grey.reshape(len(block), side, factor, side, factor).mean(axis=(2, 4))
        else:
            small = np.stack([np.asarray(Image.fromarray(g).resize((side, side), _RESIZE_FILTER), np.float32)
                              for g in grey])
        flat = small.reshape(len(block), -1)
        out[start:start + len(block)] = flat - flat.mean(axis=1, keepdims=True)
    return out


def _zoom_matrix(size: int, side: int, zoom: float) -> np.ndarray:
    """``(side, size)`` float32 weights resampling the centred ``zoom`` share of a ``size``-pixel line to
    ``side`` pixels with a triangle (bilinear, antialiased) filter, as Pillow's bilinear resize of that box
    does; rows sum to 1. Applied as ``M @ picture @ M.T`` to a stack of pictures at once."""
    margin = size * (1.0 - zoom) / 2.0
    scale = (size - 2.0 * margin) / side
    support = max(scale, 1.0)
    centres = margin + (np.arange(side) + 0.5) * scale
    sources = np.arange(size) + 0.5
    weights = np.clip(1.0 - np.abs(sources[None, :] - centres[:, None]) / support, 0.0, None)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)
