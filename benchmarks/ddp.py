"""Does ``torchrun --nproc-per-node 2`` speed up ``labelaudit scan`` on CPU (gloo)?

The same scan (images made by sample_data/make.py, fixed ELR β=0.7 λ=3, fixed epochs, --no-cache so
every run decodes) is timed as a whole process (interpreter start, imports, process-group set-up,
everything) in three configurations:

* 1 process, 1 thread;
* 1 process, N threads (the same cores as the distributed run, used by intra-op parallelism);
* torchrun with N processes of 1 thread each (data-parallel: each trains on 1/N of every epoch with
  the per-process batch size, gradients averaged over gloo; decoding is not split).

The in-process stage times from summary.json (decode, train, score) are shown beside the wall time.
On a shared 2-core machine the numbers move with the other load; read them as rough.

    python benchmarks/ddp.py                                    # 2,000 images, resnet10t 32 px, 3 epochs
    python benchmarks/ddp.py --images 500 --epochs 2 --model test_resnet --image-size 16   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from sample_maker import load_maker  # noqa: E402

PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def timed_scan(launcher: list[str], data: Path, out: Path, scan_args: list[str], threads: int) -> dict:
    """Run one scan as a whole process; wall seconds plus the stage times of its summary.json."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [*launcher, "-m", "labelaudit", "scan", str(data / "images"), str(data / "labels.csv"),
               "-o", str(out), "--quiet", "--force", "--no-cache", *scan_args]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{done.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    timings = summary["timings"]
    return {"wall": wall, "decode": timings.get("decode_seconds", 0.0), "train": timings.get("train_seconds", 0.0),
            "score": timings.get("score_seconds", 0.0), "health": summary["label_health"],
            "issues": summary["n_issues"], "loss": summary["final_train_loss"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--model", default="resnet10t")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--data", type=Path, default=None, help="where to keep the generated images")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="labelaudit-ddp-"))
    data = (args.data or work) / f"n{args.images}-{args.image_size}px"
    if not (data / "labels.csv").is_file():
        load_maker().make_dataset(data, n_images=args.images, size=args.image_size, noise="symmetric",
                                  noise_rate=0.1, seed=args.images)
    scan_args = ["--model", args.model, "--image-size", str(args.image_size), "--epochs", str(args.epochs),
                 "--batch-size", str(args.batch_size), "--device", "cpu", "--elr-beta", "0.7", "--elr-lambda", "3",
                 "--workers", "1"]
    n = args.processes
    runs = [
        ("1 process x 1 thread", [PYTHON], 1),
        (f"1 process x {n} threads", [PYTHON], n),
        (f"torchrun {n} processes x 1 thread", [PYTHON, "-m", "torch.distributed.run", "--nproc-per-node", str(n),
                                                  "--master-addr", "127.0.0.1", "--master-port", str(free_port())], 1),
    ]
    print(f"{args.images} images, {args.model} {args.image_size} px, {args.epochs} epochs, batch {args.batch_size} "
          f"per process, {os.cpu_count()} CPUs (shared), python {sys.version.split()[0]}")
    print("| run | wall s | decode s | train s | score s | speed-up (wall) | label health | issues |")
    print("|---|---|---|---|---|---|---|---|")
    baseline = None
    for name, launcher, threads in runs:
        result = timed_scan(launcher, data, work / name.replace(" ", "_"), scan_args, threads)
        baseline = baseline or result["wall"]
        print(f"| {name} | {result['wall']:.1f} | {result['decode']:.1f} | {result['train']:.1f} | "
              f"{result['score']:.1f} | {baseline / result['wall']:.2f}x | {result['health']:.3f} | "
              f"{result['issues']} |", flush=True)


if __name__ == "__main__":
    main()
