"""``labelaudit check IMAGES BATCH.csv --model DIR/model``: the CI gate for a new annotation batch.

Exit 0 when the batch is within every limit, 1 when a limit is exceeded, 2 for bad input.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from . import options as opt
from . import startup
from .app import app
from .console import RichProgress, print_json

LIMITS = "Limits"
CI = "CI output"


class GateOn(str, Enum):
    estimate = "estimate"
    upper = "upper"


class OutputFormat(str, Enum):
    text = "text"
    github = "github"


@app.command()
def check(
    images: Annotated[Path, typer.Argument(help="Folder with the batch's images (CSV paths are relative to it).")],
    batch: Annotated[Path, typer.Argument(help="The batch's label CSV (default columns path,label).")],
    model: Annotated[Path, typer.Option("--model", help="Trained model directory (e.g. labelaudit-out/model).",
                                        show_default=False)],
    max_error_rate: Annotated[Optional[float], typer.Option(
        "--max-error-rate", min=0.0, max=1.0, help="Fail when the batch's estimated error rate is above this.",
        rich_help_panel=LIMITS)] = None,
    on: Annotated[GateOn, typer.Option(
        "--on", help="Compare the error-rate limits with the estimate, or with the upper end of its 95% interval.",
        rich_help_panel=LIMITS)] = GateOn.estimate,
    max_class_error_rate: Annotated[Optional[float], typer.Option(
        "--max-class-error-rate", min=0.0, max=1.0, help="Fail when any given class's error rate is above this.",
        rich_help_panel=LIMITS)] = None,
    max_issues: Annotated[Optional[int], typer.Option(
        "--max-issues", min=0, help="Fail when more rows than this are flagged as likely errors.",
        rich_help_panel=LIMITS)] = None,
    min_images: Annotated[Optional[int], typer.Option(
        "--min-images", min=0, help="Fail when fewer rows than this are usable.", rich_help_panel=LIMITS)] = None,
    max_duplicates: Annotated[Optional[int], typer.Option(
        "--max-duplicates", min=0, help="Fail when more rows than this are in duplicate sets within the batch "
        "(the same picture twice, exactly or nearly).", rich_help_panel=LIMITS)] = None,
    fail_on_leakage: Annotated[bool, typer.Option(
        "--fail-on-leakage", help="Fail when a batch row shows an image the model trained on (e.g. a test set "
        "that leaks training images).", rich_help_panel=LIMITS)] = False,
    report: Annotated[Optional[Path], typer.Option(
        "--report", help="Batch report (Parquet, samples.parquet columns). [default: OUT/check/BATCH.parquet]",
        rich_help_panel=opt.OUTPUT, show_default=False)] = None,
    junit: Annotated[Optional[Path], typer.Option(
        "--junit", help="Also write JUnit XML: one test case per limit.", rich_help_panel=CI)] = None,
    output_format: Annotated[OutputFormat, typer.Option(
        "--format", help="github: also print workflow annotations (::error::, ::warning::).",
        rich_help_panel=CI)] = OutputFormat.text,
    baseline: Annotated[Optional[Path], typer.Option(
        "--baseline", help="An earlier check report or a scan's samples.parquet to compare with.",
        rich_help_panel=opt.OUTPUT)] = None,
    top: Annotated[int, typer.Option("--top", min=0, help="Worst rows listed.", rich_help_panel=opt.OUTPUT)] = 10,
    out: opt.Out = Path("labelaudit-out"),
    path_column: opt.PathColumn = "path",
    label_column: opt.LabelColumn = "label",
    delimiter: opt.Delimiter = ",",
    max_pixels: opt.MaxPixels = None,
    workers: opt.Workers = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or mps.")] = "auto",
    threads: opt.Threads = None,
    quiet: opt.Quiet = False,
    json_output: opt.Json = False,
) -> None:
    """Score a new annotation batch with a trained model; exit 1 when it exceeds a limit (CI gate)."""
    from ..gate import CheckSettings, Limits, resolve_model_dir, run_check  # pandas loads here, not at start-up
    from ..report.rundir import require_model_files
    from .check_views import print_check_summary, say, verdict_line, write_ci_outputs

    settings = CheckSettings(
        images=images, batch_csv=batch, model_dir=model, out=out, report=report, baseline=baseline,
        limits=Limits(max_error_rate=max_error_rate, max_class_error_rate=max_class_error_rate,
                      max_issues=max_issues, min_images=min_images, on=on.value, max_duplicates=max_duplicates,
                      fail_on_leakage=fail_on_leakage),
        path_column=path_column, label_column=label_column, delimiter=delimiter, device=device,
        max_pixels=max_pixels, workers=workers, worst=top,
    )
    settings.limits.validate()  # bad limits or no model: one line before torch loads
    require_model_files(resolve_model_dir(model))
    opt.require_inputs(images, batch)
    from ..train.checkpoint import load_model  # noqa: F401  (torch and timm load here)

    startup.imports_done()
    opt.apply_threads(threads)
    with RichProgress(enabled=not quiet and not json_output) as progress:
        result = run_check(settings, progress=progress, decode_progress=progress.decode)
    write_ci_outputs(result, junit=junit, github=output_format is OutputFormat.github,
                     annotations_to_stderr=json_output, max_rows=top)
    if json_output:
        print_json(result.to_dict())
    elif quiet:
        say(escape(verdict_line(result)))
    else:
        print_check_summary(result, out)
    if not result.passed:
        raise typer.Exit(result.exit_code)
