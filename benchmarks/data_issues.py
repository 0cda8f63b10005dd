"""Planted data issues on real Fashion-MNIST images: labelaudit against cleanvision and cleanlab's Datalab. (issue 14, item 7)

The dataset (``--n`` rows, default 3,000; seed ``--seed``) is written as an image folder plus labels.csv
with a ``split`` column (train 80% / val 10% / test 10%) and truth.csv (what was planted in each row).
With ``m = max(5, n/100)``, it plants, each on rows of its own:

* ``exact``: m pictures stored twice, byte for byte, the copy under a *different* label;
* ``near``: m pictures each copied as a JPEG re-encode (quality 75), as a 36-px resize and as a 1-px crop (each side)
  resized back (3m copies; same label, same split);
* ``leak``: m training pictures copied byte for byte into val or test (same label);
* ``dark`` (pixels × 0.25), ``bright`` (pixels × 1.6 + 150, clipped: overexposed), ``blurry`` (Gaussian
  blur, radius 1.5): m rows each, changed in place;
* ``ood``: m images of no class: faces from scikit-image's LFW subset and crops of its sample photos, in
  grey at 28 px like the rest, under a random class label.

Every tool sees the same folder once. A row counts as found for a kind when the tool flags it with its
flag for that kind (table below); precision for a kind is the flagged rows of that kind over the flagged
rows that are of that kind *or planted with nothing*, so a flag on a row planted with another issue is
neither right nor wrong (a duplicate flag on an exact copy when measuring near copies, a blur flag on an
upscaled copy or a 25-px face). Both members of a planted pair are truth (original and copy).
"pairs found" rows: the share of planted (original, copy) pairs that the tool puts in one duplicate set,
per kind of copy (the near copies split by variant).
The pool of Fashion-MNIST images is deduplicated by pixels first, so the only copies are the planted ones.

=========  ==================================  ==================================  ==============================
kind       labelaudit (samples.parquet)        cleanvision Imagelab                cleanlab Datalab
=========  ==================================  ==================================  ==============================
exact      ``is_duplicate``                    ``is_exact_duplicates_issue``       ``is_near_duplicate_issue``
near       ``is_duplicate``                    exact or near duplicates flag       ``is_near_duplicate_issue``
leak       ``is_leak``                         a duplicate set spanning splits     a near_duplicate_set spanning splits
dark       ``dark`` in ``quality_issues``      ``is_dark_issue``                   (not offered without images)
bright     ``bright`` in ``quality_issues``    ``is_light_issue``                  (not offered without images)
blurry     ``blurry`` in ``quality_issues``    ``is_blurry_issue``                 (not offered without images)
ood        ``is_outlier``                      (no such check)                     ``is_outlier_issue``
=========  ==================================  ==================================  ==============================

Datalab runs twice, with the same ``pred_probs`` (5-fold out-of-fold probabilities of a logistic
regression on the pixels; its seconds are printed apart) and two ``features``: the images' pixels (784
values in [0, 1]), and a learnt representation, the 128 ReLU activations of a one-hidden-layer network
(scikit-learn's MLPClassifier, 60 epochs) trained on the given labels, standing in for a model's embeddings.
With ``--datalab-embeddings`` it also runs on labelaudit's own (N, D) embeddings when the run directory
holds them. Its image checks (cleanvision inside Datalab) need a Hugging Face dataset and would repeat
cleanvision's column, so they are not run.

    OMP_NUM_THREADS=1 python benchmarks/data_issues.py                  # 3,000 rows, all three tools
    OMP_NUM_THREADS=1 python benchmarks/data_issues.py --n 1000 --skip labelaudit
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from fashion import CLASSES, load_split  # noqa: E402

KINDS = ("exact", "near", "leak", "dark", "bright", "blurry", "ood")
DUPLICATE_KINDS = ("exact", "near", "leak")
TOOLS = ("labelaudit", "cleanvision", "datalab")
NOT_COMPUTED = "not computed"


# ---------------------------------------------------------------------------------------------- dataset
def _ood_images(count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``count`` grey 28×28 uint8 images of no Fashion-MNIST class: LFW faces, crops of sample photos."""
    from PIL import Image
    from skimage import data

    faces = data.lfw_subset()  # (200, 25, 25) float in [0, 1]
    photos = [data.astronaut(), data.camera(), data.chelsea(), data.coffee(), data.coins(), data.clock(),
              data.horse(), data.moon(), data.page(), data.rocket(), data.brick(), data.grass(), data.gravel(),
              data.hubble_deep_field(), data.immunohistochemistry(), data.retina(), data.cell(), data.text()]
    out = []
    for i in range(count):
        if i % 2 == 0:
            face = faces[rng.integers(len(faces))]
            image = Image.fromarray((face * 255).astype(np.uint8)).resize((28, 28), Image.BICUBIC)
        else:
            photo = photos[rng.integers(len(photos))]
            if photo.dtype != np.uint8:
                photo = (photo * 255).astype(np.uint8) if photo.max() <= 1 else photo.astype(np.uint8)
            h, w = photo.shape[:2]
            side = int(rng.uniform(0.3, 1.0) * min(h, w))
            top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
            crop = Image.fromarray(photo[top:top + side, left:left + side]).convert("L")
            image = crop.resize((28, 28), Image.BICUBIC)
        out.append(np.asarray(image.convert("L"), dtype=np.uint8))
    return out


