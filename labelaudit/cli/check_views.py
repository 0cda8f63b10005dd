"""What ``labelaudit check`` prints and writes for CI: the verdict, tables, JUnit XML, the Markdown summary for
``$GITHUB_STEP_SUMMARY`` and workflow annotations. Loaded when ``check`` runs (the gate brings pandas)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from ..errors import LabelAuditError
from ..gate import SEEN_IN_TRAINING, CheckResult, percent
from ..report.junit import write_junit
from ..report.schema import RUN_FILE
from .console import stderr, stdout


def write_ci_outputs(result: CheckResult, *, junit: Path | None, github: bool, annotations_to_stderr: bool,
                     max_rows: int) -> None:
    """JUnit file, the Markdown summary for ``$GITHUB_STEP_SUMMARY`` and workflow annotations, as asked."""
    if junit is not None:
        try:
            write_junit(result, junit)
        except OSError as exc:
            raise LabelAuditError(f"cannot write JUnit file {junit}: {exc.strerror or exc}") from None
    summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_file:
        try:
            with open(summary_file, "a", encoding="utf-8") as handle:
                handle.write(markdown_summary(result, max_rows=max_rows) + "\n")
        except OSError as exc:  # the summary is a nicety; the verdict still stands
            stderr.print(f"[yellow]Warning:[/] could not append to $GITHUB_STEP_SUMMARY ({exc.strerror or exc})")
    if github:
        # With --json stdout carries only the JSON; the runner reads workflow commands from stderr too.
        stream = sys.stderr if annotations_to_stderr else sys.stdout
        for line in github_annotations(result, max_rows=max_rows):
            stream.write(line + "\n")
        stream.flush()


# --------------------------------------------------------------------------- views


def say(text: str) -> None:
    # One logical line stays one line in CI logs (rich would wrap at 80 columns there).
    stdout.print(text, soft_wrap=True)


def verdict_line(result: CheckResult) -> str:
    rate = result.error_rate
    if rate.available:
        estimate = (f"estimated error rate {percent(rate.rate)} (95% interval {percent(rate.low)}–"
                    f"{percent(rate.high)}) over {result.audited} rows")
    else:
        why = result.training_overlap.message if result.training_overlap else "no row could be scored"
        estimate = f"error rate not estimated ({why})"
    if not result.limits:
        return f"{result.batch_csv.name}: no limits set; {estimate}"
    if result.passed:
        return f"PASSED {result.batch_csv.name}: {estimate}, within {len(result.limits)} limit(s)"
    return (f"FAILED {result.batch_csv.name}: {estimate}; {len(result.failed_limits)} of {len(result.limits)} "
            f"limit(s) {'exceeded' if rate.available else 'not met'}")


def print_check_summary(result: CheckResult, out: Path | None = None) -> None:
    style = "green" if result.passed else "red"
    say(f"[bold {style}]{escape(verdict_line(result))}[/]")
    say(_audited_line(result))
    overlap = _overlap_line(result)
    if overlap:
        say(overlap)
    rate = result.error_rate
    if rate.available:
        say(f"[bold]Estimated error rate[/] {percent(rate.rate)} (95% interval {percent(rate.low)}–"
             f"{percent(rate.high)}), about {rate.errors:.0f} wrong labels; "
             f"[bold]{result.n_issues}[/] rows flagged as likely errors")
    else:
        say("[bold yellow]The batch's error rate cannot be estimated[/]: no usable row is new to the model")
    for limit in result.limits:
        mark = "[green]✓[/]" if limit.passed else "[red]✗[/]"
        say(f"  {mark} {limit.option}: {escape(limit.message)}")
    if not result.limits:
        say("  [yellow]No limits set[/]: pass --max-error-rate, --max-class-error-rate, --max-issues or "
             "--min-images to gate the batch")
    over = [c for c in result.classes if c.over_limit]
    if over:
        stdout.print(_classes_table(result, over))
    if result.baseline is not None:
        _print_baseline(result)
    if len(result.worst_rows):
        stdout.print(_worst_table(result))
    report_command = f"labelaudit report -o {out}" if out is not None and (out / RUN_FILE).is_file() \
        else "labelaudit report"
    say(f"Batch report: [bold]{escape(str(result.report_path))}[/] (every row; read it with pandas, DuckDB "
         f"or Polars). The training audit's suspects and noise matrix: `{escape(report_command)}`.")


def _audited_line(result: CheckResult) -> str:
    if result.audited == result.rows:
        return f"Audited all {result.rows} rows of {escape(str(result.batch_csv))}"
    line = f"Audited {result.audited} of {result.rows} rows of {escape(str(result.batch_csv))}"
    if not result.skipped:
        return line
    return f"{line} ([yellow]skipped {result.skipped}[/]: {escape(_skip_reasons(result))})"


def _skip_reasons(result: CheckResult) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in result.status_counts.items()
                     if reason not in ("audited", SEEN_IN_TRAINING))


def _overlap_line(result: CheckResult) -> str:
    """What the model's training fingerprints say about the batch (empty when nothing to say)."""
    overlap = result.training_overlap
    if overlap is None or not overlap.usable:
        return ""
    message = escape(overlap.message[0].upper() + overlap.message[1:])
    if overlap.known and overlap.seen == 0:
        return f"[dim]{message}[/]"
    return f"[yellow]{message}[/]"


