"""Stratified fold assignment for out-of-fold scoring."""

from __future__ import annotations

import numpy as np


def stratified_folds(labels: np.ndarray, n_folds: int, *, seed: int = 0) -> np.ndarray:
    """Assign each row to one of ``n_folds`` folds, spreading every class evenly.

    labels: (N,) int class indices. Returns (N,) int16 fold numbers in [0, n_folds).
    Within each class the rows are shuffled (seeded) and dealt out round-robin, starting at a
    different fold per class so that fold sizes stay balanced.
    """
    labels = np.asarray(labels)
    if n_folds < 1:
        raise ValueError("n_folds must be >= 1")
    rng = np.random.default_rng(seed)
    folds = np.zeros(len(labels), dtype=np.int16)
    offset = 0
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        rng.shuffle(members)
        folds[members] = (np.arange(len(members)) + offset) % n_folds
        offset += len(members)
    return folds
