"""Do the progress bars slow training? The same scan with live bars in a terminal and with ``--quiet``.

The bars are drawn by rich on stderr, redrawn at most 4 times a second; each training step only adds one
to a counter. This runs ``labelaudit scan`` as a whole process inside a pseudo-terminal (``script``, so rich
animates the bars as it does for a user) and with ``--quiet``, alternating, ``--repeats`` times each, on the
images made by ``benchmarks/throughput.py`` (made here if missing), and prints the wall times and the
training stage from summary.json.

    python benchmarks/progress.py                       # 8,000 images, 3 repeats
    python benchmarks/progress.py --images 2000 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from throughput import dataset  # noqa: E402


def timed_scan(root: Path, out: Path, *, quiet: bool, epochs: int, env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds of the whole process and summary.json's train_seconds."""
    command = [sys.executable, "-m", "labelaudit", "scan", str(root / "images"), str(root / "labels.csv"), "-o",
               str(out), "--model", "test_resnet", "--image-size", "16", "--epochs", str(epochs), "--batch-size",
               "32", "--elr-beta", "0.7", "--elr-lambda", "3", "--device", "cpu", "--workers", "1", "--force"]
    if quiet:
        command.append("--quiet")
    else:  # a pseudo-terminal: rich draws live bars as it does for a user
        command = ["script", "-qefc", shlex.join(command), "/dev/null"]
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    return wall, json.loads((out / "summary.json").read_text())["timings"]["train_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=REPO / "benchmarks" / "out" / "throughput-data")
    args = parser.parse_args()
    if shutil.which("script") is None:
        raise SystemExit("needs `script` (util-linux) to give the scan a terminal")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "COLUMNS": "120"}
    root = dataset(args.data, args.images, 32)
    runs: dict[str, list[tuple[float, float]]] = {"bars": [], "quiet": []}
    with tempfile.TemporaryDirectory(prefix="labelaudit-progress-") as scratch:
        for repeat in range(args.repeats):
            for mode in ("bars", "quiet"):
                runs[mode].append(timed_scan(root, Path(scratch) / f"{mode}{repeat}", quiet=mode == "quiet",
                                             epochs=args.epochs, env=env))
    steps = args.epochs * (args.images // 32)
    print(f"# progress bars vs --quiet: {args.images} images, test_resnet 16 px, batch 32, {args.epochs} epochs "
          f"({steps} training steps), 1 thread, {os.cpu_count()} CPUs\n")
    print("| run | wall s | train s | median train ms/step |\n|---|---:|---:|---:|")
    for mode, label in (("bars", "live progress bars (pseudo-terminal)"), ("quiet", "--quiet")):
        walls = " / ".join(f"{w:.1f}" for w, _ in runs[mode])
        trains = " / ".join(f"{t:.2f}" for _, t in runs[mode])
        per_step = 1000 * statistics.median(t for _, t in runs[mode]) / steps
        print(f"| {label} | {walls} | {trains} | {per_step:.2f} |")
    bars = statistics.median(t for _, t in runs["bars"])
    quiet = statistics.median(t for _, t in runs["quiet"])
    print(f"\nmedian training stage with bars / without: {bars / quiet:.3f}")


if __name__ == "__main__":
    main()