def _classes_table(result: CheckResult, classes) -> Table:
    which = "upper bound" if result.on == "upper" else "estimate"
    table = Table(title=f"Classes over their limit ({which})", title_justify="left")
    for column, justify in (("class", "left"), ("rows", "right"), ("error rate", "right"),
                            ("95% interval", "right"), ("flagged", "right")):
        table.add_column(column, justify=justify)
    for c in classes:
        table.add_row(escape(c.label), str(c.n), percent(c.error_rate.rate),
                      f"{percent(c.error_rate.low)}–{percent(c.error_rate.high)}", str(c.n_issues))
    return table


def _worst_table(result: CheckResult) -> Table:
    table = Table(title=f"Worst rows (top {len(result.worst_rows)} of {result.n_issues} flagged)",
                  title_justify="left")
    table.add_column("path", overflow="fold")
    table.add_column("given")
    table.add_column("suggested")
    table.add_column("error prob.", justify="right")
    for row in result.worst_rows.itertuples(index=False):
        table.add_row(escape(str(row.path)), escape(str(row.given_label)), escape(str(row.suggested_label)),
                      f"{float(row.error_probability):.2f}")
    return table


def _print_baseline(result: CheckResult) -> None:
    base = result.baseline
    sign = "+" if base.change >= 0 else "−"
    say(f"[bold]Compared with {escape(str(base.path))}[/]: error rate {percent(base.error_rate)} → "
         f"{percent(result.error_rate.rate)} ({sign}{abs(base.change) * 100:.1f} points)")
    worse = base.worse_classes
    if worse:
        listed = ", ".join(f"{escape(c.label)} {percent(c.baseline_rate)} → {percent(c.batch_rate)}" for c in worse)
        say(f"  [red]Classes worse than the baseline[/]: {listed}")
    else:
        say("  No class is clearly worse than the baseline")


