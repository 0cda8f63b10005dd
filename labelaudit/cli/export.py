"""``labelaudit export --format relabel-csv``: suggested relabels for an annotation tool to import."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import LabelAuditError
from ..report.views import RELABEL_CSV, load_run, relabel_frame, write_relabel_csv
from . import options as opt
from . import startup
from .app import app
from .console import stderr

FORMATS = ("relabel-csv",)


@app.command()
def export(
    format: Annotated[str, typer.Option("--format", help=f"Output format: {', '.join(FORMATS)}.")] = "relabel-csv",
    out: opt.Out = Path("labelaudit-out"),
    min_error_probability: Annotated[float, typer.Option(
        "--min-error-probability",
        help="Only flagged rows whose error probability is at least this.")] = 0.5,
    output: Annotated[Optional[str], typer.Option(
        "--output", help=f"File to write (default RUN_DIR/{RELABEL_CSV}); - for stdout.")] = None,
) -> None:
    """Export suggested relabels (path, given_label, suggested_label, error_probability), most suspicious first."""
    startup.imports_done()
    if format not in FORMATS:
        raise LabelAuditError(f"unknown format {format!r}; formats: {', '.join(FORMATS)}")
    if not 0.0 <= min_error_probability <= 1.0:
        raise LabelAuditError(f"--min-error-probability must be between 0 and 1, got {min_error_probability:g}")
    view = load_run(out)
    relabels = relabel_frame(view.samples, min_error_probability)
    if output == "-":
        relabels.to_csv(sys.stdout, index=False, float_format="%.4f")
        return
    target = write_relabel_csv(relabels, Path(output) if output else out / RELABEL_CSV)
    stderr.print(f"Wrote {len(relabels)} suggested relabels (error probability ≥ {min_error_probability:g}) "
                 f"to {target}")
