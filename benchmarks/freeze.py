"""Fast mode (``scan --freeze-backbone``): first run (embed + head) against re-runs (head only). (issue 6, item 4)

Generates 2,000 images with sample_data/make.py, then runs ``labelaudit scan --freeze-backbone`` as whole
processes: once with an empty run directory (the backbone embeds every image), then again with other
head settings (other --epochs, then --folds 5), which read the cached embeddings. Prints each run's wall
time, the embedding and head times from summary.json, and the AUPRC of the error probabilities against
the planted errors (truth.csv).

    python benchmarks/freeze.py                                  # resnet10t, random weights
    python benchmarks/freeze.py --weights resnet10t.safetensors  # local pretrained weights
    python benchmarks/freeze.py --n 400 --model test_resnet --image-size 16   # a quick smoke run

Without ``--weights``/``--pretrained`` the backbone is randomly initialised, so its features are random
projections of the pixels and the AUPRC says little about what pretrained features would give.
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

import numpy as np
import pandas as pd

from labelaudit.core.metrics import average_precision

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from sample_maker import load_maker  # noqa: E402


def planted_auprc(data_dir: Path, out: Path) -> tuple[float, float]:
    """AUPRC of error_probability against the planted errors, and the share of planted errors (chance)."""
    samples = pd.read_parquet(out / "samples.parquet")
    truth = pd.read_csv(data_dir / "truth.csv", dtype=str, keep_default_na=False).set_index("path")["label"]
    audited = samples[samples["status"] == "audited"]
    is_error = audited["given_label"].to_numpy() != truth.loc[audited["path"]].to_numpy()
    return average_precision(is_error, audited["error_probability"].to_numpy(float)), float(is_error.mean())


def timed_scan(data_dir: Path, out: Path, common: list[str], extra: list[str]) -> dict:
    command = [sys.executable, "-m", "labelaudit", "scan", str(data_dir / "images"), str(data_dir / "labels.csv"),
               "-o", str(out), "--freeze-backbone", "--json", *common, *extra]
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if finished.returncode != 0:
        raise SystemExit(f"scan failed ({finished.returncode}): {finished.stderr.strip()[-2000:]}")
    summary = json.loads(finished.stdout)
    auprc, chance = planted_auprc(data_dir, out)
    return {"run": " ".join(extra) or "first run", "embeddings": summary["embeddings"]["status"],
            "wall s": seconds, "embed s": summary["embeddings"]["seconds"], "head s": summary["head_seconds"],
            "decode s": summary["timings"]["decode_seconds"], "AUPRC": auprc, "chance": chance,
            "notes": "; ".join(summary.get("notes", []))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="images to generate")
    parser.add_argument("--model", default="resnet10t")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--weights", type=Path, help="local backbone weights (else random)")
    parser.add_argument("--pretrained", action="store_true", help="timm's pretrained weights (downloads)")
    parser.add_argument("--noise-rate", type=float, default=0.2)
    parser.add_argument("--epochs", type=int, default=30, help="head epochs of the first run (re-run: double)")
    parser.add_argument("--work", type=Path, help="keep the data and run directory here")
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="labelaudit-freeze-"))
    data_dir, out = work / "data", work / "out"
    if not (data_dir / "labels.csv").is_file():
        load_maker().make_dataset(data_dir, n_images=args.n, size=args.image_size, noise="symmetric",
                                  noise_rate=args.noise_rate, seed=0)
    if out.exists():
        import shutil

        shutil.rmtree(out)
    common = ["--model", args.model, "--image-size", str(args.image_size), "--device", "cpu"]
    if args.weights:
        common += ["--weights", str(args.weights)]
    if args.pretrained:
        common.append("--pretrained")
    rows = [
        timed_scan(data_dir, out, common, ["--epochs", str(args.epochs)]),
        timed_scan(data_dir, out, common, ["--epochs", str(2 * args.epochs)]),
        timed_scan(data_dir, out, common, ["--epochs", str(args.epochs), "--folds", "5"]),
    ]
    rows[0]["run"] = f"first run --epochs {args.epochs}"
    weights = ("local file " + str(args.weights) if args.weights
               else "timm pretrained" if args.pretrained else "RANDOM (no pretrained weights)")
    print(f"{args.n} images of {args.image_size} px, {args.noise_rate:.0%} symmetric noise; backbone {args.model}, "
          f"weights: {weights}")
    print(f"{platform.platform()}, {os.cpu_count()} CPUs (shared), python {platform.python_version()}")
    table = pd.DataFrame(rows)
    notes = sorted(set(table.pop("notes")) - {""})
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for note in notes:
        print("note:", note)
    print(f"re-run / first run wall time: {rows[1]['wall s'] / rows[0]['wall s']:.2f} "
          f"(embedding {rows[0]['embed s']:.1f} s saved; the rest is process start-up, decoding cache reads, "
          "the head and the report)")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
