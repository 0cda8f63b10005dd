"""Settings and helpers for tests that train tiny models on tiny generated data."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = "test_resnet"
TINY_SIZE = 16


def load_sample_maker():
    """``sample_data/make.py`` as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("sample_make", REPO / "sample_data" / "make.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_train_args(epochs: int = 2) -> list[str]:
    return ["--model", TINY_MODEL, "--image-size", str(TINY_SIZE), "--epochs", str(epochs),
            "--batch-size", "32", "--device", "cpu"]
