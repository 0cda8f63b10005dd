"""Options shared by several commands, declared once (DESIGN.md §2)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer

from ..errors import LabelAuditError
from ..train.config import (
    AUTO_BATCH_CAP, DEFAULT_BATCH_SIZE, DEFAULT_LR, DEFAULT_MODEL, TrainConfig, parse_batch_size,
)

DEFAULTS = TrainConfig()
TRAINING = "Training"
DATA = "Data"
OUTPUT = "Output"

Out = Annotated[Path, typer.Option("--out", "-o", help="Run directory.", rich_help_panel=OUTPUT)]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or tables.", rich_help_panel=OUTPUT)]
QuietResult = Annotated[bool, typer.Option(
    "--quiet", "-q", help="No progress bars or tables: only the one-line result (with the run directory) on "
    "stdout.", rich_help_panel=OUTPUT)]
Json = Annotated[bool, typer.Option("--json", help="Print a machine-readable summary on stdout.",
                                    rich_help_panel=OUTPUT)]
Force = Annotated[bool, typer.Option("--force", help="Overwrite a run directory made from other inputs.",
                                     rich_help_panel=OUTPUT)]
Resume = Annotated[bool, typer.Option("--resume", help="Continue training interrupted with Ctrl-C (saved in "
                                      "OUT/checkpoint-COMMAND.pt); same arguments as the interrupted command.",
                                      rich_help_panel=OUTPUT)]

Model = Annotated[str, typer.Option("--model", help=f"Any timm model name (default {DEFAULT_MODEL}).",
                                    rich_help_panel=TRAINING)]
Pretrained = Annotated[bool, typer.Option("--pretrained/--no-pretrained",
                                          help="Start from timm's pretrained weights (downloads them).",
                                          rich_help_panel=TRAINING)]
Weights = Annotated[Optional[Path], typer.Option("--weights", help="Local checkpoint to start from (offline use).",
                                                 rich_help_panel=TRAINING)]
ImageSize = Annotated[int, typer.Option("--image-size", min=8, help="Images are resized to this square size.",
                                        rich_help_panel=TRAINING)]
Epochs = Annotated[Optional[int], typer.Option("--epochs", min=1, help="Default: about 800 optimiser steps "
                                               "(10 to 200 epochs).", rich_help_panel=TRAINING)]


def _batch_size_option(text: str) -> int | str:
    try:
        return parse_batch_size(text)
    except LabelAuditError as exc:
        raise typer.BadParameter(str(exc)) from None


BatchSize = Annotated[str, typer.Option(
    "--batch-size", parser=_batch_size_option, metavar="N|auto",
    help=f"Images per optimiser step (per process under torchrun): N >= 2, or auto: on a CUDA GPU the largest "
    f"batch that fits in its memory (probed, then halved as a safety margin; at most {AUTO_BATCH_CAP}); "
    f"on CPU and MPS auto is the default {DEFAULT_BATCH_SIZE}, as memory is not the limit there.",
    rich_help_panel=TRAINING)]
LearningRate = Annotated[Optional[float], typer.Option(
    "--lr", min=0.0, help=f"Peak SGD learning rate (cosine schedule); default {DEFAULT_LR} for the network "
    f"(at the default batch of {DEFAULT_BATCH_SIZE}), 0.05 for --freeze-backbone's linear head.",
    show_default=False, rich_help_panel=TRAINING)]
Seed = Annotated[int, typer.Option("--seed", rich_help_panel=TRAINING)]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or mps.", rich_help_panel=TRAINING)]
Folds = Annotated[int, typer.Option("--folds", min=1, help="K > 1: train K models, score each row out of fold.",
                                    rich_help_panel=TRAINING)]
Flip = Annotated[bool, typer.Option("--flip/--no-flip", help="Random horizontal flips while training.",
                                    rich_help_panel=TRAINING)]
Compile = Annotated[bool, typer.Option("--compile", help="torch.compile the model (GPU runs).",
                                       rich_help_panel=TRAINING)]
FreezeBackbone = Annotated[bool, typer.Option(
    "--freeze-backbone", help="Fast mode: embed the images once with the (pretrained) backbone, cached in "
    "OUT/cache, and train only a linear head (elr or ce); a re-run reuses the embeddings.",
    rich_help_panel=TRAINING)]
ElrBeta = Annotated[Optional[float], typer.Option("--elr-beta", min=0.0, max=0.999,
                                                  help="ELR target momentum β (default: chosen automatically).",
                                                  rich_help_panel=TRAINING)]
ElrLambda = Annotated[Optional[float], typer.Option("--elr-lambda", min=0.0,
                                                    help="ELR regularisation weight λ (default: automatic).",
                                                    rich_help_panel=TRAINING)]

Threads = Annotated[Optional[int], typer.Option(
    "--threads", min=1, help="CPU threads for torch's operations (default: what torch picks, one per core). On a "
    "shared machine, set it to the cores this run may use: oversubscribed cores slow everyone down.",
    rich_help_panel=TRAINING, show_default=False)]

PathColumn = Annotated[str, typer.Option("--path-column", help="CSV column with image paths.", rich_help_panel=DATA)]
LabelColumn = Annotated[str, typer.Option("--label-column", help="CSV column with labels.", rich_help_panel=DATA)]
Delimiter = Annotated[str, typer.Option("--delimiter", help="CSV field separator.", rich_help_panel=DATA)]
ClassesFile = Annotated[Optional[Path], typer.Option("--classes", help="File with one class per line: fixes the "
                                                     "class order; other labels are skipped.", rich_help_panel=DATA)]
MaxPixels = Annotated[Optional[int], typer.Option("--max-pixels", min=1, help="Skip images larger than this "
                                                  "(width × height) as image_too_large.", rich_help_panel=DATA)]
Workers = Annotated[Optional[int], typer.Option("--workers", min=1, help="Decoding threads (default: CPU count).",
                                                rich_help_panel=DATA)]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Decode every image again instead of reusing the decode "
                                       "cache in OUT/cache (which is then left as it is).", rich_help_panel=DATA)]


def require_inputs(images: Path | None = None, labels: Path | None = None, *, weights: Path | None = None,
                   classes: Path | None = None) -> None:
    """Refuse a missing images folder, label CSV, ``--weights`` or ``--classes`` file at once, before torch
    loads (a second, not several); the library checks again, in the same words."""
    if images is not None:
        if not images.exists():
            raise LabelAuditError(f"images folder {images} does not exist")
        if not images.is_dir():
            raise LabelAuditError(f"images folder {images} is not a directory")
    if labels is not None:
        if not labels.exists():
            raise LabelAuditError(f"labels file {labels} does not exist")
        if not labels.is_file():
            raise LabelAuditError(f"labels file {labels} is not a regular file")
    if classes is not None and not classes.is_file():
        raise LabelAuditError(f"classes file {classes} does not exist")
    if weights is not None and not weights.is_file():
        raise LabelAuditError(f"weights file not found: {weights}")


def train_config(*, model: str, pretrained: bool, weights: Path | None, image_size: int, epochs: int | None,
                 batch_size: int | str, lr: float | None, seed: int, device: str, flip: bool, compile: bool) -> TrainConfig:
    return TrainConfig(model=model, pretrained=pretrained, weights=str(weights) if weights else None,
                       image_size=image_size, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                       device=device, flip=flip, compile=compile)


def method_options(method: str, *, elr_beta: float | None = None, elr_lambda: float | None = None) -> dict:
    """Constructor options for ``method`` from the command line; ELR-family methods take β and λ."""
    if method in ("elr", "elr+"):
        return {"beta": elr_beta, "lam": elr_lambda}
    return {}


def apply_threads(threads: int | None) -> None:
    """Set ``--threads`` (call after torch is imported; before it, the call imports it)."""
    from ..train.device import set_threads

    set_threads(threads)


@contextlib.contextmanager
def interrupt_hint(command: str) -> Iterator[None]:
    """Ctrl-C inside: one line on stderr saying what was saved and how to resume, then exit code 130."""
    try:
        yield
    except KeyboardInterrupt as interrupted:
        from ..train.resume import TrainingInterrupted

        if isinstance(interrupted, TrainingInterrupted):
            message = interrupted.hint(command)
        else:
            message = "Interrupted; nothing was saved to resume from"
        typer.echo(message, err=True)
        raise typer.Exit(130) from None
