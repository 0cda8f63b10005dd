"""Is ``labelaudit scan`` as fast as the least code doing the same work, does it scale, does the cache work?

Three measurements on images made by sample_data/make.py (PNG, 10% symmetric noise, 8 classes), each
run timed as a whole process (interpreter start, imports, everything) with its peak RSS:

* throughput: ``labelaudit scan`` (test_resnet, fixed ELR β=0.7 λ=3 so both sides do one training run,
  --workers 1) against benchmarks/minimal_elr.py doing the same work: decode the PNGs, the same model,
  ELR loss, batch size, epochs and augmentation on pre-decoded tensors, class probabilities from the ELR
  targets (as labelaudit's ELR scan takes them), a score per row, a Parquet report and the weights
  written. Goal: labelaudit within 1.15x. Each pair is timed ``--repeats`` times, alternating.
* scaling: the same ``--epochs`` at every size (not the automatic ~800 steps), so a per-image time
  is a per-trained-image time. Whole-process time = fixed start-up (interpreter, torch/timm/pandas
  imports, model creation; measured as a scan of ``--startup-images`` images) + per-image work; the
  per-image time is (wall − start-up) / N, and the marginal one (wall(N2) − wall(N1)) / (N2 − N1)
  needs no start-up estimate. Goal: per-image time flat within 25%.
* cache: the same scan again into the same run directory: decode time and images decoded (goal: ≈ 0).

Torch and OpenMP threads are fixed (OMP_NUM_THREADS, MKL_NUM_THREADS; default 1; the minimal script
also calls torch.set_num_threads) and the count torch sees is printed, as the machine may be shared.
Making the images is not timed (they are kept in --data for later runs).

    python benchmarks/throughput.py                                   # 2k/8k throughput, 2k/8k/32k scaling
    python benchmarks/throughput.py --sizes 2000 --scaling 2000 --repeats 1      # a quick run
    python benchmarks/throughput.py --out benchmarks/out/throughput.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from sample_maker import load_maker  # noqa: E402

PYTHON = sys.executable
LABELAUDIT = [PYTHON, "-m", "labelaudit"]


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


def minimal_command(root: Path, out: Path, args) -> list[str]:
    return [PYTHON, str(REPO / "benchmarks" / "minimal_elr.py"), str(root / "images"), str(root / "labels.csv"),
            "--model", args.model, "--image-size", str(args.image_size), "--epochs", str(args.epochs),
            "--batch-size", str(args.batch_size), "--threads", str(args.threads), "--out", str(out)]


def torch_threads(env: dict[str, str]) -> int:
    """The thread count torch picks in a process started with ``env`` (what the scan runs with)."""
    result = subprocess.run([PYTHON, "-c", "import torch; print(torch.get_num_threads())"], env=env,
                            capture_output=True, text=True, check=True)
    return int(result.stdout.strip())


def spread(values: list[float]) -> str:
    return " / ".join(f"{v:.1f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000], help="throughput: images")
    parser.add_argument("--scaling", type=int, nargs="+", default=[2000, 8000, 32000], help="scaling: images")
    parser.add_argument("--startup-images", type=int, default=256, help="scan size that measures start-up")
    parser.add_argument("--repeats", type=int, default=2, help="timings of each first scan / minimal run")
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
    lines = [f"# labelaudit throughput, scaling and cache ({time.strftime('%Y-%m-%d %H:%M')})", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs (shared), "
             f"Python {platform.python_version()}. OMP_NUM_THREADS = MKL_NUM_THREADS = {args.threads}, torch "
             f"threads in the scan process: {torch_threads(env)} (minimal: set_num_threads({args.threads})); "
             f"labelaudit --workers {args.workers}. Model {args.model}, {args.source_size} px PNGs resized to "
             f"{args.image_size} px, --epochs {args.epochs} at every size, batch {args.batch_size}, ELR β=0.7 λ=3. "
             f"Each first run timed {args.repeats}x (values separated by /).", ""]
    print("\n".join(lines))
    args.data.mkdir(parents=True, exist_ok=True)
    scans: dict[int, dict] = {}
    with tempfile.TemporaryDirectory(prefix="labelaudit-throughput-") as scratch:
        startup_root = dataset(args.data, args.startup_images, args.source_size)
        startup = [run_peak(scan_command(startup_root, Path(scratch) / f"startup{r}", args), env)[0]
                   for r in range(args.repeats)]
        print(f"  start-up (scan of {args.startup_images} images): {spread(startup)} s")
        throughput_rows = []
        for n in sorted(set(args.sizes) | set(args.scaling)):
            root = dataset(args.data, n, args.source_size)
            seconds, peaks, minimal_seconds, minimal_peaks = [], [], [], []
            for repeat in range(args.repeats):
                out = Path(scratch) / f"run{n}-{repeat}"
                wall, peak, _ = run_peak(scan_command(root, out, args), env)
                seconds.append(wall)
                peaks.append(peak)
                if n in args.sizes:
                    wall, peak, stdout = run_peak(minimal_command(root, Path(scratch) / f"minimal{n}-{repeat}", args),
                                                  env)
                    minimal_seconds.append(wall)
                    minimal_peaks.append(peak)
                    print(f"  {stdout.strip()}")
            summary = json.loads((out / "summary.json").read_text())
            run_record = json.loads((out / "run.json").read_text())
            again_seconds, again_peak, _ = run_peak(scan_command(root, out, args), env)
            again = json.loads((out / "summary.json").read_text())
            scans[n] = {"seconds": seconds, "peak": max(peaks), "summary": summary, "again_seconds": again_seconds,
                        "again": again, "run_record": run_record}
            print(f"  scan {n}: {spread(seconds)} s, peak {max(peaks):.0f} MB; cached re-run {again_seconds:.1f} s, "
                  f"decoded {again['image_cache']['decoded']}")
            if n in args.sizes:
                throughput_rows.append((n, seconds, minimal_seconds, max(peaks), max(minimal_peaks),
                                        summary["timings"]))

    table = ["## Throughput (whole processes, first scan: decoding included)", "",
             "| images | labelaudit scan s | minimal script s | ratio | labelaudit decode+train+score s (last run) "
             "| peak RSS labelaudit / minimal MB |", "|---:|---:|---:|---:|---:|---:|"]
    for n, seconds, minimal_seconds, peak, minimal_peak, timings in throughput_rows:
        ratios = " / ".join(f"{a / b:.2f}x" for a, b in zip(seconds, minimal_seconds))
        table.append(f"| {n} | {spread(seconds)} | {spread(minimal_seconds)} | {ratios} (best-of: "
                     f"{min(seconds) / min(minimal_seconds):.2f}x) | {timings['decode_seconds']:.1f} + "
                     f"{timings['train_seconds']:.1f} + {timings['score_seconds']:.1f} | "
                     f"{peak:.0f} / {minimal_peak:.0f} |")
    fixed = min(startup)
    sizes = sorted(scans)
    table += ["", "## Scaling (first scan, fixed --epochs)", "",
              f"Fixed start-up: {spread(startup)} s (scan of {args.startup_images} images: interpreter, imports, "
              f"model creation, writing the run directory); {fixed:.1f} s (the lower) is subtracted below.", "",
              "| images | wall s | wall ms/image (start-up included) | (wall − start-up) ms/image | "
              "marginal ms/image from the previous size | peak RSS MB |", "|---:|---:|---:|---:|---:|---:|"]
    per_image, marginal = [], []
    for i, n in enumerate(sizes):
        wall = min(scans[n]["seconds"])
        per_image.append(1000 * (wall - fixed) / n)
        step = ""
        if i:
            previous = sizes[i - 1]
            marginal.append(1000 * (wall - min(scans[previous]["seconds"])) / (n - previous))
            step = f"{marginal[-1]:.2f}"
        table.append(f"| {n} | {spread(scans[n]['seconds'])} | {1000 * wall / n:.2f} | {per_image[-1]:.2f} | "
                     f"{step} | {scans[n]['peak']:.0f} |")
    table += ["", f"Per-image time without start-up varies by {max(per_image) / min(per_image) - 1:.0%} across "
              "sizes (goal: within 25%)" + (f"; marginal per-image times vary by "
                                             f"{max(marginal) / min(marginal) - 1:.0%}." if len(marginal) > 1 else "."),
              "", "## Cache (the same scan again, same run directory)", "",
              "| images | decode s first run | decode s re-run | decoded / reused on re-run | wall s first / re-run "
              "| run.json image_cache |", "|---:|---:|---:|---:|---:|---:|"]
    for n in sizes:
        scan = scans[n]
        cache = scan["again"]["image_cache"]
        table.append(f"| {n} | {scan['summary']['timings']['decode_seconds']:.2f} | "
                     f"{scan['again']['timings']['decode_seconds']:.2f} | {cache['decoded']} / {cache['reused']} | "
                     f"{min(scan['seconds']):.1f} / {scan['again_seconds']:.1f} | "
                     f"{scan['run_record'].get('image_cache')} |")
    table.append("")
    table.append("decode s = summary.json timings.decode_seconds: CSV reading, path checks and the cache lookup too.")
    print("\n" + "\n".join(table))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines + table) + "\n", encoding="utf-8")
        print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
