"""Generate a small synthetic image-classification dataset with planted label errors.

Each image shows one shape or texture (the class) at a random position, size,
rotation and colour, on a gradient background with low-frequency texture,
Gaussian pixel noise and occasional blur.  Foreground and background colours
come from the same palette, so colour alone does not identify the class.

Label noise is planted with an exact count (``round(rate * n)`` rows), either
symmetric (uniform over the other classes) or pairwise between look-alike
classes (see ``pair_partners``).

Uses numpy and Pillow only.  The test suite (``tests/tiny.py::load_sample_maker``) and the
benchmark scripts (``benchmarks/sample_maker.py::load_maker``) build their planted-noise datasets
with ``make_dataset``; the bundled ``sample_data/`` is real Fashion-MNIST images instead (see
``sample_data/make.py``).  Run ``python tests/shapes.py --help``.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Adjacent entries are the look-alike pairs used by ``noise="pairs"``:
# circle<->ring, square<->triangle, cross<->star, stripes<->dots.
CLASSES = ["circle", "ring", "square", "triangle", "cross", "star", "stripes", "dots"]

NOISE_KINDS = ("symmetric", "pairs")
IMAGE_FORMATS = {"png": ".png", "jpg": ".jpg", "jpeg": ".jpg"}

# One palette for foreground and background alike (RGB, 0-255).
PALETTE = np.array(
    [
        [230, 60, 50], [240, 150, 40], [235, 215, 60], [120, 190, 70],
        [40, 140, 90], [60, 180, 200], [50, 90, 200], [120, 70, 180],
        [210, 90, 170], [140, 90, 60], [235, 235, 225], [40, 40, 45],
        [130, 130, 135], [200, 180, 140],
    ],
    dtype=np.float32,
)
MIN_COLOUR_DISTANCE = 110.0  # foreground vs mean background, Euclidean in RGB
SUPERSAMPLE = 4  # shapes are drawn at this multiple of the output size, then box-filtered


# --------------------------------------------------------------------------- shapes
# Each shape function returns polygons in unit coordinates (centre 0, "radius" 1):
# a list of (polygon, fill) pairs drawn in order, fill 255 = shape, 0 = hole.


def _regular_polygon(n_points: int, angle: float, radius: float = 1.0) -> np.ndarray:
    theta = angle + np.arange(n_points) * 2 * math.pi / n_points
    return radius * np.stack([np.cos(theta), np.sin(theta)], axis=1)


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def _ellipse(rng: np.random.Generator, radius: float) -> np.ndarray:
    aspect = rng.uniform(0.85, 1.15)
    circle = _regular_polygon(64, 0.0, radius)
    return _rotate(circle * np.array([aspect, 1.0 / aspect]), rng.uniform(0, math.pi))


def _circle(rng):
    return [(_ellipse(rng, 1.0), 255)]


def _ring(rng):
    aspect = rng.uniform(0.85, 1.15)
    angle = rng.uniform(0, math.pi)
    scale = np.array([aspect, 1.0 / aspect])
    outer = _rotate(_regular_polygon(64, 0.0, 1.0) * scale, angle)
    inner = _rotate(_regular_polygon(64, 0.0, rng.uniform(0.45, 0.65)) * scale, angle)
    return [(outer, 255), (inner, 0)]


def _square(rng):
    aspect = rng.uniform(0.85, 1.15)
    half = 0.85
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float) * half
    return [(_rotate(corners * np.array([aspect, 1.0 / aspect]), rng.uniform(0, math.pi / 2)), 255)]


def _triangle(rng):
    corners = _regular_polygon(3, rng.uniform(0, 2 * math.pi), 1.1)
    corners += rng.normal(0.0, 0.08, size=corners.shape)
    return [(corners, 255)]


def _cross(rng):
    half_width = rng.uniform(0.17, 0.25)
    bar = np.array([[-1, -half_width], [1, -half_width], [1, half_width], [-1, half_width]])
    angle = rng.uniform(0, math.pi / 2)
    return [(_rotate(bar, angle), 255), (_rotate(bar, angle + math.pi / 2), 255)]


def _star(rng):
    outer = _regular_polygon(5, rng.uniform(0, 2 * math.pi), 1.05)
    inner_ratio = rng.uniform(0.38, 0.5)
    inner = _rotate(outer * inner_ratio, math.pi / 5)
    points = np.empty((10, 2))
    points[0::2], points[1::2] = outer, inner
    return [(points, 255)]


def _stripes(rng):
    period = rng.uniform(0.5, 0.62)
    duty = rng.uniform(0.45, 0.6)
    angle = rng.uniform(0, math.pi)
    extent = 1.15
    polygons = []
    offset = rng.uniform(0, period)
    for start in np.arange(-extent - period + offset, extent, period):
        x0, x1 = max(start, -extent), min(start + duty * period, extent)
        if x1 - x0 > 0.05:
            bar = np.array([[x0, -extent], [x1, -extent], [x1, extent], [x0, extent]])
            polygons.append((_rotate(bar, angle), 255))
    return polygons


def _dots(rng):
    spacing = rng.uniform(0.56, 0.68)
    dot_radius = spacing * rng.uniform(0.28, 0.36)
    angle = rng.uniform(0, math.pi / 2)
    offset = rng.uniform(0, spacing, size=2)
    extent = 1.15
    polygons = []
    steps = np.arange(-2 * extent, 2 * extent, spacing)
    for gx in steps:
        for gy in steps:
            centre = _rotate(np.array([[gx + offset[0], gy + offset[1]]]), angle)[0]
            if np.all(np.abs(centre) <= extent - dot_radius * 0.5):
                polygons.append((_regular_polygon(12, 0.0, dot_radius) + centre, 255))
    return polygons


SHAPES = {
    "circle": _circle, "ring": _ring, "square": _square, "triangle": _triangle,
    "cross": _cross, "star": _star, "stripes": _stripes, "dots": _dots,
}


# --------------------------------------------------------------------------- rendering


def _shape_mask(class_name: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """Anti-aliased coverage mask of one shape, shape (size, size), values in [0, 1]."""
    canvas = size * SUPERSAMPLE
    radius = rng.uniform(0.22, 0.35) * canvas
    centre = rng.uniform(radius * 0.95, canvas - radius * 0.95, size=2)
    mask = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(mask)
    for polygon, fill in SHAPES[class_name](rng):
        points = polygon * radius + centre
        draw.polygon([tuple(p) for p in points], fill=fill)
    small = mask.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def _pick_colour(rng: np.random.Generator) -> np.ndarray:
    return np.clip(PALETTE[rng.integers(len(PALETTE))] + rng.normal(0, 12, size=3), 0, 255)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Gradient between two palette colours plus low-frequency texture, shape (size, size, 3)."""
    start, end = _pick_colour(rng), _pick_colour(rng)
    if rng.random() < 0.35:  # near-flat background
        end = start + rng.normal(0, 15, size=3)
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1) - 0.5
    ramp = np.clip(xx * math.cos(angle) + yy * math.sin(angle) + 0.5, 0, 1)[..., None]
    image = start * (1 - ramp) + end * ramp
    coarse = rng.normal(0, 1, size=(4, 4, 3)).astype(np.float32)
    texture = np.stack(
        [np.asarray(Image.fromarray(coarse[..., c], mode="F").resize((size, size), Image.Resampling.BICUBIC))
         for c in range(3)],
        axis=2,
    )
    return image + texture * rng.uniform(0, 15)


