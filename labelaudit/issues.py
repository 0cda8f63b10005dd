"""The scan's data-issue checks as one library call: duplicates and split leakage, outliers and
image-quality defects, from what the scan already has (the decoded pixels, the measures taken while
decoding, the class probabilities the rows were scored with). No second pass over the files and no
extra network pass: the numerics live in :mod:`labelaudit.core.duplicates`,
:mod:`labelaudit.core.outliers`, :mod:`labelaudit.core.quality` and :mod:`labelaudit.core.neighbors`.

Rows are compared as grey 16 x 16 thumbnails of their decoded pixels
(:func:`labelaudit.data.measures.perceptual_vectors`), by cosine similarity. The trained network's
penultimate features were measured first and rejected: on 2,000 Fashion-MNIST images (resnet10t, ELR,
32 px) different items of one class were as similar as a picture and its JPEG re-encode (0.9995 against
0.984 at worst), so no threshold separated copies from look-alikes (1 copy in 10 found without false
pairs), and as an out-of-distribution score their neighbour distance reached AUROC 0.89 against 0.999
for the thumbnails. A network trained on a few thousand images learns what tells the classes apart, and
little of what tells two items of a class apart.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .core.duplicates import DuplicateSets, cross_block_pairs, duplicate_sets, exact_pairs, near_pairs
from .core.neighbors import nearest_neighbors, normalize_rows, search_rows
from .core.outliers import flag_outliers, outlier_scores
from .core.quality import QualityRules, quality_flags
from .data.dataset import LabelledImages
from .data.measures import MEASURE_NAMES, perceptual_vectors
from .errors import LabelAuditError
from .report.schema import SAMPLES_COLUMNS
from .report.tables import missing_as_none, scatter_rows

#: cosine similarity of the thumbnails from which two rows show the same picture. Measured on 2,000
#: Fashion-MNIST images with 30 JPEG re-encodes (quality 75) and 30 resized copies (28 -> 40 px): the
#: copies met their originals at 0.9982 or more, the most similar two different images at 0.9949.
NEAR_DUPLICATE_SIMILARITY = 0.997
#: a slightly cropped copy shows the middle of its original whole: its thumbnail is compared with thumbnails
#: of the other rows' middles (these shares of width and height), and meets one at this similarity. Measured
#: on 4,000 Fashion-MNIST images: copies cropped by 1 px (2 px) on each side of 28 and resized back met their
#: original's 93% (86%) middle at 0.993 or more in 85% (78%) of cases; no two different images reached 0.9914.
CROP_ZOOMS = (0.93, 0.86)
CROP_SIMILARITY = 0.993
#: the cropped-copy search compares every row with three views of every row (three times the work of one
#: search): above this many rows it is skipped and summary.json says so
CROP_SEARCH_MAX_ROWS = 100_000
#: nearest neighbours per row for the near-duplicate and outlier checks, and for the cropped-copy check
NEIGHBOURS = 10
CROP_NEIGHBOURS = 8
_INT_MEASURES = ("width", "height")


@dataclass
class DataIssueSettings:
    """``split_column``: CSV column naming each row's split (train/val/test); None: no leakage check."""

    split_column: str | None = None
    near_duplicate_similarity: float = NEAR_DUPLICATE_SIMILARITY
    crop_similarity: float = CROP_SIMILARITY
    neighbours: int = NEIGHBOURS
    quality: QualityRules = field(default_factory=QualityRules)


@dataclass
class DataIssues:
    """columns: the samples.parquet data-issue columns, each (len(rows),) with None where not computed;
    summary: counts per issue type and the thresholds used (summary.json ``data_issues``)."""

    columns: dict[str, np.ndarray]
    summary: dict[str, Any]
    duplicates: DuplicateSets


def split_values(rows: pd.DataFrame, split_column: str) -> np.ndarray:
    """(len(rows),) object: each row's value in ``split_column`` (a CSV column, renamed ``csv_<name>``
    by the data layer when it collides with a report column), stripped; None for an empty cell.

    Raises
    ------
    LabelAuditError
        The CSV has no such column.
    """
    name = split_column
    while name in SAMPLES_COLUMNS:  # the data layer renamed it so it cannot pass for a report column
        name = f"csv_{name}"
    if name not in rows.columns:
        extra = [c for c in rows.columns if c not in SAMPLES_COLUMNS]
        listed = ", ".join(extra[:10]) if extra else "none besides the path and label columns"
        raise LabelAuditError(f"--split-column {split_column!r} is not a column of the CSV (its other columns: "
                              f"{listed})")
    values = rows[name].astype(object).to_numpy()
    texts = [None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).strip() for v in values]
    return np.array([text if text else None for text in texts], dtype=object)  # an empty cell: split unknown


