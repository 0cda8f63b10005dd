"""How close is labelaudit's noise transition matrix to the truth, next to cleanlab? (issue: labelaudit matrix)

For each noise setting (40% class-dependent "pairs" noise, 20% symmetric noise) generates a dataset with
sample_data/make.py, gives an expert label (truth.csv) for a random 5% of the rows, and runs what a user runs:

    labelaudit scan IMAGES labels.csv -o OUT
    labelaudit matrix --trusted gold.csv -o OUT

(as library calls). It prints the mean absolute error, over the K×K cells, of each estimator in
transition.parquet (glc, confident_joint, anchor) against the realised T (the planted flips counted per
true class), next to cleanlab's ``estimate_py_and_noise_matrices_from_probabilities`` on the same
probabilities the confident joint used (the scan's); and the expected calibration error (10 bins) of
samples.parquet's error_probability against the planted errors, on the rows without an expert label
(on trusted rows it is exactly 0 or 1 by construction).

    python benchmarks/matrix.py --save benchmarks/out/matrix.md   # the table in docs/benchmarks.md
    python benchmarks/matrix.py --n 400 --epochs 3                 # a quick smoke run

Needs cleanlab (the bench extra).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from labelaudit.audit import DatasetSpec, ScanSettings, run_scan
from labelaudit.core.metrics import average_precision, expected_calibration_error
from labelaudit.core.transition import realised_transition
from labelaudit.matrix import MatrixSettings, run_matrix
from labelaudit.report.rundir import load_predictions
from labelaudit.train.loop import TrainConfig

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from sample_maker import load_maker  # noqa: E402

SETTINGS = (("pairs", 0.4, "40% class-dependent (pairs)"), ("symmetric", 0.2, "20% symmetric"))
ESTIMATORS = ("glc", "confident_joint", "anchor")
# The methods benchmark's training setup: a backbone that learns these shapes on 2 CPU cores in minutes.
BENCH_MODEL = "test_resnet"
BENCH_IMAGE_SIZE = 16
BENCH_EPOCHS = 60
BENCH_BATCH_SIZE = 64
BENCH_LR = 0.1


def write_gold(data_dir: Path, fraction: float, seed: int) -> Path:
    """An expert label (from truth.csv) for a random ``fraction`` of the rows."""
    truth = pd.read_csv(data_dir / "truth.csv", dtype=str, keep_default_na=False)
    rng = np.random.default_rng([seed, 7])
    chosen = np.sort(rng.choice(len(truth), size=max(1, int(round(fraction * len(truth)))), replace=False))
    path = data_dir / "gold.csv"
    truth.iloc[chosen].to_csv(path, index=False)
    return path


def matrix_of(transition: pd.DataFrame, estimator: str, classes: list[str]) -> np.ndarray:
    part = transition[transition["estimator"] == estimator]
    pivot = part.pivot(index="true_label", columns="noisy_label", values="probability")
    return pivot.reindex(index=classes, columns=classes).to_numpy(np.float64)


def cleanlab_transition(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """cleanlab's noise matrix in our convention.

    cleanlab returns ``noise_matrix[i][j] = P(given label i | true label j)`` (columns sum to 1); ours is
    ``T[i, j] = P(given j | true i)`` (rows sum to 1), i.e. the transpose.
    """
    from cleanlab.count import estimate_py_and_noise_matrices_from_probabilities

    _, noise_matrix, _, _ = estimate_py_and_noise_matrices_from_probabilities(labels, pred_probs)
    transition = np.asarray(noise_matrix, np.float64).T
    assert np.allclose(transition.sum(axis=1), 1.0, atol=1e-6)
    return transition


def run_setting(work: Path, maker, noise: str, rate: float, args: argparse.Namespace) -> dict:
    data_dir = work / f"data-{noise}"
    out = work / f"out-{noise}"
    maker.make_dataset(data_dir, n_images=args.n, size=32, noise=noise, noise_rate=rate, seed=args.seed)
    gold = write_gold(data_dir, args.trusted, args.seed)
    config = TrainConfig(model=args.model, image_size=args.image_size, epochs=args.epochs or None,
                         batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device)

    started = time.perf_counter()
    scan = run_scan(ScanSettings(dataset=DatasetSpec(data_dir / "images", data_dir / "labels.csv"), out=out,
                                 train=config, force=True))
    scan_seconds = time.perf_counter() - started
    scan_error_probability = scan.samples["error_probability"].to_numpy(np.float64)
    started = time.perf_counter()
    result = run_matrix(MatrixSettings(out=out, trusted_csv=gold, bootstrap=args.bootstrap))
    matrix_seconds = time.perf_counter() - started

    classes = result.classes
    predictions = load_predictions(out)
    labels, pred_probs, row_index = predictions["labels"], predictions["pred_probs"], predictions["row_index"]
    truth = pd.read_csv(data_dir / "truth.csv", dtype=str, keep_default_na=False).set_index("path")["label"]
    samples = result.samples
    audited = samples.iloc[row_index]
    true_labels = np.array([classes.index(t) for t in truth.loc[audited["path"]]], np.int64)
    realised = realised_transition(true_labels, labels, n_classes=len(classes))

    transition = pd.read_parquet(out / "transition.parquet")
    errors = {name: float(np.abs(matrix_of(transition, name, classes) - realised).mean()) for name in ESTIMATORS}
    probs = pred_probs.astype(np.float64)
    errors["cleanlab"] = float(np.abs(cleanlab_transition(labels, probs / probs.sum(1, keepdims=True))
                                      - realised).mean())

    if args.cleanlab_ce_folds:
        errors["cleanlab_ce_oof"] = cleanlab_on_cross_entropy(work / f"out-{noise}-ce", data_dir, config, args,
                                                              classes, realised)

    glc_accuracy = ce_model_accuracy(out, data_dir, gold, classes)
    is_error = true_labels != labels
    untrusted = audited["trusted_label"].isna().to_numpy()
    error_probability = audited["error_probability"].to_numpy(np.float64)
    return {
        "title": noise, "rate": rate, "rows": len(labels), "planted": int(is_error.sum()),
        "trusted": int((~untrusted).sum()), "errors": errors,
        "ece_untrusted": expected_calibration_error(error_probability[untrusted], is_error[untrusted]),
        "ece_all": expected_calibration_error(error_probability, is_error),
        "ece_scan": expected_calibration_error(scan_error_probability[row_index][untrusted], is_error[untrusted]),
        "auprc": average_precision(is_error[untrusted], error_probability[untrusted]),
        "mean_error_probability": float(error_probability[untrusted].mean()),
        "planted_rate_untrusted": float(is_error[untrusted].mean()),
        "calibration": result.summary["calibration"]["method"],
        "chosen": result.best,
        "realised_offdiag_mean": float(np.abs(realised - np.eye(len(classes))).mean()),
        "scan_accuracy": float(np.mean(pred_probs.argmax(axis=1) == true_labels)),
        "glc_model_accuracy": glc_accuracy,
        "scan_seconds": scan_seconds, "matrix_seconds": matrix_seconds,
    }


def cleanlab_on_cross_entropy(out: Path, data_dir: Path, config: TrainConfig, args: argparse.Namespace,
                              classes: list[str], realised: np.ndarray) -> float:
    """cleanlab's T from out-of-fold probabilities of a cross-entropy model (``scan --method ce --folds K``),
    the way cleanlab is usually fed, against the realised T; mean absolute error per cell."""
    run_scan(ScanSettings(dataset=DatasetSpec(data_dir / "images", data_dir / "labels.csv"), out=out,
                          train=config, method="ce", folds=args.cleanlab_ce_folds, force=True))
    predictions = load_predictions(out)
    scan_classes = pd.read_parquet(out / "classes.parquet")["label"].tolist()
    assert scan_classes == classes, "the two scans must order the classes alike"
    probs = predictions["pred_probs"].astype(np.float64)
    return float(np.abs(cleanlab_transition(predictions["labels"], probs / probs.sum(1, keepdims=True))
                        - realised).mean())


def ce_model_accuracy(out: Path, data_dir: Path, gold: Path, classes: list[str]) -> float:
    """Accuracy of GLC's cross-entropy model (trained on the untrusted rows) on the trusted rows, against
    their true labels: how well the backbone learnt the classes, which bounds how well Ĉ can be estimated."""
    from labelaudit.data.dataset import load_labelled_images
    from labelaudit.train.checkpoint import load_model

    model = load_model(out / "glc" / "ce_model")
    trusted = load_labelled_images(data_dir / "images", gold, image_size=model.image_size, classes=classes)
    return float(np.mean(model.predict_proba(trusted.images).argmax(axis=1) == trusted.labels))


def report(rows: list[dict], args: argparse.Namespace, seconds: float) -> str:
    lines = [
        "# labelaudit matrix benchmark: T estimation and calibrated error probabilities",
        "",
        f"command: `python benchmarks/matrix.py {' '.join(sys.argv[1:])}`  ",
        f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {__import__('torch').__version__}; "
        f"{args.n} images of 32 px, 8 classes, model {args.model} at {args.image_size} px, batch {args.batch_size}, "
        f"lr {args.lr}, "
        f"{args.epochs or 'automatic (about 800 steps)'} epochs, seed {args.seed}; "
        f"{args.trusted:.0%} of rows with an expert label; {args.bootstrap} bootstrap resamples; "
        f"total {seconds / 60:.1f} min",
        "",
        "Mean absolute error of T̂ against the realised T (mean over the K×K cells; lower is better). "
        "cleanlab = `estimate_py_and_noise_matrices_from_probabilities` on the scan's probabilities (the "
        "same ones confident_joint uses), transposed to T[i, j] = P(given j | true i). "
        "ECE = expected calibration error (10 bins) of `error_probability` against the planted errors, "
        "on the rows without an expert label; \"scan ECE\" is the same for the scan's scores before "
        "`matrix` re-scored them; AUPRC of `error_probability` on those rows (planted base rate = the "
        "planted rate); \"T used\" = the estimate the rows were scored with.",
        "",
        "| noise | glc | confident_joint | anchor | cleanlab | glc / cleanlab | ECE (untrusted rows) "
        "| ECE (all rows) | scan ECE | mean error prob. vs planted rate | AUPRC | T used | calibration "
        "| scan s | matrix s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|",
    ]
    for row in rows:
        e = row["errors"]
        lines.append(
            f"| {row['rate']:.0%} {row['title']} | {e['glc']:.4f} | {e['confident_joint']:.4f} | {e['anchor']:.4f} "
            f"| {e['cleanlab']:.4f} | {e['glc'] / e['cleanlab']:.2f} | {row['ece_untrusted']:.3f} "
            f"| {row['ece_all']:.3f} | {row['ece_scan']:.3f} "
            f"| {row['mean_error_probability']:.3f} vs {row['planted_rate_untrusted']:.3f} "
            f"| {row['auprc']:.3f} | {row['chosen']} | {row['calibration']} | {row['scan_seconds']:.0f} "
            f"| {row['matrix_seconds']:.0f} |")
    lines += ["", "How well the backbone learnt the classes (accuracy against the true labels): "
              + "; ".join(f"{r['title']}: scan probabilities {r['scan_accuracy']:.1%} (in-sample), GLC's "
                          f"cross-entropy model {r['glc_model_accuracy']:.1%} on the held-out trusted rows"
                          for r in rows) + "."]
    lines += ["", "Rows: " + "; ".join(f"{r['title']}: {r['rows']} audited, {r['planted']} planted errors, "
                                         f"{r['trusted']} trusted" for r in rows),
              "(for scale: an estimate equal to the identity would score "
              + ", ".join(f"{r['realised_offdiag_mean']:.4f} ({r['title']})" for r in rows) + ")"]
    with_ce = [r for r in rows if "cleanlab_ce_oof" in r["errors"]]
    if with_ce:
        lines += ["", f"cleanlab on out-of-fold probabilities of a cross-entropy scan ({args.cleanlab_ce_folds} folds): "
                  + "; ".join(f"{r['title']}: {r['errors']['cleanlab_ce_oof']:.4f} (glc / this = "
                              f"{r['errors']['glc'] / r['errors']['cleanlab_ce_oof']:.2f})" for r in with_ce)]
    pairs = next((r for r in rows if r["title"] == "pairs"), None)
    if pairs is not None:
        ratio = pairs["errors"]["glc"] / pairs["errors"]["cleanlab"]
        worst_ece = max(r["ece_untrusted"] for r in rows)
        lines += ["", f"Acceptance: GLC error / cleanlab error on class-dependent noise = {ratio:.2f} (bar ≤ 0.5: "
                      f"{'met' if ratio <= 0.5 else 'NOT met'}); worst ECE = {worst_ece:.3f} (bar ≤ 0.05: "
                      f"{'met' if worst_ece <= 0.05 else 'NOT met'})."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="images per dataset")
    parser.add_argument("--epochs", type=int, default=BENCH_EPOCHS,
                        help=f"epochs of the scan and of GLC's model (default {BENCH_EPOCHS}; 0 = labelaudit's "
                             "automatic count)")
    parser.add_argument("--model", default=BENCH_MODEL)
    parser.add_argument("--cleanlab-ce-folds", type=int, default=0,
                        help="also give cleanlab the out-of-fold probabilities of a cross-entropy scan with this "
                             "many folds (how cleanlab is usually fed); 0 = skip")
    parser.add_argument("--image-size", type=int, default=BENCH_IMAGE_SIZE,
                        help="pixel size the 32-px images are trained at")
    parser.add_argument("--batch-size", type=int, default=BENCH_BATCH_SIZE)
    parser.add_argument("--lr", type=float, default=BENCH_LR)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--settings", default=",".join(s[0] for s in SETTINGS),
                        help=f"any of {', '.join(s[0] for s in SETTINGS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trusted", type=float, default=0.05, help="share of rows with an expert label")
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--keep", type=Path, default=None, help="keep datasets and run directories here")
    parser.add_argument("--save", type=Path, default=None, help="also write the Markdown table to this file")
    args = parser.parse_args()
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    maker = load_maker()
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="labelaudit-matrix-")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    try:
        rows = []
        for noise, rate, title in SETTINGS:
            if noise not in args.settings.split(","):
                continue
            row = run_setting(work, maker, noise, rate, args)
            rows.append(row)
            print(f"{title}: done in {row['scan_seconds'] + row['matrix_seconds']:.0f} s", file=sys.stderr, flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    text = report(rows, args, time.perf_counter() - started)
    print(text)
    if args.save is not None:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
