"""Per-image cost of ``scan`` at growing sizes, measured inside one process. (issue 6, item 6: scaling)

``benchmarks/throughput.py`` times whole processes and subtracts a start-up measured on a small scan; on a
shared machine that subtraction is noisy (a second or two of jitter is 0.5 ms per image at 2,000 images).
Here one process first runs a small warm-up scan (imports, first model creation, kernel warm-up), then
scans each size with the same fixed ``--epochs`` and reports every stage per image, from summary.json's
timings. Per-image time is flat when the cost is linear in the number of images.

    python benchmarks/scaling.py                        # 2,000 / 8,000 / 32,000 images (same data as throughput.py)
    python benchmarks/scaling.py --sizes 1000 4000      # a quick look
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from throughput import dataset  # noqa: E402  (same generated folders)


def scan_once(root: Path, out: Path, args: argparse.Namespace) -> tuple[float, dict[str, float]]:
    from labelaudit.audit import DatasetSpec, ScanSettings, run_scan
    from labelaudit.train.config import TrainConfig

    config = TrainConfig(model=args.model, image_size=args.image_size, epochs=args.epochs,
                         batch_size=args.batch_size, device="cpu")
    settings = ScanSettings(dataset=DatasetSpec(root / "images", root / "labels.csv", workers=args.workers,
                                                cache=False),
                            out=out, train=config, force=True)
    started = time.perf_counter()
    result = run_scan(settings)
    return time.perf_counter() - started, result.summary["timings"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 32000])
    parser.add_argument("--warm-up", type=int, default=256, help="images in the untimed first scan")
    parser.add_argument("--model", default="test_resnet")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--source-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--data", type=Path, default=REPO / "benchmarks" / "out" / "throughput-data")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    roots = {n: dataset(args.data, n, args.source_size) for n in [args.warm_up, *args.sizes]}
    print(f"# scan cost per image, in one process (threads {torch.get_num_threads()}, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS')}, --workers {args.workers}, no decode cache, {args.model} at "
          f"{args.image_size} px, --epochs {args.epochs}, batch {args.batch_size})\n")
    with tempfile.TemporaryDirectory(prefix="labelaudit-scaling-") as work:
        scan_once(roots[args.warm_up], Path(work) / "warm-up", args)
        rows = []
        for n in args.sizes:
            wall, timings = scan_once(roots[n], Path(work) / f"n{n}", args)
            rows.append((n, wall, timings))
    print("| images | wall s | ms/image | decode ms/image | train ms/image | score+write ms/image |")
    print("|---:|---:|---:|---:|---:|---:|")
    per_image = []
    for n, wall, timings in rows:
        decode, train = timings["decode_seconds"], timings["train_seconds"]
        rest = wall - decode - train
        per_image.append(1000 * wall / n)
        print(f"| {n} | {wall:.1f} | {1000 * wall / n:.2f} | {1000 * decode / n:.2f} | {1000 * train / n:.2f} "
              f"| {1000 * rest / n:.2f} |")
    spread = max(per_image) / min(per_image) - 1
    print(f"\nPer-image time varies by {spread:.0%} across sizes (goal: within 25%).")


if __name__ == "__main__":
    main()
