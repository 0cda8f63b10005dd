"""Cosine nearest neighbours of every row among the other rows, without an N×N matrix in memory.

The search compares a block of rows with all N rows at a time (one matrix product of shape (block, N),
or of column tiles of it when N is so large that fewer than 256 whole rows would fit in ``block_bytes``),
keeps the k best of each row, and moves on, so memory is O(block_bytes + N·k) rather than O(N²).

Picking the k best of N similarities per row is the other cost besides the product. A full
``argpartition`` over every row costs about 4 ns per similarity; instead the N columns are dealt into
``_GROUPS`` strided groups, the element-wise maximum over the groups is taken (vectorised, ~0.4 ns per
similarity), and only the k groups with the largest maxima are searched: the k-th largest group maximum is
at most the k-th largest similarity, so every one of the k best lies in those groups.

For large N the product itself dominates (N²·d multiply-adds). ``reduce_dim`` then searches candidates in
the top principal subspace of the normalised vectors, and ``lists`` (an inverted file: k-means cells, each
row compared only with the rows of its nearest cells) cuts the N² itself; both re-rank their candidates
with the full vectors, so the returned similarities are always exact cosines and only recall can suffer
(``benchmarks/neighbors.py`` measures it against the exact search).
"""

from __future__ import annotations

import numpy as np

#: bytes of the (block, N) float32 similarity block held at once
DEFAULT_BLOCK_BYTES = 64 * 2**20
#: strided column groups of the selection step
_GROUPS = 32
#: fewest query rows per similarity block; the columns are tiled instead when N is too large
_MIN_BLOCK_ROWS = 256
#: with ``reduce_dim="auto"``: rows above which, and the dimension to which, the search is reduced
AUTO_REDUCE_ROWS = 50_000
AUTO_REDUCE_DIM = 128
#: with ``lists="auto"``: rows above which the search goes through an inverted file of 2·√N cells
AUTO_IVF_ROWS = 100_000


def normalize_rows(vectors) -> np.ndarray:
    """L2-normalised float32 copy of ``vectors``; all-zero rows stay zero (similarity 0 to everything).

    Parameters
    ----------
    vectors : array_like, shape (N, d)

    Returns
    -------
    np.ndarray, shape (N, d), float32
    """
    x = np.array(vectors, dtype=np.float32, copy=True)
    if x.ndim != 2:
        raise ValueError(f"vectors must be 2-D (N, d), got shape {x.shape}")
    # squared norms in float64 without an (N, d) temporary: nan or inf anywhere in a row shows up in its norm
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    if not np.all(np.isfinite(norms)):
        raise ValueError("vectors contain nan or inf")
    np.divide(x, norms[:, None].astype(np.float32), out=x, where=norms[:, None] > 0)
    return x


def principal_projection(x: np.ndarray, dim: int, *, block_rows: int = 65_536) -> np.ndarray:
    """Top ``dim`` eigenvectors of the (uncentred) second moment of the rows of ``x``.

    Inner products are what the search ranks by, so the subspace is the one that keeps the most of
    ``xᵢ·xⱼ`` on average: the leading eigenvectors of ``xᵀx``, without subtracting the mean.

    Parameters
    ----------
    x : np.ndarray, shape (N, d)
    dim : int
        ``1 <= dim <= d``.

    Returns
    -------
    np.ndarray, shape (d, dim), float32, orthonormal columns
    """
    d = x.shape[1]
    moment = np.zeros((d, d), dtype=np.float64)
    for start in range(0, x.shape[0], block_rows):
        part = x[start:start + block_rows].astype(np.float64)
        moment += part.T @ part
    _, vecs = np.linalg.eigh(moment)
    return np.ascontiguousarray(vecs[:, ::-1][:, :dim], dtype=np.float32)


