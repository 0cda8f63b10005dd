"""Tests for the synthetic planted-noise dataset generator in tests/shapes.py (used by tiny.py and the benchmarks)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tiny import load_sample_maker

make = load_sample_maker()

N_IMAGES = 40
SIZE = 16


def _read_csv(path: Path) -> list[tuple[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["path", "label"]
    return [tuple(row) for row in rows[1:]]


def _build(out_dir: Path, **overrides) -> dict:
    settings = dict(n_images=N_IMAGES, size=SIZE, noise="symmetric", noise_rate=0.1, seed=0)
    settings.update(overrides)
    return make.make_dataset(out_dir, **settings)


def test_same_seed_gives_identical_files(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    _build(first)
    _build(second)
    for name in ("labels.csv", "truth.csv"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    for image_name in ("img_00001.png", "img_00007.png", "img_00040.png"):
        assert (first / "images" / image_name).read_bytes() == (second / "images" / image_name).read_bytes()


def test_different_seed_gives_different_images_and_labels(tmp_path):
    _build(tmp_path / "a", seed=0)
    _build(tmp_path / "b", seed=1)
    assert (tmp_path / "a" / "truth.csv").read_bytes() != (tmp_path / "b" / "truth.csv").read_bytes()
    image_a = (tmp_path / "a" / "images" / "img_00001.png").read_bytes()
    image_b = (tmp_path / "b" / "images" / "img_00001.png").read_bytes()
    assert image_a != image_b


def test_images_are_rgb_of_requested_size_and_classes_balanced(tmp_path):
    _build(tmp_path)
    truth = _read_csv(tmp_path / "truth.csv")
    assert [path for path, _ in truth] == [f"img_{i:05d}.png" for i in range(1, N_IMAGES + 1)]
    for path, _ in truth:
        with Image.open(tmp_path / "images" / path) as image:
            assert image.mode == "RGB" and image.size == (SIZE, SIZE)
    counts = {name: 0 for name in make.CLASSES}
    for _, label in truth:
        counts[label] += 1
    assert set(counts.values()) == {N_IMAGES // len(make.CLASSES)}


@pytest.mark.parametrize("noise", ["symmetric", "pairs"])
def test_labels_differ_from_truth_on_exactly_the_planted_rows(tmp_path, noise):
    summary = _build(tmp_path, noise=noise, noise_rate=0.1)
    labels = _read_csv(tmp_path / "labels.csv")
    truth = _read_csv(tmp_path / "truth.csv")
    assert [path for path, _ in labels] == [path for path, _ in truth]
    n_differing = sum(given != true for (_, given), (_, true) in zip(labels, truth))
    assert n_differing == summary["n_flipped"] == round(0.1 * N_IMAGES)


@pytest.mark.parametrize("rate", [0.0, 0.13, 0.5, 1.0])
@pytest.mark.parametrize("noise", ["symmetric", "pairs"])
def test_plant_noise_realises_the_rate_exactly(rate, noise):
    true_labels = np.random.default_rng(5).integers(0, 8, size=1000)
    noisy = make.plant_noise(true_labels, n_classes=8, noise=noise, noise_rate=rate,
                             rng=np.random.default_rng(6))
    assert noisy.shape == true_labels.shape
    assert np.sum(noisy != true_labels) == round(rate * 1000)


def test_symmetric_noise_spreads_evenly_over_the_other_classes():
    n_classes = 8
    true_labels = np.zeros(14_000, dtype=int)
    noisy = make.plant_noise(true_labels, n_classes=n_classes, noise="symmetric", noise_rate=0.5,
                             rng=np.random.default_rng(1))
    counts = np.bincount(noisy[noisy != 0], minlength=n_classes)[1:]
    expected = 7_000 / (n_classes - 1)
    assert np.all(np.abs(counts - expected) < 0.15 * expected)


def test_pairs_noise_flips_only_to_the_partner():
    partners = make.pair_partners(8)
    assert np.array_equal(partners[partners], np.arange(8))
    assert np.all(partners != np.arange(8))
    true_labels = np.random.default_rng(2).integers(0, 8, size=2000)
    noisy = make.plant_noise(true_labels, n_classes=8, noise="pairs", noise_rate=0.3,
                             rng=np.random.default_rng(3))
    changed = noisy != true_labels
    assert np.array_equal(noisy[changed], partners[true_labels[changed]])


def test_pairs_in_dataset_are_the_documented_look_alikes(tmp_path):
    look_alikes = {frozenset(p) for p in [("circle", "ring"), ("square", "triangle"),
                                          ("cross", "star"), ("stripes", "dots")]}
    _build(tmp_path, noise="pairs", noise_rate=0.5)
    labels = dict(_read_csv(tmp_path / "labels.csv"))
    flips = [(true, labels[path]) for path, true in _read_csv(tmp_path / "truth.csv") if labels[path] != true]
    assert len(flips) == N_IMAGES // 2
    assert all(frozenset(flip) in look_alikes for flip in flips)


def test_pairs_noise_rejects_odd_class_count():
    with pytest.raises(ValueError, match="even"):
        make.plant_noise(np.array([0, 1, 2]), n_classes=3, noise="pairs", noise_rate=0.5,
                         rng=np.random.default_rng(0))


def test_test_split_is_disjoint_clean_and_complete(tmp_path):
    summary = _build(tmp_path / "split", test_fraction=0.25)
    labels = _read_csv(tmp_path / "split" / "labels.csv")
    truth = _read_csv(tmp_path / "split" / "truth.csv")
    test = _read_csv(tmp_path / "split" / "test.csv")
    assert summary["n_test"] == len(test) == 10
    assert len(labels) == len(truth) == N_IMAGES - 10
    labelled_paths, test_paths = {p for p, _ in labels}, {p for p, _ in test}
    assert not labelled_paths & test_paths
    on_disk = {p.name for p in (tmp_path / "split" / "images").iterdir()}
    assert labelled_paths | test_paths == on_disk
    # True labels do not depend on the split, so a run without one gives every image's truth.
    _build(tmp_path / "nosplit")
    all_truth = dict(_read_csv(tmp_path / "nosplit" / "truth.csv"))
    assert all(all_truth[path] == label for path, label in test)
    assert summary["n_flipped"] == round(0.1 * (N_IMAGES - 10))


def test_regenerating_with_fewer_images_leaves_no_stale_files(tmp_path):
    _build(tmp_path, test_fraction=0.25)
    _build(tmp_path, n_images=16)
    assert len(list((tmp_path / "images").iterdir())) == 16
    assert not (tmp_path / "test.csv").exists()


def test_subdir_per_class_uses_the_given_label_as_folder(tmp_path):
    _build(tmp_path, subdir_per_class=True, noise_rate=0.25)
    for path, label in _read_csv(tmp_path / "labels.csv"):
        assert path.split("/")[0] == label
        assert (tmp_path / "images" / path).is_file()


def test_render_image_rejects_unknown_class():
    with pytest.raises(ValueError, match="unknown class"):
        make.render_image("hexagon", np.random.default_rng(0), 16)


def test_cli_writes_the_dataset(tmp_path, capsys):
    out = tmp_path / "cli"
    assert make.main(["--out", str(out), "--n", "16", "--size", "16", "--noise", "pairs", "--rate", "0.25"]) == 0
    assert "wrote 16 labelled images (4 labels flipped" in capsys.readouterr().out
    assert len(_read_csv(out / "labels.csv")) == len(list((out / "images").iterdir())) == 16
