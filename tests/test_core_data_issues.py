"""Duplicate sets, outliers and quality flags (labelaudit.core.duplicates/outliers/quality) on planted rows."""

from __future__ import annotations

import numpy as np
import pytest

from labelaudit.core.duplicates import connected_components, duplicate_sets, exact_pairs, near_pairs
from labelaudit.core.neighbors import nearest_neighbors
from labelaudit.core.outliers import flag_outliers, outlier_scores
from labelaudit.core.quality import QUALITY_ISSUES, quality_flags
from labelaudit.data.measures import MEASURE_NAMES, perceptual_vectors

COLUMN = {name: i for i, name in enumerate(MEASURE_NAMES)}


def test_exact_pairs_link_every_repeat_to_the_first_row():
    pairs = exact_pairs(np.array([9, 4, 9, 1, 4, 9], dtype=np.uint64))
    assert sorted(map(tuple, pairs.tolist())) == [(0, 2), (0, 5), (1, 4)]
    assert exact_pairs(np.array([3, 2, 1])).shape == (0, 2)


def test_near_pairs_keep_each_pair_once_above_the_threshold():
    similarities = np.array([[0.99, 0.5], [0.99, 0.4], [0.3, 0.2]])
    indices = np.array([[1, 2], [0, 2], [0, 1]])
    assert near_pairs(similarities, indices, 0.98).tolist() == [[0, 1]]


def test_chains_join_one_set_and_conflicting_sets_rank_first():
    # rows 0-1-2 a chain (same label), rows 3-4 a pair with different labels, 5 alone
    pairs = np.array([[0, 1], [2, 1], [3, 4]])
    assert connected_components(6, pairs).tolist() == [0, 0, 0, 3, 3, 5]
    sets = duplicate_sets(pairs, np.array(["a", "a", "a", "b", "c", "a"]))
    assert sets.set_id.tolist() == [2, 2, 2, 1, 1, 0]  # the conflicting pair is set 1 though smaller
    assert sets.label_conflict.tolist() == [False, False, False, True, True, False]
    assert not sets.is_leak.any() and sets.n_sets == 2
    assert sets.is_duplicate.tolist() == [True] * 5 + [False]


def test_sets_spanning_splits_are_leaks():
    pairs = np.array([[0, 1], [2, 3]])
    sets = duplicate_sets(pairs, np.array(["a", "a", "b", "b", "a"]),
                          splits=np.array(["train", "test", "train", "train", "test"], dtype=object))
    assert sets.is_leak.tolist() == [True, True, False, False, False]
    assert sets.set_id[0] == 1  # the leaking set before the other, same-size one
    assert sets.counts()["leak_sets"] == 1
    # an unknown split (empty cell) never makes a leak
    unknown = duplicate_sets(np.array([[0, 1]]), np.array(["a", "a"]), splits=np.array(["train", None], dtype=object))
    assert not unknown.is_leak.any()


def test_thumbnails_of_a_copy_meet_and_of_another_picture_do_not():
    rng = np.random.default_rng(0)
    pictures = rng.integers(0, 256, size=(30, 32, 32, 3), dtype=np.uint8)
    brighter = np.clip(pictures[0].astype(int) + 20, 0, 255).astype(np.uint8)
    noisy = np.clip(pictures[1].astype(int) + rng.normal(0, 2, pictures[1].shape), 0, 255).astype(np.uint8)
    vectors = perceptual_vectors(np.concatenate([pictures, brighter[None], noisy[None]]))
    assert vectors.shape == (32, 256)
    similarities, indices = nearest_neighbors(vectors, 1)
    assert indices[30, 0] == 0 and similarities[30, 0] > 0.99
    assert indices[31, 0] == 1 and similarities[31, 0] > 0.99
    assert similarities[2:30, 0].max() < 0.5
    odd = perceptual_vectors(pictures[:2, :30, :30])  # a size that is not a multiple of 16
    assert odd.shape == (2, 256)


