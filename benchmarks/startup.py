"""Time spent in Python's cyclic garbage collector during a scan, with the command line's start-up pause and without.

The command line pauses collection while torch, timm and pandas import and resumes it once each command's
imports are done (``labelaudit/cli/startup.py``). This runs the same ``labelaudit scan`` (images made by
``benchmarks/throughput.py``, test_resnet 16 px, 2 epochs, 1 thread) as whole processes, alternating: as
shipped, and with the pause switched off. Each process sums the duration of every collection with
``gc.callbacks`` and reports it with the process's wall time.

    python benchmarks/startup.py                   # 2,000 images, 2 repeats
    python benchmarks/startup.py --images 256 --repeats 3
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
sys.path.insert(0, str(REPO / "benchmarks"))
from throughput import dataset  # noqa: E402

CHILD = """
import atexit, gc, json, sys, time
spent = {"seconds": 0.0, "collections": 0}
started = {}
def timed(phase, info):
    if phase == "start":
        started["at"] = time.perf_counter()
    else:
        spent["seconds"] += time.perf_counter() - started["at"]
        spent["collections"] += 1
gc.callbacks.append(timed)
atexit.register(lambda: print(json.dumps(spent)))
from labelaudit.cli import startup
if sys.argv[1] == "no-pause":
    startup.pause_collection = lambda: None
from labelaudit.cli.app import main
sys.argv = ["labelaudit", *sys.argv[2:]]
main()
"""


def run(mode: str, root: Path, out: Path, env: dict[str, str]) -> dict:
    scan = ["scan", str(root / "images"), str(root / "labels.csv"), "-o", str(out), "--quiet", "--force",
            "--model", "test_resnet", "--image-size", "16", "--epochs", "2", "--batch-size", "64",
            "--elr-beta", "0.7", "--elr-lambda", "3", "--device", "cpu", "--workers", "1"]
    started = time.perf_counter()
    finished = subprocess.run([sys.executable, "-c", CHILD, mode, *scan], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if finished.returncode != 0:
        raise SystemExit(f"scan failed ({mode}):\n{finished.stderr[-2000:]}")
    return {**json.loads(finished.stdout.strip().splitlines()[-1]), "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data", type=Path, default=REPO / "benchmarks" / "out" / "throughput-data")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    root = dataset(args.data, args.images, 32)
    results: dict[str, list[dict]] = {"paused": [], "no-pause": []}
    with tempfile.TemporaryDirectory(prefix="labelaudit-startup-") as scratch:
        for repeat in range(args.repeats):
            for mode in results:
                results[mode].append(run(mode, root, Path(scratch) / f"{mode}{repeat}", env))
    print(f"# garbage collection in a {args.images}-image scan (test_resnet 16 px, 2 epochs, 1 thread)\n")
    print("| run | seconds in collections | collections | wall s |\n|---|---:|---:|---:|")
    for mode, label in (("paused", "as shipped (paused during imports)"), ("no-pause", "pause switched off")):
        runs = results[mode]
        seconds = " / ".join(f"{r['seconds']:.2f}" for r in runs)
        collections = " / ".join(str(r["collections"]) for r in runs)
        walls = " / ".join(f"{r['wall']:.1f}" for r in runs)
        print(f"| {label} | {seconds} | {collections} | {walls} |")


if __name__ == "__main__":
    main()
