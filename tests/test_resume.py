"""Ctrl-C during training saves a checkpoint; ``--resume`` continues and ends where an uninterrupted run ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from labelaudit.audit import DatasetSpec, ScanSettings, run_scan
from labelaudit.cli import console
from labelaudit.cli.app import app
from labelaudit.errors import LabelAuditError
from labelaudit.methods.registry import create_method
from labelaudit.train.config import TrainConfig
from labelaudit.train.progress import SilentProgress
from labelaudit.train.resume import TrainingInterrupted

from tiny import REPO, TINY_MODEL, TINY_SIZE

runner = CliRunner()
EPOCHS, BATCH = 3, 16  # 64 images: 4 steps per epoch, 12 in all
SCORES = ["p_given", "label_quality", "error_probability"]
SCAN_CHECKPOINT, TRAIN_CHECKPOINT = "checkpoint-scan.pt", "checkpoint-train.pt"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, sample_maker) -> Path:
    root = tmp_path_factory.mktemp("resume")
    sample_maker.make_dataset(root, n_images=64, size=TINY_SIZE, noise="symmetric", noise_rate=0.15, seed=5)
    return root


class CountingProgress(SilentProgress):
    """Counts optimiser steps (of every stage) and presses Ctrl-C after ``interrupt_at`` of them
    (counted in the stage named ``stage`` only, when given)."""

    def __init__(self, interrupt_at: int | None = None, stage: str | None = None) -> None:
        self.interrupt_at, self.stage, self.steps, self.stage_steps, self.stages = interrupt_at, stage, 0, 0, []

    def start(self, description: str, total_steps: int) -> None:
        self.stages.append(description)
        self.stage_steps = 0

    def advance(self, steps: int = 1) -> None:
        self.steps += steps
        self.stage_steps += steps
        counted = self.steps if self.stage is None else self.stage_steps if self.stages[-1] == self.stage else 0
        if self.interrupt_at is not None and counted >= self.interrupt_at:
            raise KeyboardInterrupt


def scan_settings(dataset: Path, out: Path, method: str, *, resume: bool = False) -> ScanSettings:
    train = TrainConfig(model=TINY_MODEL, image_size=TINY_SIZE, epochs=EPOCHS, batch_size=BATCH, device="cpu",
                        seed=7)
    return ScanSettings(dataset=DatasetSpec(dataset / "images", dataset / "labels.csv"), out=out, train=train,
                        method=method, resume=resume)


def cli_args(dataset: Path, out: Path, *extra: str) -> list[str]:
    return [str(dataset / "images"), str(dataset / "labels.csv"), "-o", str(out), "--quiet", "--model", TINY_MODEL,
            "--image-size", str(TINY_SIZE), "--epochs", str(EPOCHS), "--batch-size", str(BATCH), "--device", "cpu",
            *extra]


# (method, steps before Ctrl-C): forward trains a 12-step CE model first, so 18 is mid-way in its second stage.
@pytest.mark.parametrize("method, interrupt_at", [("elr", 6), ("elr+", 6), ("forward", 18)])
def test_interrupted_then_resumed_scan_equals_an_uninterrupted_one(tmp_path, dataset, method, interrupt_at):
    whole = run_scan(scan_settings(dataset, tmp_path / "whole", method))

    out = tmp_path / "resumed"
    with pytest.raises(TrainingInterrupted) as interrupted:
        run_scan(scan_settings(dataset, out, method), progress=CountingProgress(interrupt_at))
    assert interrupted.value.epochs_done == 1 and interrupted.value.epochs == EPOCHS
    assert interrupted.value.checkpoint == out / SCAN_CHECKPOINT and (out / SCAN_CHECKPOINT).is_file()
    assert not (out / "samples.parquet").exists()

    progress = CountingProgress()
    resumed = run_scan(scan_settings(dataset, out, method, resume=True), progress=progress)
    # Only the main stage ran (forward's CE model is not trained again); the first epoch was skipped
    # (reported as done at once) and the last two ran.
    assert progress.stages == [f"training {method}"]
    assert progress.steps == EPOCHS * 4
    assert not (out / SCAN_CHECKPOINT).exists()

    expected = pd.read_parquet(tmp_path / "whole" / "samples.parquet")
    actual = pd.read_parquet(out / "samples.parquet")
    assert len(actual) == len(expected) == 64
    for column in SCORES:
        assert np.allclose(actual[column], expected[column], atol=1e-6, rtol=0), column
    assert actual["rank"].tolist() == expected["rank"].tolist()
    assert resumed.summary["settings"]["method_settings"] == whole.summary["settings"]["method_settings"]
    assert resumed.summary["final_train_loss"] == pytest.approx(whole.summary["final_train_loss"], abs=1e-6)


def test_ctrl_c_in_train_prints_the_hint_and_resume_gives_the_same_weights(tmp_path, dataset, monkeypatch):
    whole = runner.invoke(app, ["train", *cli_args(dataset, tmp_path / "whole", "--method", "elr")])
    assert whole.exit_code == 0, whole.output

    steps = {"n": 0}
    original_advance = console.RichProgress.advance

    def advance_then_ctrl_c(self, n: int = 1) -> None:
        original_advance(self, n)
        steps["n"] += n
        if steps["n"] == 9:  # one step into the third epoch
            raise KeyboardInterrupt

    out = tmp_path / "resumed"
    with monkeypatch.context() as patch:
        patch.setattr(console.RichProgress, "advance", advance_then_ctrl_c)
        interrupted = runner.invoke(app, ["train", *cli_args(dataset, out, "--method", "elr")])
    assert interrupted.exit_code == 130
    lines = interrupted.stderr.strip().splitlines()
    assert len(lines) == 1 and "2 of 3 epochs saved" in lines[0], interrupted.stderr
    assert "`labelaudit train` command with --resume" in lines[0]
    assert not (out / "model").exists() and (out / TRAIN_CHECKPOINT).is_file()

    resumed = runner.invoke(app, ["train", *cli_args(dataset, out, "--method", "elr", "--resume")])
    assert resumed.exit_code == 0, resumed.output
    expected = load_file(str(tmp_path / "whole" / "model" / "model.safetensors"))
    actual = load_file(str(out / "model" / "model.safetensors"))
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.allclose(actual[name].double(), expected[name].double(), atol=1e-6, rtol=0), name
    assert not (out / TRAIN_CHECKPOINT).exists()


def test_glc_training_resumes_after_its_corruption_estimate(tmp_path, dataset):
    from labelaudit.training import TrainSettings, run_train

    gold = tmp_path / "gold.csv"
    pd.read_csv(dataset / "truth.csv").iloc[::4].to_csv(gold, index=False)
    overrides = {"model": TINY_MODEL, "image_size": TINY_SIZE, "epochs": EPOCHS, "batch_size": BATCH,
                 "device": "cpu"}

    def settings(out: Path, resume: bool = False) -> TrainSettings:
        return TrainSettings(out=out, dataset=DatasetSpec(dataset / "images", dataset / "labels.csv"),
                             method="glc", trusted=gold, train_overrides=overrides, resume=resume)

    whole = run_train(settings(tmp_path / "whole"))
    with pytest.raises(TrainingInterrupted) as interrupted:
        run_train(settings(tmp_path / "resumed"), progress=CountingProgress(5, stage="training glc"))
    assert interrupted.value.epochs_done == 1
    resumed = run_train(settings(tmp_path / "resumed", resume=True))
    # Ĉ is estimated again (the same, from the same seed); the GLC network continues from epoch 2.
    assert resumed.metrics["method_settings"] == whole.metrics["method_settings"]
    expected = load_file(str(whole.model_dir / "model.safetensors"))
    actual = load_file(str(resumed.model_dir / "model.safetensors"))
    for name in expected:
        assert torch.allclose(actual[name].double(), expected[name].double(), atol=1e-6, rtol=0), name


@pytest.fixture()
def interrupted_scan(tmp_path, dataset) -> Path:
    out = tmp_path / "out"
    with pytest.raises(TrainingInterrupted):
        run_scan(scan_settings(dataset, out, "elr"), progress=CountingProgress(5))
    return out


@pytest.mark.parametrize("change, message", [
    (["--lr", "0.1"], "(train.lr: 0.2 then, 0.1 now)"),
    (["--seed", "3"], "(train.seed: 7 then, 3 now)"),
    (["--method", "ce"], "(inputs.method: \"elr\" then, \"ce\" now)"),
])
def test_resume_with_other_settings_is_refused(interrupted_scan, dataset, change, message):
    args = ["scan", *cli_args(dataset, interrupted_scan, "--seed", "7", "--resume"), *change]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: the checkpoint ") and message in lines[0], result.stderr
    assert (interrupted_scan / SCAN_CHECKPOINT).is_file()  # kept for the right command


def test_resume_after_an_image_changed_is_refused(tmp_path, dataset):
    copy = tmp_path / "data"
    (copy / "images").mkdir(parents=True)
    (copy / "labels.csv").write_bytes((dataset / "labels.csv").read_bytes())
    for image in (dataset / "images").iterdir():
        (copy / "images" / image.name).write_bytes(image.read_bytes())
    out = tmp_path / "out"
    with pytest.raises(TrainingInterrupted):
        run_scan(scan_settings(copy, out, "elr"), progress=CountingProgress(5))
    from PIL import Image

    Image.new("RGB", (TINY_SIZE, TINY_SIZE), (1, 2, 3)).save(sorted((copy / "images").iterdir())[0])
    with pytest.raises(LabelAuditError, match=r"other inputs or settings \(data_hash: "):
        run_scan(scan_settings(copy, out, "elr", resume=True))


@pytest.mark.parametrize("command", ["scan", "train"])
def test_resume_without_a_checkpoint_is_one_line_exit_2(tmp_path, dataset, command):
    result = runner.invoke(app, [command, *cli_args(dataset, tmp_path / "out", "--resume")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: nothing to resume in "), result.stderr
    assert "run without --resume" in lines[0]


def test_a_single_model_checkpoint_does_not_resume_a_folds_scan(interrupted_scan, dataset):
    result = runner.invoke(app, ["scan", *cli_args(dataset, interrupted_scan, "--seed", "7", "--folds", "2",
                                                   "--resume")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "(inputs.folds: 1 then, 2 now)" in lines[0], result.stderr


def test_a_finished_train_keeps_an_interrupted_scans_checkpoint(interrupted_scan, dataset):
    result = runner.invoke(app, ["train", *cli_args(dataset, interrupted_scan, "--method", "ce", "--epochs", "1")])
    assert result.exit_code == 0, result.output
    assert (interrupted_scan / SCAN_CHECKPOINT).is_file()
    resumed = runner.invoke(app, ["scan", *cli_args(dataset, interrupted_scan, "--seed", "7", "--resume")])
    assert resumed.exit_code == 0, resumed.output
    assert not (interrupted_scan / SCAN_CHECKPOINT).exists()


def test_damaged_checkpoint_is_refused(interrupted_scan, dataset):
    checkpoint = interrupted_scan / SCAN_CHECKPOINT
    checkpoint.write_bytes(checkpoint.read_bytes()[:200])
    result = runner.invoke(app, ["scan", *cli_args(dataset, interrupted_scan, "--seed", "7", "--resume")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: cannot read checkpoint {checkpoint}"), result.stderr


def test_checkpoint_holds_no_code_and_loads_with_weights_only(interrupted_scan):
    state = torch.load(interrupted_scan / SCAN_CHECKPOINT, map_location="cpu", weights_only=True)
    assert state["epochs_done"] == 1
    assert state["method"]["targets"].shape == (64, 8)
    assert state["method"]["targets"].abs().sum() > 0  # one epoch of ELR targets
    assert set(state["rng"]) >= {"torch", "generator", "numpy", "python"}
    assert state["optimizer"]["state"]  # momentum buffers


def test_elr_state_round_trips_targets_and_the_chosen_setting():
    from labelaudit.train.loop import create_network

    config = TrainConfig(model=TINY_MODEL, image_size=TINY_SIZE)
    source = create_method("elr")
    source.build_networks(lambda: create_network(config, 3), 3)
    source.targets = torch.rand(5, 3)
    source.beta, source.lam, source.choice, source.probe_epoch = 0.9, 1.0, "auto: asymmetric", 2
    copy = create_method("elr")
    copy.build_networks(lambda: create_network(config, 3), 3)
    copy.load_state_dict(source.state_dict())
    assert torch.equal(copy.targets, source.targets) and copy.targets is not source.targets
    assert (copy.beta, copy.lam, copy.choice, copy.probe_epoch) == (0.9, 1.0, "auto: asymmetric", 2)
    for name, tensor in source.networks().state_dict().items():
        assert torch.equal(copy.networks().state_dict()[name], tensor)


def test_elr_plus_state_holds_both_ema_networks_and_targets():
    from labelaudit.train.loop import create_network

    config = TrainConfig(model=TINY_MODEL, image_size=TINY_SIZE)
    source = create_method("elr+")
    source.build_networks(lambda: create_network(config, 3), 3)
    source.targets = [torch.rand(4, 3), torch.rand(4, 3)]
    with torch.no_grad():
        next(source.ema(1).parameters()).add_(1.0)  # EMA differs from its raw network
    copy = create_method("elr+")
    copy.build_networks(lambda: create_network(config, 3), 3)
    copy.load_state_dict(source.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(copy.targets, source.targets))
    assert torch.equal(next(copy.ema(1).parameters()), next(source.ema(1).parameters()))
    assert not torch.equal(next(copy.ema(1).parameters()), next(copy.network(1).parameters()))


DRIVER = """
import signal
import sys
from pathlib import Path
from labelaudit.cli import console

