"""Fashion-MNIST (real product photos, MIT licence) with planted label noise, for the quality benchmarks.

Debian's package ``dataset-fashion-mnist`` puts the IDX files under /usr/share/datasets/fashion-mnist;
:func:`load_split` installs it with apt-get when it is absent. Three noise kinds, each planted at an exact
rate with a seed:

* ``symmetric``: a wrong label drawn uniformly from the other classes;
* ``lookalike``: flips only among the classes people really confuse (T-shirt/top ↔ shirt, pullover ↔ coat,
  shirt → coat, sneaker ↔ sandal, ankle boot → sneaker);
* ``instance``: the class a logistic regression trained on *other* images (a disjoint part of the train
  split) finds most confusable for that image, the most confusable images first.

    from fashion import make_noisy_split
    split = make_noisy_split(n_train=2000, noise="symmetric", rate=0.2, seed=0)
    split.write(Path("/tmp/fm"), gold_fraction=0.05)   # images/, labels.csv, truth.csv, gold.csv, test.csv
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]
# (true class, wrong label it is written as): the confusions annotators make
LOOKALIKE_FLIPS = [("t-shirt", "shirt"), ("shirt", "t-shirt"), ("pullover", "coat"), ("coat", "pullover"),
                   ("shirt", "coat"), ("sneaker", "sandal"), ("sandal", "sneaker"), ("ankle-boot", "sneaker")]
NOISE_KINDS = ("symmetric", "lookalike", "instance")
#: train-split rows kept apart for the instance-noise logistic regression (never used as audit rows)
CONFUSION_MODEL_ROWS = 10_000


def ensure_installed() -> Path:
    if not (DATA_DIR / "train-images-idx3-ubyte.gz").is_file():
        print("installing Debian's dataset-fashion-mnist ...", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "dataset-fashion-mnist"], check=True)
    return DATA_DIR


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 28, 28) uint8, labels (N,) int64) of ``train`` (60,000) or ``test`` (10,000)."""
    root = ensure_installed()
    prefix = "train" if split == "train" else "t10k"
    images = _read_idx(root / f"{prefix}-images-idx3-ubyte.gz")
    labels = _read_idx(root / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    return images, labels


def plant_symmetric(true: np.ndarray, rate: float, rng: np.random.Generator, n_classes: int) -> np.ndarray:
    noisy = true.copy()
    chosen = rng.choice(len(true), size=int(round(rate * len(true))), replace=False)
    shift = rng.integers(1, n_classes, size=len(chosen))
    noisy[chosen] = (true[chosen] + shift) % n_classes
    return noisy


def plant_lookalike(true: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Each row of a class that has a look-alike (7 of the 10) is flipped with probability ``rate`` along
    LOOKALIKE_FLIPS (exactly ``round(rate × eligible rows)``), so 40% gives about 28% wrong labels overall."""
    index = {name: i for i, name in enumerate(CLASSES)}
    flips = [(index[a], index[b]) for a, b in LOOKALIKE_FLIPS]
    noisy = true.copy()
    eligible = np.flatnonzero(np.isin(true, [a for a, _ in flips]))
    chosen = rng.choice(eligible, size=int(round(rate * len(eligible))), replace=False)
    for row in chosen:
        targets = [b for a, b in flips if a == true[row]]
        noisy[row] = targets[rng.integers(len(targets))]
    return noisy


def plant_instance(true: np.ndarray, confusable: np.ndarray, confusion: np.ndarray, rate: float) -> np.ndarray:
    """Flip the ``round(rate × N)`` rows whose most confusable other class is most probable.

    confusable: (N,) the other class a linear model finds most likely for each image; confusion: (N,) that
    class's probability (the ordering key)."""
    noisy = true.copy()
    chosen = np.argsort(-confusion, kind="stable")[: int(round(rate * len(true)))]
    noisy[chosen] = confusable[chosen]
    return noisy


def linear_confusions(images: np.ndarray, true: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """For each image, the wrong class a logistic regression trained on other train-split images rates
    highest, and its probability."""
    from sklearn.linear_model import LogisticRegression

    train_images, train_labels = load_split("train")
    rng = np.random.default_rng(10_000 + seed)
    rows = rng.choice(np.arange(len(train_labels) - CONFUSION_MODEL_ROWS, len(train_labels)),
                      size=CONFUSION_MODEL_ROWS, replace=False)
    model = LogisticRegression(max_iter=200, C=0.01)
    model.fit(train_images[rows].reshape(len(rows), -1) / 255.0, train_labels[rows])
    probs = model.predict_proba(images.reshape(len(images), -1) / 255.0)
    probs[np.arange(len(true)), true] = -1.0
    return probs.argmax(1), probs.max(1)


@dataclass
class NoisySplit:
    """Training rows with planted noise (``noisy``) and their truth, plus clean held-out test rows."""

    images: np.ndarray  # (N, 28, 28) uint8
    true: np.ndarray  # (N,)
    noisy: np.ndarray  # (N,)
    test_images: np.ndarray
    test_labels: np.ndarray
    noise: str
    rate: float
    seed: int

    @property
    def is_error(self) -> np.ndarray:
        return self.true != self.noisy

    def gold_rows(self, fraction: float) -> np.ndarray:
        rng = np.random.default_rng(self.seed + 7)
        return np.sort(rng.choice(len(self.true), size=int(round(fraction * len(self.true))), replace=False))

    def write(self, out: Path, *, gold_fraction: float = 0.05, n_test: int = 0) -> Path:
        """images/ as PNG, labels.csv (noisy), truth.csv, gold.csv (true labels of a random 5%), test.csv."""
        from PIL import Image

        if out.exists():
            shutil.rmtree(out)
        (out / "images").mkdir(parents=True)
        names = [f"train_{i:05d}.png" for i in range(len(self.true))]
        for name, image in zip(names, self.images):
            Image.fromarray(image, "L").save(out / "images" / name)
        _write_csv(out / "labels.csv", names, self.noisy)
        _write_csv(out / "truth.csv", names, self.true)
        gold = self.gold_rows(gold_fraction)
        _write_csv(out / "gold.csv", [names[i] for i in gold], self.true[gold])
        if n_test:
            test_names = [f"test_{i:05d}.png" for i in range(n_test)]
            for name, image in zip(test_names, self.test_images[:n_test]):
                Image.fromarray(image, "L").save(out / "images" / name)
            _write_csv(out / "test.csv", test_names, self.test_labels[:n_test])
        return out


def _write_csv(path: Path, names: list[str], labels: np.ndarray) -> None:
    lines = ["path,label"] + [f"{name},{CLASSES[int(label)]}" for name, label in zip(names, labels)]
    path.write_text("\n".join(lines) + "\n")


def make_noisy_split(*, n_train: int, noise: str, rate: float, seed: int, offset: int = 0) -> NoisySplit:
    """``n_train`` random train-split rows (from the first 50,000, apart from the instance model's rows)
    with ``noise`` planted at ``rate``; the whole test split as clean held-out rows."""
    images, labels = load_split("train")
    rng = np.random.default_rng(seed)
    pool = np.arange(len(labels) - CONFUSION_MODEL_ROWS)
    rows = np.sort(rng.choice(pool, size=n_train + offset, replace=False))[offset:] if offset else \
        np.sort(rng.choice(pool, size=n_train, replace=False))
    true = labels[rows]
    if noise == "symmetric":
        noisy = plant_symmetric(true, rate, rng, len(CLASSES))
    elif noise == "lookalike":
        noisy = plant_lookalike(true, rate, rng)
    elif noise == "instance":
        confusable, confusion = linear_confusions(images[rows], true, seed)
        noisy = plant_instance(true, confusable, confusion, rate)
    elif noise == "none":
        noisy = true.copy()
    else:
        raise ValueError(f"unknown noise {noise!r}; one of {NOISE_KINDS}")
    test_images, test_labels = load_split("test")
    return NoisySplit(images[rows], true, noisy, test_images, test_labels, noise, rate, seed)
