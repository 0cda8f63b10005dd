"""Settings and helpers for tests that train tiny models on tiny generated data."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = "test_resnet"
TINY_SIZE = 16


def load_sample_maker():
    """``tests/shapes.py``, the synthetic planted-noise dataset generator, as a module."""
    spec = importlib.util.spec_from_file_location("shapes", REPO / "tests" / "shapes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_train_args(epochs: int = 2) -> list[str]:
    return ["--model", TINY_MODEL, "--image-size", str(TINY_SIZE), "--epochs", str(epochs),
            "--batch-size", "32", "--device", "cpu"]


COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (40, 70, 220)}
NAMES = list(COLOURS)


def write_colour_images(root: Path, n_images: int, seed: int) -> list[tuple[str, str]]:
    """``n_images`` noisy single-colour PNGs under root/images; returns (path, true label) rows."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_images):
        label = NAMES[i % len(NAMES)]
        pixels = np.asarray(COLOURS[label], dtype=float) + rng.normal(0.0, 25.0, (TINY_SIZE, TINY_SIZE, 3))
        name = f"{label}_{seed}_{i:03d}.png"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / "images" / name)
        rows.append((name, label))
    return rows


def write_csv(path: Path, rows, header=("path", "label")) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path
