"""Which probabilities, ranking and count make the scan's verdicts right? The measurements behind the rule.

Trains the default scan's ELR once per noise kind on Fashion-MNIST (benchmarks/fashion.py), keeps three
views of every training row — ELR's running-average targets (what a scan scores with), the final model on
un-augmented images, and the mean of the per-epoch predictions (early-learning snapshots) — and prints for
each view: AUPRC of two rankings (1 − p(given | x), and the posterior with the confident-joint T), the
estimated error rate of three counts (the confident joint's off-diagonal mass, its symmetric-noise trimmed
count, the mean T-posterior error probability) against the truth, the noise structure read from the joint,
and precision/recall when exactly the true number of rows is flagged (the ceiling of a count-based rule).

    python benchmarks/verdict_rules.py                  # n = 2,000, the three noise kinds, seed 0
    python benchmarks/verdict_rules.py --noise instance --n 2000 --seed 1

Needs Debian's dataset-fashion-mnist (installed when absent) and the bench extra (scikit-learn).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from fashion import CLASSES, NOISE_KINDS, make_noisy_split  # noqa: E402

from labelaudit.audit import DatasetSpec, load_dataset  # noqa: E402
from labelaudit.core.metrics import average_precision, precision_recall  # noqa: E402
from labelaudit.core.noise_structure import noise_structure  # noqa: E402
from labelaudit.core.scoring import error_probability  # noqa: E402
from labelaudit.core.transition import confident_joint, smoothed_confident_joint_transition  # noqa: E402
from labelaudit.core.verdicts import symmetric_error_count  # noqa: E402
from labelaudit.methods.elr import ELR  # noqa: E402
from labelaudit.methods.registry import register  # noqa: E402
from labelaudit.train.loop import SilentProgress, TrainConfig, fit, predict_proba  # noqa: E402

RATES = {"symmetric": 0.2, "lookalike": 0.4, "instance": 0.25}


@register
class SnapshotELR(ELR):
    """ELR that also keeps its predictions on the training images after every epoch."""

    name = "elr-snapshots"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.snapshots: list[np.ndarray] = []

    def on_epoch_end(self, epoch, ctx) -> None:
        super().on_epoch_end(epoch, ctx)
        self.snapshots.append(ctx.predict_train())


def views_of_one_run(data_dir: Path, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray], list[str]]:
    data = load_dataset(DatasetSpec(data_dir / "images", data_dir / "labels.csv"), TrainConfig().image_size)
    method = SnapshotELR()
    fitted = fit(method, data.images, data.labels, len(data.classes), TrainConfig(device="cpu", seed=seed),
                 progress=SilentProgress())
    views = {
        "ELR targets (scan default)": method.training_probs(),
        "final model": predict_proba(method, data.images, fitted.config),
        "mean of per-epoch predictions": np.mean(method.snapshots, axis=0),
    }
    return data.labels, views, data.classes


def report(noise: str, labels: np.ndarray, truth: np.ndarray, views: dict[str, np.ndarray]) -> None:
    is_error = labels != truth
    print(f"\n## {noise} noise: true error rate {is_error.mean():.1%}\n")
    print("| probabilities | AUPRC 1 − p(given) | AUPRC T-posterior | confident joint | symmetric trimmed "
          "| mean T-posterior | noise read as | P/R flagging the true count |")
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    n = len(labels)
    for name, probs in views.items():
        probs = probs / probs.sum(axis=1, keepdims=True)
        joint = confident_joint(labels, probs)
        transition = smoothed_confident_joint_transition(labels, probs)
        posterior_error = error_probability(labels, probs, transition)
        self_error = 1.0 - probs[np.arange(n), labels]
        structure = noise_structure(joint)
        best = posterior_error if structure.concentrated else self_error
        flagged = np.zeros(n, bool)
        flagged[np.argsort(-best, kind="stable")[: int(is_error.sum())]] = True
        precision, recall = precision_recall(is_error, flagged)
        print(f"| {name} | {average_precision(is_error, self_error):.3f} "
              f"| {average_precision(is_error, posterior_error):.3f} "
              f"| {(joint.sum() - np.trace(joint)) / n:.1%} | {symmetric_error_count(joint) / n:.1%} "
              f"| {posterior_error.mean():.1%} | {'concentrated' if structure.concentrated else 'symmetric'} "
              f"| {precision:.2f} / {recall:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--noise", choices=[*NOISE_KINDS, "all"], default="all")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"# Verdict rules on Fashion-MNIST\n\ncommand: `python benchmarks/verdict_rules.py {' '.join(sys.argv[1:])}`"
          f"; default scan training (ELR, resnet10t, 32 px), {args.n} rows, seed {args.seed}")
    order = sorted(CLASSES)
    with tempfile.TemporaryDirectory() as tmp:
        for noise in NOISE_KINDS if args.noise == "all" else [args.noise]:
            split = make_noisy_split(n_train=args.n, noise=noise, rate=RATES[noise], seed=args.seed)
            data_dir = split.write(Path(tmp) / noise)
            started = time.perf_counter()
            labels, views, classes = views_of_one_run(data_dir, args.seed)
            assert classes == order
            truth = np.array([order.index(CLASSES[c]) for c in split.true])
            report(noise, labels, truth, views)
            print(f"\n({time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
