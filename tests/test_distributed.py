"""Data-parallel training with 2 CPU processes over gloo: helpers, ELR target sync, and a torchrun scan."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.multiprocessing as mp

from tiny import TINY_MODEL, TINY_SIZE, NAMES, tiny_train_args, write_colour_images, write_csv

WORLD = 2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def join_group(rank: int, port: int) -> None:
    """Set what torchrun would set for process ``rank`` of ``WORLD`` on this machine."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)


def helpers_worker(rank: int, port: int, out: Path) -> None:
    from labelaudit.train import distributed

    join_group(rank, port)
    try:
        assert distributed.data_parallel() and distributed.is_main_process() == (rank == 0)
        # An 11-row permutation: 5 rows each, the same number of steps on both, one row left out.
        order = torch.tensor([7, 3, 10, 0, 5, 1, 9, 2, 8, 4, 6])
        mine = distributed.shard(order)
        assert distributed.shard_size(11) == 5 and len(mine) == 5
        gathered = distributed.all_gather_array(mine.numpy())
        # Arrays of different lengths come back whole and in rank order.
        ragged = distributed.all_gather_array(np.full((rank + 1, 2), rank, np.float32))
        # Each process predicts a block of rows; every process gets all rows, in row order.
        images = np.arange(7 * 2, dtype=np.float64).reshape(7, 2)
        calls = []

        def predict(part):
            calls.append(len(part))
            return part * 10.0

        predicted = distributed.predict_in_shards(predict, images)
        # A per-sample buffer each process updated at its own rows only.
        buffer = torch.zeros(6, 3)
        my_rows = torch.tensor([rank, rank + 2, rank + 4])
        buffer[my_rows] = float(rank + 1)
        distributed.sync_rows([buffer], my_rows)
        folds = distributed.assigned_folds(5)
        probs = np.zeros((4, 2))
        probs[rank::2] = rank + 1.0
        merged, settings = distributed.merge_fold_results(probs, {f"fold_{k}": k for k in folds})
        np.savez(out / f"helpers{rank}.npz", mine=mine.numpy(), gathered=np.stack(gathered),
                 ragged_lengths=[len(part) for part in ragged], ragged_values=np.concatenate(ragged)[:, 0],
                 predicted=predicted, calls=calls, buffer=buffer.numpy(), folds=folds, merged=merged,
                 settings_keys=list(settings))
    finally:
        distributed.teardown()


def test_shard_and_gather_helpers_with_two_processes(tmp_path):
    mp.spawn(helpers_worker, args=(free_port(), tmp_path), nprocs=WORLD)
    results = [np.load(tmp_path / f"helpers{rank}.npz") for rank in range(WORLD)]
    order = [7, 3, 10, 0, 5, 1, 9, 2, 8, 4, 6]
    assert results[0]["mine"].tolist() == order[0::2][:5]
    assert results[1]["mine"].tolist() == order[1::2][:5]
    for result in results:
        assert result["gathered"].tolist() == [order[0::2][:5], order[1::2][:5]]
        assert result["ragged_lengths"].tolist() == [1, 2]
        assert result["ragged_values"].tolist() == [0, 1, 1]
        np.testing.assert_array_equal(result["predicted"], np.arange(14.0).reshape(7, 2) * 10.0)
        assert result["calls"].tolist() == [4]  # ceil(7 / 2) rows each, the last block padded
        assert result["buffer"][:, 0].tolist() == [1, 2, 1, 2, 1, 2]
        np.testing.assert_array_equal(result["merged"], [[1, 1], [2, 2], [1, 1], [2, 2]])
        assert result["settings_keys"].tolist() == ["fold_0", "fold_1", "fold_2", "fold_3", "fold_4"]
    assert results[0]["folds"].tolist() == [0, 2, 4] and results[1]["folds"].tolist() == [1, 3]


