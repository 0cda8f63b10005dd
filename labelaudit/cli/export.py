"""``labelaudit export``: suggested relabels for an annotation tool to import (``--format relabel-csv``), or
the rows to drop or re-check for data issues (``--format data-issues-csv``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import LabelAuditError
from . import options as opt
from . import startup
from .app import app
from .console import stderr

FORMATS = ("relabel-csv", "data-issues-csv")
RELABEL_CSV = "relabel.csv"  # labelaudit.report.views.RELABEL_CSV, named here without importing pandas
DATA_ISSUES_CSV = "data-issues.csv"  # labelaudit.report.issues_view.DATA_ISSUES_CSV


@app.command()
def export(
    format: Annotated[str, typer.Option("--format", help=f"Output format: {', '.join(FORMATS)}.")] = "relabel-csv",
    out: opt.Out = Path("labelaudit-out"),
    top: Annotated[Optional[int], typer.Option(
        "--top", help="Review by rank: the N most suspicious rows (lowest rank), flagged or not.",
        show_default=False)] = None,
    min_error_probability: Annotated[Optional[float], typer.Option(
        "--min-error-probability", help="Rows whose error probability is at least P, flagged or not (with --top: "
        "the first N of them by rank).", metavar="P", show_default=False)] = None,
    output: Annotated[Optional[str], typer.Option(
        "--output", help=f"File to write (default RUN_DIR/{RELABEL_CSV}, or RUN_DIR/{DATA_ISSUES_CSV}); - for "
        "stdout.")] = None,
) -> None:
    """Export rows to relabel (path, given_label, suggested_label, error_probability, is_issue), most suspicious
    first. Default: the flagged rows; --top and --min-error-probability select by rank and score instead.
    --format data-issues-csv: the rows to drop (duplicates, leaks) or re-check (duplicates with different
    labels, outliers, image-quality defects), with the reason."""
    from ..report.views import load_run, relabel_frame, select_rows, write_relabel_csv

    startup.imports_done()
    if format not in FORMATS:
        raise LabelAuditError(f"unknown format {format!r}; formats: {', '.join(FORMATS)}")
    if top is not None and top < 1:
        raise LabelAuditError(f"--top must be at least 1, got {top}")
    if min_error_probability is not None and not 0.0 <= min_error_probability <= 1.0:
        raise LabelAuditError(f"--min-error-probability must be between 0 and 1, got {min_error_probability:g}")
    view = load_run(out)
    if format == "data-issues-csv":
        _export_data_issues(view, out, output, top=top, min_error_probability=min_error_probability)
        return
    selection = select_rows(view.samples, top=top, min_error_probability=min_error_probability)
    relabels = relabel_frame(selection)
    if output == "-":
        relabels.to_csv(sys.stdout, index=False, float_format="%.4f")
        target = "stdout"
    else:
        target = write_relabel_csv(relabels, Path(output) if output else out / RELABEL_CSV)
    stderr.print(f"Wrote {len(relabels)} rows to {target}: {selection.description}", markup=False)


def _export_data_issues(view, out: Path, output: str | None, *, top: int | None,
                        min_error_probability: float | None) -> None:
    from ..report.issues_view import DROP, data_issue_frame, has_data_issues

    if top is not None or min_error_probability is not None:
        raise LabelAuditError("--top and --min-error-probability select label suspects; "
                              "--format data-issues-csv exports every row with a data issue")
    if not has_data_issues(view.samples):
        raise LabelAuditError(f"the run in {out} has no data-issue columns; scan again without --no-data-checks")
    frame = data_issue_frame(view.samples)
    if output == "-":
        frame.to_csv(sys.stdout, index=False)
        target = "stdout"
    else:
        from ..report.files import atomic_path

        target = Path(output) if output else out / DATA_ISSUES_CSV
        with atomic_path(target) as temporary:
            frame.to_csv(temporary, index=False)
    dropped = int((frame["action"] == DROP).sum())
    stderr.print(f"Wrote {len(frame)} rows to {target}: {dropped} to drop, {len(frame) - dropped} to re-check",
                 markup=False)
