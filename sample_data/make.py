"""Build the bundled sample: Fashion-MNIST product photos with planted label errors.

Draws ``--n`` images (default 1500) from the Fashion-MNIST train split with a fixed seed, the
same number from each of the 10 classes, and writes them as 28x28 grayscale PNG files
``images/fm_00001.png`` ... in a shuffled order.  Exactly 10% of the labels are made wrong:
half of those are look-alike confusions along ``fashion.LOOKALIKE_FLIPS`` (T-shirt/top <-> shirt,
pullover <-> coat, shirt -> coat, sneaker <-> sandal, ankle boot -> sneaker), the other half
symmetric (a uniformly random other class).  Writes

* ``labels.csv`` (``path,label``): the labels to audit, errors included;
* ``truth.csv`` (``path,label``): the true labels, same paths in the same order;
* ``gold.csv`` (``path,label``): true labels of a random 5% of the rows, for
  ``labelaudit matrix --trusted``.

Paths are relative to ``images/``.  Everything is a function of ``--n`` and ``--seed``: running it
twice gives byte-identical files.  The IDX files come from Debian's ``dataset-fashion-mnist``
package (/usr/share/datasets/fashion-mnist), installed with apt-get when absent; the helpers are
in ``benchmarks/fashion.py``.  Needs numpy and Pillow.

    python sample_data/make.py                              # regenerate the committed sample_data/
    python sample_data/make.py --out /tmp/fm --n 5000 --seed 1
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BENCHMARKS = str(HERE.parent / "benchmarks")

# benchmarks/fashion.py; the folder is on sys.path only for this import, so its other scripts
# (check.py, memory.py, ...) never shadow modules of the same name for whoever imported this file.
sys.path.insert(0, BENCHMARKS)
try:
    import fashion  # noqa: E402
finally:
    sys.path.remove(BENCHMARKS)

CLASSES = fashion.CLASSES
ERROR_RATE = 0.10
GOLD_FRACTION = 0.05
LOOKALIKE, SYMMETRIC = "lookalike", "symmetric"
IMAGE_PREFIX = "fm_"


def draw_rows(train_labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Train-split row numbers of ``n`` images, ``n // 10`` of each class, in a shuffled order.

    Rows come from the train split minus its last ``fashion.CONFUSION_MODEL_ROWS`` rows (kept for the
    benchmarks' instance-noise model), without replacement.
    """
    n_classes = len(CLASSES)
    if n < n_classes or n % n_classes:
        raise ValueError(f"--n must be a positive multiple of {n_classes} (equal count per class), got {n}")
    per_class = n // n_classes
    rng = np.random.default_rng([seed, 0])
    pool = np.arange(len(train_labels) - fashion.CONFUSION_MODEL_ROWS)
    chosen = []
    for label in range(n_classes):
        candidates = pool[train_labels[pool] == label]
        if per_class > len(candidates):
            raise ValueError(f"--n {n} asks for {per_class} images per class; the split has {len(candidates)}")
        chosen.append(rng.choice(candidates, size=per_class, replace=False))
    return rng.permutation(np.concatenate(chosen))


def plant_errors(true: np.ndarray, seed: int, rate: float = ERROR_RATE) -> tuple[np.ndarray, np.ndarray]:
    """Given labels with exactly ``round(rate * n)`` errors: half look-alike, half symmetric.

    The look-alike errors (``n_errors // 2``) go to rows whose class has a look-alike in
    ``fashion.LOOKALIKE_FLIPS`` and take one of that class's look-alike labels (uniformly when it has
    two, as shirt does); the rest go to other rows and take a uniformly random other class
    (``fashion.plant_symmetric``).  Depends only on ``true`` and ``seed`` (not on the images), so the
    kinds can be recomputed from ``truth.csv``.

    Returns
    -------
    (noisy, kind)
        ``noisy``: int64 labels, shape (n,); ``kind``: str array, ``"lookalike"``, ``"symmetric"``
        or ``""`` (label kept) per row.
    """
    true = np.asarray(true, dtype=np.int64)
    rng = np.random.default_rng([seed, 1])
    index = {name: i for i, name in enumerate(CLASSES)}
    flips = [(index[a], index[b]) for a, b in fashion.LOOKALIKE_FLIPS]
    n_errors = int(round(rate * len(true)))
    n_lookalike = n_errors // 2
    noisy, kind = true.copy(), np.full(len(true), "", dtype=object)

    eligible = np.flatnonzero(np.isin(true, sorted({a for a, _ in flips})))
    lookalike_rows = np.sort(rng.choice(eligible, size=n_lookalike, replace=False))
    for row in lookalike_rows:
        targets = [b for a, b in flips if a == true[row]]
        noisy[row] = targets[rng.integers(len(targets))]
    kind[lookalike_rows] = LOOKALIKE

    others = np.setdiff1d(np.arange(len(true)), lookalike_rows)
    symmetric_rows = np.sort(rng.choice(others, size=n_errors - n_lookalike, replace=False))
    noisy[symmetric_rows] = fashion.plant_symmetric(true[symmetric_rows], 1.0, rng, len(CLASSES))
    kind[symmetric_rows] = SYMMETRIC
    return noisy, kind.astype(str)


