"""Nearest-neighbour search at 10k, 100k and 1M rows of 512-d vectors: seconds, peak memory, recall. (issue 14, item 6)

Every (backend, size) runs in a fresh child process, so its peak resident memory (VmHWM) is its own; the
figure printed is the peak *above* the vectors themselves (N·d·4 bytes, printed separately).

Backends:

* ``numpy-exact``: ``labelaudit.core.neighbors.nearest_neighbors(..., reduce_dim=None)``;
* ``numpy-pca128``, ``numpy-pca64``: the same with ``reduce_dim=128`` (what ``"auto"`` picks above 50,000
  rows) or 64: candidates from the top principal directions, re-ranked exactly;
* ``numpy-ivf``: ``reduce_dim=128, lists=2·√N, probe=16`` (what ``"auto"`` picks above 100,000 rows): an
  inverted file of k-means cells in the 128-d projection, each row compared with its 16 nearest cells;
* ``faiss-flat`` / ``faiss-ivf`` (``pip install faiss-cpu``): exact inner-product index, and an inverted file
  with ``4·√N`` lists, 16 probed; ``hnswlib`` (``pip install hnswlib``): M=16, ef_construction=100, ef=64.

Synthetic vectors shaped like embeddings: 1,000 clusters in a 64-d latent space mapped linearly to 512 d,
plus isotropic noise holding about a third of the energy (the hard case for a principal subspace), and 1%
of the rows planted as near copies (cosine ≈ 0.99) of other rows. Recall@10 is measured on 1,000 rows
against the exact search of those rows; "copies" is the share of planted copies found as first neighbour.
``--real`` adds Fashion-MNIST's 70,000 images as 784-d pixel vectors (real structure, no planted copies).

The brute-force backends above 100k rows (faiss-flat from 70k) search a slice of the rows against all
rows and extrapolate linearly to every row (their cost per row is fixed); the line says so.

    OMP_NUM_THREADS=1 python benchmarks/neighbors.py                     # all sizes, all installed backends
    OMP_NUM_THREADS=1 python benchmarks/neighbors.py --sizes 10000 --backends numpy-exact numpy-pca128
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

BACKENDS = ("numpy-exact", "numpy-pca128", "numpy-pca64", "numpy-ivf", "faiss-flat", "faiss-ivf", "hnswlib")
K = 10
RECALL_ROWS = 1000


def synthetic(n: int, d: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(vectors (n, d) float32, planted (m, 2) int64 pairs (original, copy))."""
    rng = np.random.default_rng(seed)
    latent, n_clusters = 64, 1000
    centers = rng.normal(size=(n_clusters, latent)).astype(np.float32)
    mix = (rng.normal(size=(latent, d)) / np.sqrt(latent)).astype(np.float32)
    out = np.empty((n, d), dtype=np.float32)
    for lo in range(0, n, 65_536):
        hi = min(lo + 65_536, n)
        z = centers[rng.integers(0, n_clusters, hi - lo)] + 0.7 * rng.normal(size=(hi - lo, latent)).astype(np.float32)
        out[lo:hi] = z @ mix + 0.35 * rng.normal(size=(hi - lo, d)).astype(np.float32)
    n_pairs = n // 100
    rows = rng.permutation(n)[: 2 * n_pairs].reshape(n_pairs, 2)
    scale = np.linalg.norm(out[rows[:, 0]], axis=1, keepdims=True) * 0.1 / np.sqrt(d)
    out[rows[:, 1]] = out[rows[:, 0]] + scale * rng.normal(size=(n_pairs, d)).astype(np.float32)
    return out, rows


def fashion_pixels() -> np.ndarray:
    from fashion import load_split
    train, _ = load_split("train")
    test, _ = load_split("test")
    return np.concatenate([train, test]).reshape(-1, 784).astype(np.float32)


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    return 0


def _search(backend: str, x: np.ndarray, rows: slice | None):
    """(sims, idx, fixed wall s, fixed cpu s) of the rows in ``rows`` (all when None) against all of x,
    self excluded; the fixed seconds (normalising, projecting) do not grow with the rows searched."""
    from labelaudit.core import neighbors as nb
    n = x.shape[0]
    lo, hi = (0, n) if rows is None else (rows.start, rows.stop)
    if backend == "numpy-ivf":
        assert rows is None
        return (*nb.nearest_neighbors(x, K, reduce_dim=128, lists=int(2 * np.sqrt(n)), probe=16), 0.0, 0.0)
    if backend.startswith("numpy-pca") and rows is None:
        return (*nb.nearest_neighbors(x, K, reduce_dim=int(backend.removeprefix("numpy-pca"))), 0.0, 0.0)
    if backend == "numpy-exact" and rows is None:
        return (*nb.nearest_neighbors(x, K, reduce_dim=None, lists=None), 0.0, 0.0)
    if backend.startswith("numpy"):
        wall, cpu = time.perf_counter(), time.process_time()
        xn = nb.normalize_rows(x)
        y = xn
        if backend.startswith("numpy-pca"):
            y = xn @ nb.principal_projection(xn, int(backend.removeprefix("numpy-pca")))
        fixed = time.perf_counter() - wall, time.process_time() - cpu
        if y is xn:
            return (*nb.search_rows(xn, K, np.arange(lo, hi)), *fixed)
        _, cand = nb.search_rows(y, max(2 * K, K + 16), np.arange(lo, hi))
        return (*_rerank_slice(xn, cand, lo, hi), *fixed)
    xn = nb.normalize_rows(x)
    if backend.startswith("faiss"):
        import faiss
        faiss.omp_set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        if backend == "faiss-flat":
            index = faiss.IndexFlatIP(xn.shape[1])
        else:
            nlist = int(4 * np.sqrt(n))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(xn.shape[1]), xn.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
            train = xn[np.random.default_rng(1).permutation(n)[: min(n, 64 * nlist)]]
            index.train(train)
            index.nprobe = 16
        index.add(xn)
        sims, idx = index.search(xn[lo:hi], K + 1)
    elif backend == "hnswlib":
        import hnswlib
        index = hnswlib.Index(space="ip", dim=xn.shape[1])
        index.init_index(max_elements=n, ef_construction=100, M=16)
        index.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        index.add_items(xn)
        index.set_ef(64)
        idx, dist = index.knn_query(xn[lo:hi], k=K + 1)
        sims = 1 - dist
    else:
        raise SystemExit(f"unknown backend {backend}")
    return (*_drop_self(sims, idx.astype(np.int64), np.arange(lo, hi)), 0.0, 0.0)