def test_an_isolated_unconfident_row_is_the_outlier():
    rng = np.random.default_rng(1)
    centre = rng.normal(size=64)
    inliers = centre + 0.1 * rng.normal(size=(200, 64))
    stranger = -centre + 0.1 * rng.normal(size=64)
    similarities, _ = nearest_neighbors(np.vstack([inliers, stranger]), 5)
    confidence = np.r_[np.full(200, 0.9), 0.3]
    outliers = flag_outliers(outlier_scores(similarities, confidence))
    assert outliers.is_outlier.tolist() == [False] * 200 + [True]
    assert np.argmax(outliers.score) == 200
    # a dataset of look-alikes without a stranger flags nothing
    similarities, _ = nearest_neighbors(inliers, 5)
    assert not flag_outliers(outlier_scores(similarities, np.full(200, 0.9))).is_outlier.any()


def measures(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = np.empty((n, len(MEASURE_NAMES)), dtype=np.float32)
    values[:, COLUMN["brightness"]] = rng.uniform(0.3, 0.6, n)
    values[:, COLUMN["brightness_p99"]] = rng.uniform(0.8, 1.0, n)
    values[:, COLUMN["brightness_p05"]] = rng.uniform(0.0, 0.1, n)
    values[:, COLUMN["sharpness"]] = rng.uniform(0.25, 0.35, n)
    values[:, COLUMN["entropy"]] = rng.uniform(4.0, 6.0, n)
    values[:, COLUMN["colourfulness"]] = rng.uniform(0.05, 0.2, n)
    values[:, COLUMN["width"]] = 640
    values[:, COLUMN["height"]] = 480
    return values


@pytest.mark.parametrize(("issue", "measure", "value"), [
    ("dark", "brightness_p99", 0.2), ("bright", "brightness_p05", 0.9), ("blurry", "sharpness", 0.05),
    ("low_information", "entropy", 0.5), ("grayscale", "colourfulness", 0.0), ("odd_aspect", "width", 2400),
    ("odd_size", "width", 60),
])
def test_each_planted_defect_is_flagged_and_only_it(issue, measure, value):
    values = measures(100)
    values[7, COLUMN[measure]] = value
    if issue == "odd_size":
        values[7, COLUMN["height"]] = 45
    flags = quality_flags(values)
    column = QUALITY_ISSUES.index(issue)
    assert np.flatnonzero(flags.flags[:, column]).tolist() == [7]
    assert flags.flags.sum() == 1
    assert flags.issue_lists()[7] == [issue] and flags.counts()[issue] == 1


def test_rules_are_relative_to_the_dataset_and_skip_missing_rows():
    values = measures(100)
    values[:, COLUMN["brightness_p99"]] *= 0.3  # a dataset of night pictures: none is dark among them
    values[:, COLUMN["colourfulness"]] = 0.0  # a grey dataset: nothing is grayscale "in a colour dataset"
    values[3] = np.nan
    flags = quality_flags(values)
    assert not flags.flags.any()
    assert flags.thresholds["grayscale"] is None


def test_a_slightly_cropped_copy_meets_the_middle_of_its_original():
    from PIL import Image

    from labelaudit.core.duplicates import cross_block_pairs

    rng = np.random.default_rng(3)
    # smooth pictures (blocks of 4 px, blurred by the resize) with a different layout each
    pictures = [np.kron(rng.integers(0, 256, (8, 8, 3)), np.ones((4, 4, 1))).astype(np.uint8) for _ in range(40)]
    cropped = np.asarray(Image.fromarray(pictures[0]).crop((1, 1, 31, 31)).resize((32, 32), Image.BILINEAR))
    images = np.stack([*pictures, cropped])
    whole = perceptual_vectors(images)
    assert perceptual_vectors(images, zoom=1.0).tolist() == whole.tolist()
    views = np.concatenate([whole, perceptual_vectors(images, zoom=0.93)])
    similarities, indices = nearest_neighbors(views, 3)
    pairs = cross_block_pairs(similarities, indices, len(images), 0.98)
    assert pairs.tolist() == [[0, 40]]
    # the whole-picture comparison alone does not see the crop as a copy
    assert near_pairs(*nearest_neighbors(whole, 3), 0.98).tolist() == []