def colour_data(n_images: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(N, 16, 16, 3) uint8 noisy single-colour images and their (N,) class indices, as in tiny.py."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n_images) % len(NAMES)
    colours = np.array([[220, 40, 40], [40, 190, 60], [40, 70, 220]], float)[labels]
    pixels = colours[:, None, None, :] + rng.normal(0.0, 25.0, (n_images, TINY_SIZE, TINY_SIZE, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8), labels.astype(np.int64)


def training_worker(rank: int, port: int, out: Path) -> None:
    from labelaudit.methods.registry import create_method
    from labelaudit.train import distributed
    from labelaudit.train.config import TrainConfig
    from labelaudit.train.loop import fit, predict_proba

    join_group(rank, port)
    try:
        images, labels = colour_data(48)
        config = TrainConfig(model=TINY_MODEL, image_size=TINY_SIZE, epochs=4, batch_size=8, device="cpu")
        saved = {}
        for name in ("elr", "elr+"):
            fitted = fit(create_method(name), images, labels, 3, config)
            method = fitted.method
            for k, targets in enumerate(method.per_sample_buffers()):
                saved[f"{name}_targets{k}"] = targets.numpy()
            saved[f"{name}_weights"] = torch.cat([t.detach().float().reshape(-1)
                                                  for t in method.networks().state_dict().values()]).numpy()
            saved[f"{name}_probs"] = predict_proba(method, images, config)
            with distributed.local_only():  # this process alone, every row: the reference order
                saved[f"{name}_local_probs"] = predict_proba(method, images, config)
            saved[f"{name}_loss"] = [row["train_loss"] for row in fitted.history]
        np.savez(out / f"trained{rank}.npz", **saved)
    finally:
        distributed.teardown()


def test_two_process_training_keeps_elr_targets_and_models_identical(tmp_path):
    mp.spawn(training_worker, args=(free_port(), tmp_path), nprocs=WORLD)
    first, second = (np.load(tmp_path / f"trained{rank}.npz") for rank in range(WORLD))
    _, labels = colour_data(48)
    for name, n_buffers in (("elr", 1), ("elr+", 2)):
        for k in range(n_buffers):
            targets = first[f"{name}_targets{k}"]
            np.testing.assert_array_equal(targets, second[f"{name}_targets{k}"])
            # 48 rows, 24 per process, batch 8: every row is trained each epoch by one process, and
            # each process's copy holds the other's rows too.
            assert (targets.sum(axis=1) > 0).all()
        np.testing.assert_array_equal(first[f"{name}_weights"], second[f"{name}_weights"])
        np.testing.assert_array_equal(first[f"{name}_loss"], second[f"{name}_loss"])
        np.testing.assert_array_equal(first[f"{name}_probs"], second[f"{name}_probs"])
        np.testing.assert_allclose(first[f"{name}_probs"], first[f"{name}_local_probs"], atol=1e-6)
    # Easy colours: the data-parallel model has learned them.
    assert np.mean(first["elr_probs"].argmax(axis=1) == labels) > 0.8
    assert np.mean(first["elr_targets0"].argmax(axis=1) == labels) > 0.8


def run_torchrun_scan(root: Path, out: Path, extra: list[str]) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node 2 -m labelaudit scan`` of root/images and root/labels.csv, 3 epochs."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(WORLD),
               "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
               "-m", "labelaudit", "scan", str(root / "images"), str(root / "labels.csv"), "-o", str(out),
               *tiny_train_args(epochs=3), "--batch-size", "8", *extra]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=root)


def test_torchrun_scan_writes_one_run_directory_from_rank_zero(tmp_path):
    rows = write_colour_images(tmp_path, 48, seed=5)
    csv_rows = [*rows, ("missing.png", "red")]
    write_csv(tmp_path / "labels.csv", csv_rows)
    out = tmp_path / "out"
    done = run_torchrun_scan(tmp_path, out, [])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("Audited 48 of 49 rows") == 1  # one summary: only rank 0 prints
    files = sorted(p.name for p in out.iterdir())
    assert files == ["cache", "classes.parquet", "model", "predictions.npz", "run.json", "samples.parquet",
                     "summary.json", "transition.parquet"]
    samples = pd.read_parquet(out / "samples.parquet")
    assert samples["path"].tolist() == [path for path, _ in csv_rows]
    assert samples["status"].iloc[-1] == "missing_file" and (samples["status"].iloc[:-1] == "audited").all()
    predictions = np.load(out / "predictions.npz")
    assert predictions["row_index"].tolist() == list(range(48))
    classes = sorted(NAMES)
    given = np.array([classes.index(label) for _, label in rows])
    np.testing.assert_array_equal(predictions["labels"], given)
    # Predictions are in row order: they agree with each row's (clean) colour label.
    assert np.mean(predictions["pred_probs"].argmax(axis=1) == given) > 0.8


def test_torchrun_scan_with_folds_trains_each_fold_on_one_process(tmp_path):
    rows = write_colour_images(tmp_path, 36, seed=6)
    write_csv(tmp_path / "labels.csv", rows)
    out = tmp_path / "out"
    done = run_torchrun_scan(tmp_path, out, ["--folds", "2", "--quiet"])
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    # --quiet: process 0 alone prints the one-line result (and the unreliable-audit line when it applies)
    result = (f"Audited 36 of 36 rows: estimated wrong labels {summary['estimated_error_rate']:.1%} "
              f"({summary['estimated_errors']:.0f}), {summary['n_issues']} flagged; run directory {out}\n")
    unreliable = "" if summary["reliable"] else f"Unreliable audit: {summary['reliability_reason']}\n"
    assert done.stdout == result + unreliable
    samples = pd.read_parquet(out / "samples.parquet")
    assert samples["path"].tolist() == [path for path, _ in rows]
    assert sorted(samples["fold"].unique().tolist()) == [0, 1]
    # Out-of-fold predictions of both processes' folds, in row order: they match the colours.
    assert np.mean(samples["suggested_label"].to_numpy() == np.array([label for _, label in rows])) > 0.8
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == WORLD
    assert set(summary["settings"]["method_settings"]) == {"fold_0", "fold_1", "scored_with"}
