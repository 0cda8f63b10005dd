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
_COLOUR_SIZE = 16
_LEVELS = np.arange(256, dtype=np.float64)
MEASURE_NAMES = ("brightness", "brightness_p99", "brightness_p05", "sharpness", "entropy", "colourfulness",
                 "width", "height")
N_MEASURES = len(MEASURE_NAMES)
_RESIZE_FILTER = Image.Resampling.BILINEAR


def image_measures(rgb: Image.Image, original_size: tuple[int, int]) -> np.ndarray:
    """The raw measures of one decoded picture.

    Parameters
    ----------
    rgb
        The upright RGB picture (possibly decoded at a reduced JPEG scale).
    original_size
        ``(width, height)`` of the original as shown.

    Returns
    -------
    numpy.ndarray
        Shape ``(N_MEASURES,)``, float32, in the order of ``MEASURE_NAMES``.
    """
    grey_image = rgb.convert("L").resize((WORK_SIZE, WORK_SIZE), _RESIZE_FILTER, reducing_gap=3.0)
    histogram = np.asarray(grey_image.histogram(), dtype=np.float64)
    n_pixels = histogram.sum()
    shares = histogram / n_pixels
    cumulative = np.cumsum(histogram)
    p99 = float(np.searchsorted(cumulative, 0.99 * n_pixels))
    p05 = float(np.searchsorted(cumulative, 0.05 * n_pixels))
    present = shares[shares > 0]
    entropy = float(-(present * np.log2(present)).sum())
    mean = float(shares @ _LEVELS)
    contrast = float(np.sqrt(max(shares @ np.square(_LEVELS - mean), 0.0)))

    grey = np.asarray(grey_image, dtype=np.float32)
    laplacian = 4.0 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
    spread = float(np.sqrt(max(float(np.mean(np.square(laplacian))) - float(np.mean(laplacian)) ** 2, 0.0)))
    sharpness = spread / contrast if contrast >= 1.0 else 0.0

    # Colour needs no detail: a 16 x 16 thumbnail.
    rgb_values = np.asarray(rgb.resize((_COLOUR_SIZE, _COLOUR_SIZE), _RESIZE_FILTER, reducing_gap=3.0),
                            dtype=np.float32).reshape(-1, 3)
    rg = rgb_values[:, 0] - rgb_values[:, 1]
    yb = 0.5 * (rgb_values[:, 0] + rgb_values[:, 1]) - rgb_values[:, 2]
    colourfulness = (np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())) / 255.0

    return np.array([
        mean / 255.0, p99 / 255.0, p05 / 255.0, sharpness, entropy, colourfulness,
        original_size[0], original_size[1],
    ], dtype=np.float32)


def empty_measures(n_rows: int) -> np.ndarray:
    """``(n_rows, N_MEASURES)`` float32 of NaN: the measures of images not (yet) decoded."""
    return np.full((n_rows, N_MEASURES), np.nan, dtype=np.float32)


#: side of the grey thumbnails compared for near duplicates and outliers
PERCEPTUAL_SIDE = 16
_GREY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_PERCEPTUAL_BLOCK = 4096


def perceptual_vectors(images: np.ndarray, side: int = PERCEPTUAL_SIDE) -> np.ndarray:
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
        if size % side == 0:
            factor = size // side
            small = grey.reshape(len(block), side, factor, side, factor).mean(axis=(2, 4))
        else:
            small = np.stack([np.asarray(Image.fromarray(g).resize((side, side), _RESIZE_FILTER), np.float32)
                              for g in grey])
        flat = small.reshape(len(block), -1)
        out[start:start + len(block)] = flat - flat.mean(axis=1, keepdims=True)
    return out
