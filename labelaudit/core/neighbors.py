"""Cosine nearest neighbours of every row among the other rows, without an N×N matrix in memory.

The search compares a block of rows with all N rows at a time (one matrix product of shape (block, N)),
keeps the k best of each row, and moves on, so memory is O(block·N + N·k) rather than O(N²).

Picking the k best of N similarities per row is the other cost besides the product. A full
``argpartition`` over every row costs about 4 ns per similarity; instead the N columns are dealt into
``_GROUPS`` strided groups, the element-wise maximum over the groups is taken (vectorised, ~0.4 ns per
similarity), and only the k groups with the largest maxima are searched: the k-th largest group maximum is
at most the k-th largest similarity, so every one of the k best lies in those groups.

For large N the product itself dominates (N²·d multiply-adds). ``reduce_dim`` then searches candidates in
the top principal subspace of the normalised vectors and re-ranks them with the full vectors, so the
returned similarities are always exact cosines; only recall can suffer (``benchmarks/neighbors.py``
measures it against the exact search).
"""

from __future__ import annotations

import numpy as np

#: bytes of the (block, N) float32 similarity block held at once
DEFAULT_BLOCK_BYTES = 64 * 2**20
#: strided column groups of the selection step
_GROUPS = 32
#: with ``reduce_dim="auto"``: rows above which, and the dimension to which, the search is reduced
AUTO_REDUCE_ROWS = 50_000
AUTO_REDUCE_DIM = 128


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
    if not np.all(np.isfinite(x)):
        raise ValueError("vectors contain nan or inf")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
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


def search_rows(x: np.ndarray, kk: int, start: int, stop: int, *,
                block_bytes: int = DEFAULT_BLOCK_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``kk`` inner products of rows ``start:stop`` of ``x`` against all rows, self excluded.

    Parameters
    ----------
    x : np.ndarray, shape (N, d), float32
        Already normalised (or projected) vectors.
    kk : int
        ``1 <= kk <= N - 1``.

    Returns
    -------
    similarities : np.ndarray, shape (stop - start, kk), float32, descending
    indices : np.ndarray, shape (stop - start, kk), int64
    """
    n = x.shape[0]
    rows_per_block = max(1, int(block_bytes) // (4 * n))
    buffer = np.empty((min(rows_per_block, stop - start), n), dtype=np.float32)
    sims = np.empty((stop - start, kk), dtype=np.float32)
    idx = np.empty((stop - start, kk), dtype=np.int64)
    for lo in range(start, stop, rows_per_block):
        hi = min(lo + rows_per_block, stop)
        block = buffer[: hi - lo]
        np.matmul(x[lo:hi], x.T, out=block)
        local = np.arange(hi - lo)
        block[local, lo + local] = -np.inf
        top, vals = _select_top(block, kk)
        sims[lo - start:hi - start], idx[lo - start:hi - start] = _sorted(top, vals, kk)
    return sims, idx


def _rerank(x: np.ndarray, cand: np.ndarray, kk: int, *, block_rows: int = 2048):
    sims = np.empty((x.shape[0], kk), dtype=np.float32)
    idx = np.empty((x.shape[0], kk), dtype=np.int64)
    for lo in range(0, x.shape[0], block_rows):
        c = cand[lo:lo + block_rows]
        exact = np.einsum("bd,bcd->bc", x[lo:lo + block_rows], x[c])
        sims[lo:lo + block_rows], idx[lo:lo + block_rows] = _sorted(c, exact, kk)
    return sims, idx


def nearest_neighbors(vectors, k: int, *, reduce_dim: int | str | None = "auto", candidates: int | None = None,
                      block_bytes: int = DEFAULT_BLOCK_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most cosine-similar other rows of every row.

    Parameters
    ----------
    vectors : array_like, shape (N, d)
        One embedding per row; need not be normalised. All-zero rows have similarity 0 to every row.
    k : int
        Neighbours wanted per row, ``k >= 1``. Clipped to ``N - 1`` (a row is never its own neighbour), so
        ``N = 1`` gives arrays with zero columns.
    reduce_dim : int, "auto" or None
        ``None``: exact search in all d dimensions. An int: find ``candidates`` per row in the top
        ``reduce_dim`` principal directions, then re-rank them with the full vectors (approximate: a true
        neighbour can be missed, the similarities returned are exact). ``"auto"``: exact up to
        ``AUTO_REDUCE_ROWS`` rows, above that ``AUTO_REDUCE_DIM`` when d is at least twice as large.
    candidates : int, optional
        Candidates per row re-ranked after a reduced search; default ``max(2k, k + 16)``.
    block_bytes : int
        Upper bound on the bytes of the (block, N) float32 similarity block computed at once; at least one
        row is always processed per block.

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
    if reduce_dim is None:
        return search_rows(x, kk, 0, n, block_bytes=block_bytes)
    if isinstance(reduce_dim, bool) or not isinstance(reduce_dim, (int, np.integer)) or reduce_dim < 1:
        raise ValueError(f"reduce_dim must be a positive integer, 'auto' or None, got {reduce_dim!r}")
    n_cand = min(n - 1, candidates if candidates is not None else max(2 * kk, kk + 16))
    if n_cand < kk:
        raise ValueError(f"candidates must be at least k, got {candidates!r}")
    if reduce_dim >= d:
        return search_rows(x, kk, 0, n, block_bytes=block_bytes)
    y = x @ principal_projection(x, int(reduce_dim))
    _, cand = search_rows(y, n_cand, 0, n, block_bytes=block_bytes)
    return _rerank(x, cand, kk)
