"""``labelaudit check``: how long it takes (default) and how close its batch error rate is to the truth
(``--accuracy``).

Speed: makes a batch with sample_data/make.py (10% symmetric label noise) and a resnet10t model with random
weights saved by ``save_model`` (scoring costs the same whatever the weights), then runs what CI runs,

    labelaudit check IMAGES batch.csv --model MODEL --max-error-rate 0.05

as a library call (``run_check``), and prints the wall time split into model loading, image decoding,
inference and scoring (noise-rate fit, per-row scores, intervals, limits and the Parquet report).
Making the data is not timed.

Accuracy: real images with planted label errors (Fashion-MNIST, ``benchmarks/fashion.py``). It scans
``--n-train`` noisy training rows with the default settings (``labelaudit scan DIR/images DIR/labels.csv -o
RUN``, one thread), then checks ``--batches`` disjoint batches of ``--batch`` held-out *test-split* images,
each labelled three ways: correctly (0% wrong), with 20% symmetric errors, and with 20% look-alike errors
(T-shirt ↔ shirt, pullover ↔ coat, sneaker ↔ sandal, …), plus one batch that mixes training images (with
their training labels) and new images with 20% symmetric errors. It prints each batch's true error rate
against the estimate and its 95% interval, how many rows ``check`` recognised as training images, and the
temperature and noise structure it scored with.

    nice -n 10 python benchmarks/check.py                   # speed: the figures in docs/benchmarks.md
    python benchmarks/check.py --n 1000                     # a quick smoke run
    python benchmarks/check.py --accuracy --keep /tmp/fm    # accuracy (about 3 min on 2 CPU cores)
    python benchmarks/check.py --accuracy --keep /tmp/fm --train-noise lookalike --train-rate 0.3

The scan's model folder gets its training fingerprints and calibration from ``save_model``; when the scan
did not write them (a labelaudit whose scan does not pass its training images to ``save_model``), the
benchmark adds them with ``record_training_data`` from the scan's own decoded images and ELR targets,
and says so. Run from a checkout of an older commit (``PYTHONPATH=old-checkout``), it measures that
commit's ``check`` on the same data.
"""

from __future__ import annotations

import sys

import argparse
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from labelaudit.gate import CheckSettings, Limits, run_check  # noqa: E402
from labelaudit.methods.registry import create_method  # noqa: E402
from labelaudit.train.checkpoint import save_model  # noqa: E402
from labelaudit.train.loop import TrainConfig, create_network  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from sample_maker import load_maker  # noqa: E402

STAGES = ("load_seconds", "decode_seconds", "fingerprint_seconds", "inference_seconds", "scoring_seconds")


def make_random_model(directory: Path, classes: list[str], image_size: int, architecture: str) -> Path:
    """A model directory as ``labelaudit train`` writes it, with randomly initialised weights."""
    config = TrainConfig(model=architecture, image_size=image_size, pretrained=False, device="cpu")
    method = create_method("ce")
    method.build_networks(lambda: create_network(config, len(classes)), len(classes))
    return save_model(directory, method, config, classes)


# --------------------------------------------------------------------------- accuracy


def planted_batches(test_labels: np.ndarray, n_batches: int, size: int, seed: int) -> list[dict]:
    """Batches of held-out test images: (start, name, given labels (fashion class indices), truth)."""
    from fashion import CLASSES, LOOKALIKE_FLIPS, plant_lookalike, plant_symmetric

    eligible_classes = [CLASSES.index(a) for a, _ in LOOKALIKE_FLIPS]
    batches = []
    for b in range(n_batches):
        rows = np.arange(b * size, (b + 1) * size)
        truth = test_labels[rows]
        rng = np.random.default_rng(1000 * seed + b)
        eligible = np.isin(truth, eligible_classes).mean()  # look-alike flips hit 7 classes of 10
        for name, given in (("clean", truth.copy()),
                            ("symmetric 20%", plant_symmetric(truth, 0.2, rng, len(CLASSES))),
                            ("look-alike 20%", plant_lookalike(truth, 0.2 / eligible, rng))):
            batches.append({"batch": b, "name": name, "paths": [f"test_{i:05d}.png" for i in rows],
                            "given": given, "truth": truth, "new": np.ones(size, bool)})
    return batches


def mixed_batch(split, size: int, seed: int, first_test: int) -> dict:
    """Half training images with their training labels, half new test images (from ``first_test`` on)
    with 20% symmetric errors."""
    from fashion import CLASSES, plant_symmetric

    rng = np.random.default_rng(7 + seed)
    half = size // 2
    train_rows = np.sort(rng.choice(len(split.noisy), size=half, replace=False))
    test_rows = np.arange(first_test, first_test + size - half)
    truth = np.concatenate([split.true[train_rows], split.test_labels[test_rows]])
    given = np.concatenate([split.noisy[train_rows],
                            plant_symmetric(split.test_labels[test_rows], 0.2, rng, len(CLASSES))])
    paths = [f"train_{i:05d}.png" for i in train_rows] + [f"test_{i:05d}.png" for i in test_rows]
    new = np.r_[np.zeros(half, bool), np.ones(size - half, bool)]
    return {"batch": "mixed", "name": "half training images", "paths": paths, "given": given, "truth": truth,
            "new": new}


