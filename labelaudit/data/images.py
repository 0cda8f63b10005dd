"""Decoding user images into fixed-size RGB arrays.

Every image becomes ``(size, size, 3) uint8`` RGB the same way, whatever its format:

* EXIF orientation is applied, so pixels are the way a photo viewer shows them.
* Alpha (RGBA, LA, palette with transparency, ...) is composited on opaque white.
* 16-bit greyscale (``I;16*``, and ``I`` as Pillow opens 16-bit PNGs) is scaled to 8 bits
  by /257 (0..65535 -> 0..255), values outside that range are clipped; float images (``F``)
  in [0, 1] are scaled by 255, others clipped to 0..255. CMYK, YCbCr, 1-bit, greyscale and
  palette go through Pillow's RGB conversion.
* The whole image is resized to ``size x size`` (a plain squash: aspect ratio is not kept
  and nothing is cropped, so an off-centre object is never cut away), with Pillow's
  antialiased bilinear filter. JPEGs are first decoded at a reduced scale via
  ``Image.draft`` when much larger than ``size``, which is much faster.

Failures are reasons, not exceptions: ``unreadable_image`` (empty, truncated, not an
image, undecodable) or ``image_too_large`` (above ``max_pixels`` or Pillow's
decompression-bomb limit ``Image.MAX_IMAGE_PIXELS``, judged from the header before any
pixel is decoded). Truncated files are reported, never padded (``LOAD_TRUNCATED_IMAGES``
stays off).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from labelaudit.data.measures import COLOUR_SIZE, N_MEASURES, WORK_SIZE, measure_inputs, measures_from
from labelaudit.errors import LabelAuditError

UNREADABLE_IMAGE = "unreadable_image"
IMAGE_TOO_LARGE = "image_too_large"

_WHITE = (255, 255, 255, 255)
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_RESIZE_FILTER = Image.Resampling.BILINEAR
_MAX_IMAGES_PER_TASK = 32
#: Bump whenever the rules above change what pixels a file decodes to: the decode cache
#: (labelaudit.data.cache) discards entries made under another version.
DECODE_VERSION = 1


class ImageDecodeError(Exception):
    """An image that cannot be used; ``reason`` is the status to report for it."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def load_image_rgb(path: Path, size: int, *, max_pixels: int | None = None) -> np.ndarray:
    """Decode one image file to a square RGB array.

    Parameters
    ----------
    path
        An image file.
    size
        Side length of the output in pixels.
    max_pixels
        Refuse images with more than this many pixels (width x height), besides Pillow's
        own decompression-bomb limit.

    Returns
    -------
    numpy.ndarray
        Shape ``(size, size, 3)``, dtype uint8, RGB.

    Raises
    ------
    ImageDecodeError
        With ``reason`` ``"unreadable_image"`` or ``"image_too_large"``.
    """
    with warnings.catch_warnings():
        # The bomb limit is enforced explicitly in _decode; Pillow's warning is just noise.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return _decode(Path(path), size, max_pixels)[0]


