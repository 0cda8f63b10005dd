"""Is ``labelaudit scan`` as fast as the least code doing the same work, does it scale, does the cache work?

Three measurements on images made by sample_data/make.py (PNG, 10% symmetric noise, 8 classes), each
run timed as a whole process (interpreter start, imports, everything) with its peak RSS:

* throughput: ``labelaudit scan`` (test_resnet, fixed ELR β=0.7 λ=3 so both sides do one training run,
  --workers 1) against benchmarks/minimal_elr.py (decode the PNGs, same model, ELR loss, batch size,
  epochs and augmentation on pre-decoded tensors, predict). Goal: labelaudit within 1.15x.
* scaling: seconds per image and peak RSS of the scan at each size. Goal: per-image time flat within 25%.
  Whole-process time includes a fixed start-up cost (imports, model creation), so the in-process time
  (summary.json's total_seconds) is shown too.
* cache: the same scan again into the same run directory: decode time and images decoded (goal: ≈ 0).

Torch and OpenMP threads are fixed (OMP_NUM_THREADS, MKL_NUM_THREADS; default 1) and printed, as the
machine may be shared. Making the images is not timed (they are kept in --data for later runs).

    python benchmarks/throughput.py                                   # 2k/8k throughput, 2k/8k/32k scaling
    python benchmarks/throughput.py --sizes 2000 --scaling 2000       # a quick run
    python benchmarks/throughput.py --out benchmarks/out/throughput.md
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
LABELAUDIT = [PYTHON, "-m", "labelaudit"]


def load_maker():
    spec = importlib.util.spec_from_file_location("sample_make", REPO / "sample_data" / "make.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dataset(data_dir: Path, n_images: int, source_size: int) -> Path:
    """data_dir/n<N>: images/ and labels.csv, made once."""
    root = data_dir / f"n{n_images}-{source_size}px"
    if not (root / "labels.csv").is_file():
        started = time.perf_counter()
        load_maker().make_dataset(root, n_images=n_images, size=source_size, noise="symmetric", noise_rate=0.1,
                                  seed=n_images)
        print(f"  made {n_images} images of {source_size} px in {time.perf_counter() - started:.0f} s (not timed)")
    return root


def run_peak(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) and stdout of ``command`` as a whole process.

    A fresh wrapper process runs it as its only child, so the wrapper's RUSAGE_CHILDREN peak is the command's."""
    wrapper = ("import os, sys, time, subprocess, json\n"
               "t = time.perf_counter(); p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)\n"
               "out, err = p.communicate()\n"
               "import resource\n"
               "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
               "sys.stderr.write(err.decode(errors='replace')[-2000:])\n"
               "print(json.dumps({'seconds': time.perf_counter() - t, 'peak_kb': peak, 'code': p.returncode,"
               " 'stdout': out.decode(errors='replace')}))\n")
    result = subprocess.run([PYTHON, "-c", wrapper, *command], env=env, capture_output=True, text=True)
    try:
        report = json.loads(result.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}") from None
    if report["code"] != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return report["seconds"], report["peak_kb"] / 1024, report["stdout"]


def scan_command(root: Path, out: Path, args) -> list[str]:
    return [*LABELAUDIT, "scan", str(root / "images"), str(root / "labels.csv"), "-o", str(out), "--quiet",
            "--model", args.model, "--image-size", str(args.image_size), "--epochs", str(args.epochs),
            "--batch-size", str(args.batch_size), "--elr-beta", "0.7", "--elr-lambda", "3", "--device", "cpu",
            "--workers", str(args.workers), "--force"]