def gold_rows(n: int, seed: int, fraction: float = GOLD_FRACTION) -> np.ndarray:
    """Sorted row numbers of the ``round(fraction * n)`` rows whose true label goes to gold.csv."""
    return np.sort(np.random.default_rng([seed, 2]).choice(n, size=int(round(fraction * n)), replace=False))


def _write_csv(path: Path, names: list[str], labels) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["path", "label"])
        writer.writerows((name, CLASSES[int(label)]) for name, label in zip(names, labels))


def _save_png(pixels: np.ndarray, path: Path) -> None:
    from PIL import Image

    # Fixed zlib level, no optimisation pass and no metadata, so the bytes depend on the pixels only.
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(
        path, format="PNG", compress_level=9, optimize=False)


def make_sample(out_dir: Path, *, n: int = 1500, seed: int = 0) -> dict:
    """Write images/, labels.csv, truth.csv and gold.csv under ``out_dir``; return a summary dict.

    Images an earlier run wrote (``images/fm_*.png``) are deleted first, so a smaller ``n`` leaves
    no strays; nothing else in ``out_dir`` is touched.
    """
    train_images, train_labels = fashion.load_split("train")
    rows = draw_rows(train_labels, n, seed)
    true = train_labels[rows]
    noisy, kind = plant_errors(true, seed)
    gold = gold_rows(n, seed)

    out_dir = Path(out_dir)
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    for old in images_dir.glob(f"{IMAGE_PREFIX}*.png"):
        old.unlink()
    names = [f"{IMAGE_PREFIX}{i + 1:05d}.png" for i in range(n)]
    for name, row in zip(names, rows):
        _save_png(train_images[row], images_dir / name)
    _write_csv(out_dir / "labels.csv", names, noisy)
    _write_csv(out_dir / "truth.csv", names, true)
    _write_csv(out_dir / "gold.csv", [names[i] for i in gold], true[gold])

    pairs: dict[str, int] = {}
    for t, g, k in zip(true, noisy, kind):
        if k:
            key = f"{k}: {CLASSES[t]} -> {CLASSES[g]}"
            pairs[key] = pairs.get(key, 0) + 1
    return {
        "n": n, "seed": seed, "n_errors": int(np.sum(noisy != true)),
        "n_lookalike": int(np.sum(kind == LOOKALIKE)), "n_symmetric": int(np.sum(kind == SYMMETRIC)),
        "n_gold": len(gold), "errors_by_pair": dict(sorted(pairs.items())),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output directory (default: this sample_data/)")
    parser.add_argument("--n", type=int, default=1500,
                        help="number of images, a multiple of 10 (default 1500)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--verbose", "-v", action="store_true", help="also print the errors by class pair")
    args = parser.parse_args(argv)
    try:
        summary = make_sample(args.out, n=args.n, seed=args.seed)
    except ValueError as error:
        parser.error(str(error))
    print(f"wrote {summary['n']} images to {args.out}: {summary['n_errors']} wrong labels "
          f"({summary['n_lookalike']} look-alike, {summary['n_symmetric']} symmetric), "
          f"{summary['n_gold']} gold rows")
    if args.verbose:
        for pair, count in summary["errors_by_pair"].items():
            print(f"  {count:4d}  {pair}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
