"""``labelaudit report``: the run directory for people — terminal tables, report.html and suspects.png."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import pandas as pd
import typer
from rich.markup import escape as markup_escape
from rich.table import Table

from ..errors import LabelAuditError
from ..report.contact_sheet import SHEET_CELLS, write_contact_sheet
from ..report.html import write_report_html
from ..report.views import (
    REPORT_HTML, SUSPECTS_PNG, RunView, check_class, load_run, load_thumbnails, skipped_rows, top_suspects,
)
from . import options as opt
from . import startup
from .app import app
from .console import stdout
from .views import suspects_table

TERMINAL_ROWS = 20
THUMBNAIL_SIZE = 96


@app.command()
def report(
    out: opt.Out = Path("labelaudit-out"),
    html: Annotated[Optional[Path], typer.Option("--html", help=f"Write the HTML report here "
                                                 f"(default RUN_DIR/{REPORT_HTML}).")] = None,
    no_html: Annotated[bool, typer.Option("--no-html", help="Do not write the HTML report.")] = False,
    top: Annotated[int, typer.Option("--top", help=f"Suspects in the HTML grid; the terminal lists the "
                                     f"first {TERMINAL_ROWS}, {SUSPECTS_PNG} the first {SHEET_CELLS}.")] = 100,
    class_label: Annotated[Optional[str], typer.Option("--class", help="Only suspects given this label.")] = None,
    quiet: opt.Quiet = False,
) -> None:
    """Show a scan's suspects, per-class numbers and noise matrix; write report.html and suspects.png."""
    startup.imports_done()
    if top < 1:
        raise LabelAuditError(f"--top must be at least 1, got {top}")
    if html is not None and no_html:
        raise LabelAuditError("--html and --no-html contradict each other; pass one")
    view = load_run(out)
    if class_label is not None:
        check_class(view, class_label)
    suspects = top_suspects(view.samples, top, given_label=class_label)
    thumbnails = load_thumbnails(view.record.images_root, suspects["path"].tolist(), THUMBNAIL_SIZE)

    written = []
    if not no_html:
        html_path = write_report_html(html or out / REPORT_HTML, view, suspects, thumbnails, given_label=class_label)
        written.append(f"{html_path} ({len(suspects)} suspects)")
    shown = min(len(suspects), SHEET_CELLS)
    sheet_title = (f"labelaudit: top {shown} suspects in {Path(view.record.labels_csv).name}"
                   + (f" given '{class_label}'" if class_label else "") + "  (p = error probability)")
    written.append(str(write_contact_sheet(out / SUSPECTS_PNG, suspects.head(shown), thumbnails.head(shown),
                                           title=sheet_title)))
    if quiet:
        return
    _print_summary(view)
    stdout.print(_classes_table(view))
    if len(suspects):
        title = "Most suspicious labels" + (f" given {markup_escape(repr(class_label))}" if class_label else "")
        stdout.print(suspects_table(suspects, TERMINAL_ROWS, title=title))
    else:
        among = f" among {markup_escape(repr(class_label))}" if class_label else ""
        stdout.print(f"No rows are flagged as likely label errors{among}.")
    missing = int((~thumbnails.found).sum())
    if missing:
        stdout.print(f"[yellow]{missing} suspect image(s) not found under {markup_escape(view.record.images_root)}[/]: "
                     "shown as placeholders")
    stdout.print(markup_escape("Wrote " + ", ".join(written)))


def _print_summary(view: RunView) -> None:
    summary = view.summary
    skipped = skipped_rows(view.samples)
    line = f"[bold]Audited[/] {summary.get('audited', 0)} of {summary.get('rows', len(view.samples))} rows"
    if len(skipped):
        reasons = ", ".join(f"{n} {reason}" for reason, n in skipped["status"].value_counts().items())
        line += f" ([yellow]skipped {len(skipped)}[/]: {reasons})"
    stdout.print(line)
    stdout.print(f"[bold]Estimated wrong labels[/] {summary.get('estimated_error_rate', 0.0):.1%} "
                 f"(about {summary.get('estimated_errors', 0.0):.0f}); "
                 f"label health {summary.get('label_health', 1.0):.1%}; "
                 f"[bold]{summary.get('n_issues', 0)}[/] rows flagged as likely errors")


def _classes_table(view: RunView) -> Table:
    table = Table(title="Per class", title_justify="left")
    table.add_column("class")
    table.add_column("n", justify="right")
    table.add_column("issues", justify="right")
    table.add_column("est. noise rate", justify="right")
    table.add_column("most confused with")
    for row in view.classes.itertuples(index=False):
        rate = "–" if pd.isna(row.estimated_noise_rate) else f"{row.estimated_noise_rate:.1%}"
        confused = "–" if pd.isna(row.most_confused_with) else markup_escape(str(row.most_confused_with))
        table.add_row(markup_escape(str(row.label)), str(int(row.n)), str(int(row.n_issues)), rate, confused)
    return table
