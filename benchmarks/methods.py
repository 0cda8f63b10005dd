"""Clean-test accuracy of every training method under planted label noise, side by side.

For each noise setting (20% and 50% symmetric, 40% between look-alike pairs) this renders a dataset
with ``sample_data/make.py`` (labelled training images plus a clean held-out test split), gives 5%
of the training rows an expert label (their true label) for GLC, trains every method with
``labelaudit.training.run_train`` and measures accuracy on the clean test images. The result is a
Markdown table (printed, and written to ``--out``) with the exact command and settings.

Why these defaults: on CPU, within ~25 minutes on 2 cores, the shapes need a few thousand images and
many steps before a network learns them through 50% symmetric noise at all. Rendered at 32 px and
seen at 16 px, test_resnet with 2,500 images and 60 epochs gets there (clean data: ~94% at 40 epochs);
with 1,000 images at 32 px for 15–40 epochs every method stays near chance at 50% noise. Runs use
one torch thread each and ``--jobs`` processes: on a busy shared machine two torch threads per
process were many times slower than one.

    python benchmarks/methods.py                       # the full benchmark (about 25 min on 2 cores)
    python benchmarks/methods.py --methods ce,elr --settings sym50 --epochs 5   # a quick look
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from labelaudit.audit import DatasetSpec
from labelaudit.data.dataset import load_labelled_images
from labelaudit.train.loop import predict_proba
from labelaudit.training import TrainSettings, run_train

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from sample_maker import load_maker  # noqa: E402

METHODS = ("ce", "elr", "elr+", "forward", "nal", "glc")


@dataclass(frozen=True)
class NoiseSetting:
    key: str
    noise: str
    rate: float

    @property
    def title(self) -> str:
        kind = "symmetric" if self.noise == "symmetric" else "pairs"
        return f"{self.rate:.0%} {kind}"


SETTINGS = {s.key: s for s in (NoiseSetting("sym20", "symmetric", 0.2), NoiseSetting("sym50", "symmetric", 0.5),
                               NoiseSetting("pairs40", "pairs", 0.4))}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / "out" / "methods-work",
                        help="scratch folder for datasets and run directories")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "methods.md",
                        help="where the Markdown report is written")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"any of {', '.join(SETTINGS)}")
    parser.add_argument("--n-train", type=int, default=2500)
    parser.add_argument("--n-test", type=int, default=400)
    parser.add_argument("--size", type=int, default=32, help="pixel size the images are rendered at")
    parser.add_argument("--image-size", type=int, default=16,
                        help="size the models see (images are resized); 16 keeps the run within ~25 min on 2 cores")
    parser.add_argument("--trusted-fraction", type=float, default=0.05)
    parser.add_argument("--model", default="test_resnet")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads per run; on a shared, busy machine 1 is many times faster than 2")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at the same time, one process each")
    return parser.parse_args(argv)


def make_data(maker, setting: NoiseSetting, args: argparse.Namespace) -> Path:
    """Render the dataset of ``setting`` and write gold.csv: true labels of a random share of the training rows."""
    root = args.work / setting.key
    n_images = args.n_train + args.n_test
    maker.make_dataset(root, n_images=n_images, size=args.size, noise=setting.noise, noise_rate=setting.rate,
                       seed=args.seed, test_fraction=args.n_test / n_images)
    truth = pd.read_csv(root / "truth.csv")
    rng = np.random.default_rng([args.seed, 5])
    chosen = np.sort(rng.choice(len(truth), size=int(round(args.trusted_fraction * len(truth))), replace=False))
    truth.iloc[chosen].to_csv(root / "gold.csv", index=False)
    return root


def clean_test_accuracy(method, root: Path, classes: list[str], config) -> float:
    test = load_labelled_images(root / "images", root / "test.csv", image_size=config.image_size, classes=classes)
    probs = predict_proba(method, test.images, config)
    return float(np.mean(probs.argmax(axis=1) == test.labels))


def train_and_score(name: str, setting_key: str, root: Path, work: Path, overrides: dict, threads: int) -> tuple:
    """One (method, noise setting) run; a separate process when --jobs > 1. Returns (accuracy, seconds)."""
    torch.set_num_threads(threads)
    started = time.perf_counter()
    result = run_train(TrainSettings(
        out=work / setting_key / f"run-{name.replace('+', 'plus')}",
        dataset=DatasetSpec(images=root / "images", labels_csv=root / "labels.csv"),
        method=name, trusted=root / "gold.csv" if name == "glc" else None,
        train_overrides=overrides, force=True,
    ))
    accuracy = clean_test_accuracy(result.method, root, result.classes, result.config)
    return accuracy, time.perf_counter() - started


def run(args: argparse.Namespace) -> str:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    settings = [SETTINGS[key.strip()] for key in args.settings.split(",") if key.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown methods: {', '.join(unknown)}")
    maker = load_maker()
    overrides = {"model": args.model, "image_size": args.image_size, "epochs": args.epochs,
                 "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed, "device": "cpu"}
    started = time.perf_counter()
    roots, noise_realised = {}, {}
    for setting in settings:
        roots[setting.key] = make_data(maker, setting, args)
        labels, truth = pd.read_csv(roots[setting.key] / "labels.csv"), pd.read_csv(roots[setting.key] / "truth.csv")
        noise_realised[setting.key] = float(np.mean(labels["label"] != truth["label"]))
    # Slowest first, so parallel workers finish together.
    cost = {"elr+": 2.5, "forward": 2.0, "nal": 2.0, "glc": 2.0}
    runs = sorted(((name, s.key) for s in settings for name in methods), key=lambda run: -cost.get(run[0], 1.0))
    accuracy: dict[tuple[str, str], float] = {}
    seconds: dict[tuple[str, str], float] = {}
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(train_and_score, name, key, roots[key], args.work, overrides, args.threads): (name, key)
                   for name, key in runs}
        for future in as_completed(futures):
            name, key = futures[future]
            accuracy[name, key], seconds[name, key] = future.result()
            print(f"{SETTINGS[key].title:>13}  {name:<8} clean-test accuracy {accuracy[name, key]:.3f}  "
                  f"({seconds[name, key]:.0f} s)", file=sys.stderr, flush=True)
    total = time.perf_counter() - started
    return report(args, methods, settings, accuracy, seconds, noise_realised, total)


def report(args, methods, settings, accuracy, seconds, noise_realised, total) -> str:
    command = "python benchmarks/methods.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    header = "| method | " + " | ".join(f"{s.title} noise" for s in settings) + " | run time (s) |"
    lines = [
        "# Clean-test accuracy by training method",
        "",
        f"Command: `{command.strip()}`",
        "",
        f"Data: `sample_data/make.py`, 8 classes, {args.n_train} training images and {args.n_test} clean held-out "
        f"test images at {args.size} px per setting (seed {args.seed}); realised training-label noise "
        + ", ".join(f"{s.title}: {noise_realised[s.key]:.1%}" for s in settings)
        + f". GLC gets the true labels of a random {args.trusted_fraction:.0%} of the training rows.",
        "",
        f"Training: {args.model} on images resized to {args.image_size} px, {args.epochs} epochs, "
        f"batch {args.batch_size}, SGD lr {args.lr} (cosine), "
        f"momentum 0.9, weight decay 1e-3, crop+flip, CPU ({args.jobs} runs at a time, {args.threads} "
        f"torch thread(s) each, {platform.machine()}, {os.cpu_count()} cores); every method with its default options. "
        f"forward, nal and glc train a cross-entropy model first (same settings).",
        "",
        header,
        "|" + "---|" * (len(settings) + 2),
    ]
    for name in methods:
        cells = [f"{accuracy[name, s.key]:.1%}" for s in settings]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {sum(seconds[name, s.key] for s in settings):.0f} |")
    if "ce" in methods and "elr" in methods:
        gaps = ", ".join(f"{s.title}: {100 * (accuracy['elr', s.key] - accuracy['ce', s.key]):+.1f}"
                         for s in settings)
        lines += ["", f"ELR − CE (points): {gaps}."]
    lines += ["", f"Total run time {total / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    text = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
