"""Are labelaudit's verdicts right on real images? Fashion-MNIST with planted noise, next to cleanlab.

For each noise kind (20% symmetric; 40% look-alike flips; 25% instance-dependent, see benchmarks/fashion.py)
it writes N training rows of Fashion-MNIST's train split as PNG files with the noisy labels, runs labelaudit's
default scan (with --self-check) and, side by side on the same rows, cleanlab 2.x on 5-fold out-of-sample
probabilities of the same backbone trained with cross-entropy (the standard cleanlab image workflow, 5x the
training) and cleanlab on 5-fold logistic regression of the pixels. Per detector it prints:

* AUPRC of the error score against the truth (labelaudit: error_probability; cleanlab: 1 − label quality);
* precision / recall of the flagged rows (labelaudit: is_issue; cleanlab: find_label_issues);
* the estimated error rate against the true one (labelaudit: summary.json; cleanlab: num_label_issues / N);
* ECE of the error probability (cleanlab has none: 1 − self-confidence stands in);
* T error: mean absolute difference per cell from the realised transition matrix;
* suggested-label accuracy on the truly wrong rows (labelaudit: suggested_label of flagged errors and the
  posterior's best other label elsewhere; cleanlab: argmax of its probabilities);
* seconds; and labelaudit's self-check figures next to the true precision and recall.

    python benchmarks/detect.py                           # the table in docs/benchmarks.md (n = 2,000)
    python benchmarks/detect.py --n 8000 --noise symmetric
    python benchmarks/detect.py --sample-only             # README's first command on sample_data/

Needs the bench extra (pip install ".[bench]") and Debian's dataset-fashion-mnist (installed when absent).
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from fashion import NOISE_KINDS, make_noisy_split  # noqa: E402

from labelaudit.core.metrics import average_precision, expected_calibration_error, precision_recall  # noqa: E402
from labelaudit.core.transition import realised_transition  # noqa: E402

RATES = {"symmetric": 0.2, "lookalike": 0.4, "instance": 0.25}


def truth_frame(data_dir: Path, samples: pd.DataFrame) -> np.ndarray:
    truth = pd.read_csv(data_dir / "truth.csv", dtype=str, keep_default_na=False).set_index("path")["label"]
    return truth.loc[samples["path"]].to_numpy()


def t_error(classes: list[str], true_labels: np.ndarray, given: np.ndarray, estimated: np.ndarray) -> float:
    index = {c: i for i, c in enumerate(classes)}
    realised = realised_transition(np.array([index[c] for c in true_labels]), np.array([index[c] for c in given]),
                                   n_classes=len(classes))
    return float(np.mean(np.abs(realised - estimated)))


def transition_matrix(out: Path, classes: list[str], estimator: str = "confident_joint") -> np.ndarray:
    frame = pd.read_parquet(out / "transition.parquet")
    frame = frame[frame["estimator"] == estimator]
    return frame.pivot(index="true_label", columns="noisy_label", values="probability").loc[classes, classes].to_numpy()


def run_scan(data_dir: Path, out: Path, extra: list[str]) -> tuple[dict, float]:
    command = [sys.executable, "-m", "labelaudit", "scan", str(data_dir / "images"), str(data_dir / "labels.csv"),
               "-o", str(out), "--quiet", "--force", *extra]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "summary.json").read_text()), time.perf_counter() - started


def labelaudit_row(data_dir: Path, out: Path, extra: list[str]) -> dict:
    summary, seconds = run_scan(data_dir, out, ["--self-check", *extra])
    samples = pd.read_parquet(out / "samples.parquet")
    truth = truth_frame(data_dir, samples)
    given = samples["given_label"].to_numpy()
    is_error = given != truth
    flagged = samples["is_issue"].to_numpy(bool)
    precision, recall = precision_recall(is_error, flagged)
    error_probability = samples["error_probability"].to_numpy(float)
    suggested = samples["suggested_label"].to_numpy()
    caught = is_error & flagged
    check = summary.get("self_check") or {}
    return {
        "detector": "labelaudit scan (default)", "AUPRC": average_precision(is_error, error_probability),
        "precision": precision, "recall": recall, "flagged": int(flagged.sum()),
        "estimated_rate": summary["estimated_error_rate"], "true_rate": float(is_error.mean()),
        "ECE": expected_calibration_error(error_probability, is_error),
        "T_error": t_error(summary["classes"], truth, given, transition_matrix(out, summary["classes"])),
        "suggested_accuracy": float(np.mean(suggested[caught] == truth[caught])) if caught.any() else float("nan"),
        "seconds": seconds - summary["timings"].get("self_check_seconds", 0.0),
        "reliable": summary.get("reliable"),
        "self_check": check,
    }


def cleanlab_row(name: str, data_dir: Path, labels_frame: pd.DataFrame, pred_probs: np.ndarray,
                 classes: list[str], seconds: float) -> dict:
    from cleanlab.count import estimate_py_and_noise_matrices_from_probabilities, num_label_issues
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    index = {c: i for i, c in enumerate(classes)}
    labels = labels_frame["label"].map(index).to_numpy()
    truth = truth_frame(data_dir, labels_frame)
    is_error = labels_frame["label"].to_numpy() != truth
    started = time.perf_counter()
    quality = get_label_quality_scores(labels, pred_probs)
    flagged = find_label_issues(labels, pred_probs)
    n_issues = num_label_issues(labels, pred_probs)
    _, noise_matrix, *_ = estimate_py_and_noise_matrices_from_probabilities(labels, pred_probs)  # P(given=row | true=col)
    seconds += time.perf_counter() - started
    precision, recall = precision_recall(is_error, flagged)
    suggestion = np.asarray(classes, dtype=object)[pred_probs.argmax(1)]
    return {
        "detector": name, "AUPRC": average_precision(is_error, 1 - quality), "precision": precision,
        "recall": recall, "flagged": int(flagged.sum()), "estimated_rate": n_issues / len(labels),
        "true_rate": float(is_error.mean()), "ECE": expected_calibration_error(1 - pred_probs[np.arange(len(labels)), labels], is_error),
        "T_error": t_error(classes, truth, labels_frame["label"].to_numpy(), noise_matrix.T),
        "suggested_accuracy": float(np.mean(suggestion[is_error] == truth[is_error])), "seconds": seconds,
    }


def cnn_out_of_fold(data_dir: Path, work: Path, extra: list[str]) -> tuple[np.ndarray, list[str], float]:
    """5-fold out-of-sample probabilities of the default backbone trained with cross-entropy (labelaudit's
    own training loop, so the backbone, image size and schedule are the scan's)."""
    out = work / "ce-folds"
    summary, seconds = run_scan(data_dir, out, ["--method", "ce", "--folds", "5", *extra])
    with np.load(out / "predictions.npz") as saved:
        return saved["pred_probs"], summary["classes"], seconds


def logistic_out_of_fold(data_dir: Path, labels_frame: pd.DataFrame, classes: list[str], seed: int) -> tuple[np.ndarray, float]:
    from PIL import Image
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    started = time.perf_counter()
    pixels = np.stack([np.asarray(Image.open(data_dir / "images" / p).convert("L"), np.float32).ravel() / 255.0
                       for p in labels_frame["path"]])
    labels = labels_frame["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    probs = cross_val_predict(LogisticRegression(max_iter=300, C=0.01), pixels, labels, cv=folds,
                              method="predict_proba")
    return probs, time.perf_counter() - started


def print_table(title: str, rows: list[dict]) -> None:
    print(f"## {title}\n")
    print("| detector | AUPRC | precision | recall | flagged | est. rate | true rate | ECE | T error "
          "| suggestion acc. | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['detector']} | {row['AUPRC']:.3f} | {row['precision']:.2f} | {row['recall']:.2f} "
              f"| {row['flagged']} | {row['estimated_rate']:.1%} | {row['true_rate']:.1%} | {row['ECE']:.3f} "
              f"| {row['T_error']:.4f} | {row['suggested_accuracy']:.2f} | {row['seconds']:.0f} |")
    check = rows[0].get("self_check") or {}
    if check:
        print(f"\nlabelaudit self-check ({check['planted']} planted flips): precision {check['precision']:.2f} "
              f"(true {rows[0]['precision']:.2f}), recall {check['recall']:.2f} (true {rows[0]['recall']:.2f}), "
              f"AUPRC {check['auprc']:.3f}, error-rate bias {check['error_rate_bias']:+.1%} "
              f"(true bias {rows[0]['estimated_rate'] - rows[0]['true_rate']:+.1%}); reliable: {rows[0]['reliable']}")
    print(flush=True)


def bundled_sample(work: Path) -> None:
    """README's first command on sample_data/, timed as a whole process, scored against truth.csv."""
    out = work / "sample-out"
    summary, seconds = run_scan(REPO / "sample_data", out, [])
    samples = pd.read_parquet(out / "samples.parquet")
    truth = truth_frame(REPO / "sample_data", samples)
    is_error = samples["given_label"].to_numpy() != truth
    flagged = samples["is_issue"].to_numpy(bool)
    precision, recall = precision_recall(is_error, flagged)
    caught = is_error & flagged
    print("## Bundled sample: `labelaudit scan sample_data/images sample_data/labels.csv` (defaults)\n")
    print("| rows | planted errors | wall time (s) | AUPRC | flagged | precision | recall | est. rate | true rate "
          "| suggestion acc. |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {len(samples)} | {int(is_error.sum())} | {seconds:.0f} "
          f"| {average_precision(is_error, samples['error_probability'].to_numpy(float)):.3f} | {int(flagged.sum())} "
          f"| {precision:.2f} | {recall:.2f} | {summary['estimated_error_rate']:.1%} | {is_error.mean():.1%} "
          f"| {np.mean(samples['suggested_label'].to_numpy()[caught] == truth[caught]):.2f} |\n", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="training rows per setting")
    parser.add_argument("--noise", choices=[*NOISE_KINDS, "all"], default="all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--skip-cnn", action="store_true", help="leave out cleanlab on the 5-fold CNN (5x training)")
    parser.add_argument("--skip-sample", action="store_true", help="leave out the bundled sample")
    parser.add_argument("--sample-only", action="store_true")
    parser.add_argument("--keep", type=Path, default=None, help="keep the data and run directories here")
    args, scan_extra = parser.parse_known_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        scan_extra = [*scan_extra, "--threads", str(args.threads)] if "--threads" in _scan_options() else scan_extra
    import torch

    print(f"# labelaudit detection benchmark on Fashion-MNIST\n\ncommand: `python benchmarks/detect.py "
          f"{' '.join(sys.argv[1:])}`  \nmachine: {platform.machine()}, {os.cpu_count()} CPU cores, torch "
          f"{torch.__version__}; labelaudit defaults{' + ' + ' '.join(scan_extra) if scan_extra else ''}\n", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if not args.skip_sample:
            bundled_sample(work)
        if args.sample_only:
            return
        for noise in NOISE_KINDS if args.noise == "all" else [args.noise]:
            rate = RATES[noise]
            split = make_noisy_split(n_train=args.n, noise=noise, rate=rate, seed=args.seed)
            data_dir = split.write(work / f"data-{noise}-{args.n}")
            labels_frame = pd.read_csv(data_dir / "labels.csv", dtype=str, keep_default_na=False)
            rows = [labelaudit_row(data_dir, work / f"scan-{noise}", scan_extra)]
            classes = sorted(labels_frame["label"].unique())
            if not args.skip_cnn:
                probs, cnn_classes, seconds = cnn_out_of_fold(data_dir, work / noise, scan_extra)
                rows.append(cleanlab_row("cleanlab + 5-fold CNN (cross-entropy)", data_dir, labels_frame, probs,
                                         cnn_classes, seconds))
            probs, seconds = logistic_out_of_fold(data_dir, labels_frame, classes, args.seed)
            rows.append(cleanlab_row("cleanlab + 5-fold logistic regression", data_dir, labels_frame, probs, classes,
                                     seconds))
            print_table(f"{noise} noise ({rate:.0%}), {args.n} Fashion-MNIST training rows, seed {args.seed}", rows)


def _scan_options() -> str:
    from typer.testing import CliRunner

    from labelaudit.cli.app import app

    return CliRunner().invoke(app, ["scan", "--help"]).output


if __name__ == "__main__":
    main()
