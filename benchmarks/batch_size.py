"""How fast does the default network train at each batch size, and what does the default scan of the sample cost?

Two measurements, one process at a time (run it on an otherwise quiet machine):

* step throughput: images per second of a training step (forward, backward, SGD update) of ``--model`` at
  ``--image-size`` on random images, for each batch size in ``--batch-sizes``;
* whole scans: ``labelaudit scan sample_data/images sample_data/labels.csv`` timed as a process with the old
  default (batch 32, lr 0.05) and the current one, alternating, ``--repeats`` times, with the detection
  figures against ``sample_data/truth.csv``.

    python benchmarks/batch_size.py                        # torch's thread count (one per core)
    python benchmarks/batch_size.py --threads 1 --skip-scans
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCAN_SETTINGS = {"batch 32, lr 0.05 (old default)": ["--batch-size", "32", "--lr", "0.05"],
                 "batch 128, lr 0.2 (default)": []}


def step_throughput(model: str, image_size: int, batch_size: int, seconds: float = 10.0) -> float:
    import timm
    import torch

    network = timm.create_model(model, num_classes=10)
    optimiser = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.9)
    images = torch.randn(batch_size, 3, image_size, image_size)
    labels = torch.randint(0, 10, (batch_size,))

    def step() -> None:
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(network(images), labels).backward()
        optimiser.step()

    for _ in range(3):
        step()
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step()
        done += batch_size
    return done / (time.perf_counter() - started)


def timed_scan(out: Path, extra: list[str], threads: int | None) -> dict:
    import numpy as np
    import pandas as pd

    sys.path.insert(0, str(REPO / "benchmarks"))
    from labelaudit.core.metrics import average_precision

    command = [sys.executable, "-m", "labelaudit", "scan", str(REPO / "sample_data" / "images"),
               str(REPO / "sample_data" / "labels.csv"), "-o", str(out), "--quiet", "--force", "--no-cache", *extra]
    if threads:
        command += ["--threads", str(threads)]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    summary = json.loads((out / "summary.json").read_text())
    samples = pd.read_parquet(out / "samples.parquet")
    truth = pd.read_csv(REPO / "sample_data" / "truth.csv", dtype=str).set_index("path")["label"]
    is_error = samples["given_label"].to_numpy() != truth.loc[samples["path"]].to_numpy()
    flagged = samples["is_issue"].to_numpy(bool)
    hits = int((flagged & is_error).sum())
    return {"seconds": seconds, "train_seconds": summary["timings"]["train_seconds"],
            "AUPRC": average_precision(is_error, samples["error_probability"].to_numpy(float)),
            "precision": hits / max(1, flagged.sum()), "recall": hits / max(1, is_error.sum()),
            "estimated_rate": summary["estimated_error_rate"], "true_rate": float(np.mean(is_error))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet10t")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-sizes", default="32,64,128,256")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--skip-scans", action="store_true")
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# Batch size on {os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads, torch "
          f"{torch.__version__}\n\ncommand: `python benchmarks/batch_size.py {' '.join(sys.argv[1:])}`\n")
    print(f"| batch | {args.model} {args.image_size} px training images/s |\n|---:|---:|")
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        print(f"| {batch_size} | {step_throughput(args.model, args.image_size, batch_size):.0f} |", flush=True)
    if args.skip_scans:
        return
    print("\n| sample scan | seconds (whole process) | training s | AUPRC | precision / recall | estimated vs true |\n"
          "|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for name, extra in SCAN_SETTINGS.items():
                row = timed_scan(Path(tmp) / "run", extra, args.threads)
                print(f"| {name} | {row['seconds']:.1f} | {row['train_seconds']:.1f} | {row['AUPRC']:.3f} | "
                      f"{row['precision']:.2f} / {row['recall']:.2f} | {row['estimated_rate']:.1%} vs "
                      f"{row['true_rate']:.1%} |", flush=True)


if __name__ == "__main__":
    main()
