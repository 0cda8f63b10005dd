"""How well does labelaudit find planted label errors, next to cleanlab? (issue: labelaudit scan)

For each noise setting, generates a dataset like sample_data/ (same generator, more images), plants label
flips, runs labelaudit (ELR single run, CE single run, ELR with --folds 5) and cleanlab (find_label_issues and
get_label_quality_scores on 5-fold out-of-sample probabilities of a scikit-learn logistic regression on the
pixels), and prints AUPRC of the error scores against the truth and precision/recall of the flagged rows.
Also times the default scan of the bundled sample_data/ and prints its AUPRC against truth.csv.

    python benchmarks/detect.py                 # the table in docs/benchmarks.md
    python benchmarks/detect.py --n 400 --epochs 5 --skip-folds    # a quick smoke run

Needs the bench extra: pip install ".[bench]".
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from labelaudit.audit import DatasetSpec, ScanSettings, run_scan
from labelaudit.core.metrics import average_precision, precision_recall
from labelaudit.train.loop import TrainConfig

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from sample_maker import load_maker  # noqa: E402


def truth_mask(data_dir: Path, samples: pd.DataFrame) -> np.ndarray:
    truth = pd.read_csv(data_dir / "truth.csv", dtype=str, keep_default_na=False).set_index("path")["label"]
    return (samples["given_label"].to_numpy() != truth.loc[samples["path"]].to_numpy())


def labelaudit_row(name: str, data_dir: Path, out: Path, config: TrainConfig, *, method: str, folds: int) -> dict:
    started = time.perf_counter()
    result = run_scan(ScanSettings(dataset=DatasetSpec(data_dir / "images", data_dir / "labels.csv"), out=out,
                                   train=config, method=method, folds=folds, force=True))
    seconds = time.perf_counter() - started
    samples = result.samples
    is_error = truth_mask(data_dir, samples)
    precision, recall = precision_recall(is_error, samples["is_issue"].to_numpy(bool))
    return {"detector": name, "AUPRC": average_precision(is_error, samples["error_probability"].to_numpy(float)),
            "precision": precision, "recall": recall, "flagged": int(samples["is_issue"].to_numpy(bool).sum()),
            "seconds": seconds}


def cleanlab_row(data_dir: Path, seed: int) -> dict:
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from PIL import Image
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    started = time.perf_counter()
    labels_frame = pd.read_csv(data_dir / "labels.csv", dtype=str, keep_default_na=False)
    pixels = np.stack([np.asarray(Image.open(data_dir / "images" / p).convert("RGB"), np.float32).ravel() / 255.0
                       for p in labels_frame["path"]])
    classes = sorted(labels_frame["label"].unique())
    labels = labels_frame["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, C=0.05))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    pred_probs = cross_val_predict(model, pixels, labels, cv=folds, method="predict_proba")
    quality = get_label_quality_scores(labels, pred_probs)
    flagged = find_label_issues(labels, pred_probs)
    seconds = time.perf_counter() - started
    is_error = truth_mask(data_dir, labels_frame.rename(columns={"label": "given_label"}))
    precision, recall = precision_recall(is_error, flagged)
    return {"detector": "cleanlab + logistic regression (5-fold)", "AUPRC": average_precision(is_error, 1 - quality),
            "precision": precision, "recall": recall, "flagged": int(flagged.sum()), "seconds": seconds,
            "oof_accuracy": float((pred_probs.argmax(1) == labels).mean())}


def bundled_sample(work: Path) -> None:
    """Time the README's scan command as a whole process and score it against sample_data/truth.csv."""
    out = work / "sample-out"
    command = [sys.executable, "-m", "labelaudit", "scan", str(REPO / "sample_data" / "images"),
               str(REPO / "sample_data" / "labels.csv"), "-o", str(out), "--quiet", "--device", "cpu"]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - started
    samples = pd.read_parquet(out / "samples.parquet")
    is_error = truth_mask(REPO / "sample_data", samples)
    precision, recall = precision_recall(is_error, samples["is_issue"].to_numpy(bool))
    print("## Bundled sample: `labelaudit scan sample_data/images sample_data/labels.csv` (defaults, CPU)\n")
    print("| rows | planted errors | wall time (s) | AUPRC | precision | recall |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| {len(samples)} | {int(is_error.sum())} | {seconds:.0f} | {average_precision(is_error, samples['error_probability'].to_numpy(float)):.3f} "
          f"| {precision:.3f} | {recall:.3f} |\n", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="images per dataset")
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--model", default=TrainConfig.model)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-folds", action="store_true", help="leave out ELR --folds 5 (5x the training)")
    parser.add_argument("--skip-sample", action="store_true", help="leave out the bundled-sample timing")
    parser.add_argument("--noise", choices=["symmetric", "pairs", "both", "none"], default="both",
                        help="which noise setting to run (two processes can share the work; none: only the sample)")
    args = parser.parse_args()
    maker = load_maker()
    config = TrainConfig(model=args.model, epochs=args.epochs, seed=args.seed, device="cpu")
    print(f"# labelaudit detection benchmark\n\ncommand: `python benchmarks/detect.py {' '.join(sys.argv[1:])}`  \n"
          f"machine: {platform.machine()}, {__import__('os').cpu_count()} CPU cores, torch "
          f"{__import__('torch').__version__}; model {args.model}, {args.epochs or 'auto'} epochs, 32 px, seed {args.seed}\n",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not args.skip_sample:
            bundled_sample(work)
        for noise, rate, title in (("symmetric", 0.2, "20% symmetric"), ("pairs", 0.4, "40% class-dependent")):
            if args.noise not in (noise, "both"):
                continue
            data_dir = work / f"data-{noise}"
            maker.make_dataset(data_dir, n_images=args.n, size=32, noise=noise, noise_rate=rate, seed=args.seed + 1)
            rows = [
                labelaudit_row("labelaudit ELR (single run)", data_dir, work / "elr", config, method="elr", folds=1),
                labelaudit_row("labelaudit CE (single run)", data_dir, work / "ce", config, method="ce", folds=1),
            ]
            if not args.skip_folds:
                rows.append(labelaudit_row("labelaudit ELR --folds 5", data_dir, work / "elr5", config,
                                           method="elr", folds=5))
            rows.append(cleanlab_row(data_dir, args.seed))
            print(f"## {title} noise, {args.n} images, {int(round(rate * args.n))} planted errors\n")
            print("| detector | AUPRC | precision | recall | flagged | seconds |")
            print("|---|---:|---:|---:|---:|---:|")
            for row in rows:
                print(f"| {row['detector']} | {row['AUPRC']:.3f} | {row['precision']:.3f} | {row['recall']:.3f} "
                      f"| {row['flagged']} | {row['seconds']:.0f} |")
            print(f"\n(logistic regression out-of-fold accuracy on the noisy labels: {rows[-1]['oof_accuracy']:.3f})\n",
                  flush=True)


if __name__ == "__main__":
    main()
