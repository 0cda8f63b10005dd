"""How long does ``labelaudit check`` take on a batch of 10,000 32-px images on this CPU? (issue: check)

Makes a batch with sample_data/make.py (10% symmetric label noise) and a resnet10t model with random
weights saved by ``save_model`` (scoring costs the same whatever the weights), then runs what CI runs,

    labelaudit check IMAGES batch.csv --model MODEL --max-error-rate 0.05

as a library call (``run_check``), and prints the wall time split into model loading, image decoding,
inference and scoring (noise-rate fit, per-row scores, intervals, limits and the Parquet report).
Making the data is not timed.

    nice -n 10 python benchmarks/check.py                   # the figures in benchmarks/out/check.md
    python benchmarks/check.py --n 1000                     # a quick smoke run
"""

from __future__ import annotations

import sys

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from labelaudit.gate import CheckSettings, Limits, run_check
from labelaudit.methods.registry import create_method
from labelaudit.train.checkpoint import save_model
from labelaudit.train.loop import TrainConfig, create_network

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from sample_maker import load_maker  # noqa: E402

STAGES = ("load_seconds", "decode_seconds", "inference_seconds", "scoring_seconds")


def make_random_model(directory: Path, classes: list[str], image_size: int, architecture: str) -> Path:
    """A model directory as ``labelaudit train`` writes it, with randomly initialised weights."""
    config = TrainConfig(model=architecture, image_size=image_size, pretrained=False, device="cpu")
    method = create_method("ce")
    method.build_networks(lambda: create_network(config, len(classes)), len(classes))
    return save_model(directory, method, config, classes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="images in the batch")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--model", default="resnet10t", help="timm architecture")
    parser.add_argument("--keep", type=Path, default=None, help="make/reuse the data here instead of a temp dir")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as Markdown here")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="labelaudit-bench-check-"))
    try:
        data = work / "batch"
        started = time.perf_counter()
        if not (data / "labels.csv").is_file():
            load_maker().make_dataset(data, n_images=args.n, size=args.size, noise="symmetric", noise_rate=0.1,
                                      seed=0)
        classes = sorted(load_maker().CLASSES)
        model_dir = make_random_model(work / "run" / "model", classes, args.size, args.model)
        setup_seconds = time.perf_counter() - started

        settings = CheckSettings(images=data / "images", batch_csv=data / "labels.csv", model_dir=model_dir,
                                 limits=Limits(max_error_rate=0.05), out=work / "run", device="cpu")
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        result = run_check(settings)
        wall = time.perf_counter() - started
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    t = result.timings
    lines = [
        f"# labelaudit check: {result.audited:,} images of {args.size} px, {args.model} (random weights)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads); load average {load_before:.1f} before the run (other jobs share "
        f"the CPUs); data and model made in {setup_seconds:.0f} s (not timed).",
        "",
        "| stage | seconds |",
        "|---|---:|",
        f"| load model + read CSV | {t['load_seconds']:.2f} |",
        f"| decode images | {t['decode_seconds']:.2f} |",
        f"| inference | {t['inference_seconds']:.2f} |",
        f"| scoring (noise rate, rows, intervals, limits) | {t['scoring_seconds']:.2f} |",
        f"| report (Parquet) and the rest | {wall - sum(t[k] for k in STAGES):.2f} |",
        f"| **total wall time** | **{wall:.2f}** |",
        "",
        f"Throughput: {result.audited / wall:,.0f} images/s end to end; "
        f"{result.audited / t['inference_seconds']:,.0f} images/s inference.",
        f"Result: estimated error rate {result.error_rate.rate:.3f} "
        f"({result.error_rate.low:.3f}–{result.error_rate.high:.3f}), exit code {result.exit_code} "
        "(random weights: the number itself means nothing here).",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
