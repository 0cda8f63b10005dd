"""A run directory loaded for people to look at: suspects, per-class numbers, T, thumbnails, relabel lists.

``labelaudit report`` and ``labelaudit export`` read everything through :func:`load_run`; the HTML page
and the contact sheet take the frames and thumbnails built here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..data.images import decode_images
from ..data.paths import PathConfiner
from ..errors import LabelAuditError
from .files import atomic_path
from .rundir import RunRecord, read_run_record
from .schema import AUDITED, CLASSES_FILE, SAMPLES_FILE, SUMMARY_FILE, TRANSITION_ESTIMATORS, TRANSITION_FILE
from .tables import TransitionEstimate

REPORT_HTML = "report.html"
SUSPECTS_PNG = "suspects.png"
RELABEL_CSV = "relabel.csv"
RELABEL_COLUMNS = ["path", "given_label", "suggested_label", "error_probability", "is_issue"]


@dataclass
class RunView:
    """Everything ``scan`` (and later commands) wrote into a run directory, ready to display."""

    out: Path
    record: RunRecord
    summary: dict[str, Any]
    samples: pd.DataFrame
    classes: pd.DataFrame
    transition: pd.DataFrame

    @property
    def class_names(self) -> list[str]:
        return list(self.record.classes)


def load_run(out: str | Path) -> RunView:
    """Read run.json, summary.json and the three Parquet tables of ``out``.

    Raises LabelAuditError "… run `labelaudit scan` first" when there is no scan in ``out``.
    """
    out = Path(out)
    record = read_run_record(out)
    return RunView(
        out=out,
        record=record,
        summary=_read_summary(out / SUMMARY_FILE),
        samples=_read_table(out / SAMPLES_FILE),
        classes=_read_table(out / CLASSES_FILE),
        transition=_read_table(out / TRANSITION_FILE),
    )


def _read_summary(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise LabelAuditError(f"{path} is missing; run `labelaudit scan` again")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise LabelAuditError(f"{path} is damaged ({exc}); run `labelaudit scan` again") from None


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise LabelAuditError(f"{path} is missing; run `labelaudit scan` again")
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001  (pyarrow raises several types for a damaged file)
        raise LabelAuditError(f"{path} is damaged ({type(exc).__name__}); run `labelaudit scan` again") from None


def check_class(view: RunView, label: str) -> None:
    """Refuse a class name the run does not have, listing the ones it has."""
    if label not in view.class_names:
        raise LabelAuditError(f"unknown class {label!r}; classes: {', '.join(view.class_names)}")


@dataclass
class RowSelection:
    """Rows of samples.parquet chosen for people to review, in rank order.

    ``rows``: the selected rows (all columns); ``n_flagged``: how many of them are flagged (``is_issue``);
    ``description``: what was selected, in words, e.g. "top 50 rows by rank, 12 of them flagged".
    """

    rows: pd.DataFrame
    n_flagged: int
    description: str

    def __len__(self) -> int:
        return len(self.rows)


def _rows(n: int) -> str:
    return f"{n:,} row{'' if n == 1 else 's'}"


def select_rows(samples: pd.DataFrame, *, top: int | None = None, min_error_probability: float | None = None,
                given_label: str | None = None, flagged_limit: int | None = None) -> RowSelection:
    """Audited rows to review, most suspicious (lowest ``rank``) first.

    With neither ``top`` nor ``min_error_probability``: the flagged rows (``is_issue``), at most
    ``flagged_limit`` of them. With either: rows flagged or not, those whose ``error_probability`` is at
    least ``min_error_probability``, then the first ``top`` of them by rank. ``given_label`` keeps only
    the rows given that label.
    """
    audited = samples[samples["rank"].notna()]
    if given_label is not None:
        audited = audited[audited["given_label"] == given_label]
    audited = audited.sort_values("rank", kind="stable")
    flagged = audited["is_issue"].fillna(False).astype(bool)
    if top is None and min_error_probability is None:
        chosen = audited[flagged]
        total = len(chosen)
        if flagged_limit is not None and total > flagged_limit:
            chosen = chosen.head(flagged_limit)
            description = f"the {len(chosen):,} most suspicious of {total:,} flagged rows"
        else:
            description = {0: "no flagged rows", 1: "the 1 flagged row"}.get(total, f"the {total:,} flagged rows")
        return RowSelection(chosen.reset_index(drop=True), len(chosen), description)
    chosen = audited
    if min_error_probability is not None:
        chosen = chosen[chosen["error_probability"] >= min_error_probability]
    if top is not None:
        chosen = chosen.head(max(top, 0))
    n_flagged = int(chosen["is_issue"].fillna(False).astype(bool).sum())
    description = (f"top {_rows(len(chosen))} by rank" if top is not None else _rows(len(chosen)))
    if min_error_probability is not None:
        description += f" with error probability ≥ {min_error_probability:g}"
    description += f", {n_flagged:,} of them flagged"
    return RowSelection(chosen.reset_index(drop=True), n_flagged, description)


def class_slug(label: str) -> str:
    """``label`` as part of a file name: letters, digits, ``.``, ``_`` and ``-`` kept, others ``_``; when
    anything was replaced, a short hash of the label keeps two classes apart ("a/b" vs "a_b")."""
    slug = "".join(char if char.isalnum() or char in "._-" else "_" for char in label).lstrip(".")
    if slug != label or not slug:
        slug += ("-" if slug else "") + hashlib.sha256(label.encode("utf-8")).hexdigest()[:8]
    return slug


def view_paths(out: str | Path, *, html: str | Path | None = None,
               given_label: str | None = None) -> tuple[Path, Path]:
    """Where ``report`` writes its HTML page and contact sheet.

    The run's default views are ``OUT/report.html`` and ``OUT/suspects.png``. The views of one class are
    ``OUT/report-<class>.html`` and ``OUT/suspects-<class>.png``; with ``html`` elsewhere, the sheet goes
    next to it as ``<name>-suspects.png``. So neither overwrites the default views.
    """
    out = Path(out)
    if html is not None and Path(html).resolve() != (out / REPORT_HTML).resolve():
        html = Path(html)
        return html, html.with_name(f"{html.stem}-suspects.png")
    if given_label is None:
        return out / REPORT_HTML, out / SUSPECTS_PNG
    slug = class_slug(given_label)
    return (Path(html) if html is not None else out / f"report-{slug}.html"), out / f"suspects-{slug}.png"


def skipped_rows(samples: pd.DataFrame) -> pd.DataFrame:
    """CSV rows that were not audited: path, given_label, status (the reason), in CSV order."""
    skipped = samples[samples["status"] != AUDITED]
    return skipped[["path", "given_label", "status"]].reset_index(drop=True)


def relabel_frame(selection: RowSelection) -> pd.DataFrame:
    """The selected rows as suggested relabels, in rank order.

    Columns: path, given_label, suggested_label, error_probability, is_issue.
    """
    frame = selection.rows[RELABEL_COLUMNS].reset_index(drop=True)
    return frame.astype({"is_issue": bool})


def write_relabel_csv(frame: pd.DataFrame, target: str | Path) -> Path:
    """Write a relabel frame as CSV (error probability with 4 decimals), atomically."""
    target = Path(target)
    with atomic_path(target) as temporary:
        frame.to_csv(temporary, index=False, float_format="%.4f")
    return target


def transition_estimate(view: RunView, estimator: str | None = None) -> TransitionEstimate | None:
    """T of one estimator as (K, K) arrays in the run's class order, or None if transition.parquet is empty.

    Default estimator: the one the summary names, else the first present of ``TRANSITION_ESTIMATORS``.
    Cells the file does not list are NaN.
    """
    frame = view.transition
    present = list(dict.fromkeys(frame["estimator"])) if len(frame) else []
    if not present:
        return None
    if estimator is None:
        preferred = [view.summary.get("transition_estimator"), *TRANSITION_ESTIMATORS]
        estimator = next((name for name in preferred if name in present), present[0])
    elif estimator not in present:
        raise LabelAuditError(f"no {estimator!r} estimate in {view.out / TRANSITION_FILE}; it has: "
                              + ", ".join(present))
    rows = frame[frame["estimator"] == estimator]
    classes = view.class_names
    position = {label: index for index, label in enumerate(classes)}
    arrays = {name: np.full((len(classes), len(classes)), np.nan) for name in ("probability", "ci_low", "ci_high",
                                                                              "count")}
    placeholder_rows = np.zeros(len(classes), bool)  # GLC: classes without a trusted example (identity rows)
    for row in rows.itertuples(index=False):
        i, j = position.get(row.true_label), position.get(row.noisy_label)
        if i is None or j is None:
            continue
        for name in arrays:
            arrays[name][i, j] = getattr(row, name)
        if getattr(row, "no_trusted_examples", False) == True:  # noqa: E712 (numpy bool, None or NaN)
            placeholder_rows[i] = True
    estimate = TransitionEstimate(estimator, arrays["probability"], arrays["ci_low"], arrays["ci_high"],
                                  arrays["count"])
    estimate.no_trusted_examples = placeholder_rows
    return estimate


@dataclass
class Thumbnails:
    """N small square RGB images: ``images`` (N, S, S, 3) uint8; ``found`` (N,) False where the file
    is missing, outside the image root or unreadable (its image is then all zeros)."""

    images: np.ndarray
    found: np.ndarray

    def __len__(self) -> int:
        return len(self.found)

    def head(self, n: int) -> "Thumbnails":
        return Thumbnails(self.images[:n], self.found[:n])


def load_thumbnails(images_root: str | Path, paths: Sequence[str], size: int, *,
                    workers: int | None = None) -> Thumbnails:
    """Re-read the images behind ``paths`` (as written in the CSV) from ``images_root`` at ``size`` px.

    Paths are confined to the root exactly as in ``scan``; anything that cannot be shown is marked
    not found rather than raising.
    """
    resolve = PathConfiner(images_root).resolve  # the root and each folder resolved once
    resolved = [resolve(str(path))[0] for path in paths]
    usable = [index for index, path in enumerate(resolved) if path is not None]
    images = np.zeros((len(resolved), size, size, 3), np.uint8)
    found = np.zeros(len(resolved), bool)
    if usable:
        decoded, reasons = decode_images([Path(resolved[i]) for i in usable], size, workers=workers)
        for position, index in enumerate(usable):
            if reasons[position] is None:
                images[index] = decoded[position]
                found[index] = True
    return Thumbnails(images, found)
