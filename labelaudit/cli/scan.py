"""``labelaudit scan IMAGES LABELS.csv``: train, score every row, write the run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import options as opt
from . import startup
from .app import app
from .console import RichProgress, print_json, stderr
from .views import echo_lines, print_scan_summary, scan_result_lines

D = opt.DEFAULTS


@app.command()
def scan(
    images: Annotated[Path, typer.Argument(help="Folder with the images (CSV paths are relative to it).")],
    labels: Annotated[Path, typer.Argument(help="Label CSV with a header row (default columns path,label).")],
    out: opt.Out = Path("labelaudit-out"),
    method: Annotated[str, typer.Option("--method", help="Training method: ce, elr, elr+, …",
                                        rich_help_panel=opt.TRAINING)] = "elr",
    model: opt.Model = D.model,
    pretrained: opt.Pretrained = D.pretrained,
    weights: opt.Weights = None,
    image_size: opt.ImageSize = D.image_size,
    epochs: opt.Epochs = D.epochs,
    batch_size: opt.BatchSize = D.batch_size,
    lr: opt.LearningRate = D.lr,
    seed: opt.Seed = D.seed,
    device: opt.Device = D.device,
    threads: opt.Threads = None,
    folds: opt.Folds = 1,
    flip: opt.Flip = D.flip,
    compile: opt.Compile = False,
    freeze_backbone: opt.FreezeBackbone = False,
    elr_beta: opt.ElrBeta = None,
    elr_lambda: opt.ElrLambda = None,
    path_column: opt.PathColumn = "path",
    label_column: opt.LabelColumn = "label",
    delimiter: opt.Delimiter = ",",
    classes: opt.ClassesFile = None,
    max_pixels: opt.MaxPixels = None,
    workers: opt.Workers = None,
    no_cache: opt.NoCache = False,
    split_column: Annotated[Optional[str], typer.Option(
        "--split-column", metavar="COL", help="CSV column naming each row's split (train/val/test): duplicate sets "
        "that span splits are reported as leakage (is_leak).", rich_help_panel=opt.DATA)] = None,
    data_checks: Annotated[bool, typer.Option(
        "--data-checks/--no-data-checks", help="Also look for duplicates, leakage, outliers and image-quality "
        "defects (measures taken while decoding and a nearest-neighbour search of thumbnails; no extra network pass).",
        rich_help_panel=opt.OUTPUT)] = True,
    self_check: Annotated[bool, typer.Option(
        "--self-check", help="Also audit a copy with 5% planted label errors shaped like the ones found, and report "
        "how well they were found (measured precision, recall, AUPRC, error-rate bias). Doubles the training.",
        rich_help_panel=opt.OUTPUT)] = False,
    top: Annotated[int, typer.Option("--top", min=0, help="Suspects shown in the summary.",
                                     rich_help_panel=opt.OUTPUT)] = 15,
    force: opt.Force = False,
    resume: opt.Resume = False,
    quiet: opt.QuietResult = False,
    json_output: opt.Json = False,
) -> None:
    """Train a noise-robust model on the labelled images and score every row for label errors."""
    opt.require_inputs(images, labels, weights=weights, classes=classes)  # a typo is refused before torch loads
    from ..audit import DatasetSpec, ScanSettings, run_scan  # torch and timm load here, not for --help
    from ..issues import DataIssueSettings
    from ..train.loop import check_model_name

    startup.imports_done()
    opt.apply_threads(threads)
    check_model_name(model)  # before any image is decoded

    settings = ScanSettings(
        dataset=DatasetSpec(images=images, labels_csv=labels, path_column=path_column, label_column=label_column,
                            delimiter=delimiter, classes_file=classes, max_pixels=max_pixels, workers=workers,
                            cache=not no_cache),
        out=out,
        train=opt.train_config(model=model, pretrained=pretrained, weights=weights, image_size=image_size,
                               epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device, flip=flip,
                               compile=compile),
        method=method,
        method_options=opt.method_options(method, elr_beta=elr_beta, elr_lambda=elr_lambda),
        folds=folds,
        force=force,
        resume=resume,
        freeze_backbone=freeze_backbone,
        self_check=self_check,
        data_issues=data_checks,
        issues=DataIssueSettings(split_column=split_column),
    )
    if freeze_backbone and not pretrained and weights is None:
        stderr.print("[yellow]Warning: --freeze-backbone without --pretrained/--weights uses random features[/]")
    from ..train.distributed import is_main_process  # under torchrun, process 0 alone prints

    main = is_main_process()
    with opt.interrupt_hint("scan"), RichProgress(enabled=main and not quiet and not json_output) as progress:
        result = run_scan(settings, progress=progress, decode_progress=progress.decode)
    if not main:
        return
    if json_output:
        print_json(result.summary)
    elif quiet:
        echo_lines(scan_result_lines(result.summary))
    else:
        print_scan_summary(result.summary, result.samples, top=top)