def minimal_command(root: Path, args) -> list[str]:
    return [PYTHON, str(REPO / "benchmarks" / "minimal_elr.py"), str(root / "images"), str(root / "labels.csv"),
            "--model", args.model, "--image-size", str(args.image_size), "--epochs", str(args.epochs),
            "--batch-size", str(args.batch_size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000], help="throughput: images")
    parser.add_argument("--scaling", type=int, nargs="+", default=[2000, 8000, 32000], help="scaling: images")
    parser.add_argument("--model", default="test_resnet")
    parser.add_argument("--image-size", type=int, default=16, help="training size")
    parser.add_argument("--source-size", type=int, default=32, help="size of the generated PNGs")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="OMP/MKL/torch threads")
    parser.add_argument("--workers", type=int, default=1, help="labelaudit decoding threads (minimal: 1)")
    parser.add_argument("--data", type=Path, default=REPO / "benchmarks" / "out" / "throughput-data")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as Markdown here")
    args = parser.parse_args()

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "PYTHONWARNINGS": "ignore"}
    lines = [f"# labelaudit throughput, scaling and cache ({time.strftime('%Y-%m-%d')})", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs (shared), "
             f"Python {platform.python_version()}. OMP_NUM_THREADS = MKL_NUM_THREADS = torch threads = "
             f"{args.threads}; labelaudit --workers {args.workers}. Model {args.model}, {args.source_size} px PNGs "
             f"resized to {args.image_size} px, {args.epochs} epochs, batch {args.batch_size}, ELR β=0.7 λ=3.", ""]
    print("\n".join(lines))
    args.data.mkdir(parents=True, exist_ok=True)
    scans: dict[int, dict] = {}
    with tempfile.TemporaryDirectory(prefix="labelaudit-throughput-") as scratch:
        throughput_rows = []
        for n in sorted(set(args.sizes) | set(args.scaling)):
            root = dataset(args.data, n, args.source_size)
            out = Path(scratch) / f"run{n}"
            seconds, peak, _ = run_peak(scan_command(root, out, args), env)
            summary = json.loads((out / "summary.json").read_text())
            again_seconds, again_peak, _ = run_peak(scan_command(root, out, args), env)
            again = json.loads((out / "summary.json").read_text())
            scans[n] = {"seconds": seconds, "peak": peak, "summary": summary, "again_seconds": again_seconds,
                        "again": again}
            print(f"  scan {n}: {seconds:.1f} s, peak {peak:.0f} MB; cached re-run {again_seconds:.1f} s, "
                  f"decoded {again['image_cache']['decoded']}")
            if n in args.sizes:
                minimal_seconds, minimal_peak, stdout = run_peak(minimal_command(root, args), env)
                print(f"  {stdout.strip()}")
                throughput_rows.append((n, seconds, minimal_seconds, peak, minimal_peak, summary["timings"]))

    table = ["## Throughput (whole processes, first scan: decoding included)", "",
             "| images | labelaudit scan s | minimal script s | ratio | labelaudit decode+train+score s "
             "| peak RSS labelaudit / minimal MB |", "|---:|---:|---:|---:|---:|---:|"]
    for n, seconds, minimal_seconds, peak, minimal_peak, timings in throughput_rows:
        table.append(f"| {n} | {seconds:.1f} | {minimal_seconds:.1f} | {seconds / minimal_seconds:.2f}x | "
                     f"{timings['decode_seconds']:.1f} + {timings['train_seconds']:.1f} + "
                     f"{timings['score_seconds']:.1f} | {peak:.0f} / {minimal_peak:.0f} |")
    table += ["", "## Scaling (first scan)", "",
              "| images | wall s | wall ms/image | in-process ms/image | peak RSS MB |", "|---:|---:|---:|---:|---:|"]
    for n in sorted(scans):
        scan = scans[n]
        table.append(f"| {n} | {scan['seconds']:.1f} | {1000 * scan['seconds'] / n:.2f} | "
                     f"{1000 * scan['summary']['timings']['total_seconds'] / n:.2f} | {scan['peak']:.0f} |")
    per_image = [scans[n]["summary"]["timings"]["total_seconds"] / n for n in sorted(scans)]
    table += ["", f"In-process time per image varies by {max(per_image) / min(per_image) - 1:.0%} across sizes "
              "(goal: within 25%).", "", "## Cache (the same scan again, same run directory)", "",
              "| images | decode s first run | decode s re-run | decoded / reused on re-run | wall s first / re-run |",
              "|---:|---:|---:|---:|---:|"]
    for n in sorted(scans):
        scan = scans[n]
        cache = scan["again"]["image_cache"]
        table.append(f"| {n} | {scan['summary']['timings']['decode_seconds']:.2f} | "
                     f"{scan['again']['timings']['decode_seconds']:.2f} | {cache['decoded']} / {cache['reused']} | "
                     f"{scan['seconds']:.1f} / {scan['again_seconds']:.1f} |")
    table.append("")
    table.append("decode s = summary.json timings.decode_seconds: CSV reading, path checks and the cache lookup too.")
    print("\n" + "\n".join(table))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines + table) + "\n", encoding="utf-8")
        print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