def write_batch_csv(path: Path, paths: list[str], labels: np.ndarray) -> Path:
    from fashion import CLASSES

    lines = ["path,label"] + [f"{p},{CLASSES[int(label)]}" for p, label in zip(paths, labels)]
    path.write_text("\n".join(lines) + "\n")
    return path


def ensure_training_records(run: Path, data: Path) -> str:
    """Give the scan's model folder its fingerprints and calibration if the scan did not write them."""
    try:
        from labelaudit.train.checkpoint import CALIBRATION_FILE, FINGERPRINTS_FILE, record_training_data
    except ImportError:
        return "this labelaudit records no training fingerprints or calibration"
    model_dir = run / "model"
    if (model_dir / FINGERPRINTS_FILE).is_file() and (model_dir / CALIBRATION_FILE).is_file():
        return "written by the scan"
    from labelaudit.data.dataset import load_labelled_images
    from labelaudit.train.checkpoint import load_model

    model = load_model(model_dir)
    decoded = load_labelled_images(data / "images", data / "labels.csv", image_size=model.image_size,
                                   classes=model.classes)
    predictions = np.load(run / "predictions.npz")
    if not np.array_equal(predictions["labels"], decoded.labels):
        raise SystemExit("predictions.npz does not match labels.csv")
    record_training_data(model_dir, decoded.images, decoded.labels, predictions["pred_probs"])
    return "added by the benchmark with record_training_data (the scan did not write them)"


def oracle_temperature(model_dir: Path, data: Path, n_test: int) -> float | None:
    """The temperature fitted to the true labels of the held-out images (what calibration aims at)."""
    try:
        from labelaudit.core.calibration import fit_temperature_to_targets
    except ImportError:
        return None
    from labelaudit.data.dataset import load_labelled_images
    from labelaudit.train.checkpoint import load_model

    model = load_model(model_dir)
    decoded = load_labelled_images(data / "images", data / "test.csv", image_size=model.image_size,
                                   classes=model.classes)
    probs = model.predict_proba(decoded.images[:n_test])
    return fit_temperature_to_targets(probs, np.eye(len(model.classes))[decoded.labels[:n_test]])