def find_data_issues(data: LabelledImages, *, fingerprints: np.ndarray, pred_probs: np.ndarray | None,
                     settings: DataIssueSettings | None = None) -> DataIssues:
    """Duplicates (exact and near), leakage, outliers and quality defects of every CSV row.

    Parameters
    ----------
    data
        The loaded dataset (rows, audited images, measures, file groups).
    fingerprints
        ``(M,)`` hashes of the audited rows' decoded pixels (``train.checkpoint.image_fingerprints``).
    pred_probs
        ``(M, K)`` class probabilities of the audited rows (the outlier score's confidence term), or None.
    """
    settings = settings or DataIssueSettings()
    started = time.perf_counter()
    n_rows = len(data.rows)
    row_index = np.asarray(data.row_index, dtype=np.int64)
    splits = split_values(data.rows, settings.split_column) if settings.split_column else None
    file_group = (data.file_group.copy() if data.file_group is not None else np.full(n_rows, -1, np.int64))
    file_group[row_index] = np.where(file_group[row_index] < 0, n_rows + np.arange(len(row_index)),
                                     file_group[row_index])  # audited rows always belong to the domain
    in_domain = file_group >= 0

    domain_rows = np.flatnonzero(in_domain)
    pairs = [domain_rows[exact_pairs(file_group[domain_rows])], row_index[exact_pairs(fingerprints)]]
    neighbours, crop_search = None, False
    if len(row_index) > 1:
        whole = perceptual_vectors(data.images)
        similarities, indices = nearest_neighbors(whole, settings.neighbours)
        neighbours = (similarities, indices)
        pairs.append(row_index[near_pairs(similarities, indices, settings.near_duplicate_similarity)])
        crop_search = len(row_index) <= CROP_SEARCH_MAX_ROWS
        if crop_search:
            # Only the whole pictures ask (a copy's whole picture is its original's middle): N of the 3N rows.
            views = normalize_rows(np.concatenate([whole] + [perceptual_vectors(data.images, zoom=zoom)
                                                             for zoom in CROP_ZOOMS]))
            stacked_similarities, stacked_indices = search_rows(
                views, min(CROP_NEIGHBOURS, len(views) - 1), rows=np.arange(len(row_index)))
            pairs.append(row_index[cross_block_pairs(stacked_similarities, stacked_indices, len(row_index),
                                                     settings.crop_similarity)])
    exact_rows = np.unique(np.concatenate([p.ravel() for p in pairs[:2]]))
    labels = data.rows["given_label"].astype(object).to_numpy()
    sets = duplicate_sets(np.concatenate(pairs), labels, splits=splits)

    columns: dict[str, np.ndarray] = {}

    def domain_column(values: np.ndarray) -> np.ndarray:
        out = np.full(n_rows, None, dtype=object)
        out[in_domain] = list(values[in_domain])
        return out

    columns["duplicate_set"] = domain_column(np.where(sets.set_id > 0, sets.set_id, None).astype(object))
    columns["is_duplicate"] = domain_column(sets.is_duplicate)
    if splits is not None:
        columns["is_leak"] = domain_column(sets.is_leak)

    summary: dict[str, Any] = {
        "duplicates": {**sets.counts(), "exact_rows": int(len(exact_rows)),
                       "near_duplicate_similarity": settings.near_duplicate_similarity if neighbours else None,
                       "crop_similarity": settings.crop_similarity if neighbours and crop_search else None},
        "split_column": settings.split_column,
    }
    if splits is not None:
        spanned = {str(v) for v in splits[sets.is_leak] if v is not None}
        summary["leakage"] = {"sets": sets.counts()["leak_sets"], "rows": int(sets.is_leak.sum()),
                              "splits": sorted(spanned)}

    if neighbours is not None:
        max_probability = pred_probs.max(axis=1) if pred_probs is not None and len(pred_probs) else None
        outliers = flag_outliers(outlier_scores(neighbours[0], max_probability))
        columns["outlier_score"] = _at_rows(n_rows, row_index, outliers.score.astype(np.float32))
        columns["is_outlier"] = _at_rows(n_rows, row_index, outliers.is_outlier)
        summary["outliers"] = {"rows": int(outliers.is_outlier.sum()), "threshold": round(outliers.threshold, 4),
                               "neighbours": int(neighbours[0].shape[1])}
    else:
        summary["outliers"] = None

    if data.measures is not None:
        flags = quality_flags(data.measures, settings.quality)
        columns["quality_issues"] = _at_rows(n_rows, row_index, flags.issue_lists())
        for j, name in enumerate(MEASURE_NAMES):
            values = data.measures[:, j]
            if name in _INT_MEASURES:
                values = np.array([None if np.isnan(v) else int(v) for v in values], dtype=object)
            columns[name] = _at_rows(n_rows, row_index, values)
        summary["quality"] = {"counts": flags.counts(), "rows": int(flags.flags.any(axis=1).sum()),
                              "thresholds": {k: (round(v, 4) if v is not None else None)
                                             for k, v in flags.thresholds.items()}}
    else:
        summary["quality"] = None
    summary["seconds"] = round(time.perf_counter() - started, 3)
    return DataIssues(columns=columns, summary=summary, duplicates=sets)


def _at_rows(n_rows: int, row_index: np.ndarray, values) -> np.ndarray:
    """(n_rows,) object: ``values`` (M,) at ``row_index``, NaN as None, None at the other rows."""
    return scatter_rows(n_rows, row_index, missing_as_none(values), None)
