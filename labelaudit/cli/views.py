"""Rich views of a run shared by commands: the summary panel and the table of top suspects."""

from __future__ import annotations

from typing import Any

import pandas as pd
from rich.markup import escape
from rich.table import Table

from .console import stdout


def suspects_table(samples: pd.DataFrame, top: int, title: str = "Most suspicious labels") -> Table:
    suspects = samples[samples["is_issue"] == True].sort_values("rank").head(top)  # noqa: E712 (nullable)
    table = Table(title=f"{title} (top {len(suspects)})", title_justify="left")
    table.add_column("rank", justify="right")
    table.add_column("path", overflow="fold")
    table.add_column("given")
    table.add_column("suggested")
    table.add_column("error prob.", justify="right")
    for row in suspects.itertuples(index=False):
        table.add_row(str(int(row.rank)), escape(str(row.path)), escape(str(row.given_label)),
                      escape(str(row.suggested_label)),
                      f"{row.error_probability:.2f}")
    return table


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


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
    if summary["n_issues"]:
        stdout.print(suspects_table(samples, top))
    stdout.print(f"Run directory: [bold]{summary['run_directory']}[/] "
                 f"(samples.parquet, classes.parquet, transition.parquet, summary.json) "
                 f"in {summary['timings']['total_seconds']:.0f} s")
    stdout.print(f"See the suspects: [bold]labelaudit report -o {summary['run_directory']}[/] (writes report.html)")
