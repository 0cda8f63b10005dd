"""``labelaudit train [IMAGES LABELS.csv] --method …``: train a noise-robust classifier, save it as ``model/``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..errors import LabelAuditError
from . import options as opt
from . import startup
from .app import app
from .console import RichProgress, print_json, stdout

METHOD = "Method"
METHODS = "ce, elr, elr+, glc, forward, nal"

MixupAlpha = Annotated[Optional[float], typer.Option(
    "--mixup-alpha", min=0.0, help="elr+: mixup weight ~ Beta(α, α); 0 turns mixup off. Paper: 1 (200 "
    "epochs); default 0: on short runs mixup cost 5 points (Fashion-MNIST, 13 epochs, 50% noise).",
    rich_help_panel=METHOD)]
EmaDecay = Annotated[Optional[float], typer.Option(
    "--ema-decay", min=0.0, max=0.999999, help="elr+: decay of each network's weight average. Default: an "
    "average over ~0.85 epoch, as the paper's 0.997 at CIFAR's 391 steps per epoch (0.981 at 62).",
    rich_help_panel=METHOD)]
EmaRamp = Annotated[Optional[float], typer.Option(
    "--ema-ramp", min=0.0, max=1.0, help="elr+: share of the training steps over which the EMA decay ramps up "
    "(official: 40,000 of ~78,000 CIFAR steps). Default: 0.5.", rich_help_panel=METHOD)]
CoefRamp = Annotated[Optional[float], typer.Option(
    "--coef-ramp", min=0.0, max=1.0, help="elr+: share of the training steps over which the regulariser weight "
    "ramps up. Paper: 0 (CIFAR-10); 0.4 from 50 classes (CIFAR-100, 40,000 of ~97,750 steps).", rich_help_panel=METHOD)]
AnchorPercentile = Annotated[Optional[float], typer.Option(
    "--anchor-percentile", min=0.0, max=100.0, help="forward: per class, probabilities at or above this "
    "percentile are discarded before picking the anchor point for T̂. Paper: 97.", rich_help_panel=METHOD)]

#: which --options each method takes, and the constructor keyword each one sets
METHOD_OPTIONS = {
    "--elr-beta": ("beta", ("elr", "elr+")),
    "--elr-lambda": ("lam", ("elr", "elr+")),
    "--mixup-alpha": ("mixup_alpha", ("elr+",)),
    "--ema-decay": ("ema_decay", ("elr+",)),
    "--ema-ramp": ("ema_ramp", ("elr+",)),
    "--coef-ramp": ("coef_ramp", ("elr+",)),
    "--anchor-percentile": ("anchor_percentile", ("forward",)),
}


#: options that describe the dataset, so they only make sense with IMAGES LABELS.csv
DATASET_OPTIONS = {"path_column": "--path-column", "label_column": "--label-column", "delimiter": "--delimiter",
                   "classes": "--classes"}


@app.command()
def train(
    ctx: typer.Context,
    images: Annotated[Optional[Path], typer.Argument(
        help="Folder with the images. Leave out IMAGES and LABELS.csv to reuse the scan in --out.",
        show_default=False)] = None,
    labels: Annotated[Optional[Path], typer.Argument(
        help="Label CSV with a header row (default columns path,label).", show_default=False)] = None,
    method: Annotated[str, typer.Option("--method", help=f"Training method: {METHODS}.",
                                        rich_help_panel=METHOD)] = "elr",
    trusted: Annotated[Optional[Path], typer.Option(
        "--trusted", help="glc: CSV (same columns) of rows whose true label an expert confirmed.",
        rich_help_panel=METHOD)] = None,
    val: Annotated[Optional[Path], typer.Option(
        "--val", help="Clean validation CSV, paths under the same IMAGES folder: accuracy each epoch.",
        rich_help_panel=opt.DATA)] = None,
    out: opt.Out = Path("labelaudit-out"),
    elr_beta: opt.ElrBeta = None,
    elr_lambda: opt.ElrLambda = None,
    mixup_alpha: MixupAlpha = None,
    ema_decay: EmaDecay = None,
    ema_ramp: EmaRamp = None,
    coef_ramp: CoefRamp = None,
    anchor_percentile: AnchorPercentile = None,
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
    path_column: opt.PathColumn = "path",
    label_column: opt.LabelColumn = "label",
    delimiter: opt.Delimiter = ",",
    classes: opt.ClassesFile = None,
    max_pixels: opt.MaxPixels = None,
    workers: opt.Workers = None,
    no_cache: opt.NoCache = False,
    force: opt.Force = False,
    resume: opt.Resume = False,
    quiet: opt.QuietResult = False,
    json_output: opt.Json = False,
) -> None:
    """Train a noise-robust classifier and save it to OUT/model (safetensors weights, config.json, metrics.json).

    Training settings not given here are those of the scan in --out (or the defaults with IMAGES LABELS.csv).

    Below plain ce on short runs (Fashion-MNIST, planted noise, 13 epochs of test_resnet; docs/commands/train.md):
    forward on every setting, by 1.6-6.9 points (63.1% vs 69.9% at 40% look-alike noise, 2,000 rows);
    nal on look-alike noise (67.5% vs 69.9%) and on 8,000 rows at 3 epochs (72.7% vs 75.3% at 50% symmetric);
    elsewhere the methods are within about 1-2 points of ce. glc gains most (+2.9 to +7.2 points).
    """
    if (images is None) != (labels is None):
        raise LabelAuditError("pass both IMAGES and LABELS.csv, or neither to reuse the scan in --out")
    dataset = None
    if images is None:
        for name, flag in DATASET_OPTIONS.items():
            source = ctx.get_parameter_source(name)
            if source is not None and source.name != "DEFAULT":  # by name: typer vendors its own click
                raise LabelAuditError(f"{flag} needs IMAGES LABELS.csv; without them the scan's dataset is reused")
    opt.require_inputs(images, labels, weights=weights, classes=classes)  # a typo is refused before torch loads
    from ..audit import DatasetSpec  # torch loads here, not for --help or the usage errors above
    from ..train.loop import check_model_name
    from ..training import TrainSettings, run_train

    startup.imports_done()
    opt.apply_threads(threads)
    if model is not None:
        check_model_name(model)  # before any image is decoded

    if images is not None and labels is not None:
        dataset = DatasetSpec(images=images, labels_csv=labels, path_column=path_column, label_column=label_column,
                              delimiter=delimiter, classes_file=classes)
    given_method_options = {"--elr-beta": elr_beta, "--elr-lambda": elr_lambda, "--mixup-alpha": mixup_alpha,
                            "--ema-decay": ema_decay, "--ema-ramp": ema_ramp, "--coef-ramp": coef_ramp,
                            "--anchor-percentile": anchor_percentile}
    settings = TrainSettings(
        out=out,
        dataset=dataset,
        method=method,
        method_options=method_options(method, given_method_options),
        train_overrides={
            "model": model, "pretrained": pretrained, "weights": str(weights) if weights else None,
            "image_size": image_size, "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
            "device": device, "flip": flip, "compile": compile,
        },
        trusted=trusted,
        val=val,
        force=force,
        workers=workers,
        max_pixels=max_pixels,
        cache=not no_cache,
        resume=resume,
    )
    from ..train.distributed import is_main_process  # under torchrun, process 0 alone prints

    main = is_main_process()
    with opt.interrupt_hint("train"), RichProgress(enabled=main and not quiet and not json_output) as progress:
        result = run_train(settings, progress=progress, decode_progress=progress.decode)
    if not main:
        return
    if json_output:
        print_json(result.summary)
    elif quiet:
        typer.echo(train_result_line(result.summary))
    else:
        print_train_summary(result.summary)


def train_result_line(summary: dict[str, Any]) -> str:
    """What ``train --quiet`` prints: the trained model in one line."""
    return (f"Trained {summary['method']} on {summary['trained_on']} images in {summary['seconds']:.0f} s; "
            f"model {summary['model_dir']}")


def method_options(method: str, given: dict[str, Any]) -> dict[str, Any]:
    """Constructor options of ``method`` from the given ``--option: value`` pairs; refuse ones it does not take."""
    from ..methods.registry import method_names

    options = {}
    for flag, value in given.items():
        if value is None:
            continue
        keyword, methods = METHOD_OPTIONS[flag]
        if method not in methods and method in method_names():  # an unknown method gets its own error
            raise LabelAuditError(f"{flag} applies to --method {' or '.join(methods)}, not {method}")
        options[keyword] = value
    return options


def print_train_summary(summary: dict[str, Any]) -> None:
    train = summary["train"]
    skipped = f" ([yellow]skipped {summary['skipped']}[/] of {summary['rows']} rows)" if summary["skipped"] else ""
    stdout.print(f"[bold]Trained[/] {summary['method']} on {summary['trained_on']} images{skipped} "
                 f"in {summary['seconds']:.0f} s")
    method_settings = ", ".join(f"{k}={_short(v)}" for k, v in summary["method_settings"].items()
                                if not isinstance(v, (list, dict)))  # e.g. GLC's Ĉ: in config.json
    stdout.print(f"[bold]Settings[/] {train['model']}, {train['image_size']} px, {train['epochs']} epochs, "
                 f"batch {train['batch_size']}, lr {train['lr']:g}, seed {train['seed']}"
                 + (f"; {method_settings}" if method_settings else ""))
    if summary["final_train_loss"] is not None:
        stdout.print(f"[bold]Final train loss[/] {summary['final_train_loss']:.4f}")
    if "val_accuracy" in summary:
        reasons = ", ".join(f"{n} {reason}" for reason, n in summary["val_skipped_reasons"].items())
        stdout.print(f"[bold]Validation accuracy[/] {summary['val_accuracy']:.1%} (loss {summary['val_loss']:.3f}) "
                     f"on {summary['val_used']} rows"
                     + (f" ([yellow]skipped {summary['val_skipped']}[/]: {reasons})" if summary["val_skipped"] else ""))
    glc = summary.get("glc")
    if glc:
        stdout.print(f"[bold]Trusted rows[/] {glc['trusted_rows']}"
                     + (f" ({glc['trusted_rows_ignored']} trusted rows not in the training set ignored)"
                        if glc["trusted_rows_ignored"] else ""))
        if glc["classes_without_trusted_rows"]:
            stdout.print("[yellow]No trusted rows for[/] " + ", ".join(glc["classes_without_trusted_rows"])
                         + " (identity rows in Ĉ)")
    if summary["transition_file"]:
        stdout.print(f"Learned noise channel written to [bold]{summary['transition_file']}[/] (estimator nal)")
    for note in summary["notes"]:
        stdout.print(f"[yellow]Note[/] {note}")
    stdout.print(f"[bold]Model[/] {summary['model_dir']}")


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
