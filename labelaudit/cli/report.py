"""``labelaudit report``: the run directory for people — terminal tables, report.html and suspects.png.

Pandas, Pillow and the report modules load when the command runs, so the command line starts fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape as markup_escape
from rich.table import Table

from ..errors import LabelAuditError
from . import options as opt
from . import startup
from .app import app
from .console import stdout
from .views import data_issue_lines, print_suspects

if TYPE_CHECKING:  # pragma: no cover
    from ..report.views import RunView

TERMINAL_ROWS = 20
THUMBNAIL_SIZE = 96
#: rows in the HTML grid without --top: the flagged ones, at most this many
FLAGGED_SHOWN = 100
SHEET_CELLS = 48  # labelaudit.report.contact_sheet.SHEET_CELLS, named here without importing Pillow


@app.command()
def report(
    out: opt.Out = Path("labelaudit-out"),
    html: Annotated[Optional[Path], typer.Option(
        "--html", help="Write the HTML report here, and the contact sheet next to it as NAME-suspects.png "
        "(default RUN_DIR/report.html and RUN_DIR/suspects.png; with --class, report-CLASS.html and "
        "suspects-CLASS.png, so the run's default views are kept).")] = None,
    no_html: Annotated[bool, typer.Option("--no-html", help="Do not write the HTML report.")] = False,
    top: Annotated[Optional[int], typer.Option(
        "--top", help=f"Review by rank: the N most suspicious rows (lowest rank), flagged or not. Default: the "
        f"flagged rows (at most {FLAGGED_SHOWN}). The terminal lists the first {TERMINAL_ROWS}, the contact "
        f"sheet the first {SHEET_CELLS}.", show_default=False)] = None,
    class_label: Annotated[Optional[str], typer.Option("--class", help="Only rows given this label.")] = None,
    quiet: opt.Quiet = False,
) -> None:
    """Show a scan's suspects, per-class numbers and noise matrix; write report.html and suspects.png."""
    from ..report.contact_sheet import write_contact_sheet
    from ..report.html import write_report_html
    from ..report.views import check_class, load_run, load_thumbnails, select_rows, view_paths

    startup.imports_done()
    if top is not None and top < 1:
        raise LabelAuditError(f"--top must be at least 1, got {top}")
    if html is not None and no_html:
        raise LabelAuditError("--html and --no-html contradict each other; pass one")
    view = load_run(out)
    if class_label is not None:
        check_class(view, class_label)
    selection = select_rows(view.samples, top=top, given_label=class_label, flagged_limit=FLAGGED_SHOWN)
    suspects = selection.rows
    thumbnails = load_thumbnails(view.record.images_root, suspects["path"].tolist(), THUMBNAIL_SIZE)
    html_path, sheet_path = view_paths(out, html=html, given_label=class_label)

    written = []
    if not no_html:
        write_report_html(html_path, view, suspects, thumbnails, given_label=class_label,
                          caption=selection.description, issue_sections=_issue_sections(view))
        written.append(f"{html_path} ({selection.description})")
    shown = min(len(suspects), SHEET_CELLS)
    sheet_title = (f"labelaudit: {selection.description} in {Path(view.record.labels_csv).name}"
                   + (f" given '{class_label}'" if class_label else "")
                   + (f", first {shown} shown" if shown < len(suspects) else "") + "  (p = error probability)")
    written.append(str(write_contact_sheet(sheet_path, suspects.head(shown), thumbnails.head(shown),
                                           title=sheet_title)))
    if quiet:
        return
    _print_summary(view)
    stdout.print(_classes_table(view))
    if len(suspects):
        title = ("[bold]Most suspicious labels[/]"
                 + (f" given {markup_escape(repr(class_label))}" if class_label else "")
                 + f": {markup_escape(selection.description)}"
                 + (f" (first {TERMINAL_ROWS} listed)" if len(suspects) > TERMINAL_ROWS else ""))
        print_suspects(suspects.head(TERMINAL_ROWS), title=title)
    else:
        among = f" among {markup_escape(repr(class_label))}" if class_label else ""
        stdout.print(f"No rows are flagged as likely label errors{among}.")
    missing = int((~thumbnails.found).sum())
    if missing:
        stdout.print(f"[yellow]{missing} suspect image(s) not found under {markup_escape(view.record.images_root)}[/]: "
                     "shown as placeholders")
    stdout.print(markup_escape("Wrote " + ", ".join(written)))


def _print_summary(view: RunView) -> None:
    from ..report.views import skipped_rows

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
    for line in data_issue_lines(summary):
        stdout.print(line)


def _classes_table(view: RunView) -> Table:
    import pandas as pd

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


def _issue_sections(view: RunView) -> str:
    """The HTML report's duplicate, outlier, image-quality and class-balance sections."""
    from ..report.html import thumbnail_data_uri
    from ..report.issues_view import render_issue_sections
    from ..report.views import load_thumbnails

    def data_uris(paths: list[str]) -> list[str | None]:
        loaded = load_thumbnails(view.record.images_root, paths, THUMBNAIL_SIZE)
        return [thumbnail_data_uri(image) if found else None for image, found in zip(loaded.images, loaded.found)]

    return render_issue_sections(view.samples, view.classes, view.summary, data_uris)
