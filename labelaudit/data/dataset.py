"""From an images folder and a label CSV to arrays ready for training, with a status per row.

Every CSV row is kept in ``LabelledImages.rows``; the rows that can be audited also have an
image in ``images``. A row's status is decided in this order, the first problem winning:

1. the path: ``empty_path``, ``outside_root``, ``missing_file``, ``not_a_file``;
2. the label (stripped of surrounding whitespace): ``empty_label``, then ``unknown_label``
   when a class list is given and the label is not in it;
3. rows that passed 1-2 and name the same file (after resolving symlinks):
   ``duplicate_conflict`` for every one of them when their labels differ, otherwise the
   first is kept and later ones get ``duplicate``;
4. the image itself: ``unreadable_image`` or ``image_too_large`` for the kept row and for
   its ``duplicate`` rows too (the file is what is broken; no other row audits it).

Everything else is ``audited``. Each distinct file is decoded once, and with a cache folder
not at all when an earlier run decoded it (see :mod:`labelaudit.data.cache`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from labelaudit.data.cache import DecodeReport, decode_files
from labelaudit.data.csvio import read_label_csv
from labelaudit.data.paths import PathConfiner
from labelaudit.errors import LabelAuditError
from labelaudit.report.schema import AUDITED, SAMPLES_COLUMNS

EMPTY_LABEL = "empty_label"
UNKNOWN_LABEL = "unknown_label"
DUPLICATE = "duplicate"
DUPLICATE_CONFLICT = "duplicate_conflict"


@dataclass
class LabelledImages:
    """The usable images of a labelled dataset and the fate of every CSV row.

    Attributes
    ----------
    rows : pandas.DataFrame
        One row per CSV row, CSV order. Columns ``path`` (as written), ``given_label``
        (stripped), ``status`` (``"audited"`` or the skip reason), then every other CSV
        column as text (renamed ``csv_<name>`` if it collides with a report column).
    classes : list of str
        Class names; a class index is a position in this list.
    images : numpy.ndarray
        ``(M, size, size, 3)`` uint8 RGB, the audited rows in CSV order. With a decode cache
        this is usually a copy-on-write ``numpy.memmap`` of the cache file (pages are read as
        batches need them, writes never reach the file).
    labels : numpy.ndarray
        ``(M,)`` int64 class index of each audited row's given label.
    row_index : numpy.ndarray
        ``(M,)`` int64 position in ``rows`` of each audited row.
    images_root : pathlib.Path
        The images folder, resolved.
    decoding : DecodeReport or None
        Whether the decode cache was used, and how many files were decoded or reused.
    measures : numpy.ndarray or None
        ``(M, N_MEASURES)`` float32 raw quality measures of the audited rows' images, taken while
        decoding (:mod:`labelaudit.data.measures`, columns in ``MEASURE_NAMES`` order).
    file_group : numpy.ndarray or None
        ``(len(rows),)`` int64: rows naming the same file (after resolving symlinks), whatever their
        status, share a number; -1 for rows whose path or label was unusable. Rows of one file are
        exact duplicates even when only the first of them is audited.
    """

    rows: pd.DataFrame
    classes: list[str]
    images: np.ndarray
    labels: np.ndarray
    row_index: np.ndarray
    images_root: Path
    decoding: DecodeReport | None = None
    measures: np.ndarray | None = None
    file_group: np.ndarray | None = None

    def status_counts(self) -> dict[str, int]:
        """Rows per status: ``"audited"`` first (if any), then by count, largest first."""
        counts = Counter(self.rows["status"].tolist())
        ordered = sorted(counts.items(), key=lambda item: (item[0] != AUDITED, -item[1], item[0]))
        return {status: int(count) for status, count in ordered}


def load_labelled_images(
    images_root: str | Path,
    labels_csv: str | Path,
    *,
    image_size: int,
    path_column: str = "path",
    label_column: str = "label",
    delimiter: str = ",",
    classes: Sequence[str] | None = None,
    max_pixels: int | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    cache_dir: str | Path | None = None,
) -> LabelledImages:
    """Read the label CSV, confine and decode its images, and give every row a status.

    Parameters
    ----------
    images_root
        Folder the CSV paths are relative to.
    labels_csv
        Label CSV (see :func:`labelaudit.data.csvio.read_label_csv`).
    image_size
        Side length every image is resized to.
    path_column, label_column, delimiter
        CSV layout.
    classes
        Class names in index order (e.g. from :func:`read_classes_file`); rows with other
        labels become ``unknown_label``. Default: the sorted labels of the audited rows.
    max_pixels
        Images with more pixels are ``image_too_large``.
    workers
        Decoding threads (default ``os.cpu_count()``).
    progress
        Called as ``progress(done, total)`` while images decode; ``total`` is the number
        of distinct files to decode (those not already in the cache).
    cache_dir
        Decode cache folder (e.g. ``<run directory>/cache``): files decoded by an earlier
        call with the same image size and ``max_pixels`` and unchanged since (same resolved
        path, size and modification time) are not decoded again. None: no cache.

    Raises
    ------
    LabelAuditError
        Bad folder, CSV or class list; no row usable; fewer than two classes to compare.
    """
    root = _check_images_root(images_root)
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise LabelAuditError(f"image size must be a positive whole number, got {image_size!r}")
    image_size = int(image_size)
    class_list = _check_class_list(classes) if classes is not None else None
    table = read_label_csv(labels_csv, path_column=path_column, label_column=label_column, delimiter=delimiter)
    csv_paths = table[path_column].tolist()
    labels = [label.strip() for label in table[label_column].tolist()]

    statuses, files = _path_and_label_statuses(root, csv_paths, labels, class_list)
    file_group = _file_groups(statuses, files)
    rows_of_file = _mark_duplicates(statuses, files, labels)
    decoded = decode_files([Path(file) for file in rows_of_file], image_size, cache_dir=cache_dir,
                           workers=workers, max_pixels=max_pixels, progress=progress)
    reasons = decoded.reasons
    for rows, reason in zip(rows_of_file.values(), reasons):
        if reason is not None:
            for i in rows:
                statuses[i] = reason

    first_rows = [rows[0] for rows in rows_of_file.values()]
    audited_positions = [p for p, reason in enumerate(reasons) if reason is None]
    row_index = np.array([first_rows[p] for p in audited_positions], dtype=np.int64)
    audited_labels = [labels[i] for i in row_index]
    _refuse_unusable(statuses, audited_labels, labels_csv)
    final_classes = class_list if class_list is not None else sorted(set(audited_labels))
    index_of_class = {name: k for k, name in enumerate(final_classes)}

    return LabelledImages(
        rows=_report_rows(table, path_column, label_column, labels, statuses),
        classes=final_classes,
        images=decoded.images_at(audited_positions),
        labels=np.array([index_of_class[label] for label in audited_labels], dtype=np.int64),
        row_index=row_index,
        images_root=root,
        decoding=decoded.report,
        measures=(decoded.measures[np.asarray(audited_positions, dtype=np.int64)]
                  if decoded.measures is not None else None),
        file_group=file_group,
    )


def read_classes_file(path: str | Path) -> list[str]:
    """Class names, one per line, in index order.

    Surrounding whitespace is stripped and blank lines ignored. UTF-8 (BOM allowed).

    Raises
    ------
    LabelAuditError
        Missing file, not UTF-8, no names, or a name listed twice.
    """
    path = Path(path)
    if not path.is_file():
        raise LabelAuditError(f"classes file {path} does not exist")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise LabelAuditError(
            f"classes file {path} is not UTF-8 text (byte at offset {error.start})"
        ) from None
    except OSError as error:
        raise LabelAuditError(f"cannot read classes file {path}: {error.strerror or error}") from None
    names: list[str] = []
    first_line: dict[str, int] = {}
    for line_number, line in enumerate(text.splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        if name in first_line:
            raise LabelAuditError(
                f"classes file {path} lists {name!r} twice (lines {first_line[name]} and {line_number})"
            )
        first_line[name] = line_number
        names.append(name)
    if not names:
        raise LabelAuditError(f"classes file {path} has no class names")
    return names


def _check_images_root(images_root: str | Path) -> Path:
    root = Path(images_root)
    if not root.exists():
        raise LabelAuditError(f"images folder {root} does not exist")
    if not root.is_dir():
        raise LabelAuditError(f"images folder {root} is not a directory")
    return root.resolve()


def _check_class_list(classes: Sequence[str]) -> list[str]:
    if isinstance(classes, str):
        raise LabelAuditError("classes must be a list of class names, not one string")
    names = [str(name).strip() for name in classes]
    if any(not name for name in names):
        raise LabelAuditError("the class list contains an empty name")
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise LabelAuditError(f"the class list names {duplicates[0]!r} more than once")
    return names


def _path_and_label_statuses(
    root: Path, csv_paths: list[str], labels: list[str], class_list: list[str] | None
) -> tuple[list[str | None], list[str | None]]:
    """Per row: the first path or label problem (None if none), and the resolved file."""
    known = set(class_list) if class_list is not None else None
    resolve = PathConfiner(root).resolve
    statuses: list[str | None] = []
    files: list[str | None] = []
    for csv_path, label in zip(csv_paths, labels):
        resolved, reason = resolve(csv_path)
        if reason is None and not label:
            reason = EMPTY_LABEL
        elif reason is None and known is not None and label not in known:
            reason = UNKNOWN_LABEL
        statuses.append(reason)
        files.append(resolved)
    return statuses, files


def _file_groups(statuses: list[str | None], files: list[str | None]) -> np.ndarray:
    """(len(rows),) int64 number of each usable row's file (first seen = 0), -1 for the others."""
    number: dict[str, int] = {}
    groups = np.full(len(files), -1, dtype=np.int64)
    for i, (status, file) in enumerate(zip(statuses, files)):
        if status is None and file is not None:
            groups[i] = number.setdefault(file, len(number))
    return groups


