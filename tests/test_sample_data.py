"""The bundled sample as committed (sample_data/): Fashion-MNIST images with the planted errors its README documents."""

from __future__ import annotations

import csv
import importlib.util
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
N_ROWS = 1500
SEED = 0
# sample_data/README.md, "The planted errors": (true, given) -> rows, per kind.
LOOKALIKE_COUNTS = {
    ("t-shirt", "shirt"): 13, ("shirt", "t-shirt"): 6, ("shirt", "coat"): 6, ("pullover", "coat"): 11,
    ("coat", "pullover"): 11, ("sneaker", "sandal"): 14, ("sandal", "sneaker"): 8, ("ankle-boot", "sneaker"): 6,
}
SYMMETRIC_ON_LOOKALIKE_PAIRS = {
    ("pullover", "coat"): 2, ("shirt", "t-shirt"): 1, ("sneaker", "sandal"): 1, ("sandal", "sneaker"): 1,
    ("ankle-boot", "sneaker"): 1,
}


def _load_make():
    spec = importlib.util.spec_from_file_location("sample_data_make", SAMPLE / "make.py")
    module = importlib.util.module_from_spec(spec)
    previous = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # keep __pycache__ out of the bundled sample_data/
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = previous
    return module


make = _load_make()
needs_fashion_mnist = pytest.mark.skipif(
    not (make.fashion.DATA_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST IDX files absent (Debian package dataset-fashion-mnist)")


def _read_csv(path: Path) -> list[tuple[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["path", "label"]
    return [tuple(row) for row in rows[1:]]


@pytest.fixture(scope="module")
def labels():
    return _read_csv(SAMPLE / "labels.csv")


@pytest.fixture(scope="module")
def truth():
    return _read_csv(SAMPLE / "truth.csv")


def test_labels_and_truth_list_the_same_paths_in_the_same_order(labels, truth):
    assert [p for p, _ in labels] == [p for p, _ in truth] == [f"fm_{i:05d}.png" for i in range(1, N_ROWS + 1)]
    assert {label for _, label in labels} | {label for _, label in truth} <= set(make.CLASSES)
    assert Counter(label for _, label in truth) == {name: N_ROWS // 10 for name in make.CLASSES}


def test_every_image_exists_decodes_and_nothing_else_is_there(truth):
    images = SAMPLE / "images"
    assert sorted(p.name for p in images.iterdir()) == [p for p, _ in truth]
    for path, _ in truth:
        with Image.open(images / path) as image:
            image.load()
            assert image.format == "PNG" and image.mode == "L" and image.size == (28, 28)


def test_planted_errors_are_as_documented(labels, truth):
    index = {name: i for i, name in enumerate(make.CLASSES)}
    true = np.array([index[label] for _, label in truth])
    given = [label for _, label in labels]
    errors = [(t, g) for (_, t), g in zip(truth, given) if t != g]
    assert len(errors) == round(0.10 * N_ROWS) == 150
    # The kinds are recomputable from truth.csv: planting depends on the true labels and the seed only.
    noisy, kind = make.plant_errors(true, SEED)
    assert [make.CLASSES[i] for i in noisy] == given
    assert Counter(kind) == {"": 1350, "lookalike": 75, "symmetric": 75}
    lookalike = Counter((truth[r][1], given[r]) for r in np.flatnonzero(kind == "lookalike"))
    assert lookalike == LOOKALIKE_COUNTS
    assert set(lookalike) <= set(make.fashion.LOOKALIKE_FLIPS)
    symmetric = Counter((truth[r][1], given[r]) for r in np.flatnonzero(kind == "symmetric"))
    assert all(t != g for t, g in symmetric)
    on_pairs = {pair: n for pair, n in symmetric.items() if pair in set(make.fashion.LOOKALIKE_FLIPS)}
    assert on_pairs == SYMMETRIC_ON_LOOKALIKE_PAIRS
    assert sum(pair in set(make.fashion.LOOKALIKE_FLIPS) for pair in errors) == 81


def test_gold_holds_true_labels_of_five_percent(labels, truth):
    gold = _read_csv(SAMPLE / "gold.csv")
    true, given = dict(truth), dict(labels)
    assert len(gold) == len({p for p, _ in gold}) == 75
    assert all(true[path] == label for path, label in gold)
    assert [p for p, _ in gold] == sorted(p for p, _ in gold)
    assert sum(given[path] != label for path, label in gold) == 7


def test_folder_is_under_two_megabytes_and_carries_its_licence():
    files = [p for p in SAMPLE.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert sum(p.stat().st_size for p in files) < 2_000_000
    licence = (SAMPLE / "LICENSE-fashion-mnist.txt").read_text()
    assert "Copyright (c) 2017 Zalando SE" in licence and "MIT License" in licence


@needs_fashion_mnist
def test_make_reproduces_the_committed_sample(tmp_path):
    make.make_sample(tmp_path, n=N_ROWS, seed=SEED)
    for name in ("labels.csv", "truth.csv", "gold.csv"):
        assert (tmp_path / name).read_bytes() == (SAMPLE / name).read_bytes()
    # Pixels, not bytes: a different zlib could compress the same pixels differently.
    for path in sorted((SAMPLE / "images").iterdir()):
        with Image.open(path) as committed, Image.open(tmp_path / "images" / path.name) as rebuilt:
            assert np.array_equal(np.asarray(committed), np.asarray(rebuilt)), path.name


@needs_fashion_mnist
def test_make_is_deterministic_and_replaces_its_own_images(tmp_path):
    assert make.main(["--out", str(tmp_path / "a"), "--n", "60", "--seed", "3"]) == 0
    make.make_sample(tmp_path / "b", n=100, seed=3)
    (tmp_path / "b" / "images" / "keep.png").write_bytes(b"not ours")
    make.make_sample(tmp_path / "b", n=60, seed=3)
    a, b = sorted((tmp_path / "a").rglob("*.*")), sorted((tmp_path / "b").rglob("*.*"))
    assert {p.relative_to(tmp_path / "a") for p in a} | {Path("images/keep.png")} == \
        {p.relative_to(tmp_path / "b") for p in b}
    for path in a:
        assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes()
    summary = make.make_sample(tmp_path / "c", n=60, seed=3)
    assert summary["n_errors"] == 6 and summary["n_lookalike"] == 3 and summary["n_symmetric"] == 3


def test_n_must_be_a_multiple_of_the_class_count():
    with pytest.raises(ValueError, match="multiple of 10"):
        make.draw_rows(np.arange(60_000) % 10, 1505, SEED)