def _select_top(block: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and values of the ``kk`` largest entries of each row of ``block`` (b, M), unordered."""
    b, m = block.shape
    width = m // _GROUPS
    if width < 4 * kk:
        top = np.argpartition(block, m - kk, axis=1)[:, m - kk:]
        return top, np.take_along_axis(block, top, axis=1)
    grouped = _GROUPS * width
    group_max = block[:, :grouped].reshape(b, _GROUPS, width).max(axis=1)          # (b, width)
    best_groups = np.argpartition(group_max, width - kk, axis=1)[:, width - kk:]   # (b, kk)
    cand = (best_groups[:, :, None] + width * np.arange(_GROUPS)[None, None, :]).reshape(b, -1)
    if grouped < m:  # the last m - grouped columns belong to no group: always candidates
        cand = np.concatenate([cand, np.broadcast_to(np.arange(grouped, m), (b, m - grouped))], axis=1)
    cand_vals = np.take_along_axis(block, cand, axis=1)
    top = np.argpartition(cand_vals, cand_vals.shape[1] - kk, axis=1)[:, -kk:]
    return np.take_along_axis(cand, top, axis=1), np.take_along_axis(cand_vals, top, axis=1)


def _sorted(idx: np.ndarray, sims: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
    # descending similarity, then ascending index, so equal similarities come out the same on every run
    order = np.lexsort((idx, -sims), axis=1)[:, :kk]
    return np.take_along_axis(sims, order, axis=1), np.take_along_axis(idx, order, axis=1)


def search_rows(x: np.ndarray, kk: int, rows=None, *,
                block_bytes: int = DEFAULT_BLOCK_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``kk`` inner products of some rows of ``x`` against all rows, self excluded.

    Parameters
    ----------
    x : np.ndarray, shape (N, d), float32
        Already normalised (or projected) vectors.
    kk : int
        ``1 <= kk <= N - 1``.
    rows : np.ndarray of int, shape (R,), optional
        The query rows (default: all N).

    Returns
    -------
    similarities : np.ndarray, shape (R, kk), float32, descending
    indices : np.ndarray, shape (R, kk), int64
    """
    n = x.shape[0]
    rows = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
    # Whole rows of similarities while at least _MIN_BLOCK_ROWS of them fit; beyond that, column tiles, so
    # every product still has many rows (a few rows against a million columns re-read all the vectors
    # per block and ran ~3x slower).
    if _MIN_BLOCK_ROWS * n * 4 <= block_bytes:
        rows_per_block, cols_per_tile = max(1, int(block_bytes) // (4 * n)), n
    else:
        rows_per_block = _MIN_BLOCK_ROWS
        cols_per_tile = max(kk, int(block_bytes) // (4 * _MIN_BLOCK_ROWS))
    buffer = np.empty((min(rows_per_block, len(rows)) * min(cols_per_tile, n),), dtype=np.float32)
    sims = np.empty((len(rows), kk), dtype=np.float32)
    idx = np.empty((len(rows), kk), dtype=np.int64)
    for lo in range(0, len(rows), rows_per_block):
        query = rows[lo:lo + rows_per_block]
        best_idx = best_vals = None
        for c0 in range(0, n, cols_per_tile):
            c1 = min(c0 + cols_per_tile, n)
            block = buffer[: len(query) * (c1 - c0)].reshape(len(query), c1 - c0)
            np.matmul(x[query], x[c0:c1].T, out=block)
            inside = (query >= c0) & (query < c1)
            block[np.flatnonzero(inside), query[inside] - c0] = -np.inf
            top, vals = _select_top(block, min(kk, c1 - c0))
            top += c0
            if best_idx is None:
                best_idx, best_vals = top, vals
            else:
                merged_idx = np.concatenate([best_idx, top], axis=1)
                merged_vals = np.concatenate([best_vals, vals], axis=1)
                keep = _top_columns(merged_vals, kk)
                best_idx = np.take_along_axis(merged_idx, keep, axis=1)
                best_vals = np.take_along_axis(merged_vals, keep, axis=1)
        sims[lo:lo + len(query)], idx[lo:lo + len(query)] = _sorted(best_idx, best_vals, kk)
    return sims, idx


def _top_columns(a: np.ndarray, kk: int) -> np.ndarray:
    """Column indices of the ``kk`` largest entries of each row of ``a``, unordered."""
    if kk >= a.shape[1]:
        return np.broadcast_to(np.arange(a.shape[1]), a.shape).copy()
    return np.argpartition(a, a.shape[1] - kk, axis=1)[:, a.shape[1] - kk:]


def _spherical_kmeans(sample: np.ndarray, lists: int, rng: np.random.Generator, iterations: int = 10) -> np.ndarray:
    centroids = sample[rng.choice(len(sample), lists, replace=False)].copy()
    for _ in range(iterations):
        assign = np.concatenate([np.argmax(sample[lo:lo + 8192] @ centroids.T, axis=1)
                                 for lo in range(0, len(sample), 8192)])
        order = np.argsort(assign, kind="stable")
        present, starts = np.unique(assign[order], return_index=True)
        sums = np.add.reduceat(sample[order], starts, axis=0)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        keep = norms[:, 0] > 0
        centroids[present[keep]] = sums[keep] / norms[keep]  # an emptied list keeps its old centroid
    return centroids


def ivf_candidates(y: np.ndarray, n_cand: int, lists: int, probe: int, *, seed: int = 0) -> np.ndarray:
    """Approximate top-``n_cand`` inner-product candidates of every row through an inverted file.

    The rows are dealt into ``lists`` cells by spherical k-means (fitted on a sample of ``32·lists`` rows);
    each row is compared only with the rows of its ``probe`` nearest cells, cell by cell, so the cost is
    about ``N · probe · N / lists`` products instead of ``N²``.

    Parameters
    ----------
    y : np.ndarray, shape (N, d), float32
        Normalised (or projected) vectors.
    n_cand, lists, probe : int
        Candidates wanted per row; cells; cells searched per row (``1 <= probe <= lists``).

    Returns
    -------
    np.ndarray, shape (N, n_cand), int64
        Candidate rows (unordered), never the row itself; ``-1`` pads a row whose probed cells hold fewer
        than ``n_cand`` other rows.
    """
    n = y.shape[0]
    rng = np.random.default_rng(seed)
    sample = y[np.sort(rng.choice(n, min(n, 32 * lists), replace=False))]
    centroids = _spherical_kmeans(sample, lists, rng)
    probes = np.empty((n, probe), dtype=np.int64)
    for lo in range(0, n, 8192):
        scores = y[lo:lo + 8192] @ centroids.T
        top = _top_columns(scores, probe)
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        probes[lo:lo + 8192] = np.take_along_axis(top, order, axis=1)
    owner = probes[:, 0]  # each row lives in its nearest cell
    members_sorted = np.argsort(owner, kind="stable")
    member_bounds = np.searchsorted(owner[members_sorted], np.arange(lists + 1))
    flat_cells = probes.ravel()
    queries_sorted = np.argsort(flat_cells, kind="stable")
    query_bounds = np.searchsorted(flat_cells[queries_sorted], np.arange(lists + 1))
    queries_sorted //= probe  # position in probes.ravel() -> row
    best_sims = np.full((n, n_cand), -np.inf, dtype=np.float32)
    best_idx = np.full((n, n_cand), -1, dtype=np.int64)
    for cell in range(lists):
        members = members_sorted[member_bounds[cell]:member_bounds[cell + 1]]
        queries = queries_sorted[query_bounds[cell]:query_bounds[cell + 1]]
        if len(members) == 0 or len(queries) == 0:
            continue
        sims = y[queries] @ y[members].T
        sims[queries[:, None] == members[None, :]] = -np.inf
        top = _top_columns(sims, min(n_cand, len(members)))
        merged_sims = np.concatenate([best_sims[queries], np.take_along_axis(sims, top, axis=1)], axis=1)
        merged_idx = np.concatenate([best_idx[queries], members[top]], axis=1)
        keep = _top_columns(merged_sims, n_cand)
        best_sims[queries] = np.take_along_axis(merged_sims, keep, axis=1)
        best_idx[queries] = np.take_along_axis(merged_idx, keep, axis=1)
    best_idx[~np.isfinite(best_sims)] = -1  # self or padding
    return best_idx


def _rerank(x: np.ndarray, cand: np.ndarray, kk: int, *, block_rows: int = 2048,
            block_bytes: int = DEFAULT_BLOCK_BYTES):
    """Exact top-``kk`` of each row among its candidates (``-1`` = none); rows left with fewer than ``kk``
    candidates are searched exactly against all rows."""
    sims = np.empty((x.shape[0], kk), dtype=np.float32)
    idx = np.empty((x.shape[0], kk), dtype=np.int64)
    for lo in range(0, x.shape[0], block_rows):
        c = cand[lo:lo + block_rows]
        exact = np.einsum("bd,bcd->bc", x[lo:lo + block_rows], x[np.maximum(c, 0)])
        exact[c < 0] = -np.inf
        sims[lo:lo + block_rows], idx[lo:lo + block_rows] = _sorted(c, exact, kk)
    short = np.flatnonzero((cand >= 0).sum(axis=1) < kk)
    if len(short):
        sims[short], idx[short] = search_rows(x, kk, short, block_bytes=block_bytes)
    return sims, idx


def nearest_neighbors(vectors, k: int, *, reduce_dim: int | str | None = "auto",
                      lists: int | str | None = "auto", probe: int = 16, candidates: int | None = None,
                      block_bytes: int = DEFAULT_BLOCK_BYTES, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most cosine-similar other rows of every row.

    Parameters
    ----------
    vectors : array_like, shape (N, d)
        One embedding per row; need not be normalised. All-zero rows have similarity 0 to every row.
    k : int
        Neighbours wanted per row, ``k >= 1``. Clipped to ``N - 1`` (a row is never its own neighbour), so
        ``N = 1`` gives arrays with zero columns.
    reduce_dim : int, "auto" or None
        ``None``: compare the full vectors. An int: find ``candidates`` per row in the top ``reduce_dim``
        principal directions, then re-rank them with the full vectors (approximate: a true neighbour can be
        missed; the similarities returned are exact). ``"auto"``: ``AUTO_REDUCE_DIM`` above
        ``AUTO_REDUCE_ROWS`` rows when d is at least twice as large, else ``None``.
    lists : int, "auto" or None
        ``None``: compare every row with every row (exact in the searched space). An int: an inverted file
        of that many cells, each row compared with the rows of its ``probe`` nearest cells
        (:func:`ivf_candidates`), then re-ranked exactly. ``"auto"``: ``2·√N`` cells above
        ``AUTO_IVF_ROWS`` rows, else ``None``.
    probe : int
        Cells searched per row when ``lists`` is used.
    candidates : int, optional
        Candidates per row re-ranked after an approximate search; default ``max(2k, k + 16)``.
    block_bytes : int
        Upper bound on the bytes of the float32 similarity block computed at once (it never shrinks below
        256 rows × k columns).
    seed : int
        Seeds the inverted file's k-means.

    Returns
    -------
    similarities : np.ndarray, shape (N, k'), float32
        Cosine similarity to each neighbour, descending along each row; ``k' = min(k, N - 1)``.
    indices : np.ndarray, shape (N, k'), int64
        Row index of each neighbour, never the row itself. Equal similarities are ordered by index, except
        that which of several rows tied at the k-th place is kept is arbitrary.
    """
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    x = normalize_rows(vectors)
    n, d = x.shape
    kk = min(int(k), n - 1)
    if kk == 0:
        return np.empty((n, 0), dtype=np.float32), np.empty((n, 0), dtype=np.int64)
    if reduce_dim == "auto":
        reduce_dim = AUTO_REDUCE_DIM if n > AUTO_REDUCE_ROWS and d >= 2 * AUTO_REDUCE_DIM else None
    if lists == "auto":
        lists = int(2 * np.sqrt(n)) if n > AUTO_IVF_ROWS else None
    if reduce_dim is not None and (isinstance(reduce_dim, bool) or not isinstance(reduce_dim, (int, np.integer))
                                   or reduce_dim < 1):
        raise ValueError(f"reduce_dim must be a positive integer, 'auto' or None, got {reduce_dim!r}")
    if lists is not None and (isinstance(lists, bool) or not isinstance(lists, (int, np.integer)) or lists < 1):
        raise ValueError(f"lists must be a positive integer, 'auto' or None, got {lists!r}")
    if lists is not None and not 1 <= probe <= lists:
        raise ValueError(f"probe must lie in [1, lists], got {probe!r}")
    n_cand = min(n - 1, candidates if candidates is not None else max(2 * kk, kk + 16))
    if n_cand < kk:
        raise ValueError(f"candidates must be at least k, got {candidates!r}")
    if reduce_dim is not None and reduce_dim >= d:
        reduce_dim = None
    if reduce_dim is None and lists is None:
        return search_rows(x, kk, block_bytes=block_bytes)
    y = x if reduce_dim is None else x @ principal_projection(x, int(reduce_dim))
    if lists is None:
        _, cand = search_rows(y, n_cand, block_bytes=block_bytes)
    else:
        cand = ivf_candidates(y, n_cand, min(int(lists), n), min(int(probe), int(lists), n), seed=seed)
    return _rerank(x, cand, kk, block_bytes=block_bytes)
