"""Raw image-quality measures taken while decoding (labelaudit.data.measures), on planted pictures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageFilter

from labelaudit.data.cache import decode_files
from labelaudit.data.images import decode_images
from labelaudit.data.measures import MEASURE_NAMES, N_MEASURES, image_measures

COLUMN = {name: i for i, name in enumerate(MEASURE_NAMES)}


def textured(seed: int = 0, size: int = 48) -> Image.Image:
    """A grey picture with sharp edges: random blocks of 4x4 pixels."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(30, 226, size=(size // 4, size // 4), dtype=np.uint8)
    return Image.fromarray(np.kron(blocks, np.ones((4, 4), np.uint8))).convert("RGB")


def measure(image: Image.Image) -> dict[str, float]:
    values = image_measures(image, image.size)
    return {name: float(values[i]) for i, name in enumerate(MEASURE_NAMES)}


def test_darkened_picture_has_a_dark_top_percentile_but_keeps_its_sharpness():
    original = textured()
    dark = Image.fromarray((np.asarray(original) * 0.25).astype(np.uint8))
    before, after = measure(original), measure(dark)
    assert after["brightness_p99"] < 0.3 * before["brightness_p99"]
    assert after["brightness"] < 0.3 * before["brightness"]
    assert after["sharpness"] == pytest.approx(before["sharpness"], rel=0.1)


def test_blurred_picture_loses_sharpness():
    original = textured()
    blurred = original.filter(ImageFilter.GaussianBlur(1.5))
    assert measure(blurred)["sharpness"] < 0.5 * measure(original)["sharpness"]


def test_overexposed_picture_has_a_bright_bottom_percentile():
    original = textured()
    washed = Image.fromarray((200 + np.asarray(original) // 5).astype(np.uint8))
    assert measure(washed)["brightness_p05"] > 0.75 > measure(original)["brightness_p05"]


def test_blank_picture_has_no_information_and_grey_has_no_colour():
    blank = measure(Image.new("RGB", (40, 40), (128, 128, 128)))
    assert blank["entropy"] == 0.0 and blank["sharpness"] == 0.0
    assert measure(textured())["entropy"] > 5.0
    assert measure(textured())["colourfulness"] == 0.0
    rng = np.random.default_rng(1)
    colourful = Image.fromarray(rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8))
    assert measure(colourful)["colourfulness"] > 0.1


def test_decoding_records_the_original_size_after_exif_rotation(tmp_path: Path):
    wide = tmp_path / "wide.png"
    textured(size=48).resize((120, 30)).save(wide)
    turned = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when shown
    textured(size=48).resize((120, 30)).save(turned, exif=exif)
    measures = np.full((2, N_MEASURES), np.nan, np.float32)
    images, reasons = decode_images([wide, turned], 16, workers=1, measures=measures)
    assert reasons == [None, None]
    assert measures[0, [COLUMN["width"], COLUMN["height"]]].tolist() == [120, 30]
    assert measures[1, [COLUMN["width"], COLUMN["height"]]].tolist() == [30, 120]


def test_measures_survive_the_decode_cache_and_an_old_cache_is_rebuilt(tmp_path: Path):
    files = []
    for i in range(3):
        files.append(tmp_path / f"{i}.png")
        textured(seed=i).save(files[-1])
    (tmp_path / "bad.png").write_bytes(b"not an image")
    files.append(tmp_path / "bad.png")
    cache = tmp_path / "cache"
    first = decode_files(files, 16, cache_dir=cache, workers=1)
    second = decode_files(files, 16, cache_dir=cache, workers=1)
    assert second.report.reused == 4 and second.report.decoded == 0
    np.testing.assert_array_equal(first.measures, second.measures)
    assert np.isfinite(first.measures[:3]).all() and np.isnan(first.measures[3]).all()
    uncached = decode_files(files, 16, cache_dir=None, workers=1)
    np.testing.assert_array_equal(first.measures, uncached.measures)

    # A cache of format 1 (no measures) is not read: it is rebuilt, and says so.
    index = next(cache.glob("*.index.parquet"))
    table = pq.read_table(index)
    old = table.select(["path", "file_size", "mtime_ns", "slot", "reason"])
    old = old.replace_schema_metadata({**table.schema.metadata, b"format": b"1"})
    pq.write_table(old, index)
    third = decode_files(files, 16, cache_dir=cache, workers=1)
    assert third.report.decoded == 4 and "format" in third.report.note
    np.testing.assert_array_equal(first.measures, third.measures)
