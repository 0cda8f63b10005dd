"""``labelaudit matrix [--trusted gold.csv]``: estimate the noise transition matrix and re-score the scan."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.table import Table

from . import options as opt
from . import startup
from .app import app
from .console import RichProgress, print_json, stderr, stdout

if TYPE_CHECKING:  # pragma: no cover
    from ..matrix import MatrixResult

#: off-diagonal cells at or above this share are highlighted in the table
HIGHLIGHT = 0.05


@app.command()
def matrix(
    trusted: Annotated[Optional[Path], typer.Option(
        "--trusted", help="CSV of rows an expert checked (path,label): enables GLC, calibrates error "
        "probabilities and marks confirmed errors.", show_default=False)] = None,
    out: opt.Out = Path("labelaudit-out"),
    bootstrap: Annotated[int, typer.Option("--bootstrap", min=0, help="Bootstrap resamples for each cell's "
                                           "95% interval (0: none).", rich_help_panel=opt.OUTPUT)] = 200,
    model: opt.Model = None,
    pretrained: opt.Pretrained = None,
    weights: opt.Weights = None,
    image_size: opt.ImageSize = None,
    epochs: opt.Epochs = None,
    batch_size: opt.BatchSize = None,
    lr: opt.LearningRate = None,
    seed: opt.Seed = None,
    device: opt.Device = None,
    threads: opt.Threads = None,
    flip: opt.Flip = None,
    compile: opt.Compile = None,
    path_column: Annotated[Optional[str], typer.Option(
        "--path-column", help="Trusted CSV column with image paths (default: the scan's).",
        rich_help_panel=opt.DATA)] = None,
    label_column: Annotated[Optional[str], typer.Option(
        "--label-column", help="Trusted CSV column with labels (default: the scan's).",
        rich_help_panel=opt.DATA)] = None,
    delimiter: Annotated[Optional[str], typer.Option(
        "--delimiter", help="Trusted CSV field separator (default: the scan's).", rich_help_panel=opt.DATA)] = None,
    workers: opt.Workers = None,
    no_cache: opt.NoCache = False,
    quiet: opt.QuietResult = False,
    json_output: opt.Json = False,
) -> None:
    """Estimate the noise transition matrix T (GLC with --trusted; confident joint and anchor points
    always), write transition.parquet and transition.png, and re-score samples.parquet with it.

    Training options set the GLC cross-entropy model; by default it uses the scan's settings.
    """
    from ..report.rundir import read_run_record

    record = read_run_record(out)  # no scan: a one-line error before torch is imported
    opt.require_inputs(weights=weights)
    from ..matrix import MatrixSettings, run_matrix, scan_train_config

    startup.imports_done()
    opt.apply_threads(threads)
    if model is not None:
        from ..train.loop import check_model_name

        check_model_name(model)  # before any image is decoded

    config = scan_train_config(
        record, model=model, pretrained=pretrained, weights=str(weights) if weights else None,
        image_size=image_size, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device,
        flip=flip, compile=compile,
    )
    settings = MatrixSettings(
        out=out, trusted_csv=trusted, train=config, bootstrap=bootstrap, workers=workers,
        path_column=path_column or record.path_column, label_column=label_column or record.label_column,
        delimiter=delimiter or record.delimiter, cache=not no_cache,
    )
    with RichProgress(enabled=not quiet and not json_output) as progress:
        result = run_matrix(settings, progress=progress, decode_progress=progress.decode)
    if not quiet:
        for warning in result.warnings:
            stderr.print(f"[yellow]Warning:[/] {warning}")
    if json_output:
        print_json(result.summary)
    elif quiet:
        typer.echo(matrix_result_line(result.summary, out))
    else:
        print_matrix(result)


def matrix_result_line(summary: dict[str, Any], out: Path) -> str:
    """What ``matrix --quiet`` prints: the re-scored result in one line."""
    return (f"Re-scored with T from {summary['transition_estimator']}: estimated wrong labels "
            f"{summary['estimated_error_rate']:.1%} ({summary['estimated_errors']:.0f}), {summary['n_issues']} "
            f"flagged; run directory {out}")


def transition_table(result: MatrixResult) -> Table:
    """T as a table: rows = true class, columns = given label; the diagonal in bold, each row's largest
    off-diagonal cell (when ≥ 5%) in red."""
    import numpy as np

    estimate = result.estimates[result.best]
    matrix, classes = estimate.matrix, result.classes
    missing = estimate.no_trusted_examples if estimate.no_trusted_examples is not None else np.zeros(len(classes), bool)
    table = Table(title=f"Noise transition matrix T ({result.best}): row = true class, column = given label",
                  title_justify="left")
    table.add_column("true \\ given", style="bold")
    for name in classes:
        table.add_column(name, justify="right")
    for i, name in enumerate(classes):
        off = matrix[i].copy()
        off[i] = -np.inf
        worst = int(off.argmax()) if len(classes) > 1 else -1
        cells = []
        for j, value in enumerate(matrix[i]):
            text = f"{value:.2f}"
            if i == j:
                text = f"[bold green]{text}[/]"
            elif j == worst and value >= HIGHLIGHT:
                text = f"[bold red]{text}[/]"
            elif value < 0.005:
                text = f"[dim]{text}[/]"
            cells.append(text)
        label = f"{name} [yellow](no trusted example)[/]" if missing[i] else name
        table.add_row(label, *cells)
    return table


def print_matrix(result: MatrixResult) -> None:
    from ..matrix import top_confusions

    summary: dict[str, Any] = result.summary
    estimate = result.estimates[result.best]
    stdout.print(transition_table(result))
    pairs = top_confusions(estimate.matrix, result.classes, skip_rows=estimate.no_trusted_examples)
    if pairs:
        stdout.print("[bold]Most confused[/]")
        for true_name, given_name, share in pairs:
            stdout.print(f"  {share:.0%} of true [bold]{true_name}[/] are labelled [bold]{given_name}[/]")
    else:
        stdout.print("[bold]No confusion[/] of 1% or more between any two classes")
    trusted = summary.get("trusted")
    if trusted:
        stdout.print(f"[bold]Trusted rows[/] {trusted['rows']}: {trusted['confirmed_errors']} confirmed label "
                     f"errors, {trusted['confirmed_correct']} confirmed correct"
                     + (f"; {trusted['ignored']} ignored (not in the scan)" if trusted["ignored"] else ""))
    calibration = summary["calibration"]
    stdout.print(f"[bold]Estimated wrong labels[/] {summary['estimated_error_rate']:.1%} "
                 f"(about {summary['estimated_errors']:.0f}); [bold]{summary['n_issues']}[/] rows flagged; "
                 f"error probabilities from T = {result.best}, calibration: {calibration['method']}")
    if "glc" in result.estimates and result.best != "glc":
        stdout.print(f"[yellow]Scored with {result.best}, not glc[/]: {summary['transition_choice']['reason']}")
    others = [name for name in result.estimates if name != result.best]
    stdout.print(f"Also estimated: {', '.join(others)} (anchor from {summary['anchor_probabilities']})")
    # soft_wrap: paths stay on one line, to copy and paste
    stdout.print(f"[bold]Transition matrix[/] {result.transition_path}", soft_wrap=True)
    stdout.print(f"[bold]Heatmap[/] {result.heatmap_path}", soft_wrap=True)
    stdout.print("samples.parquet, classes.parquet and summary.json re-scored with it")