def markdown_summary(result: CheckResult, *, max_rows: int = 10) -> str:
    """The check as GitHub-flavoured Markdown (for ``$GITHUB_STEP_SUMMARY``)."""
    rate = result.error_rate
    if not result.limits:
        heading = f"### labelaudit check `{_md(result.batch_csv.name)}`: no limits set"
    elif result.passed:
        heading = f"### ✅ labelaudit check `{_md(result.batch_csv.name)}` passed"
    else:
        heading = (f"### ❌ labelaudit check `{_md(result.batch_csv.name)}` failed "
                   f"({len(result.failed_limits)} of {len(result.limits)} limits exceeded)")
    skipped = ""
    if result.skipped:
        skipped = f" ({result.skipped} skipped: {_skip_reasons(result)})"
    if rate.available:
        estimate = (f"Estimated error rate **{percent(rate.rate)}** (95% interval {percent(rate.low)}–"
                    f"{percent(rate.high)}), about {rate.errors:.0f} wrong labels in {result.audited} audited rows"
                    f"{skipped}; {result.n_issues} rows flagged as likely errors.")
    else:
        estimate = f"**The error rate cannot be estimated**{skipped}."
    lines = [heading, "", estimate, ""]
    if result.training_overlap is not None and result.training_overlap.usable:
        message = result.training_overlap.message
        lines += [_md(message[0].upper() + message[1:]) + ".", ""]
    if result.limits:
        lines += ["| limit | result | outcome |", "|---|---|---|"]
        for limit in result.limits:
            setting = limit.option if limit.name == "leakage" else f"{limit.option} {limit.limit:g}"
            lines.append(f"| `{setting}` | {'✅ pass' if limit.passed else '❌ fail'} "
                         f"| {_md(limit.message)} |")
        lines.append("")
    over = [c for c in result.classes if c.over_limit]
    if over:
        lines += ["**Classes over their limit**", "", "| class | rows | error rate | 95% interval | flagged |",
                  "|---|---:|---:|---:|---:|"]
        for c in over:
            lines.append(f"| {_md(c.label)} | {c.n} | {percent(c.error_rate.rate)} | "
                         f"{percent(c.error_rate.low)}–{percent(c.error_rate.high)} | {c.n_issues} |")
        lines.append("")
    if result.baseline is not None:
        base = result.baseline
        worse = ", ".join(_md(c.label) for c in base.worse_classes) or "none"
        lines += [f"Compared with `{_md(str(base.path))}`: {percent(base.error_rate)} → {percent(rate.rate)}; "
                  f"classes clearly worse: {worse}.", ""]
    worst = result.worst_rows.head(max_rows)
    if len(worst):
        lines += [f"**Worst rows** (top {len(worst)} of {result.n_issues} flagged)", "",
                  "| path | given | suggested | error prob. |", "|---|---|---|---:|"]
        for row in worst.itertuples(index=False):
            lines.append(f"| {_md(str(row.path))} | {_md(str(row.given_label))} | {_md(str(row.suggested_label))} "
                         f"| {float(row.error_probability):.2f} |")
        lines.append("")
    lines.append(f"Full batch report: `{_md(str(result.report_path))}`")
    return "\n".join(lines) + "\n"


def github_annotations(result: CheckResult, *, max_rows: int = 10) -> list[str]:
    """GitHub Actions workflow commands: an error per broken limit, warnings for skipped and worst rows."""
    lines = [f"::error title=labelaudit check::{_escape_data(limit.option + ': ' + limit.message)}"
             for limit in result.failed_limits]
    if result.skipped:
        reasons = _skip_reasons(result)
        lines.append(f"::warning file={_escape_property(str(result.batch_csv))},title=labelaudit check::"
                     f"{_escape_data(f'{result.skipped} rows skipped ({reasons})')}")
    overlap = result.training_overlap
    if overlap is not None and overlap.seen:
        lines.append(f"::warning file={_escape_property(str(result.batch_csv))},title=rows seen in training::"
                     f"{_escape_data(overlap.message)}")
    for row in result.worst_rows.head(max_rows).itertuples(index=False):
        message = (f"{row.path}: given {row.given_label}, suggested {row.suggested_label} "
                   f"(error probability {float(row.error_probability):.2f})")
        lines.append(f"::warning file={_escape_property(str(result.batch_csv))},title=likely label error::"
                     f"{_escape_data(message)}")
    return lines


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _md(text: str) -> str:
    """Table-cell safe: no pipes or line breaks."""
    return text.replace("|", "\\|").replace("\n", " ").replace("\r", " ")