def _mark_duplicates(
    statuses: list[str | None], files: list[str | None], labels: list[str]
) -> dict[str, list[int]]:
    """Set duplicate statuses in place.

    Returns each file still to decode (resolved path) with its rows: the row that audits it
    first, then its ``duplicate`` rows.
    """
    rows_of_file: dict[str, list[int]] = {}
    for i, (status, file) in enumerate(zip(statuses, files)):
        if status is None and file is not None:
            rows_of_file.setdefault(file, []).append(i)
    kept: dict[str, list[int]] = {}
    for file, rows in rows_of_file.items():
        if len({labels[i] for i in rows}) > 1:
            for i in rows:
                statuses[i] = DUPLICATE_CONFLICT
            continue
        kept[file] = rows
        for i in rows[1:]:
            statuses[i] = DUPLICATE
    return kept


def _refuse_unusable(statuses: list[str | None], audited_labels: list[str], labels_csv) -> None:
    if not audited_labels:
        reasons = Counter(status for status in statuses if status is not None)
        ranked = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))
        top = ", ".join(f"{count} {reason}" for reason, count in ranked[:3])
        raise LabelAuditError(f"no usable image in {labels_csv}: {top}")
    present = sorted(set(audited_labels))
    if len(present) < 2:
        raise LabelAuditError(
            f"only one class {present[0]!r} among the {len(audited_labels)} usable rows of "
            f"{labels_csv} — nothing to compare"
        )


def _report_rows(
    table: pd.DataFrame,
    path_column: str,
    label_column: str,
    labels: list[str],
    statuses: list[str | None],
) -> pd.DataFrame:
    columns: dict[str, list[str]] = {
        "path": table[path_column].tolist(),
        "given_label": labels,
        "status": [AUDITED if status is None else status for status in statuses],
    }
    for name in table.columns:
        if name in (path_column, label_column):
            continue
        new_name = name
        # Never let a CSV column pass for (or overwrite) one of the report's own columns.
        while new_name in SAMPLES_COLUMNS or new_name in columns:
            new_name = f"csv_{new_name}"
        columns[new_name] = table[name].tolist()
    return pd.DataFrame(columns, dtype=str)
