"""The bundled sample's generator (sample_data/make.py), for the benchmark scripts that make planted-noise data."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

MAKE_PY = Path(__file__).resolve().parents[1] / "sample_data" / "make.py"


def load_maker() -> ModuleType:
    """sample_data/make.py as a module: ``make_dataset(out_dir, n_images=, size=, noise=, noise_rate=, seed=…)``."""
    spec = importlib.util.spec_from_file_location("sample_make", MAKE_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