def _foreground_colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    mean_background = background.reshape(-1, 3).mean(axis=0)
    for _ in range(50):
        colour = _pick_colour(rng)
        if np.linalg.norm(colour - mean_background) >= MIN_COLOUR_DISTANCE:
            return colour
    # Rare: background is mid-grey-ish; the palette extreme farthest from it always contrasts.
    return PALETTE[np.argmax(np.linalg.norm(PALETTE - mean_background, axis=1))]


def render_image(class_name: str, rng: np.random.Generator, size: int = 32) -> Image.Image:
    """Render one RGB image of ``class_name``.

    Parameters
    ----------
    class_name : str
        One of ``SHAPES`` (the names in ``CLASSES``).
    rng : numpy.random.Generator
        Source of all randomness; the same generator state gives the same image.
    size : int
        Width and height in pixels.

    Returns
    -------
    PIL.Image.Image
        Mode ``"RGB"``, ``size`` x ``size``.
    """
    if class_name not in SHAPES:
        raise ValueError(f"unknown class {class_name!r}; expected one of {sorted(SHAPES)}")
    background = _background(rng, size)
    colour = _foreground_colour(rng, background)
    mask = _shape_mask(class_name, rng, size)[..., None]
    # Mild shading across the shape so it is not a flat fill.
    shade_angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1) - 0.5
    shade = 1 + rng.uniform(0, 0.3) * (xx * math.cos(shade_angle) + yy * math.sin(shade_angle))
    foreground = colour * shade[..., None]
    pixels = background * (1 - mask) + foreground * mask
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")
    if rng.random() < 0.2:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 0.9) * size / 32))
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, rng.uniform(2, 10), size=(size, size, 3))
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8), mode="RGB")


# --------------------------------------------------------------------------- label noise


