"""Duplicate sets: rows showing the same picture, exactly or nearly, joined by union-find.

Exact duplicates share a fingerprint of their decoded pixels; near duplicates are pairs of rows whose
embeddings are at least ``threshold`` cosine-similar (from :func:`labelaudit.core.neighbors.nearest_neighbors`).
Every pair joins its two rows' sets, so a chain original - JPEG copy - cropped copy is one set. Sets are
numbered in the order to look at them: sets whose rows carry different labels first (at least one of the
labels is wrong, whatever the picture shows), then sets that span splits (leakage), then larger sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def exact_pairs(fingerprints: np.ndarray) -> np.ndarray:
    """Pairs of rows with equal fingerprints.

    Parameters
    ----------
    fingerprints
        ``(N,)`` hashes of the rows' decoded pixels (any integer dtype).

    Returns
    -------
    numpy.ndarray
        ``(P, 2)`` int64: each row whose fingerprint an earlier row has, paired with the first such row.
    """
    fingerprints = np.asarray(fingerprints)
    if len(fingerprints) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    order = np.argsort(fingerprints, kind="stable")
    ordered = fingerprints[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]]
    first_of_run = order[np.maximum.accumulate(np.where(starts, np.arange(len(order)), 0))]
    repeated = ~starts
    return np.stack([first_of_run[repeated], order[repeated]], axis=1).astype(np.int64)


def near_pairs(similarities: np.ndarray, indices: np.ndarray, threshold: float) -> np.ndarray:
    """Pairs of rows at least ``threshold`` cosine-similar.

    Parameters
    ----------
    similarities, indices
        ``(N, k)`` the k nearest other rows of every row and their cosine similarities
        (:func:`labelaudit.core.neighbors.nearest_neighbors`).
    threshold
        Lowest similarity that counts as the same picture.

    Returns
    -------
    numpy.ndarray
        ``(P, 2)`` int64 pairs ``(i, j)`` with ``i < j``, each once.
    """
    similarities, indices = np.asarray(similarities), np.asarray(indices)
    rows, slots = np.nonzero(similarities >= threshold)
    if len(rows) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.sort(np.stack([rows, indices[rows, slots]], axis=1).astype(np.int64), axis=1)
    return np.unique(pairs, axis=0)


def cross_block_pairs(similarities: np.ndarray, indices: np.ndarray, n_rows: int, threshold: float) -> np.ndarray:
    """Pairs of rows found by a neighbour search over stacked views of the same N rows, where block 0 (rows
    ``0 .. N-1``) holds each row's whole picture and the later blocks other views of it (e.g. its centre):
    a neighbour link between block 0 and a later block, at least ``threshold`` similar, pairs the two rows
    (row index modulo N) unless it is a row and its own view. Links within one kind of block are ignored.

    Parameters
    ----------
    similarities, indices
        ``(R, k)`` neighbours among the B * N stacked rows of the first R stacked rows (all of them, or the
        N whole pictures only: :func:`labelaudit.core.neighbors.search_rows` with ``rows``).
    n_rows
        N.

    Returns
    -------
    numpy.ndarray
        ``(P, 2)`` int64 pairs ``(i, j)``, ``i < j``, each once.
    """
    rows, slots = np.nonzero(np.asarray(similarities) >= threshold)
    other = np.asarray(indices)[rows, slots]
    whole_to_view = (rows < n_rows) != (other < n_rows)
    a, b = rows[whole_to_view] % n_rows, other[whole_to_view] % n_rows
    distinct = a != b
    if not distinct.any():
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.sort(np.stack([a[distinct], b[distinct]], axis=1).astype(np.int64), axis=1)
    return np.unique(pairs, axis=0)


def connected_components(n_rows: int, pairs: np.ndarray) -> np.ndarray:
    """``(N,)`` int64 component of every row under the links ``pairs`` ``(P, 2)``: the smallest row
    index of its component (union-find with path halving; a row without links is its own component)."""
    parent = np.arange(n_rows, dtype=np.int64)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in np.asarray(pairs, dtype=np.int64).reshape(-1, 2):
        ra, rb = root(int(a)), root(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([root(i) for i in range(n_rows)], dtype=np.int64)


@dataclass
class DuplicateSets:
    """Duplicate sets of N rows.

    set_id: (N,) int32, 1 for the set to look at first, ..., 0 for a row in no set;
    label_conflict: (N,) bool, in a set whose rows carry different labels;
    is_leak: (N,) bool, in a set that spans more than one split (all False without splits);
    n_sets: number of sets.
    """

    set_id: np.ndarray
    label_conflict: np.ndarray
    is_leak: np.ndarray
    n_sets: int

    @property
    def is_duplicate(self) -> np.ndarray:
        return self.set_id > 0

    def counts(self) -> dict[str, int]:
        """Sets and rows of each kind."""
        conflict_sets = np.unique(self.set_id[self.label_conflict]).size
        leak_sets = np.unique(self.set_id[self.is_leak]).size
        return {"sets": self.n_sets, "rows": int(self.is_duplicate.sum()),
                "label_conflict_sets": int(conflict_sets), "label_conflict_rows": int(self.label_conflict.sum()),
                "leak_sets": int(leak_sets), "leak_rows": int(self.is_leak.sum())}


def duplicate_sets(pairs: np.ndarray, labels: np.ndarray, *, splits: np.ndarray | None = None) -> DuplicateSets:
    """Join linked rows into sets and number the sets in the order to look at them.

    Parameters
    ----------
    pairs
        ``(P, 2)`` int row pairs showing the same picture (exact and near together).
    labels
        ``(N,)`` given label of every row (class indices or names).
    splits
        ``(N,)`` split value of every row (e.g. train/val/test; None where unknown, which never makes a
        leak), or None.

    Returns
    -------
    DuplicateSets
        Sets ordered: label conflicts first, then leaks, then larger sets, then by first row.
    """
    labels = np.asarray(labels)
    n_rows = len(labels)
    component = connected_components(n_rows, pairs)
    roots, inverse, sizes = np.unique(component, return_inverse=True, return_counts=True)
    in_set = sizes[inverse] > 1
    conflict_of_root = np.zeros(len(roots), dtype=bool)
    leak_of_root = np.zeros(len(roots), dtype=bool)
    order = np.argsort(inverse, kind="stable")
    bounds = np.r_[0, np.cumsum(sizes)]
    split_values = None if splits is None else np.asarray(splits)
    for r in np.flatnonzero(sizes > 1):
        members = order[bounds[r]:bounds[r + 1]]
        conflict_of_root[r] = len(set(labels[members].tolist())) > 1
        if split_values is not None:
            leak_of_root[r] = len({v for v in split_values[members].tolist() if v is not None}) > 1
    multi = np.flatnonzero(sizes > 1)
    ranked = sorted(multi, key=lambda r: (not conflict_of_root[r], not leak_of_root[r], -sizes[r], roots[r]))
    number = np.zeros(len(roots), dtype=np.int32)
    number[np.asarray(ranked, dtype=np.int64)] = np.arange(1, len(ranked) + 1, dtype=np.int32)
    set_id = np.where(in_set, number[inverse], 0).astype(np.int32)
    return DuplicateSets(set_id=set_id, label_conflict=in_set & conflict_of_root[inverse],
                         is_leak=in_set & leak_of_root[inverse], n_sets=len(ranked))
