"""``labelaudit export --format relabel-csv``: suggested relabels for an annotation tool to import."""

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

FORMATS = ("relabel-csv",)
RELABEL_CSV = "relabel.csv"  # labelaudit.report.views.RELABEL_CSV, named here without importing pandas


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
        "--output", help=f"File to write (default RUN_DIR/{RELABEL_CSV}); - for stdout.")] = None,
) -> None:
    """Export rows to relabel (path, given_label, suggested_label, error_probability, is_issue), most suspicious
    first. Default: the flagged rows; --top and --min-error-probability select by rank and score instead."""
    from ..report.views import load_run, relabel_frame, select_rows, write_relabel_csv

    startup.imports_done()
    if format not in FORMATS:
        raise LabelAuditError(f"unknown format {format!r}; formats: {', '.join(FORMATS)}")
    if top is not None and top < 1:
        raise LabelAuditError(f"--top must be at least 1, got {top}")
    if min_error_probability is not None and not 0.0 <= min_error_probability <= 1.0:
        raise LabelAuditError(f"--min-error-probability must be between 0 and 1, got {min_error_probability:g}")
    view = load_run(out)
    selection = select_rows(view.samples, top=top, min_error_probability=min_error_probability)
    relabels = relabel_frame(selection)
    if output == "-":
        relabels.to_csv(sys.stdout, index=False, float_format="%.4f")
        target = "stdout"
    else:
        target = write_relabel_csv(relabels, Path(output) if output else out / RELABEL_CSV)
    stderr.print(f"Wrote {len(relabels)} rows to {target}: {selection.description}", markup=False)