def decode_images(
    paths: Sequence[Path],
    size: int,
    *,
    workers: int | None = None,
    max_pixels: int | None = None,
    progress: Callable[[int], None] | None = None,
    measures: np.ndarray | None = None,
) -> tuple[np.ndarray, list[str | None]]:
    """Decode many images in a thread pool (Pillow releases the GIL while decoding).

    Parameters
    ----------
    paths
        N image files.
    size
        Side length of each output image.
    workers
        Threads to use; default ``os.cpu_count()``. 1 decodes in the calling thread.
    max_pixels
        As in :func:`load_image_rgb`.
    progress
        Called from the calling thread with the number of images finished since the
        previous call; the increments sum to N.
    measures
        Optional ``(N, N_MEASURES)`` float32 array filled in place with each decoded image's raw
        quality measures (:mod:`labelaudit.data.measures`), taken from the same decoded picture;
        rows of images that fail are left as they are.

    Returns
    -------
    images : numpy.ndarray
        Shape ``(N, size, size, 3)``, uint8, in the order of ``paths``; all zeros where
        decoding failed.
    reasons : list of (str or None)
        Length N: None for a decoded image, else ``"unreadable_image"`` or
        ``"image_too_large"``.
    """
    if workers is None:
        workers = os.cpu_count() or 1
    if workers < 1:
        raise LabelAuditError(f"workers must be at least 1, got {workers}")
    n_images = len(paths)
    if measures is not None and measures.shape != (n_images, N_MEASURES):
        raise ValueError(f"measures must have shape {(n_images, N_MEASURES)}, got {measures.shape}")
    images = np.zeros((n_images, size, size, 3), dtype=np.uint8)
    reasons: list[str | None] = [None] * n_images

    def decode_range(start: int, stop: int) -> int:
        # Each task writes only its own rows of `images`, `measures` and slots of `reasons`.
        probes = _MeasureInputs(stop - start) if measures is not None else None
        for i in range(start, stop):
            try:
                images[i], probe = _decode(Path(paths[i]), size, max_pixels, measure=probes is not None)
                if probes is not None:
                    probes.put(i - start, probe)
            except ImageDecodeError as error:
                reasons[i] = error.reason
        if probes is not None and probes.decoded.any():
            rows = np.flatnonzero(probes.decoded)
            measures[start + rows] = measures_from(probes.grey[rows], probes.colour[rows], probes.sizes[rows])
        return stop - start

    chunk = max(1, min(_MAX_IMAGES_PER_TASK, math.ceil(n_images / (workers * 8))))
    ranges = [(start, min(start + chunk, n_images)) for start in range(0, n_images, chunk)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        if workers == 1:
            for start, stop in ranges:
                done = decode_range(start, stop)
                if progress is not None:
                    progress(done)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for done in pool.map(lambda bounds: decode_range(*bounds), ranges):
                    if progress is not None:
                        progress(done)
    return images, reasons


class _MeasureInputs:
    """What the quality measures of a range of images are computed from, filled image by image."""

    def __init__(self, n_images: int) -> None:
        self.grey = np.zeros((n_images, WORK_SIZE, WORK_SIZE), dtype=np.uint8)
        self.colour = np.zeros((n_images, COLOUR_SIZE, COLOUR_SIZE, 3), dtype=np.uint8)
        self.sizes = np.zeros((n_images, 2), dtype=np.float32)
        self.decoded = np.zeros(n_images, dtype=bool)

    def put(self, index: int, probe: tuple[np.ndarray, np.ndarray, tuple[int, int]]) -> None:
        self.grey[index], self.colour[index], self.sizes[index] = probe
        self.decoded[index] = True


def _decode(path: Path, size: int, max_pixels: int | None, *,
            measure: bool = False) -> tuple[np.ndarray, tuple | None]:
    """The ``(size, size, 3)`` pixels and, with ``measure``, what the quality measures are computed from
    (:func:`labelaudit.data.measures.measure_inputs` and the original size as shown)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            _refuse_too_large((width, height), max_pixels)
            image.draft("RGB", (size, size))  # JPEG only: decode at 1/2, 1/4 or 1/8 scale
            image.load()
            upright = _apply_exif_orientation(image)
            rgb = _to_rgb(upright)
            resized = rgb.resize((size, size), _RESIZE_FILTER, reducing_gap=3.0)
            pixels = np.asarray(resized, dtype=np.uint8).copy()
            if not measure:
                return pixels, None
            if upright.size != image.size:  # EXIF turned the picture a quarter
                width, height = height, width
            return pixels, (*measure_inputs(rgb), (width, height))
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, MemoryError) as error:
        raise ImageDecodeError(IMAGE_TOO_LARGE, str(error)) from None
    except Exception as error:  # noqa: BLE001
        # Decoders fed hostile bytes raise OSError, SyntaxError, ValueError, struct.error,
        # EOFError, IndexError, ...; every one of them means the same thing to the user.
        raise ImageDecodeError(UNREADABLE_IMAGE, f"{type(error).__name__}: {error}") from None


def _refuse_too_large(width_height: tuple[int, int], max_pixels: int | None) -> None:
    n_pixels = width_height[0] * width_height[1]
    limits = [limit for limit in (max_pixels, Image.MAX_IMAGE_PIXELS) if limit is not None]
    if limits and n_pixels > min(limits):
        raise ImageDecodeError(IMAGE_TOO_LARGE, f"{n_pixels} pixels > {min(limits)}")


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001
        # Pixels already decoded fine; a corrupt EXIF block only costs us the rotation.
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        return _grey_array_to_rgb(np.asarray(image).astype(np.float64) / 257.0)
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        finite = values[np.isfinite(values)]
        in_unit_range = finite.size > 0 and finite.min() >= 0.0 and finite.max() <= 1.0
        return _grey_array_to_rgb(values * 255.0 if in_unit_range else values)
    if mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE)
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "RGB":
        return image
    return image.convert("RGB")


def _grey_array_to_rgb(values: np.ndarray) -> Image.Image:
    """(H, W) float greyscale on a 0..255 scale -> RGB image, rounding and clipping."""
    grey = np.clip(np.nan_to_num(np.rint(values), nan=0.0), 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([grey] * 3, axis=-1))