def pair_partners(n_classes: int) -> np.ndarray:
    """Look-alike partner of each class for ``noise="pairs"``: class i <-> class i ^ 1.

    With ``CLASSES`` this pairs circle<->ring, square<->triangle, cross<->star,
    stripes<->dots.

    Returns
    -------
    numpy.ndarray
        Shape (n_classes,), int; ``partners[partners[i]] == i`` and ``partners[i] != i``.
    """
    if n_classes < 2 or n_classes % 2:
        raise ValueError(f"pairs noise needs an even number of classes, got {n_classes}")
    return np.arange(n_classes) ^ 1


def plant_noise(
    true_labels: np.ndarray,
    *,
    n_classes: int,
    noise: str,
    noise_rate: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Return noisy labels with exactly ``round(noise_rate * n)`` rows changed.

    Parameters
    ----------
    true_labels : numpy.ndarray
        Shape (n,), ints in [0, n_classes).
    n_classes : int
        Number of classes K.
    noise : {"symmetric", "pairs"}
        ``"symmetric"``: a changed row gets a uniformly chosen other class.
        ``"pairs"``: a changed row gets its class's look-alike partner (``pair_partners``).
    noise_rate : float
        Fraction of rows to change, in [0, 1].
    rng : numpy.random.Generator
        Chooses the rows and (for symmetric noise) the new classes.

    Returns
    -------
    numpy.ndarray
        Shape (n,), int64; differs from ``true_labels`` on exactly the changed rows.
    """
    true_labels = np.asarray(true_labels, dtype=np.int64)
    if noise not in NOISE_KINDS:
        raise ValueError(f"noise must be one of {NOISE_KINDS}, got {noise!r}")
    if not 0.0 <= noise_rate <= 1.0:
        raise ValueError(f"noise_rate must be in [0, 1], got {noise_rate}")
    if n_classes < 2:
        raise ValueError(f"need at least 2 classes, got {n_classes}")
    if true_labels.size and (true_labels.min() < 0 or true_labels.max() >= n_classes):
        raise ValueError(f"true_labels must lie in [0, {n_classes})")
    partners = pair_partners(n_classes) if noise == "pairs" else None

    n_flip = int(round(noise_rate * len(true_labels)))
    flipped_rows = rng.choice(len(true_labels), size=n_flip, replace=False)
    noisy_labels = true_labels.copy()
    if noise == "symmetric":
        shift = rng.integers(1, n_classes, size=n_flip)  # never 0, so never the true class
        noisy_labels[flipped_rows] = (true_labels[flipped_rows] + shift) % n_classes
    else:
        noisy_labels[flipped_rows] = partners[true_labels[flipped_rows]]
    return noisy_labels


# --------------------------------------------------------------------------- dataset


def _image_rng(seed: int, index: int) -> np.random.Generator:
    # One stream per image, so image i is the same whatever n_images is.
    return np.random.default_rng([seed, 0, index])


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["path", "label"])
        writer.writerows(rows)


def _remove_generated_images(images_dir: Path) -> None:
    """Delete images an earlier run wrote (``img_<digits>.<ext>``), so a smaller n leaves no strays."""
    for pattern in ("img_*.png", "img_*.jpg", "*/img_*.png", "*/img_*.jpg"):
        for old in images_dir.glob(pattern):
            if old.stem[4:].isdigit():
                old.unlink()
    for sub in images_dir.iterdir():
        if sub.is_dir() and not any(sub.iterdir()):
            sub.rmdir()


def make_dataset(
    out_dir: Path,
    *,
    n_images: int,
    size: int = 32,
    noise: str = "symmetric",
    noise_rate: float = 0.1,
    seed: int = 0,
    image_format: str = "png",
    subdir_per_class: bool = False,
    classes: list[str] = CLASSES,
    test_fraction: float = 0.0,
) -> dict:
    """Render ``n_images`` images and write noisy and true label CSVs.

    Writes ``out_dir/images/img_00001.png`` ... (or ``images/<label>/img_00001.png``
    with ``subdir_per_class``, where the folder is the *given* (noisy) label, as in a
    real folder-per-class dataset; held-out test images go under their true label),
    ``out_dir/labels.csv`` (``path,label``: noisy labels), ``out_dir/truth.csv``
    (``path,label``: true labels) and, when ``test_fraction > 0``, ``out_dir/test.csv``
    (true labels of ``round(test_fraction * n_images)`` held-out images, which are
    not in labels.csv or truth.csv).  Paths are relative to ``out_dir/images``.
    Images this function wrote earlier in ``out_dir/images`` are replaced.

    Noise is planted on the labelled (non-test) rows only.  The same arguments give
    byte-identical files.

    Parameters
    ----------
    out_dir : Path
        Directory to write into (created if missing).
    n_images : int
        Images to render, test images included; true classes are balanced.
    size : int
        Width and height in pixels.
    noise, noise_rate :
        Passed to ``plant_noise``.
    seed : int
        Everything (images, labels, split, noise) is a function of the seed.
    image_format : {"png", "jpg", "jpeg"}
        PNG is lossless with fixed compression; JPEG uses quality 92.
    subdir_per_class : bool
        Put images in ``images/<given label>/`` instead of one flat folder.
    classes : list of str
        Class names, each a key of ``SHAPES``; label index i is ``classes[i]``.
    test_fraction : float
        Fraction of images held out with clean labels in ``test.csv``, in [0, 1).

    Returns
    -------
    dict
        ``n_images`` (all rendered), ``n_labelled``, ``n_test``, ``n_flipped``,
        ``noise``, ``noise_rate``, ``seed``, ``size``, ``classes``.
    """
    classes = list(classes)
    unknown = [name for name in classes if name not in SHAPES]
    if unknown:
        raise ValueError(f"no renderer for classes {unknown}; known: {sorted(SHAPES)}")
    if len(set(classes)) != len(classes) or len(classes) < 2:
        raise ValueError("classes must be at least 2 distinct names")
    if n_images < 1 or size < 8:
        raise ValueError("need n_images >= 1 and size >= 8")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if image_format.lower() not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {sorted(IMAGE_FORMATS)}")
    extension = IMAGE_FORMATS[image_format.lower()]
    n_classes = len(classes)

    # Balanced true labels in shuffled order.
    true_labels = np.random.default_rng([seed, 1]).permutation(np.arange(n_images) % n_classes)
    n_test = int(round(test_fraction * n_images))
    is_test = np.zeros(n_images, dtype=bool)
    is_test[np.random.default_rng([seed, 2]).choice(n_images, size=n_test, replace=False)] = True
    labelled_rows = np.flatnonzero(~is_test)
    noisy_labels = true_labels.copy()
    noisy_labels[labelled_rows] = plant_noise(
        true_labels[labelled_rows], n_classes=n_classes, noise=noise,
        noise_rate=noise_rate, rng=np.random.default_rng([seed, 3]),
    )

    out_dir = Path(out_dir)
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    _remove_generated_images(images_dir)

    labelled, truth, test = [], [], []
    for index in range(n_images):
        name = f"img_{index + 1:05d}{extension}"
        folder_label = classes[noisy_labels[index]]
        relative = f"{folder_label}/{name}" if subdir_per_class else name
        target = images_dir / relative
        target.parent.mkdir(exist_ok=True)
        image = render_image(classes[true_labels[index]], _image_rng(seed, index), size)
        if extension == ".png":
            image.save(target, format="PNG", compress_level=9, optimize=False)
        else:
            image.save(target, format="JPEG", quality=92, subsampling=0)
        if is_test[index]:
            test.append((relative, classes[true_labels[index]]))
        else:
            labelled.append((relative, classes[noisy_labels[index]]))
            truth.append((relative, classes[true_labels[index]]))

    _write_csv(out_dir / "labels.csv", labelled)
    _write_csv(out_dir / "truth.csv", truth)
    test_csv = out_dir / "test.csv"
    if n_test:
        _write_csv(test_csv, test)
    elif test_csv.exists():
        test_csv.unlink()  # stale split from an earlier run would contradict this one

    return {
        "n_images": n_images,
        "n_labelled": len(labelled),
        "n_test": n_test,
        "n_flipped": int(np.sum(noisy_labels != true_labels)),
        "noise": noise,
        "noise_rate": noise_rate,
        "seed": seed,
        "size": size,
        "classes": classes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("shapes-data"),
                        help="output directory (default: ./shapes-data)")
    parser.add_argument("--n", type=int, default=460, help="number of images (default 460)")
    parser.add_argument("--size", type=int, default=32, help="image width/height in pixels")
    parser.add_argument("--noise", choices=NOISE_KINDS, default="symmetric")
    parser.add_argument("--rate", type=float, default=0.10, help="fraction of labels to corrupt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-fraction", type=float, default=0.0,
                        help="fraction of images held out with clean labels in test.csv")
    parser.add_argument("--format", choices=sorted(IMAGE_FORMATS), default="png")
    parser.add_argument("--subdir-per-class", action="store_true",
                        help="put images in images/<given label>/")
    args = parser.parse_args(argv)
    try:
        summary = make_dataset(
            args.out, n_images=args.n, size=args.size, noise=args.noise, noise_rate=args.rate,
            seed=args.seed, image_format=args.format, subdir_per_class=args.subdir_per_class,
            test_fraction=args.test_fraction,
        )
    except ValueError as error:
        parser.error(str(error))
    print(
        f"wrote {summary['n_labelled']} labelled images ({summary['n_flipped']} labels flipped, "
        f"{summary['noise']} {summary['noise_rate']:.0%}) and {summary['n_test']} test images to {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
