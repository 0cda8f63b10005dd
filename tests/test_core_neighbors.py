import numpy as np
import pytest

from labelaudit.core.neighbors import nearest_neighbors, normalize_rows


def brute_force(vectors, k):
    x = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, axis=1), order


@pytest.mark.parametrize(("n", "block_bytes"), [(50, 1), (50, 4 * 64 * 7), (50, 2**26), (1500, 4 * 1500 * 97), (1504, 2**26),
                                                 (1500, 4 * 256 * 300)])
def test_matches_brute_force_on_random_data(n, block_bytes):
    # n >= 1500 takes the grouped selection (32 groups of 46 or 47 columns, 1500 leaves 28 outside them),
    # n = 50 the plain partition; block_bytes below 256 whole rows tiles the columns (5 or 300 at a time)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(n, 12))
    sims, idx = nearest_neighbors(vectors, 5, block_bytes=block_bytes, reduce_dim=None)
    want_sims, want_idx = brute_force(vectors, 5)
    assert sims.shape == idx.shape == (n, 5)
    assert sims.dtype == np.float32 and idx.dtype == np.int64
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_allclose(sims, want_sims, atol=1e-5)
    assert np.all(np.diff(sims, axis=1) <= 0)


def test_finds_planted_near_identical_vectors():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(300, 64))
    pairs = [(3, 250), (17, 120), (200, 44)]
    for a, b in pairs:
        vectors[b] = 2.5 * vectors[a] + rng.normal(scale=1e-3, size=64)  # same direction, other scale
    sims, idx = nearest_neighbors(vectors, 3, block_bytes=4 * 300 * 16)
    for a, b in pairs:
        assert idx[a, 0] == b and idx[b, 0] == a
        assert sims[a, 0] > 0.999
    unplanted = np.setdiff1d(np.arange(300), np.array(pairs).ravel())
    assert sims[unplanted, 0].max() < 0.9


def test_never_returns_self_even_with_exact_copies():
    vectors = np.tile(np.array([[1.0, 2.0, 3.0]]), (4, 1))
    sims, idx = nearest_neighbors(vectors, 3)
    for row in range(4):
        assert row not in idx[row]
        assert sorted(idx[row]) == [i for i in range(4) if i != row]
    np.testing.assert_allclose(sims, 1.0, atol=1e-6)


@pytest.mark.parametrize("k", [4, 5, 100])
def test_k_at_least_n_minus_one_returns_all_other_rows(k):
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(5, 3))
    sims, idx = nearest_neighbors(vectors, k)
    assert idx.shape == (5, 4)
    for row in range(5):
        assert sorted(idx[row]) == [i for i in range(5) if i != row]
    want_sims, want_idx = brute_force(vectors, 4)
    np.testing.assert_array_equal(idx, want_idx)


def test_single_row_has_no_neighbours():
    sims, idx = nearest_neighbors(np.ones((1, 8)), 3)
    assert sims.shape == idx.shape == (1, 0)


def test_zero_vector_is_similarity_zero_to_everything():
    vectors = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    sims, idx = nearest_neighbors(vectors, 2)
    np.testing.assert_allclose(sims[0], [0.0, 0.0])
    # the orthogonal rows are at 0 as well, so the tie is ordered by index
    np.testing.assert_array_equal(idx, [[1, 2], [0, 2], [0, 1]])


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_rejects_bad_k(bad):
    with pytest.raises(ValueError, match="k must"):
        nearest_neighbors(np.ones((3, 2)), bad)


def test_rejects_nan_and_wrong_shape():
    with pytest.raises(ValueError, match="nan"):
        nearest_neighbors(np.array([[np.nan, 1.0], [1.0, 1.0]]), 1)
    with pytest.raises(ValueError, match="2-D"):
        normalize_rows(np.ones(3))


def test_reduced_search_is_exact_when_the_data_lie_in_the_subspace():
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(2000, 8)) @ rng.normal(size=(8, 64))  # rank 8 in 64 dimensions
    sims, idx = nearest_neighbors(vectors, 4, reduce_dim=8)
    want_sims, want_idx = brute_force(vectors, 4)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_allclose(sims, want_sims, atol=1e-5)


def test_reduced_search_returns_exact_similarities_and_keeps_planted_copies():
    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(1000, 16)) @ rng.normal(size=(16, 96)) + rng.normal(scale=0.3, size=(1000, 96))
    vectors[500] = vectors[7] + rng.normal(scale=1e-3, size=96)
    sims, idx = nearest_neighbors(vectors, 5, reduce_dim=12)
    assert idx[7, 0] == 500 and idx[500, 0] == 7
    x = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    np.testing.assert_allclose(sims, np.einsum("nd,nkd->nk", x, x[idx]), atol=1e-5)
    want_sims, want_idx = brute_force(vectors, 5)
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(idx, want_idx)])
    assert recall > 0.9


def test_auto_searches_exactly_below_the_row_threshold():
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(300, 300))
    sims, idx = nearest_neighbors(vectors, 3)
    np.testing.assert_array_equal(idx, brute_force(vectors, 3)[1])


@pytest.mark.parametrize("bad", [0, "yes", True])
def test_rejects_bad_reduce_dim(bad):
    with pytest.raises(ValueError, match="reduce_dim"):
        nearest_neighbors(np.ones((3, 4)), 1, reduce_dim=bad)


def test_inverted_file_with_one_cell_is_the_exact_search():
    rng = np.random.default_rng(6)
    vectors = rng.normal(size=(400, 10))
    sims, idx = nearest_neighbors(vectors, 4, reduce_dim=None, lists=1, probe=1)
    want_sims, want_idx = brute_force(vectors, 4)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_allclose(sims, want_sims, atol=1e-5)


def test_rows_whose_cells_are_too_small_fall_back_to_the_exact_search():
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(60, 6))
    sims, idx = nearest_neighbors(vectors, 3, reduce_dim=None, lists=60, probe=1)  # about one row per cell
    np.testing.assert_array_equal(idx, brute_force(vectors, 3)[1])


def test_inverted_file_finds_planted_copies_on_clustered_data():
    rng = np.random.default_rng(8)
    centers = rng.normal(size=(30, 32))
    vectors = centers[rng.integers(0, 30, 3000)] + 0.4 * rng.normal(size=(3000, 32))
    originals, copies = np.arange(0, 300, 3), np.arange(1500, 1600)
    vectors[copies] = vectors[originals] + rng.normal(scale=1e-3, size=(100, 32))
    sims, idx = nearest_neighbors(vectors, 5, reduce_dim=None, lists=40, probe=4)
    np.testing.assert_array_equal(idx[copies, 0], originals)
    x = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    np.testing.assert_allclose(sims, np.einsum("nd,nkd->nk", x, x[idx]), atol=1e-5)
    assert np.all(idx != np.arange(3000)[:, None])
    want = brute_force(vectors, 5)[1]
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(idx, want)])
    assert recall > 0.8


@pytest.mark.parametrize(("lists", "probe"), [(0, 1), ("many", 1), (4, 0), (4, 5)])
def test_rejects_bad_inverted_file_settings(lists, probe):
    with pytest.raises(ValueError, match="lists|probe"):
        nearest_neighbors(np.ones((10, 4)), 1, lists=lists, probe=probe)
