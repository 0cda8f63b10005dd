"""Rich views of a run shared by commands: the summary panel and the table of top suspects."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from .console import stdout

if TYPE_CHECKING:  # pragma: no cover  (pandas loads with the command's library, not at start-up)
    import pandas as pd


def print_suspects(rows: pd.DataFrame, *, title: str) -> None:
    """``title`` on a line of its own (a table would wrap it to the table's width), then the table."""
    stdout.print(title)
    stdout.print(suspects_table(rows))


def suspects_table(rows: pd.DataFrame) -> Table:
    """``rows`` of samples.parquet as a table, in the order given; a "flagged" column when some are not."""
    flags = [value == True for value in rows["is_issue"]]  # noqa: E712 (nullable)
    table = Table()
    table.add_column("rank", justify="right")
    table.add_column("path", overflow="fold")
    table.add_column("given")
    table.add_column("suggested")
    table.add_column("error prob.", justify="right")
    if not all(flags):
        table.add_column("flagged")
    for row, flagged in zip(rows.itertuples(index=False), flags):
        cells = [str(int(row.rank)), escape(str(row.path)), escape(str(row.given_label)),
                 escape(str(row.suggested_label)), f"{row.error_probability:.2f}"]
        table.add_row(*cells, *([] if all(flags) else ["yes" if flagged else "no"]))
    return table


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def scan_result_lines(summary: dict[str, Any]) -> list[str]:
    """What ``scan --quiet`` prints: one result line, and a second when the audit is unreliable."""
    lines = [f"Audited {summary['audited']} of {summary['rows']} rows: estimated wrong labels "
             f"{summary['estimated_error_rate']:.1%} ({summary['estimated_errors']:.0f}), "
             f"{summary['n_issues']} flagged; run directory {summary['run_directory']}"]
    if summary.get("reliable") is False:
        lines.append(f"Unreliable audit: {summary['reliability_reason']}")
    return lines


def echo_lines(lines: list[str]) -> None:
    """Plain lines on stdout: no markup, never wrapped."""
    for line in lines:
        typer.echo(line)


def print_scan_summary(summary: dict[str, Any], samples: pd.DataFrame, *, top: int = 15) -> None:
    skipped = summary["skipped"]
    reasons = ", ".join(f"{n} {reason}" for reason, n in summary["status_counts"].items() if reason != "audited")
    stdout.print(f"[bold]Audited[/] {summary['audited']} of {summary['rows']} rows"
                 + (f" ([yellow]skipped {skipped}[/]: {reasons})" if skipped else ""))
    stdout.print(f"[bold]Estimated wrong labels[/] {summary['estimated_error_rate']:.1%} "
                 f"(about {summary['estimated_errors']:.0f}); label health {summary['label_health']:.1%}; "
                 f"[bold]{summary['n_issues']}[/] rows flagged as likely errors")
    self_check = summary.get("self_check")
    if self_check:
        stdout.print(f"[bold]Self-check[/]: {self_check['planted']} planted errors; the audit flagged "
                     f"{_share(self_check['recall'])} of them (recall) at precision {_share(self_check['precision'])}, "
                     f"AUPRC {_number(self_check['auprc'])}; the estimated error rate rose by "
                     f"{self_check['estimated_added_rate']:.1%} for {self_check['planted_rate']:.1%} planted")
    elif summary.get("reliable") is True:
        stdout.print("[dim]Measure these numbers on your data: --self-check audits a copy with 5% planted label "
                     "errors (doubles the time).[/]")
    if summary.get("reliable") is False:
        stdout.print(f"[bold red]Unreliable audit[/]: {escape(summary['reliability_reason'])}. Do not trust the "
                     "numbers above; what would help: --pretrained (or --weights FILE), a larger --image-size, more "
                     "--epochs, --folds 5, or more rows per class.")
    method_settings = summary["settings"].get("method_settings", {})
    if "elr_setting" in method_settings:
        stdout.print(f"ELR β={method_settings['elr_beta']}, λ={method_settings['elr_lambda']} "
                     f"({method_settings['elr_setting']})")
    embeddings = summary.get("embeddings")
    if summary.get("mode") == "frozen backbone" and embeddings:
        stdout.print(f"Frozen {escape(embeddings['backbone'])} backbone, linear head; "
                     f"embeddings: {embeddings['status']} ({embeddings['seconds']:.1f} s), "
                     f"head {summary['head_seconds']:.1f} s")
        for note in summary.get("notes", []):
            stdout.print(f"[yellow]{escape(note)}[/]")
    for line in data_issue_lines(summary):
        stdout.print(line)
    if summary["n_issues"] and top:
        flagged = samples[samples["is_issue"] == True].sort_values("rank").head(top)  # noqa: E712 (nullable)
        print_suspects(flagged, title=f"[bold]Most suspicious labels[/] (top {len(flagged)})")
    stdout.print(f"Run directory: [bold]{summary['run_directory']}[/] "
                 f"(samples.parquet, classes.parquet, transition.parquet, summary.json) "
                 f"in {summary['timings']['total_seconds']:.0f} s")
    stdout.print(f"See the suspects: [bold]labelaudit report -o {summary['run_directory']}[/] (writes report.html)")


def data_issue_lines(summary: dict[str, Any]) -> list[str]:
    """The scan summary's lines on duplicates, leakage, outliers, image quality and class balance (Rich markup)."""
    issues = summary.get("data_issues")
    lines = []
    if issues:
        duplicates = issues["duplicates"]
        text = f"[bold]Duplicates[/] {duplicates['rows']} rows in {duplicates['sets']} sets"
        if duplicates["label_conflict_sets"]:
            text += (f", [bold red]{duplicates['label_conflict_sets']} sets with different labels[/] "
                     f"({duplicates['label_conflict_rows']} rows: at least one label in each is wrong)")
        leakage = issues.get("leakage")
        if leakage is not None:
            colour = "bold red" if leakage["rows"] else "green"
            text += (f"; [{colour}]leakage: {leakage['rows']} rows in {leakage['sets']} sets span "
                     f"{escape(str(issues['split_column']))} values[/]")
        lines.append(text)
        parts = []
        if issues.get("outliers") is not None:
            parts.append(f"[bold]Outliers[/] {issues['outliers']['rows']}")
        quality = issues.get("quality")
        if quality is not None:
            found = ", ".join(f"{n} {name}" for name, n in quality["counts"].items() if n)
            parts.append(f"[bold]Image quality[/] {quality['rows']} rows with defects"
                         + (f" ({found})" if found else ""))
        if parts:
            lines.append("; ".join(parts))
    balance = summary.get("class_balance")
    if balance and (balance["underrepresented"] or balance["weak"]):
        text = f"[bold]Classes[/] largest/smallest {balance['imbalance_ratio']:.1f}x"
        if balance["underrepresented"]:
            text += "; underrepresented: " + escape(", ".join(balance["underrepresented"]))
        if balance["weak"]:
            text += "; weak (the model agrees little with their labels): " + escape(", ".join(balance["weak"]))
        lines.append(text)
    return lines