def _rerank_slice(xn, cand, lo, hi):
    from labelaudit.core.neighbors import _sorted
    exact = np.einsum("bd,bcd->bc", xn[lo:hi], xn[cand])
    return _sorted(cand, exact, K)


def _drop_self(sims, idx, self_rows):
    keep = idx != self_rows[:, None]
    # a row whose own index is not among its results (an approximate index missed it) drops its last one
    keep[keep.all(axis=1), -1] = False
    return sims[keep].reshape(len(idx), K), idx[keep].reshape(len(idx), K)


def child(args: argparse.Namespace) -> None:
    from labelaudit.core.neighbors import normalize_rows, search_rows
    if args.size == 0:
        x, pairs = fashion_pixels(), np.empty((0, 2), dtype=np.int64)
    else:
        x, pairs = synthetic(args.size)
    n = x.shape[0]
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM: the peak from here on
    base = _status("VmRSS")
    rows = None
    if args.slice_rows:
        rows = slice(0, args.slice_rows)
    wall, cpu = time.perf_counter(), time.process_time()
    sims, idx, fixed_wall, fixed_cpu = _search(args.backend, x, rows)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = _status("VmHWM") - base
    done = idx.shape[0]
    check = np.arange(min(RECALL_ROWS, done))
    _, exact_idx = search_rows(normalize_rows(x), K, check)
    recall = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(idx[check], exact_idx)]))
    copies = float("nan")
    if len(pairs) and rows is None:
        copies = float(np.mean(idx[pairs[:, 1], 0] == pairs[:, 0]))
    print(json.dumps({"wall": wall, "cpu": cpu, "fixed_wall": fixed_wall, "fixed_cpu": fixed_cpu,
                      "rows_done": done, "n": n, "peak_extra": peak,
                      "data_bytes": x.nbytes, "recall": recall, "copies": copies}))


def run_one(backend: str, size: int, slice_rows: int, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, __file__, "--child", "--backend", backend, "--size", str(size),
           "--slice-rows", str(slice_rows)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        return {"error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--real", action="store_true", help="also Fashion-MNIST pixels (70,000 × 784)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--hnsw-1m", action="store_true", help="also build hnswlib's index on 1M rows")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--slice-rows", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    print(f"k={K}, {args.threads} thread(s), load average at start {os.getloadavg()[0]:.1f} (2 cores)")
    print(f"{'data':>18} {'backend':>13} {'wall s':>8} {'cpu s':>8} {'peak MB':>8} {'data MB':>8} "
          f"{'recall@10':>9} {'copies':>7}  note")
    sizes = list(args.sizes) + ([0] if args.real else [])
    for size in sizes:
        for backend in args.backends:
            name = "fashion 70000x784" if size == 0 else f"synthetic {size}x512"
            slice_rows = 0
            # the brute-force kinds cost the same per row: time a slice first when the whole may be too long
            if backend.startswith("numpy-") and backend != "numpy-ivf" and size > 100_000:
                slice_rows = 2000
            elif backend == "faiss-flat" and (size >= 100_000 or size == 0):  # 3-5x slower than numpy-exact
                slice_rows = 2000
            elif backend == "hnswlib" and size > 100_000 and not args.hnsw_1m:
                print(f"{name:>18} {backend:>13}  skipped: a single-threaded build of 1M rows takes well over "
                      f"the run's budget (--hnsw-1m runs it)", flush=True)
                continue
            result = run_one(backend, size, slice_rows, args.threads)
            if "error" in result:
                print(f"{name:>18} {backend:>13}  failed: {result['error']}", flush=True)
                continue
            note = ""
            wall, cpu = result["wall"], result["cpu"]
            if result["rows_done"] < result["n"]:
                factor = result["n"] / result["rows_done"]
                note = f"extrapolated x{factor:.0f} from {result['rows_done']} rows (peak: of the slice)"
                # normalising and projecting are done once; the search grows with the rows
                wall = result["fixed_wall"] + factor * (wall - result["fixed_wall"])
                cpu = result["fixed_cpu"] + factor * (cpu - result["fixed_cpu"])
            copies = "" if result["copies"] != result["copies"] else f"{result['copies']:.3f}"
            print(f"{name:>18} {backend:>13} {wall:8.1f} {cpu:8.1f} {result['peak_extra'] / 2**20:8.0f} "
                  f"{result['data_bytes'] / 2**20:8.0f} {result['recall']:9.3f} {copies:>7}  {note}", flush=True)
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