# A shell without job control starts background jobs with SIGINT ignored, and children inherit that
# (e.g. a test run under nohup … &): act like a process started from a terminal.
signal.signal(signal.SIGINT, signal.default_int_handler)

started, original = Path(sys.argv[1]), console.RichProgress.advance

def advance(self, steps=1):
    original(self, steps)
    started.touch()  # training is under way: the test may press Ctrl-C now

console.RichProgress.advance = advance
sys.argv = ["labelaudit", *sys.argv[2:]]
from labelaudit.cli.app import main
main()
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT")
def test_real_sigint_to_a_training_process_saves_a_checkpoint(tmp_path, dataset):
    started, out = tmp_path / "started", tmp_path / "out"
    args = ["scan", *cli_args(dataset, out, "--epochs", "400")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-c", DRIVER, str(started), *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not started.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists(), process.communicate()[1]
        time.sleep(1.0)  # let it finish an epoch or more
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "epochs saved in" in lines[0] and "with --resume" in lines[0], stderr
    state = torch.load(out / SCAN_CHECKPOINT, map_location="cpu", weights_only=True)
    assert 0 <= state["epochs_done"] < 400
    with pytest.raises(LabelAuditError, match="other inputs or settings"):
        run_scan(scan_settings(dataset, out, "elr", resume=True))  # 3 epochs now, 400 then


# --- scan --folds: Ctrl-C keeps the finished folds and the current fold's training --------------------

FOLDS = 2  # 32 training images per fold: 2 steps per epoch, 6 per fold


def folds_settings(dataset: Path, out: Path, *, folds: int = FOLDS, resume: bool = False) -> ScanSettings:
    settings = scan_settings(dataset, out, "elr", resume=resume)
    settings.folds = folds
    return settings


@pytest.fixture(scope="module")
def uninterrupted_folds(tmp_path_factory, dataset) -> Path:
    out = tmp_path_factory.mktemp("folds") / "whole"
    run_scan(folds_settings(dataset, out))
    return out


# (steps before Ctrl-C, fold interrupted, folds done, epochs of that fold saved)
@pytest.mark.parametrize("interrupt_at, fold, folds_done, epochs_done", [(3, 0, 0, 1), (9, 1, 1, 1), (6, 0, 0, 2)])
def test_interrupted_then_resumed_folds_scan_equals_an_uninterrupted_one(tmp_path, dataset, uninterrupted_folds,
                                                                          interrupt_at, fold, folds_done,
                                                                          epochs_done):
    out = tmp_path / "resumed"
    with pytest.raises(TrainingInterrupted) as interrupted:
        run_scan(folds_settings(dataset, out), progress=CountingProgress(interrupt_at))
    assert (interrupted.value.fold, interrupted.value.folds_done, interrupted.value.epochs_done) == (
        fold, folds_done, epochs_done)
    assert sorted(path.name for path in out.iterdir() if "checkpoint" in path.name) == [SCAN_CHECKPOINT]
    assert not (out / "samples.parquet").exists()
    state = torch.load(out / SCAN_CHECKPOINT, map_location="cpu", weights_only=True)
    assert list(state["completed_folds"]) == list(range(folds_done))
    assert state["training"]["epochs_done"] == epochs_done

    progress = CountingProgress()
    resumed = run_scan(folds_settings(dataset, out, resume=True), progress=progress)
    # finished folds are not trained again; the interrupted one reports its saved epochs as done at once
    assert progress.stages == [f"fold {k + 1}/{FOLDS}" for k in range(fold, FOLDS)]
    assert progress.steps == 6 * (FOLDS - fold)
    assert not any("checkpoint" in path.name for path in out.iterdir())

    expected = pd.read_parquet(uninterrupted_folds / "samples.parquet")
    actual = pd.read_parquet(out / "samples.parquet")
    assert len(actual) == 64 and actual["fold"].tolist() == expected["fold"].tolist()
    for column in SCORES:
        assert np.allclose(actual[column], expected[column], atol=1e-6, rtol=0), column
    assert actual["rank"].tolist() == expected["rank"].tolist()
    import json

    whole_summary = json.loads((uninterrupted_folds / "summary.json").read_text())
    assert resumed.summary["settings"]["method_settings"] == whole_summary["settings"]["method_settings"]


def test_ctrl_c_between_folds_keeps_the_finished_fold(tmp_path, dataset, uninterrupted_folds, monkeypatch):
    import labelaudit.audit as audit

    calls = {"n": 0}
    original = audit.predict_proba

    def predict_then_ctrl_c(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # fold 2 trained, Ctrl-C while it scores its rows
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        patch.setattr(audit, "predict_proba", predict_then_ctrl_c)
        with pytest.raises(TrainingInterrupted) as interrupted:
            run_scan(folds_settings(dataset, out))
    assert (interrupted.value.folds_done, interrupted.value.fold, interrupted.value.epochs_done) == (1, 1, 0)
    progress = CountingProgress()
    run_scan(folds_settings(dataset, out, resume=True), progress=progress)
    assert progress.stages == [f"fold 2/{FOLDS}"] and progress.steps == 6  # fold 2 again, from its start
    expected = pd.read_parquet(uninterrupted_folds / "samples.parquet")
    actual = pd.read_parquet(out / "samples.parquet")
    assert np.allclose(actual["error_probability"], expected["error_probability"], atol=1e-6, rtol=0)


def test_ctrl_c_in_a_folds_scan_prints_the_hint_and_resume_refuses_other_settings(tmp_path, dataset, monkeypatch):
    steps = {"n": 0}
    original_advance = console.RichProgress.advance

    def advance_then_ctrl_c(self, n: int = 1) -> None:
        original_advance(self, n)
        steps["n"] += n
        if steps["n"] == 9:  # fold 2, one step into its second epoch
            raise KeyboardInterrupt

    out = tmp_path / "out"
    args = ["scan", *cli_args(dataset, out, "--seed", "7", "--folds", str(FOLDS))]
    with monkeypatch.context() as patch:
        patch.setattr(console.RichProgress, "advance", advance_then_ctrl_c)
        interrupted = runner.invoke(app, args)
    assert interrupted.exit_code == 130
    lines = interrupted.stderr.strip().splitlines()
    assert lines == [f"Interrupted: 1 of 2 folds and 1 of 3 epochs of fold 2 saved in {out / SCAN_CHECKPOINT}; "
                     "to continue, run the same `labelaudit scan` command with --resume"], interrupted.stderr

    for change, message in [(["--folds", "3"], "(inputs.folds: 2 then, 3 now)"),
                            (["--lr", "0.1"], "(train.lr: 0.2 then, 0.1 now)"),
                            (["--folds", "1"], "(inputs.folds: 2 then, 1 now)")]:
        refused = runner.invoke(app, [*args, "--resume", *change])
        assert refused.exit_code == 2
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: the checkpoint ") and message in lines[0], lines
    assert (out / SCAN_CHECKPOINT).is_file()
    resumed = runner.invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert not (out / SCAN_CHECKPOINT).exists() and (out / "samples.parquet").is_file()
