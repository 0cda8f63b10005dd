"""Clean-test accuracy of every training method on real images (Fashion-MNIST) under planted label noise.

For each noise setting (20% and 50% symmetric, 40% between look-alike classes; planted by
``benchmarks/fashion.py``, the same functions the detection benchmark uses) and each training-set size
(2,000 and 8,000 rows of Fashion-MNIST's train split), it writes the rows as PNG files with their noisy
labels, gives 5% of them an expert label (their true label) for GLC, trains every method with
``labelaudit.training.run_train`` (what ``labelaudit train`` runs) and measures accuracy on clean held-out
images of the test split. For the methods that estimate the noise transition matrix T (GLC's Ĉ,
forward correction's anchor T̂, the noise adaptation layer's learned channel θ) it also reports the mean
absolute difference per cell from the realised T (true label → given label on these rows).

The Markdown report (printed, and rewritten to ``--out`` after every run, so a partial report exists
while it runs) holds the exact command and settings. Runs use one torch thread each, one after another.

Why these defaults: the whole benchmark (36 trainings) has to finish within about 70 minutes on one
thread of a shared 2-core machine. ``test_resnet`` at 28 px (Fashion-MNIST's own size) is about 3× faster
than the tool's default resnet10t at 32 px; 2,000 rows train for the automatic number of epochs (about 800
optimiser steps: 13 epochs), 8,000 rows for 3 epochs (750 steps; the automatic rule would give 10).

    python benchmarks/methods.py --batch-size 32 --lr 0.05         # the table in the docs (~60 min, 1 thread)
    python benchmarks/methods.py --methods ce,nal --settings sym50 --sizes 2000   # a quick look
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from fashion import CLASSES, make_noisy_split  # noqa: E402

METHODS = ("ce", "elr", "elr+", "forward", "nal", "glc")
#: what each method's T estimate is called in the report
T_ESTIMATES = {"glc": "Ĉ from trusted rows", "forward": "anchor T̂", "nal": "learned channel θ"}


@dataclass(frozen=True)
class NoiseSetting:
    key: str
    noise: str
    rate: float

    @property
    def title(self) -> str:
        kind = "symmetric" if self.noise == "symmetric" else "look-alike"
        return f"{self.rate:.0%} {kind}"


SETTINGS = {s.key: s for s in (NoiseSetting("sym20", "symmetric", 0.2), NoiseSetting("sym50", "symmetric", 0.5),
                               NoiseSetting("look40", "lookalike", 0.4))}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / "out" / "methods-work",
                        help="scratch folder for datasets and run directories")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "methods.md",
                        help="where the Markdown report is written")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"any of {', '.join(SETTINGS)}")
    parser.add_argument("--sizes", default="2000,8000", help="training-set sizes (rows)")
    parser.add_argument("--epochs", default="auto,3",
                        help="epochs per size, in the order of --sizes ('auto': the tool's ~800-step rule)")
    parser.add_argument("--n-test", type=int, default=2000, help="clean held-out test images (Fashion-MNIST test split)")
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--trusted-fraction", type=float, default=0.05)
    parser.add_argument("--model", default="test_resnet")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the tool's default")
    parser.add_argument("--lr", type=float, default=None, help="default: the tool's default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def realised_t(true: np.ndarray, noisy: np.ndarray, classes: list[str]) -> np.ndarray:
    """(K, K) realised T in the order of ``classes`` (the trained model's class order)."""
    from labelaudit.core.transition import realised_transition

    position = np.array([classes.index(name) for name in CLASSES])
    return realised_transition(position[true], position[noisy], n_classes=len(classes))


def estimated_t(name: str, method) -> np.ndarray | None:
    if name == "glc":
        return method.corruption_matrix().detach().cpu().numpy().astype(np.float64)
    if name in ("forward", "nal"):
        return method.transition()
    return None


def train_and_score(name: str, root: Path, run_dir: Path, overrides: dict, split) -> dict:
    """One (method, dataset) run: accuracy on the clean test rows, seconds, T error where the method has a T."""
    from labelaudit.audit import DatasetSpec
    from labelaudit.data.dataset import load_labelled_images
    from labelaudit.train.loop import predict_proba
    from labelaudit.training import TrainSettings, run_train

    started = time.perf_counter()
    result = run_train(TrainSettings(
        out=run_dir, dataset=DatasetSpec(images=root / "images", labels_csv=root / "labels.csv"),
        method=name, trusted=root / "gold.csv" if name == "glc" else None, train_overrides=overrides, force=True,
    ))
    seconds = time.perf_counter() - started
    test = load_labelled_images(root / "images", root / "test.csv", image_size=result.config.image_size,
                                classes=result.classes)
    accuracy = float(np.mean(predict_proba(result.method, test.images, result.config).argmax(axis=1) == test.labels))
    estimate = estimated_t(name, result.method)
    t_error = None if estimate is None else float(np.mean(np.abs(estimate - realised_t(split.true, split.noisy,
                                                                                         result.classes))))
    return {"accuracy": accuracy, "seconds": seconds, "t_error": t_error}


def run(args: argparse.Namespace) -> str:
    import torch

    torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    settings = [SETTINGS[key.strip()] for key in args.settings.split(",") if key.strip()]
    sizes = [int(s) for s in args.sizes.split(",")]
    epochs = [None if e.strip() == "auto" else int(e) for e in args.epochs.split(",")]
    if len(epochs) != len(sizes):
        raise SystemExit("--epochs needs one value per --sizes entry")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown methods: {', '.join(unknown)}")
    results: dict[tuple[str, str, int], dict] = {}
    noise_realised: dict[tuple[str, int], float] = {}
    epochs_used: dict[int, int] = {}
    started = time.perf_counter()
    text = ""
    for size, size_epochs in zip(sizes, epochs):
        for setting in settings:
            split = make_noisy_split(n_train=size, noise=setting.noise, rate=setting.rate, seed=args.seed)
            root = split.write(args.work / f"{setting.key}-{size}", gold_fraction=args.trusted_fraction,
                               n_test=args.n_test)
            noise_realised[setting.key, size] = float(np.mean(split.is_error))
            overrides = {"model": args.model, "image_size": args.image_size, "epochs": size_epochs,
                         "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed, "device": "cpu"}
            for name in methods:
                run_dir = args.work / f"{setting.key}-{size}" / f"run-{name.replace('+', 'plus')}"
                row = train_and_score(name, root, run_dir, overrides, split)
                results[name, setting.key, size] = row
                from labelaudit.train.config import TrainConfig

                config = TrainConfig(**{k: v for k, v in overrides.items() if v is not None})
                epochs_used[size] = config.epochs_for(size)
                t_text = "" if row["t_error"] is None else f"  T error {row['t_error']:.3f}"
                print(f"{size:>5} rows {setting.title:>14}  {name:<8} clean-test accuracy {row['accuracy']:.3f}"
                      f"  ({row['seconds']:.0f} s){t_text}", file=sys.stderr, flush=True)
                text = report(args, methods, settings, sizes, epochs_used, results, noise_realised,
                              time.perf_counter() - started)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(text, encoding="utf-8")
    return text


def report(args, methods, settings, sizes, epochs_used, results, noise_realised, total) -> str:
    from labelaudit.train.config import DEFAULT_LR, TrainConfig

    defaults = TrainConfig()
    batch_size = args.batch_size or defaults.batch_size
    lr = args.lr or defaults.lr or DEFAULT_LR
    command = "python benchmarks/methods.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    columns = [(s, size) for size in sizes for s in settings]
    lines = [
        "# Clean-test accuracy by training method (Fashion-MNIST)",
        "",
        f"Command: `{command.strip()}`",
        "",
        f"Data: random rows of Fashion-MNIST's train split (seed {args.seed}) with planted noise "
        "(`benchmarks/fashion.py`); realised share of wrong labels "
        + ", ".join(f"{s.title} at {size:,}: {noise_realised[s.key, size]:.1%}"
                    for s, size in columns if (s.key, size) in noise_realised)
        + f". Accuracy on the first {args.n_test:,} (clean) images of the test split. GLC gets the true labels "
        f"of a random {args.trusted_fraction:.0%} of the training rows.",
        "",
        f"Training: {args.model} at {args.image_size} px, "
        + ", ".join(f"{size:,} rows {epochs_used[size]} epochs" for size in sizes if size in epochs_used)
        + f", batch {batch_size}, SGD lr {lr} (cosine), momentum 0.9, weight decay {defaults.weight_decay:g}, "
        f"crop+flip, CPU, {args.threads} torch thread(s), one run at a time ({platform.machine()}, "
        f"{os.cpu_count()} cores, shared); every method with its default options. forward, glc and nal train "
        "a cross-entropy model first (nal: for part of the steps, see docs/commands/train.md).",
        "",
        "Clean-test accuracy:",
        "",
        "| method | " + " | ".join(f"{s.title}, {size:,}" for s, size in columns) + " | seconds |",
        "|" + "---|" * (len(columns) + 2),
    ]
    for name in methods:
        cells, seconds = [], 0.0
        for s, size in columns:
            row = results.get((name, s.key, size))
            cells.append("" if row is None else f"{row['accuracy']:.1%}")
            seconds += 0.0 if row is None else row["seconds"]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {seconds:.0f} |")
    t_methods = [name for name in methods if name in T_ESTIMATES]
    if t_methods:
        lines += ["", "Mean absolute difference per cell between the estimated and the realised T "
                      "(smaller is better; 10 classes):", "",
                  "| estimate | " + " | ".join(f"{s.title}, {size:,}" for s, size in columns) + " |",
                  "|" + "---|" * (len(columns) + 1)]
        for name in t_methods:
            cells = []
            for s, size in columns:
                row = results.get((name, s.key, size))
                cells.append("" if row is None or row["t_error"] is None else f"{row['t_error']:.3f}")
            lines.append(f"| {name}: {T_ESTIMATES[name]} | " + " | ".join(cells) + " |")
    if "ce" in methods:
        below = []
        for name in methods:
            for s, size in columns:
                row, ce = results.get((name, s.key, size)), results.get(("ce", s.key, size))
                if name != "ce" and row is not None and ce is not None and row["accuracy"] < ce["accuracy"]:
                    below.append(f"{name} at {s.title}, {size:,} ({100 * (row['accuracy'] - ce['accuracy']):+.1f})")
        lines += ["", "Below cross-entropy (points): " + (", ".join(below) if below else "none") + "."]
    lines += ["", f"Total run time {total / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
