"""Image decoding: every mode to RGB, orientation, squash resize, failures as reasons."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from labelaudit.data.images import ImageDecodeError, decode_images, load_image_rgb
from labelaudit.errors import LabelAuditError

SIZE = 16
RED = (255, 0, 0)
BLUE = (0, 0, 255)


def save(image: Image.Image, path: Path, **options) -> Path:
    image.save(path, **options)
    return path


def halves(left: tuple, right: tuple, size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    """An image whose left half is one colour and right half another."""
    width, height = size
    image = Image.new(mode, size, left)
    image.paste(Image.new(mode, (width - width // 2, height), right), (width // 2, 0))
    return image


def decode_reason(path: Path, **options) -> str:
    with pytest.raises(ImageDecodeError) as caught:
        load_image_rgb(path, SIZE, **options)
    return caught.value.reason


def test_rgb_png_shape_dtype_and_pixels(tmp_path):
    path = save(halves(RED, BLUE, (SIZE, SIZE)), tmp_path / "rgb.png")
    pixels = load_image_rgb(path, SIZE)
    assert pixels.shape == (SIZE, SIZE, 3)
    assert pixels.dtype == np.uint8
    assert tuple(pixels[3, 2]) == RED
    assert tuple(pixels[3, 13]) == BLUE


def test_grayscale_and_one_bit(tmp_path):
    grey = load_image_rgb(save(Image.new("L", (12, 12), 77), tmp_path / "l.png"), SIZE)
    assert (grey == 77).all()
    bilevel = load_image_rgb(save(Image.new("1", (12, 12), 1), tmp_path / "one.png"), SIZE)
    assert (bilevel == 255).all()


def test_rgba_is_composited_on_white(tmp_path):
    image = Image.new("RGBA", (SIZE, SIZE), (255, 0, 0, 128))
    image.paste(Image.new("RGBA", (SIZE // 2, SIZE), (0, 0, 255, 0)), (SIZE // 2, 0))
    pixels = load_image_rgb(save(image, tmp_path / "rgba.png"), SIZE).astype(int)
    assert np.abs(pixels[4, 2] - np.array([255, 127, 127])).max() <= 1  # half red over white
    assert tuple(pixels[4, 13]) == (255, 255, 255)  # fully transparent blue -> white


def test_la_is_composited_on_white(tmp_path):
    pixels = load_image_rgb(save(Image.new("LA", (SIZE, SIZE), (0, 0)), tmp_path / "la.png"), SIZE)
    assert (pixels == 255).all()


def test_palette_with_transparent_index(tmp_path):
    image = Image.new("P", (SIZE, SIZE), 0)
    image.putpalette([10, 200, 30] + [0, 0, 255] + [0, 0, 0] * 254)
    image.paste(1, (SIZE // 2, 0, SIZE, SIZE))
    path = save(image, tmp_path / "p.png", transparency=1)
    pixels = load_image_rgb(path, SIZE)
    assert tuple(pixels[5, 2]) == (10, 200, 30)
    assert tuple(pixels[5, 13]) == (255, 255, 255)


def test_palette_gif(tmp_path):
    image = halves(RED, BLUE, (SIZE, SIZE)).convert("P")
    pixels = load_image_rgb(save(image, tmp_path / "p.gif"), SIZE)
    assert tuple(pixels[5, 2]) == RED and tuple(pixels[5, 13]) == BLUE


def test_cmyk_jpeg(tmp_path):
    cyan_then_yellow = halves((255, 0, 0, 0), (0, 0, 255, 0), (64, 64), mode="CMYK")
    path = save(cyan_then_yellow, tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(path).mode == "CMYK"
    pixels = load_image_rgb(path, SIZE).astype(int)
    assert np.abs(pixels[8, 2] - np.array([0, 255, 255])).max() <= 12
    assert np.abs(pixels[8, 13] - np.array([255, 255, 0])).max() <= 12


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    values = np.zeros((SIZE, SIZE), dtype=np.uint16)
    values[:, 4:8] = 128 * 257
    values[:, 8:12] = 200 * 257
    values[:, 12:] = 65535
    path = save(Image.fromarray(values), tmp_path / "g16.png")
    assert Image.open(path).mode.startswith("I;16")
    pixels = load_image_rgb(path, SIZE)
    assert pixels[0, :, 0].tolist() == [0] * 4 + [128] * 4 + [200] * 4 + [255] * 4
    assert (pixels[..., 0] == pixels[..., 2]).all()


def test_32_bit_integer_tiff_uses_the_16_bit_scale(tmp_path):
    values = np.full((SIZE, SIZE), 100 * 257, dtype=np.int32)
    values[:, SIZE // 2 :] = 10_000_000  # beyond 16 bits: clipped to white
    path = save(Image.fromarray(values), tmp_path / "i.tif")
    assert Image.open(path).mode == "I"
    pixels = load_image_rgb(path, SIZE)
    assert (pixels[:, : SIZE // 2] == 100).all()
    assert (pixels[:, SIZE // 2 :] == 255).all()


def test_float_tiff_in_unit_range_is_scaled(tmp_path):
    values = np.full((SIZE, SIZE), 0.5, dtype=np.float32)
    path = save(Image.fromarray(values), tmp_path / "f.tif")
    assert Image.open(path).mode == "F"
    assert (load_image_rgb(path, SIZE) == 128).all()


@pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WebP")
def test_webp_with_alpha(tmp_path):
    image = Image.new("RGBA", (SIZE, SIZE), (0, 0, 255, 255))
    image.paste(Image.new("RGBA", (SIZE // 2, SIZE), (0, 0, 0, 0)), (0, 0))
    pixels = load_image_rgb(save(image, tmp_path / "a.webp", lossless=True), SIZE)
    assert tuple(pixels[8, 2]) == (255, 255, 255)
    assert tuple(pixels[8, 13]) == BLUE


def test_exif_orientation_is_applied(tmp_path):
    # Stored 32 wide x 16 tall, red left / blue right. Orientation 6 means "rotate 90°
    # clockwise to display": the viewer sees it 16 wide x 32 tall, red on top.
    stored = halves(RED, BLUE, (32, 16))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = save(stored, tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    pixels = load_image_rgb(path, SIZE).astype(int)
    assert np.abs(pixels[2, 8] - np.array(RED)).max() <= 30
    assert np.abs(pixels[13, 8] - np.array(BLUE)).max() <= 30
    unrotated = load_image_rgb(save(stored, tmp_path / "plain.jpg", quality=95), SIZE).astype(int)
    assert np.abs(unrotated[8, 2] - np.array(RED)).max() <= 30


def test_large_jpeg_is_downscaled_correctly(tmp_path):
    path = save(halves(RED, BLUE, (400, 300)), tmp_path / "big.jpg", quality=95)
    pixels = load_image_rgb(path, SIZE).astype(int)
    assert np.abs(pixels[:, :6] - np.array(RED)).max() <= 30
    assert np.abs(pixels[:, 10:] - np.array(BLUE)).max() <= 30


def test_very_wide_image_is_squashed_whole(tmp_path):
    path = save(halves(RED, BLUE, (1000, 10)), tmp_path / "wide.png")
    pixels = load_image_rgb(path, SIZE)
    assert pixels.shape == (SIZE, SIZE, 3)
    assert (pixels[:, :7] == RED).all()
    assert (pixels[:, 9:] == BLUE).all()
    assert (pixels == pixels[0]).all()  # every row identical: nothing cropped


def test_upscaling_a_tiny_image(tmp_path):
    pixels = load_image_rgb(save(Image.new("RGB", (2, 3), (9, 99, 199)), tmp_path / "t.png"), SIZE)
    assert (pixels == (9, 99, 199)).all()


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert decode_reason(path) == "unreadable_image"


def test_text_file_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    assert decode_reason(path) == "unreadable_image"


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_image_is_reported_not_padded(tmp_path, suffix):
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    whole = save(noise, tmp_path / f"whole{suffix}")
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    load_image_rgb(whole, SIZE)  # the intact file decodes
    assert decode_reason(cut) == "unreadable_image"


def test_over_max_pixels(tmp_path):
    path = save(Image.new("RGB", (40, 30), RED), tmp_path / "big.png")
    assert decode_reason(path, max_pixels=40 * 30 - 1) == "image_too_large"
    assert load_image_rgb(path, SIZE, max_pixels=40 * 30).shape == (SIZE, SIZE, 3)


@pytest.mark.parametrize("limit", [1000, 500])  # 1200 px: warning zone, then error zone
def test_pillow_decompression_bomb_limit_is_kept(tmp_path, monkeypatch, limit):
    path = save(Image.new("RGB", (40, 30), RED), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    assert decode_reason(path) == "image_too_large"


def test_decode_images_mixes_failures_with_successes(tmp_path):
    colours = [(i * 20, 255 - i * 20, 7) for i in range(9)]
    paths = [save(Image.new("RGB", (10, 10), c), tmp_path / f"{i}.png") for i, c in enumerate(colours)]
    (tmp_path / "bad.png").write_bytes(b"nope")
    paths.insert(3, tmp_path / "bad.png")
    paths.append(tmp_path / "missing.png")
    increments: list[int] = []
    images, reasons = decode_images(paths, SIZE, workers=2, progress=increments.append)
    assert images.shape == (len(paths), SIZE, SIZE, 3) and images.dtype == np.uint8
    assert reasons == [None] * 3 + ["unreadable_image"] + [None] * 6 + ["unreadable_image"]
    assert not images[3].any() and not images[-1].any()
    good = [i for i, reason in enumerate(reasons) if reason is None]
    assert [tuple(images[i, 0, 0]) for i in good] == colours
    assert sum(increments) == len(paths) and all(step > 0 for step in increments)

    serial_images, serial_reasons = decode_images(paths, SIZE, workers=1)
    assert serial_reasons == reasons
    assert np.array_equal(serial_images, images)


def test_decode_images_empty_and_bad_workers(tmp_path):
    images, reasons = decode_images([], SIZE)
    assert images.shape == (0, SIZE, SIZE, 3) and reasons == []
    with pytest.raises(LabelAuditError, match="workers must be at least 1"):
        decode_images([tmp_path / "x.png"], SIZE, workers=0)