def accuracy(args: argparse.Namespace) -> None:
    from fashion import make_noisy_split

    torch.set_num_threads(1)
    work = args.keep or Path(tempfile.mkdtemp(prefix="labelaudit-bench-check-accuracy-"))
    data, run = work / "data", work / "run"
    n_test = (args.batches + 1) * args.batch
    split = make_noisy_split(n_train=args.n_train, noise=args.train_noise, rate=args.train_rate, seed=args.seed)
    if not (run / "model").is_dir():
        split.write(data, n_test=n_test)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "labelaudit", "scan", str(data / "images"), str(data / "labels.csv"),
                        "-o", str(run), "--quiet", "--device", "cpu", "--force"],
                       check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        print(f"scan: {time.perf_counter() - started:.0f} s", flush=True)
    records = ensure_training_records(run, data)
    oracle = oracle_temperature(run / "model", data, n_test)

    batches = planted_batches(split.test_labels, args.batches, args.batch, args.seed)
    batches.append(mixed_batch(split, args.batch, args.seed, first_test=args.batches * args.batch))
    results = []
    for number, batch in enumerate(batches):
        csv = write_batch_csv(work / f"batch_{number:02d}.csv", batch["paths"], batch["given"])
        result = run_check(CheckSettings(images=data / "images", batch_csv=csv, model_dir=run / "model", out=run,
                                         report=work / "reports" / f"batch_{number:02d}.parquet", device="cpu"))
        wrong = batch["given"] != batch["truth"]
        results.append((batch, wrong[batch["new"]].mean(), wrong.mean(), result))

    noise = results[0][3].noise_model
    lines = [
        f"# labelaudit check on Fashion-MNIST: {args.n_train} training rows with {args.train_rate:.0%} "
        f"{args.train_noise} noise, batches of {args.batch} held-out images",
        "",
        f"Scan: default settings (resnet10t, ELR), seed {args.seed}, one thread. Fingerprints and calibration: "
        f"{records}. Temperature used {getattr(noise, 'temperature', 1.0):.2f}"
        + (f"; fitted to the held-out images' true labels it would be {oracle:.2f}." if oracle else "."),
        "",
        "| batch | labels | true error rate | estimate | 95% interval | error | seen in training | w |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    errors: dict[str, list[float]] = {}
    for batch, truth_new, truth_all, result in results:
        rate = result.error_rate
        overlap = getattr(result, "training_overlap", None)
        seen = "n/a" if overlap is None else (f"{overlap.seen} of {overlap.usable}" if overlap.known else "unknown")
        # what the estimate should match: the new rows when check set the seen ones aside, else every row
        truth = truth_new if overlap is not None and overlap.known else truth_all
        weight = getattr(result.noise_model, "structure_weight", None)
        if rate.n:
            errors.setdefault(batch["name"], []).append(rate.rate - truth)
            lines.append(f"| {batch['batch']} | {batch['name']} | {truth:.1%} | {rate.rate:.1%} | "
                         f"{rate.low:.1%}–{rate.high:.1%} | {100 * (rate.rate - truth):+.1f} | {seen} | "
                         f"{'' if weight is None else f'{weight:.2f}'} |")
        else:
            lines.append(f"| {batch['batch']} | {batch['name']} | {truth:.1%} | not estimated | | | {seen} | |")
    lines += ["", "Mean error of the estimate (points): " + "; ".join(
        f"{name} {100 * np.mean(values):+.1f} (worst {100 * max(values, key=abs):+.1f})"
        for name, values in errors.items()) + "."]
    lines += ["", f"Noise structure: {noise.structure_source}; w = weight of the training run's structure "
              "against uniform, fitted to each batch. Command: `python benchmarks/check.py --accuracy "
              f"--n-train {args.n_train} --train-noise {args.train_noise} --train-rate {args.train_rate} "
              f"--batches {args.batches} --batch {args.batch} --seed {args.seed}`."]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------- speed


def speed(args: argparse.Namespace) -> None:
    work = args.keep or Path(tempfile.mkdtemp(prefix="labelaudit-bench-check-"))
    try:
        data = work / "batch"
        started = time.perf_counter()
        if not (data / "labels.csv").is_file():
            load_maker().make_dataset(data, n_images=args.n, size=args.size, noise="symmetric", noise_rate=0.1,
                                      seed=0)
        classes = sorted(load_maker().CLASSES)
        model_dir = make_random_model(work / "run" / "model", classes, args.size, args.model)
        setup_seconds = time.perf_counter() - started

        settings = CheckSettings(images=data / "images", batch_csv=data / "labels.csv", model_dir=model_dir,
                                 limits=Limits(max_error_rate=0.05), out=work / "run", device="cpu")
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        result = run_check(settings)
        wall = time.perf_counter() - started
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    t = result.timings
    lines = [
        f"# labelaudit check: {result.audited:,} images of {args.size} px, {args.model} (random weights)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads); load average {load_before:.1f} before the run (other jobs share "
        f"the CPUs); data and model made in {setup_seconds:.0f} s (not timed).",
        "",
        "| stage | seconds |",
        "|---|---:|",
        f"| load model + read CSV | {t['load_seconds']:.2f} |",
        f"| decode images | {t['decode_seconds']:.2f} |",
        f"| fingerprints (rows seen in training) | {t.get('fingerprint_seconds', 0.0):.2f} |",
        f"| inference | {t['inference_seconds']:.2f} |",
        f"| scoring (noise rate, rows, intervals, limits) | {t['scoring_seconds']:.2f} |",
        f"| report (Parquet) and the rest | {wall - sum(t.get(k, 0.0) for k in STAGES):.2f} |",
        f"| **total wall time** | **{wall:.2f}** |",
        "",
        f"Throughput: {result.audited / wall:,.0f} images/s end to end; "
        f"{result.audited / t['inference_seconds']:,.0f} images/s inference.",
        f"Result: estimated error rate {result.error_rate.rate:.3f} "
        f"({result.error_rate.low:.3f}–{result.error_rate.high:.3f}), exit code {result.exit_code} "
        "(random weights: the number itself means nothing here).",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accuracy", action="store_true", help="measure the estimate on Fashion-MNIST instead")
    parser.add_argument("--n", type=int, default=10_000, help="speed: images in the batch")
    parser.add_argument("--size", type=int, default=32, help="speed: image side in pixels")
    parser.add_argument("--model", default="resnet10t", help="speed: timm architecture")
    parser.add_argument("--n-train", type=int, default=2000, help="accuracy: training rows scanned")
    parser.add_argument("--train-noise", default="symmetric", help="accuracy: symmetric, lookalike, instance, none")
    parser.add_argument("--train-rate", type=float, default=0.2, help="accuracy: noise rate planted in training")
    parser.add_argument("--batch", type=int, default=500, help="accuracy: rows per checked batch")
    parser.add_argument("--batches", type=int, default=4, help="accuracy: disjoint batches of test images")
    parser.add_argument("--seed", type=int, default=0, help="accuracy: seed of the split and the planted errors")
    parser.add_argument("--keep", type=Path, default=None, help="make/reuse the data (and scan) here instead of a temp dir")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as Markdown here")
    args = parser.parse_args()
    accuracy(args) if args.accuracy else speed(args)


if __name__ == "__main__":
    main()
