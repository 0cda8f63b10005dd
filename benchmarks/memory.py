"""Peak memory of 1,000,000 label-CSV rows of metadata, without pixels (goal: under 2 GB).

Writes a label CSV of N rows (``dir/img.png,class``, 10 classes, one extra column), then runs each
stage in a fresh process and prints that process's peak RSS (ru_maxrss) and time:

* ``imports``  — importing the data and report layers (the floor every stage includes);
* ``csv``      — ``read_label_csv`` of the N rows (pyarrow);
* ``csv-python`` — the same file through the reader's Python ``csv`` reference path, for comparison;
* ``metadata`` — ``load_labelled_images`` for the N rows: CSV, path confinement, label checks,
  duplicate detection, the per-row report frame. Decoding is replaced by a stub that marks every
  file usable with a 1x1 pixel, and — unless ``--create-files`` — the file-system part of path
  confinement (``resolve``/``stat``) is replaced by its lexical checks, because making a million
  files is not practical here. So this measures the memory of the metadata, not file-system time;
* ``report``   — ``metadata`` plus scoring N rows (random class probabilities) and writing
  samples.parquet in streaming batches (``write_frame_in_batches``);
* ``report-whole`` — the same with the one-piece ``write_parquet``, for comparison.

    python benchmarks/memory.py                          # 1,000,000 rows
    python benchmarks/memory.py --rows 50000 --create-files --out benchmarks/out/memory-files.md
    python benchmarks/memory.py --quote-all --stages csv csv-python   # every cell quoted (R's write.csv)
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

STAGES = ("imports", "csv", "csv-python", "metadata", "report", "report-whole")
N_CLASSES = 10


def write_label_csv(path: Path, n_rows: int, *, quote_all: bool = False) -> None:
    q = '"' if quote_all else ""  # quote_all: every cell quoted, as R's write.csv does
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write(f"{q}path{q},{q}label{q},{q}source{q}\n")
        for i in range(n_rows):
            handle.write(f"{q}d{i % 1000:03d}/img{i:07d}.png{q},{q}class{i % N_CLASSES}{q},{q}batch{i // 100_000}{q}\n")


def create_files(root: Path, n_rows: int) -> None:
    for d in range(min(n_rows, 1000)):
        (root / f"d{d:03d}").mkdir(parents=True, exist_ok=True)
    for i in range(n_rows):
        (root / f"d{i % 1000:03d}" / f"img{i:07d}.png").touch()


def run_stage(stage: str, root: Path, csv_path: Path, out_dir: Path, lexical_paths: bool) -> dict:
    """Runs inside the child process."""
    import resource

    started = time.perf_counter()
    import numpy as np

    import labelaudit.data.dataset as dataset_module
    from labelaudit.data.cache import DecodedFiles, DecodeReport
    from labelaudit.data.csvio import _read_label_csv_with_python, read_label_csv
    from labelaudit.data.paths import EMPTY_PATH, OUTSIDE_ROOT, _climbs_above_start
    from labelaudit.report.parquet import write_parquet
    from labelaudit.report.schema import SAMPLES_SCHEMA
    from labelaudit.report.stream import write_frame_in_batches
    from labelaudit.report.tables import samples_frame, score_rows

    class LexicalConfiner:
        """PathConfiner's lexical checks only (no resolve/stat), for files that do not exist."""

        def __init__(self, root_dir: Path) -> None:
            self.root = os.fspath(root_dir)

        def resolve(self, relative: str):
            if not relative.strip():
                return None, EMPTY_PATH
            if relative.startswith("/") or _climbs_above_start(relative):
                return None, OUTSIDE_ROOT
            return os.path.join(self.root, relative), None

    def stub_decode(files, image_size, **_):
        n = len(files)
        return DecodedFiles(np.zeros((n, 1, 1, 3), np.uint8), np.arange(n, dtype=np.int64), [None] * n,
                            DecodeReport(cache_used=False, decoded=n, reused=0))

    detail = ""
    if stage in ("csv", "csv-python"):
        table = (read_label_csv if stage == "csv" else _read_label_csv_with_python)(csv_path)
        detail = f"{len(table)} rows"
    elif stage != "imports":
        if lexical_paths:
            dataset_module.PathConfiner = LexicalConfiner
        dataset_module.decode_files = stub_decode
        data = dataset_module.load_labelled_images(root, csv_path, image_size=1, workers=1)
        detail = f"{len(data.rows)} rows, {len(data.labels)} audited"
        if stage.startswith("report"):
            rng = np.random.default_rng(0)
            probs = rng.dirichlet(np.ones(N_CLASSES), size=len(data.labels))
            scores = score_rows(data.labels, probs, np.full((N_CLASSES, N_CLASSES), 0.01) + 0.9 * np.eye(N_CLASSES))
            del probs
            samples = samples_frame(data.rows, data.row_index, data.classes, scores,
                                    np.zeros(len(data.labels), np.int16))
            del data, scores
            writer = write_frame_in_batches if stage == "report" else write_parquet
            writer(samples, out_dir / f"{stage}.parquet", schema=SAMPLES_SCHEMA, metadata={"classes": "x"})
            detail += ", samples.parquet written"
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"stage": stage, "seconds": time.perf_counter() - started, "peak_mb": peak_mb, "detail": detail}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--create-files", action="store_true",
                        help="create the N (empty) files so path confinement really stats them (slow for large N)")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--quote-all", action="store_true", help="write every CSV cell quoted")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as Markdown here")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)  # stage root csv out_dir
    args = parser.parse_args()
    if args.child:
        stage, root, csv_path, out_dir = args.child
        print(json.dumps(run_stage(stage, Path(root), Path(csv_path), Path(out_dir), not args.create_files)))
        return

    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs; {args.rows:,} rows"
          f"{' (every cell quoted)' if args.quote_all else ''}; "
          f"file system {'really checked' if args.create_files else 'not touched (lexical path checks)'}")
    results = []
    with tempfile.TemporaryDirectory(prefix="labelaudit-memory-") as scratch:
        scratch_path = Path(scratch)
        root = scratch_path / "images"
        root.mkdir()
        csv_path = scratch_path / "labels.csv"
        write_label_csv(csv_path, args.rows, quote_all=args.quote_all)
        if args.create_files:
            create_files(root, args.rows)
        print(f"label CSV: {csv_path.stat().st_size / 1e6:.0f} MB")
        for stage in args.stages:
            command = [sys.executable, __file__, "--child", stage, str(root), str(csv_path), str(scratch_path)]
            if args.create_files:
                command.insert(2, "--create-files")
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            completed = subprocess.run(command, capture_output=True, text=True, env=env)
            if completed.returncode != 0:
                raise SystemExit(f"stage {stage} failed:\n{completed.stderr[-3000:]}")
            result = json.loads(completed.stdout.strip().splitlines()[-1])
            results.append(result)
            print(f"  {stage:13s} peak RSS {result['peak_mb']:7.0f} MB  {result['seconds']:6.1f} s  {result['detail']}")
    lines = [f"# Peak memory of {args.rows:,} label rows without pixels", "",
             f"File system: {'real (empty files)' if args.create_files else 'lexical path checks only'}; "
             "decoding stubbed. Each stage is a fresh process; peak RSS = ru_maxrss.", "",
             "| stage | peak RSS MB | seconds |", "|---|---:|---:|"]
    lines += [f"| {r['stage']} | {r['peak_mb']:.0f} | {r['seconds']:.1f} |" for r in results]
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
