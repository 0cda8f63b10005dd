"""Cosine nearest neighbours of every row among the other rows, without an N×N matrix in memory.

The exact search compares a block of rows with all N rows at a time (one matrix product of shape
(block, N)), keeps the k best of each row, and moves on, so memory is O(block·N + N·k) rather than O(N²).
"""

from __future__ import annotations

import numpy as np

#: bytes of the (block, N) float32 similarity block held at once by the exact search
DEFAULT_BLOCK_BYTES = 64 * 2**20


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


def nearest_neighbors(vectors, k: int, *, block_bytes: int = DEFAULT_BLOCK_BYTES,
                      backend: str = "numpy") -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most cosine-similar other rows of every row (exact, blocked).

    Parameters
    ----------
    vectors : array_like, shape (N, d)
        One embedding per row; need not be normalised. All-zero rows have similarity 0 to every row.
    k : int
        Neighbours wanted per row, ``k >= 1``. Clipped to ``N - 1`` (a row is never its own neighbour), so
        ``N = 1`` gives arrays with zero columns.
    block_bytes : int
        Upper bound on the bytes of the (block, N) float32 similarity block computed at once; at least one
        row is always processed per block.
    backend : {"numpy"}
        Search implementation.

    Returns
    -------
    similarities : np.ndarray, shape (N, k'), float32
        Cosine similarity to each neighbour, descending along each row; ``k' = min(k, N - 1)``.
    indices : np.ndarray, shape (N, k'), int64
        Row index of each neighbour, never the row itself. Equal similarities are ordered by index.
    """
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if backend != "numpy":
        raise ValueError(f"unknown backend {backend!r}")
    x = normalize_rows(vectors)
    n = x.shape[0]
    kk = min(int(k), n - 1)
    sims = np.empty((n, kk), dtype=np.float32)
    idx = np.empty((n, kk), dtype=np.int64)
    if kk == 0:
        return sims, idx
    rows_per_block = max(1, int(block_bytes) // (4 * n))
    block = np.empty((min(rows_per_block, n), n), dtype=np.float32)
    for start in range(0, n, rows_per_block):
        stop = min(start + rows_per_block, n)
        s = block[: stop - start]
        np.matmul(x[start:stop], x.T, out=s)
        local = np.arange(stop - start)
        s[local, start + local] = -np.inf
        top = np.argpartition(s, n - kk, axis=1)[:, n - kk:]
        top_sims = np.take_along_axis(s, top, axis=1)
        # descending similarity, then ascending index, so ties come out the same on every run
        order = np.lexsort((top, -top_sims), axis=1)
        sims[start:stop] = np.take_along_axis(top_sims, order, axis=1)
        idx[start:stop] = np.take_along_axis(top, order, axis=1)
    return sims, idx
