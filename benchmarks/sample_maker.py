"""The synthetic planted-noise dataset generator (tests/shapes.py), for the benchmark scripts that make
planted-noise data. (The bundled sample_data/ is real Fashion-MNIST images, built by sample_data/make.py.)"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

MAKE_PY = Path(__file__).resolve().parents[1] / "tests" / "shapes.py"


def load_maker() -> ModuleType:
    """tests/shapes.py as a module: ``make_dataset(out_dir, n_images=, size=, noise=, noise_rate=, seed=…)``."""
    spec = importlib.util.spec_from_file_location("shapes", MAKE_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
