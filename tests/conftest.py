"""Shared fixtures: a tiny generated dataset and one scan of it, made once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tiny import TINY_MODEL, TINY_SIZE, load_sample_maker, tiny_train_args  # noqa: F401


@pytest.fixture(scope="session")
def sample_maker():
    return load_sample_maker()


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory, sample_maker) -> Path:
    """96 images of 16 px in 8 classes with 10% symmetric flips: images/, labels.csv, truth.csv."""
    root = tmp_path_factory.mktemp("tiny")
    sample_maker.make_dataset(root, n_images=96, size=TINY_SIZE, noise="symmetric", noise_rate=0.1, seed=3)
    return root


@pytest.fixture(scope="session")
def scanned_run(tmp_path_factory, tiny_dataset) -> Path:
    """A run directory made by ``labelaudit scan`` on ``tiny_dataset`` (treat as read-only; copy to modify)."""
    from typer.testing import CliRunner

    from labelaudit.cli.app import app

    out = tmp_path_factory.mktemp("run") / "out"
    result = CliRunner().invoke(app, ["scan", str(tiny_dataset / "images"), str(tiny_dataset / "labels.csv"),
                                      "-o", str(out), "--quiet", *tiny_train_args()])
    assert result.exit_code == 0, result.output
    return out
