"""Cost per CSV row of confining paths to the images folder (labelaudit.data.paths).

Makes ``--files`` empty files in ``--folders`` class folders under a temporary images root
(reached through a symlinked root, as a user's may be), then times, per row:

* ``resolve_under_root(root, path)``: the one-path function (resolves the root on every call);
* ``PathConfiner(root).resolve(path)``: what ``load_labelled_images`` uses (root and each folder
  resolved once), when this version of labelaudit has it;
* the data layer's whole per-row path-and-label step (``_path_and_label_statuses``).

Each timing is the best of ``--repeats`` passes (the machine may be shared). Run it against another
checkout with PYTHONPATH=that/checkout (from a directory without a ``labelaudit`` folder) to compare.

    python benchmarks/path_checks.py --files 20000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from labelaudit.data import dataset
from labelaudit.data import paths as paths_module


def make_tree(base: Path, n_files: int, n_folders: int) -> tuple[Path, list[str]]:
    """base/real/<folder>/<i>.png empty files, base/images -> base/real; and their CSV paths."""
    real = base / "real"
    relative = []
    for i in range(n_files):
        folder = f"class{i % n_folders}"
        relative.append(f"{folder}/{i}.png")
    for folder in {p.split("/")[0] for p in relative}:
        (real / folder).mkdir(parents=True)
    for p in relative:
        (real / p).touch()
    (base / "images").symlink_to(real, target_is_directory=True)
    return base / "images", relative


def best_seconds(function, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--folders", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="labelaudit-paths-") as scratch:
        root, relative = make_tree(Path(scratch), args.files, args.folders)
        labels = ["x"] * len(relative)
        timings = {
            "resolve_under_root per row": best_seconds(
                lambda: [paths_module.resolve_under_root(root, p) for p in relative], args.repeats),
        }
        if hasattr(paths_module, "PathConfiner"):
            def confine_all() -> list:
                resolve = paths_module.PathConfiner(root).resolve
                return [resolve(p) for p in relative]

            timings["PathConfiner.resolve per row"] = best_seconds(confine_all, args.repeats)
        timings["data layer path+label step per row"] = best_seconds(
            lambda: dataset._path_and_label_statuses(root.resolve(), relative, labels, None), args.repeats)
    print(f"{args.files} files in {args.folders} folders, labelaudit at {Path(paths_module.__file__).parent.parent}")
    for name, seconds in timings.items():
        print(f"  {name:40s} {1e6 * seconds / args.files:8.1f} µs  "
              f"({seconds:.3f} s; {1e6 * seconds / args.files:.0f} s per 1M rows)")


if __name__ == "__main__":
    main()