def build(out: Path, n: int, seed: int) -> pd.DataFrame:
    """Write out/images, out/labels.csv (path,label,split) and out/truth.csv; return the truth frame."""
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    images, labels = load_split("train")
    _, first = np.unique(images.reshape(len(images), -1), axis=0, return_index=True)
    pool = rng.permutation(np.sort(first))  # one image per distinct picture
    m = max(5, n // 100)
    n_base = n - 6 * m  # exact m + near 3m + leak m copies, and m ood rows, come on top
    base = pool[:n_base]
    split = rng.choice(["train", "val", "test"], size=n_base, p=[0.8, 0.1, 0.1])
    train_rows = np.flatnonzero(split == "train")
    chosen = rng.choice(train_rows, size=8 * m, replace=False)  # disjoint originals for every kind
    exact_rows, near_rows, leak_rows = chosen[:m], chosen[m:4 * m], chosen[4 * m:5 * m]
    dark_rows, bright_rows, blurry_rows = chosen[5 * m:6 * m], chosen[6 * m:7 * m], chosen[7 * m:]

    if out.exists():
        shutil.rmtree(out)
    (out / "images").mkdir(parents=True)
    rows: list[dict] = []

    def add(name: str, picture: Image.Image, label: int, split_name: str, kind: str, group: int, **save) -> None:
        picture.save(out / "images" / name, **save)
        rows.append({"path": name, "label": CLASSES[label], "split": split_name, "kind": kind, "group": group})

    kind_of = {}
    for kind, members in [("exact", exact_rows), ("near", near_rows), ("leak", leak_rows), ("dark", dark_rows),
                          ("bright", bright_rows), ("blurry", blurry_rows)]:
        kind_of.update({int(r): kind for r in members})
    for i, row in enumerate(base):
        pixels = images[row]
        kind = kind_of.get(i, "clean")
        if kind == "dark":
            pixels = (pixels.astype(np.float32) * 0.25).astype(np.uint8)
        elif kind == "bright":
            pixels = np.clip(pixels.astype(np.float32) * 1.6 + 150, 0, 255).astype(np.uint8)
        picture = Image.fromarray(pixels)
        if kind == "blurry":
            picture = picture.filter(ImageFilter.GaussianBlur(radius=1.5))
        group = i if kind in DUPLICATE_KINDS else -1
        add(f"img_{i:05d}.png", picture, int(labels[row]), str(split[i]), kind, group)
        if kind == "exact":
            wrong = (int(labels[row]) + int(rng.integers(1, len(CLASSES)))) % len(CLASSES)
            shutil.copyfile(out / "images" / f"img_{i:05d}.png", out / "images" / f"img_{i:05d}_copy.png")
            rows.append({"path": f"img_{i:05d}_copy.png", "label": CLASSES[wrong], "split": str(split[i]),
                         "kind": "exact", "group": i})
        elif kind == "leak":
            other = str(rng.choice(["val", "test"]))
            shutil.copyfile(out / "images" / f"img_{i:05d}.png", out / "images" / f"img_{i:05d}_{other}.png")
            rows.append({"path": f"img_{i:05d}_{other}.png", "label": CLASSES[int(labels[row])], "split": other,
                         "kind": "leak", "group": i})
        elif kind == "near":
            variant = ("jpeg", "resize", "crop")[int(np.flatnonzero(near_rows == i)[0]) % 3]
            if variant == "jpeg":
                add(f"img_{i:05d}_jpeg.jpg", picture, int(labels[row]), str(split[i]), "near", i, quality=75)
            elif variant == "resize":
                add(f"img_{i:05d}_resize.png", picture.resize((36, 36), Image.BICUBIC), int(labels[row]),
                    str(split[i]), "near", i)
            else:
                add(f"img_{i:05d}_crop.png", picture.crop((1, 1, 27, 27)).resize((28, 28), Image.BICUBIC),
                    int(labels[row]), str(split[i]), "near", i)
    for j, pixels in enumerate(_ood_images(m, rng)):
        add(f"ood_{j:04d}.png", Image.fromarray(pixels), int(rng.integers(len(CLASSES))),
            str(rng.choice(["train", "val", "test"], p=[0.8, 0.1, 0.1])), "ood", -1)
    truth = pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    truth[["path", "label", "split"]].to_csv(out / "labels.csv", index=False)
    truth.to_csv(out / "truth.csv", index=False)
    return truth


def truth_masks(truth: pd.DataFrame) -> dict[str, np.ndarray]:
    return {kind: (truth["kind"] == kind).to_numpy() for kind in KINDS}


def pixels_of(root: Path, paths: list[str]) -> np.ndarray:
    """(N, 784) float32 in [0, 1]: every image as grey 28×28 (resized when it is not)."""
    from PIL import Image
    out = np.empty((len(paths), 784), dtype=np.float32)
    for i, path in enumerate(paths):
        with Image.open(root / "images" / path) as image:
            image = image.convert("L")
            if image.size != (28, 28):
                image = image.resize((28, 28), Image.BICUBIC)
            out[i] = np.asarray(image, dtype=np.float32).reshape(-1) / 255.0
    return out


# ------------------------------------------------------------------------------------------------ tools
def _leaks_from_sets(sets: list[list[int]], split: np.ndarray) -> np.ndarray:
    leak = np.zeros(len(split), dtype=bool)
    for members in sets:
        members = list(members)
        if len(set(split[members])) > 1:
            leak[members] = True
    return leak


def run_labelaudit(root: Path, truth: pd.DataFrame, work: Path, threads: int, extra: list[str]) -> dict:
    run = work / "labelaudit-run"
    scan = [sys.executable, "-m", "labelaudit", "scan"]
    options = subprocess.run([*scan, "--help"], capture_output=True, text=True,
                             env=dict(os.environ, COLUMNS="200")).stdout
    split = ["--split-column", "split"] if "--split-column" in options else []  # until scan has it
    cmd = [*scan, str(root / "images"), str(root / "labels.csv"), *split, "--threads", str(threads),
           "--out", str(run), "--force", "--quiet", *extra]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise RuntimeError(f"labelaudit scan failed ({done.returncode}): {done.stderr.strip()[-600:]}")
    samples = pd.read_parquet(run / "samples.parquet").set_index("path").reindex(truth["path"])
    flags: dict[str, np.ndarray | None] = {}

    def column(name: str):
        return samples[name].fillna(False).to_numpy(dtype=bool) if name in samples else None

    flags["exact"] = flags["near"] = column("is_duplicate")
    sets = None
    if "duplicate_set" in samples:
        ids = samples["duplicate_set"].to_numpy(dtype="float64")
        sets = [list(np.flatnonzero(ids == value)) for value in np.unique(ids[~np.isnan(ids)])]
    flags["leak"] = column("is_leak") if split else None
    flags["ood"] = column("is_outlier")
    if "quality_issues" in samples:
        issues = samples["quality_issues"].apply(lambda v: set() if v is None else set(v))
        for kind in ("dark", "bright", "blurry"):
            flags[kind] = issues.apply(lambda s, k=kind: k in s).to_numpy()
    return {"flags": flags, "seconds": seconds, "run": run, "sets": sets}


def run_cleanvision(root: Path, truth: pd.DataFrame) -> dict:
    from cleanvision import Imagelab

    paths = [str(root / "images" / p) for p in truth["path"]]
    started = time.perf_counter()
    lab = Imagelab(filepaths=paths)
    lab.find_issues(issue_types={"exact_duplicates": {}, "near_duplicates": {}, "dark": {}, "light": {},
                                 "blurry": {}}, n_jobs=1, verbose=False)
    seconds = time.perf_counter() - started
    issues = lab.issues.reindex(paths)
    position = {p: i for i, p in enumerate(paths)}
    sets = [[position[p] for p in s] for kind in ("exact_duplicates", "near_duplicates")
            for s in lab.info[kind]["sets"]]
    exact = issues["is_exact_duplicates_issue"].to_numpy(dtype=bool)
    flags = {"exact": exact, "near": exact | issues["is_near_duplicates_issue"].to_numpy(dtype=bool),
             "leak": _leaks_from_sets(sets, truth["split"].to_numpy()),
             "dark": issues["is_dark_issue"].to_numpy(dtype=bool),
             "bright": issues["is_light_issue"].to_numpy(dtype=bool),
             "blurry": issues["is_blurry_issue"].to_numpy(dtype=bool)}
    return {"flags": flags, "seconds": seconds, "sets": sets}


def out_of_fold_logistic(features: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    model = LogisticRegression(max_iter=300, C=0.05)
    return cross_val_predict(model, features, labels, cv=5, method="predict_proba")


def mlp_features(features: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """(N, 128) hidden-layer activations of a one-hidden-layer network trained on the given labels."""
    from sklearn.neural_network import MLPClassifier

    model = MLPClassifier(hidden_layer_sizes=(128,), max_iter=60, random_state=seed)
    model.fit(features, labels)
    return np.maximum(features @ model.coefs_[0] + model.intercepts_[0], 0).astype(np.float32)


def run_datalab(truth: pd.DataFrame, features: np.ndarray, pred_probs: np.ndarray) -> dict:
    from cleanlab import Datalab

    started = time.perf_counter()
    lab = Datalab(data=pd.DataFrame({"label": truth["label"].to_numpy()}), label_name="label", verbosity=0)
    lab.find_issues(features=features, pred_probs=pred_probs)
    seconds = time.perf_counter() - started
    near = lab.get_issues("near_duplicate")
    outliers = lab.get_issues("outlier")
    sets = [[i, *map(int, s)] for i, s in enumerate(near["near_duplicate_sets"]) if len(s)]
    dup = near["is_near_duplicate_issue"].to_numpy(dtype=bool)
    flags = {"exact": dup, "near": dup, "leak": _leaks_from_sets(sets, truth["split"].to_numpy()),
             "ood": outliers["is_outlier_issue"].to_numpy(dtype=bool)}
    return {"flags": flags, "seconds": seconds, "sets": sets}


def find_embeddings(run: Path, n: int) -> np.ndarray | None:
    for path in sorted(run.rglob("*.npy")):
        array = np.load(path, mmap_mode="r")
        if array.ndim == 2 and array.shape[0] == n and array.shape[1] > 10:
            return np.asarray(array, dtype=np.float32)
    return None


# ----------------------------------------------------------------------------------------------- scoring
def precision_recall(flags: np.ndarray | None, truth: dict[str, np.ndarray], kind: str) -> tuple[float, float] | None:
    if flags is None:
        return None
    relevant = truth[kind]
    planted_nothing = ~np.any([truth[k] for k in KINDS], axis=0)
    # a flag on a row planted with another issue is neither right nor wrong here: an exact copy is also a
    # duplicate, an upscaled copy or a 25-px face is also blurry, a photo crop may also be dark
    counted = relevant | planted_nothing
    found = flags & relevant
    flagged = flags & counted
    precision = found.sum() / flagged.sum() if flagged.sum() else float("nan")
    return float(precision), float(found.sum() / relevant.sum())


def _cell(precision: float, recall: float) -> str:
    return ("n/a" if precision != precision else f"{precision:.2f}") + f" / {recall:.2f}"  # n/a: nothing flagged


def planted_pairs(truth_frame: pd.DataFrame) -> dict[str, list[tuple[int, int]]]:
    """(original row, copy row) per kind of copy: exact, leak, and the near copies by variant."""
    position = {p: i for i, p in enumerate(truth_frame["path"])}
    pairs: dict[str, list[tuple[int, int]]] = {name: [] for name in ("exact", "leak", "jpeg", "resize", "crop")}
    for path, kind, group in truth_frame[["path", "kind", "group"]].itertuples(index=False):
        original = f"img_{group:05d}.png"
        if kind in DUPLICATE_KINDS and path != original:
            variant = kind if kind != "near" else path.rsplit("_", 1)[1].split(".")[0]
            pairs[variant].append((position[original], position[path]))
    return pairs


def pair_recall(sets: list[list[int]] | None, pairs: list[tuple[int, int]]) -> float | None:
    if sets is None:
        return None
    set_of = {}
    for number, members in enumerate(sets):
        for member in members:
            set_of.setdefault(int(member), set()).add(number)
    return float(np.mean([bool(set_of.get(a, set()) & set_of.get(b, set())) for a, b in pairs]))


def print_table(results: dict[str, dict], truth: dict[str, np.ndarray], pairs: dict[str, list]) -> None:
    names = list(results)
    print()
    print("| kind (rows) | " + " | ".join(f"{name} P / R" for name in names) + " |")
    print("|---|" + "---|" * len(names))
    for kind in KINDS:
        cells = []
        for name in names:
            result = results[name]
            if "error" in result:
                cells.append("failed")
                continue
            pr = precision_recall(result["flags"].get(kind), truth, kind)
            cells.append(NOT_COMPUTED if pr is None and name == "labelaudit" else
                         "—" if pr is None else _cell(*pr))
        print(f"| {kind} ({int(truth[kind].sum())}) | " + " | ".join(cells) + " |")
    for variant, planted in pairs.items():
        cells = []
        for name in names:
            recall = None if "error" in results[name] else pair_recall(results[name].get("sets"), planted)
            cells.append((NOT_COMPUTED if name == "labelaudit" else "—") if recall is None else f"{recall:.2f}")
        print(f"| pairs found: {variant} ({len(planted)}) | " + " | ".join(cells) + " |")
    cells = [results[name].get("error", "") and "failed" or f"{results[name]['seconds']:.1f}" for name in names]
    print("| seconds | " + " | ".join(cells) + " |")
    for name in names:
        if "error" in results[name]:
            print(f"{name}: {results[name]['error']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=3000, help="rows of the planted dataset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, help="keep the dataset and runs here (default: a temporary folder)")
    parser.add_argument("--skip", nargs="*", default=[], choices=TOOLS)
    parser.add_argument("--datalab-embeddings", action="store_true",
                        help="also run Datalab on labelaudit's embeddings when the run directory holds them")
    parser.add_argument("--scan-args", default="", help="extra arguments for labelaudit scan, one string")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    work = args.work or Path(tempfile.mkdtemp(prefix="data-issues-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    truth_frame = build(work / "data", args.n, args.seed)
    truth = truth_masks(truth_frame)
    print(f"{len(truth_frame)} rows in {work / 'data'} ({time.perf_counter() - started:.1f} s to write); planted: "
          + ", ".join(f"{k} {int(truth[k].sum())}" for k in KINDS), flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, {args.threads} thread(s)", flush=True)

    results: dict[str, dict] = {}
    if "labelaudit" not in args.skip:
        try:
            results["labelaudit"] = run_labelaudit(work / "data", truth_frame, work, args.threads,
                                                   args.scan_args.split())
        except Exception as error:  # keep the other tools' figures
            results["labelaudit"] = {"error": str(error)}
        print(f"labelaudit: {results['labelaudit'].get('seconds', float('nan')):.1f} s", flush=True)
    if "cleanvision" not in args.skip:
        try:
            results["cleanvision"] = run_cleanvision(work / "data", truth_frame)
        except Exception as error:
            results["cleanvision"] = {"error": f"{type(error).__name__}: {error}"}
        print(f"cleanvision: {results['cleanvision'].get('seconds', float('nan')):.1f} s", flush=True)
    if "datalab" not in args.skip:
        pixels = pixels_of(work / "data", list(truth_frame["path"]))
        classes = sorted(set(truth_frame["label"]))  # Datalab orders pred_probs columns by sorted class name
        codes = np.searchsorted(classes, truth_frame["label"].to_numpy())
        fit = time.perf_counter()
        pred_probs = out_of_fold_logistic(pixels, codes, args.seed)
        fit = time.perf_counter() - fit
        print(f"pred_probs for Datalab: 5-fold logistic regression on pixels, {fit:.1f} s", flush=True)
        try:
            results["datalab"] = run_datalab(truth_frame, pixels, pred_probs)
        except Exception as error:
            results["datalab"] = {"error": f"{type(error).__name__}: {error}"}
        print(f"datalab (pixels): {results['datalab'].get('seconds', float('nan')):.1f} s", flush=True)
        fit = time.perf_counter()
        hidden = mlp_features(pixels, codes, args.seed)
        print(f"MLP features for Datalab: {time.perf_counter() - fit:.1f} s", flush=True)
        results["datalab (MLP features)"] = run_datalab(truth_frame, hidden, pred_probs)
        run = results.get("labelaudit", {}).get("run")
        embeddings = find_embeddings(run, len(truth_frame)) if args.datalab_embeddings and run else None
        if embeddings is not None:
            results["datalab (labelaudit embeddings)"] = run_datalab(truth_frame, embeddings, pred_probs)
    print_table(results, truth, planted_pairs(truth_frame))
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
