"""Data issues of a run for people: which rows to drop or re-check (``export --format data-issues-csv``)
and the HTML report's sections (duplicate sets side by side, outliers, image-quality defects, class balance).

Everything here reads samples.parquet's data-issue columns (docs/report-schema.md); a run made before
they existed, or with ``--no-data-checks``, has them null and gets no section and no rows.
"""

from __future__ import annotations

from html import escape
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..core.quality import QUALITY_ISSUES

DATA_ISSUES_CSV = "data-issues.csv"
#: duplicate sets shown in the HTML report (in set order: label conflicts and leaks first)
SETS_SHOWN = 30
#: rows shown per set, per quality defect and as outliers
ROWS_PER_SET = 8
OUTLIERS_SHOWN = 24
QUALITY_SHOWN = 12
DROP, RECHECK = "drop", "recheck"


def _true(series: pd.Series) -> np.ndarray:
    return (series == True).to_numpy(dtype=bool)  # noqa: E712 (nullable object columns)


def has_data_issues(samples: pd.DataFrame) -> bool:
    """Whether the run's data-issue columns were computed."""
    return "is_duplicate" in samples.columns and samples["is_duplicate"].notna().any()


def _quality_names(value: Any) -> list[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return [str(name) for name in value]


def data_issue_frame(samples: pd.DataFrame) -> pd.DataFrame:
    """The rows to drop or re-check, one line each, most certain problems first.

    Columns ``path, given_label, action, reason, duplicate_set``; a dropped row's reason names the row kept
    in its place. Rules:

    * a duplicate set whose rows carry different labels: every row ``recheck`` (at least one label is wrong);
    * any other duplicate set: its first row in CSV order is kept, the others ``drop`` ("duplicate of …",
      "leak: duplicate of …" when the set spans splits);
    * outliers and rows with image-quality defects: ``recheck`` with the reason.

    A row gets one line: the first rule that applies to it.
    """
    if not has_data_issues(samples):
        return pd.DataFrame(columns=["path", "given_label", "action", "reason", "duplicate_set"])
    records = []
    taken = np.zeros(len(samples), dtype=bool)
    in_set = _true(samples["is_duplicate"])
    set_ids = samples["duplicate_set"].to_numpy(dtype=object)
    conflict_sets = {sid for sid, labels in samples[in_set].groupby("duplicate_set")["given_label"]
                     if labels.nunique() > 1}
    leaks = _true(samples["is_leak"]) if "is_leak" in samples.columns else np.zeros(len(samples), bool)
    for set_id in sorted({int(s) for s in set_ids[in_set]}):
        positions = np.flatnonzero(in_set & (samples["duplicate_set"].to_numpy(dtype=object) == set_id))
        kept_path = str(samples["path"].iat[positions[0]])
        for order, position in enumerate(positions):
            row = samples.iloc[position]
            if set_id in conflict_sets:
                labels = ", ".join(sorted(set(samples["given_label"].iloc[positions].astype(str))))
                action, reason = RECHECK, f"duplicate set {set_id} with different labels ({labels})"
            elif order == 0:
                continue
            else:
                action = DROP
                reason = ("leak: " if leaks[position] else "") + f"duplicate of {kept_path}"
            records.append((row["path"], row["given_label"], action, reason, set_id))
            taken[position] = True
    outlier = _true(samples["is_outlier"])
    quality = [_quality_names(v) for v in samples["quality_issues"]]
    for position in np.argsort(-samples["outlier_score"].astype(float).fillna(-np.inf).to_numpy(), kind="stable"):
        if outlier[position] and not taken[position]:
            row = samples.iloc[position]
            records.append((row["path"], row["given_label"], RECHECK,
                            f"outlier (score {float(row['outlier_score']):.1f})", None))
            taken[position] = True
    for position, names in enumerate(quality):
        if names and not taken[position]:
            row = samples.iloc[position]
            records.append((row["path"], row["given_label"], RECHECK, "image quality: " + ", ".join(names), None))
    frame = pd.DataFrame.from_records(records, columns=["path", "given_label", "action", "reason", "duplicate_set"])
    frame["duplicate_set"] = frame["duplicate_set"].astype("Int64")
    return frame


def duplicate_groups(samples: pd.DataFrame, limit: int = SETS_SHOWN) -> list[pd.DataFrame]:
    """The first ``limit`` duplicate sets (set order), each its rows in CSV order."""
    if not has_data_issues(samples):
        return []
    in_set = samples[_true(samples["is_duplicate"])]
    groups = [rows for _, rows in in_set.groupby(in_set["duplicate_set"].astype(int), sort=True)]
    return groups[:limit]


def outlier_rows(samples: pd.DataFrame, limit: int = OUTLIERS_SHOWN) -> pd.DataFrame:
    """Flagged outliers, highest score first."""
    if "is_outlier" not in samples.columns:
        return samples.iloc[:0]
    flagged = samples[_true(samples["is_outlier"])]
    return flagged.sort_values("outlier_score", ascending=False).head(limit)


def quality_rows(samples: pd.DataFrame, limit: int = QUALITY_SHOWN) -> dict[str, pd.DataFrame]:
    """For each defect some rows have, up to ``limit`` of them (CSV order)."""
    if "quality_issues" not in samples.columns:
        return {}
    names = [_quality_names(v) for v in samples["quality_issues"]]
    out = {}
    for issue in QUALITY_ISSUES:
        mask = np.array([issue in n for n in names], dtype=bool)
        if mask.any():
            out[issue] = samples[mask].head(limit)
    return out


def render_issue_sections(samples: pd.DataFrame, classes: pd.DataFrame, summary: dict[str, Any],
                          thumbnails: Callable[[list[str]], list[str | None]]) -> str:
    """The HTML report's data-issue sections. ``thumbnails(paths)`` gives a ``data:`` URI (or None when the
    image cannot be shown) for each path. Empty string when the run has no data-issue columns."""
    if not has_data_issues(samples):
        return ""
    issues = summary.get("data_issues") or {}
    groups = duplicate_groups(samples)
    outliers = outlier_rows(samples)
    quality = quality_rows(samples)
    wanted = [p for g in groups for p in g["path"].head(ROWS_PER_SET)] + list(outliers["path"])
    wanted += [p for rows in quality.values() for p in rows["path"]]
    uris = dict(zip(wanted, thumbnails(wanted))) if wanted else {}
    split_column = issues.get("split_column")
    parts = [_duplicates_section(groups, uris, issues, split_column), _outliers_section(outliers, uris, issues),
             _quality_section(quality, uris, issues), _balance_section(classes)]
    return "\n".join(part for part in parts if part)


def _figure(row: Any, uri: str | None, note: str = "") -> str:
    path = str(row["path"])
    picture = (f'<img src="{uri}" alt="{escape(path)}" decoding="async" loading="lazy">' if uri else
               '<div class="thumb missing" role="img" aria-label="image not found">image<br>not found</div>')
    return (f'<figure class="issue-card">{picture}<figcaption><div class="labels"><span '
            f'title="given label">{escape(str(row["given_label"]))}</span>{note}</div>'
            f'<div class="path" title="{escape(path)}">{escape(path)}</div></figcaption></figure>')


def _duplicates_section(groups: list[pd.DataFrame], uris: dict, issues: dict, split_column: str | None) -> str:
    counts = issues.get("duplicates") or {}
    heading = (f'<h2>Duplicate sets <span class="tag">{counts.get("sets", len(groups)):,} sets, '
               f'{counts.get("rows", 0):,} rows</span></h2>')
    if not groups:
        return f'<section id="duplicates" class="panel">{heading}<p class="empty-note">None found.</p></section>'
    blocks = []
    for rows in groups:
        set_id = int(rows["duplicate_set"].iloc[0])
        tags = []
        if rows["given_label"].nunique() > 1:
            tags.append('<span class="tag bad">different labels</span>')
        if "is_leak" in rows.columns and _true(rows["is_leak"]).any():
            tags.append(f'<span class="tag bad">leak across {escape(str(split_column))}</span>')
        figures = []
        for _, row in rows.head(ROWS_PER_SET).iterrows():
            split = (f' <span class="split">{escape(str(row[split_column]))}</span>'
                     if split_column and split_column in rows.columns else "")
            figures.append(_figure(row, uris.get(row["path"]), split))
        more = f'<p class="hint">and {len(rows) - ROWS_PER_SET} more</p>' if len(rows) > ROWS_PER_SET else ""
        blocks.append(f'<div class="dupset"><h3>Set {set_id} · {len(rows)} rows {"".join(tags)}</h3>'
                      f'<div class="row">{"".join(figures)}</div>{more}</div>')
    shown = f"<p class=\"hint\">The first {len(groups)} sets shown.</p>" if counts.get("sets", 0) > len(groups) else ""
    return f'<section id="duplicates" class="panel">{heading}{"".join(blocks)}{shown}</section>'


def _outliers_section(rows: pd.DataFrame, uris: dict, issues: dict) -> str:
    info = issues.get("outliers")
    if not info:
        return ""
    heading = f'<h2>Outliers <span class="tag">{info["rows"]:,} rows, score above {info["threshold"]:.1f}</span></h2>'
    if rows.empty:
        return f'<section id="outliers" class="panel">{heading}<p class="empty-note">No outliers found.</p></section>'
    figures = [_figure(row, uris.get(row["path"]),
                       f' <span class="score" title="outlier score">{float(row["outlier_score"]):.1f}</span>')
               for _, row in rows.iterrows()]
    return f'<section id="outliers" class="panel">{heading}<div class="grid">{"".join(figures)}</div></section>'


def _quality_section(groups: dict[str, pd.DataFrame], uris: dict, issues: dict) -> str:
    info = issues.get("quality")
    if not info:
        return ""
    heading = f'<h2>Image quality <span class="tag">{info["rows"]:,} rows with defects</span></h2>'
    if not groups:
        return f'<section id="quality" class="panel">{heading}<p class="empty-note">No defects found.</p></section>'
    blocks = []
    for issue, rows in groups.items():
        figures = [_figure(row, uris.get(row["path"])) for _, row in rows.iterrows()]
        blocks.append(f'<h3>{escape(issue)} <span class="tag">{info["counts"].get(issue, len(rows)):,}</span></h3>'
                      f'<div class="grid">{"".join(figures)}</div>')
    return f'<section id="quality" class="panel">{heading}{"".join(blocks)}</section>'


def _balance_section(classes: pd.DataFrame) -> str:
    if "is_underrepresented" not in classes.columns:
        return ""
    flagged = classes[_true(classes["is_underrepresented"]) | _true(classes["is_weak"])]
    if flagged.empty:
        return ""
    rows = "".join(
        f"<tr><td>{escape(str(r.label))}</td><td class=\"num\">{int(r.n):,}</td><td class=\"num\">{r.share:.1%}</td>"
        f"<td class=\"num\">{r.agreement:.2f}</td><td>{'underrepresented ' if r.is_underrepresented else ''}"
        f"{'weak' if r.is_weak else ''}</td></tr>" for r in flagged.itertuples(index=False))
    return ('<section id="balance" class="panel"><h2>Class balance</h2><table><thead><tr><th scope="col">class</th>'
            '<th scope="col" class="num">rows</th><th scope="col" class="num">share</th><th scope="col" class="num">'
            'agreement</th><th scope="col">flag</th></tr></thead>'
            f"<tbody>{rows}</tbody></table></section>")
