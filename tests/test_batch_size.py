"""``--batch-size N|auto``: parsing, the GPU memory probe (with a fake out-of-memory step), and the CPU default."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from labelaudit.cli.app import app
from labelaudit.errors import LabelAuditError
from labelaudit.methods.registry import create_method, method_names
from labelaudit.train import device as device_module
from labelaudit.train.config import (
    AUTO_BATCH_CAP, AUTO_IMAGES, DEFAULT_BATCH_SIZE, MIN_AUTO_STEPS, TrainConfig, auto_epochs, parse_batch_size,
)
from labelaudit.train.device import Accelerator, probe_batch_size, resolve_batch_size
from labelaudit.train.loop import create_network

from tiny import TINY_MODEL, TINY_SIZE, tiny_train_args

runner = CliRunner()
N_CLASSES = 3


def out_of_memory_above(limit: int, calls: list[int]):
    """A training step that, like a GPU with room for ``limit`` images, fails for larger batches."""
    def step(size: int) -> None:
        calls.append(size)
        if size > limit:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (fake, batch {size})")
    return step


def tiny_config(**changes) -> TrainConfig:
    return TrainConfig(model=TINY_MODEL, image_size=TINY_SIZE, epochs=1, device="cpu", **changes)


@pytest.mark.parametrize("text, expected", [("2", 2), ("32", 32), (" 512 ", 512), ("auto", "auto"), ("AUTO", "auto"),
                                            (64, 64)])
def test_parse_batch_size_accepts_integers_from_2_and_auto(text, expected):
    assert parse_batch_size(text) == expected


@pytest.mark.parametrize("text", ["1", "0", "-4", "big", "2.5", "", "²", True])
def test_parse_batch_size_refuses_other_values(text):
    with pytest.raises(LabelAuditError, match="at least 2 or 'auto'"):
        parse_batch_size(text)


def test_train_config_normalises_and_checks_the_batch_size():
    assert TrainConfig(batch_size="64").batch_size == 64
    assert TrainConfig(batch_size="auto").auto_batch_size
    assert not TrainConfig().auto_batch_size and TrainConfig().batch_size == DEFAULT_BATCH_SIZE
    with pytest.raises(LabelAuditError):
        TrainConfig(batch_size=1)


def test_unresolved_auto_counts_as_the_default_for_automatic_epochs():
    assert TrainConfig(batch_size="auto").epochs_for(5000) == TrainConfig().epochs_for(5000)
    assert TrainConfig(batch_size=512).epochs_for(5000) != TrainConfig().epochs_for(5000)


def test_probe_halves_on_out_of_memory_and_keeps_half_of_the_largest_fit():
    calls: list[int] = []
    released: list[int] = []
    probe = probe_batch_size(out_of_memory_above(700, calls), 1024, release_memory=lambda: released.append(1))
    assert calls == [2048, 1024, 512]
    assert len(released) == 2  # after each failed try, not after the one that fit
    assert probe.largest_fit == 512 and probe.batch_size == 256
    assert probe.tried == (2048, 1024, 512)


def test_probe_starts_at_twice_the_cap_so_a_capped_batch_keeps_the_margin():
    calls: list[int] = []
    probe = probe_batch_size(out_of_memory_above(10_000, calls), 100, release_memory=lambda: None)
    assert calls == [200] and probe.batch_size == 100  # 200 fit: 100 is both the cap and half of it
    calls.clear()
    probe = probe_batch_size(out_of_memory_above(150, calls), 100, release_memory=lambda: None)
    assert calls == [200, 100] and probe.batch_size == 50  # the cap itself is at the edge: halve it


def test_probe_halves_sizes_that_are_not_powers_of_two_down_to_2():
    calls: list[int] = []
    probe = probe_batch_size(out_of_memory_above(30, calls), 100, release_memory=lambda: None)
    assert calls == [200, 100, 50, 25] and probe.batch_size == 12
    calls.clear()
    probe = probe_batch_size(out_of_memory_above(3, calls), 6, release_memory=lambda: None)
    assert calls == [12, 6, 3] and probe.batch_size == 2  # half of 3 is 1, which BatchNorm cannot train on


def test_probe_fails_in_one_line_when_not_even_2_fit():
    calls: list[int] = []
    with pytest.raises(LabelAuditError, match="not even a batch of 2"):
        probe_batch_size(out_of_memory_above(1, calls), 16, release_memory=lambda: None)
    assert calls == [32, 16, 8, 4, 2]


def test_probe_lets_other_errors_through():
    def broken(size: int) -> None:
        raise RuntimeError("a bug, not memory")

    with pytest.raises(RuntimeError, match="a bug"):
        probe_batch_size(broken, 64, release_memory=lambda: None)


def test_auto_on_cpu_is_the_default_and_says_why():
    requested = tiny_config(batch_size="auto")
    method = create_method("elr")
    config = resolve_batch_size(requested, method, Accelerator(torch.device("cpu")), n_samples=500,
                                n_classes=N_CLASSES, create_network=lambda: pytest.fail("no probe on CPU"))
    assert config.batch_size == DEFAULT_BATCH_SIZE
    assert requested.batch_size == "auto" and requested.batch_size_choice is None  # the caller's is untouched
    assert "cpu" in config.batch_size_choice and "memory" in config.batch_size_choice


def test_a_given_batch_size_is_kept():
    config = resolve_batch_size(tiny_config(batch_size=48), create_method("ce"), Accelerator(torch.device("cpu")),
                                n_samples=500, n_classes=N_CLASSES,
                                create_network=lambda: pytest.fail("no probe for a given size"))
    assert (config.batch_size, config.batch_size_choice) == (48, "given")
    assert resolve_batch_size(config, create_method("ce"), Accelerator(torch.device("cpu")), n_samples=500,
                              n_classes=N_CLASSES, create_network=lambda: pytest.fail("resolved")) is config



def test_fit_trains_with_a_resolved_copy_and_returns_it():
    from labelaudit.train.loop import fit

    requested = tiny_config(batch_size="auto")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8)
    fitted = fit(create_method("ce"), images, np.arange(40) % N_CLASSES, N_CLASSES, requested)
    assert fitted.config.batch_size == DEFAULT_BATCH_SIZE and "auto on cpu" in fitted.config.batch_size_choice
    assert requested.batch_size == "auto" and requested.batch_size_choice is None
    assert fitted.config.epochs == requested.epochs and fitted.config.model == requested.model

@pytest.fixture
def pretend_cuda(monkeypatch):
    """Take the CUDA branch of ``resolve_batch_size`` on the CPU (no autocast or pinning happens there)."""
    monkeypatch.setattr(Accelerator, "is_cuda", property(lambda self: True))
    return Accelerator(torch.device("cpu"))


@pytest.mark.filterwarnings("ignore:CUDA is not available")  # the pretend GPU's autocast is off on the CPU
def test_auto_on_cuda_probes_the_real_step_capped_by_the_rows_and_keeps_the_seeded_rng(pretend_cuda):
    requested = tiny_config(batch_size="auto")
    method = create_method("elr")
    torch.manual_seed(7)
    expected_next = torch.rand(3)
    torch.manual_seed(7)
    config = resolve_batch_size(requested, method, pretend_cuda, n_samples=6, n_classes=N_CLASSES,
                                create_network=lambda: create_network(requested, N_CLASSES))
    assert torch.equal(torch.rand(3), expected_next)  # the probe's networks did not consume the run's RNG
    assert config.batch_size == 6  # 12 synthetic images fit in a step: the 6 rows are the cap
    assert config.batch_size_choice.startswith("auto: probed") and "capped at 6" in config.batch_size_choice
    assert len(method.networks()) == 0  # the method itself was not prepared by the probe


def test_auto_on_cuda_halves_after_out_of_memory(pretend_cuda, monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(device_module, "method_probe_step", lambda *args, **kwargs: out_of_memory_above(300, calls))
    config = resolve_batch_size(tiny_config(batch_size="auto"), create_method("ce"), pretend_cuda, n_samples=10_000,
                                n_classes=N_CLASSES, create_network=lambda: pytest.fail("the fake step builds nothing"))
    assert calls == [2 * AUTO_BATCH_CAP, AUTO_BATCH_CAP, 512, 256]
    assert config.batch_size == 128 and "safety margin" in config.batch_size_choice


@pytest.mark.parametrize("name, options", [
    *[(name, {}) for name in method_names()],  # glc without a matrix estimates it with a first-stage model
    ("glc", {"corruption": np.full((N_CLASSES, N_CLASSES), 1.0 / N_CLASSES)}),
])
def test_probe_step_trains_a_copy_of_every_method(name, options):
    config = tiny_config()
    method = create_method(name, **options)
    step = device_module.method_probe_step(method, config, Accelerator(torch.device("cpu")), n_classes=N_CLASSES,
                                           n_rows=8, create_network=lambda: create_network(config, N_CLASSES))
    step(4)
    step(8)
    with pytest.raises(ValueError):
        step(9)
    assert len(method.networks()) == 0


def test_scan_with_auto_on_cpu_records_32_and_why(tiny_dataset, tmp_path):
    out = tmp_path / "out"
    args = tiny_train_args(epochs=1)
    args[args.index("--batch-size") + 1] = "auto"
    result = runner.invoke(app, ["scan", str(tiny_dataset / "images"), str(tiny_dataset / "labels.csv"),
                                 "-o", str(out), "--quiet", "--method", "ce", *args])
    assert result.exit_code == 0, result.output
    train = json.loads((out / "summary.json").read_text())["settings"]["train"]
    assert train["batch_size"] == DEFAULT_BATCH_SIZE and "auto on cpu" in train["batch_size_choice"]
    model_train = json.loads((out / "model" / "config.json").read_text())["train"]
    assert (model_train["batch_size"], model_train["batch_size_choice"]) == (train["batch_size"],
                                                                             train["batch_size_choice"])
    # The request is what the run keeps, so `train` and `matrix` resolve it again on their own device.
    assert json.loads((out / "run.json").read_text())["train"]["batch_size"] == "auto"


@pytest.mark.parametrize("command", [["scan", "IMAGES", "LABELS.csv"], ["train"], ["matrix"]])
@pytest.mark.parametrize("value", ["1", "big"])
def test_bad_batch_sizes_are_one_line_usage_errors(command, value, tmp_path):
    result = runner.invoke(app, [*command, "-o", str(tmp_path / "none"), "--batch-size", value])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "--batch-size" in lines[0], result.output


def test_train_over_a_scan_with_auto_records_the_number_in_its_summary_and_model(scanned_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(scanned_run, run)
    result = runner.invoke(app, ["train", "-o", str(run), "--method", "ce", "--epochs", "1", "--batch-size", "auto",
                                 "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["train"]["batch_size"] == DEFAULT_BATCH_SIZE
    assert "auto on cpu" in summary["train"]["batch_size_choice"]
    model_train = json.loads((run / "model" / "config.json").read_text())["train"]
    assert model_train["batch_size_choice"] == summary["train"]["batch_size_choice"]


@pytest.mark.parametrize("n_samples", [1500, 2000, 2500])
def test_auto_epochs_train_the_same_images_whatever_the_batch(n_samples):
    epochs = {batch: auto_epochs(n_samples, batch) for batch in (32, 64, 128)}
    assert len(set(epochs.values())) == 1
    assert epochs[128] * n_samples == pytest.approx(AUTO_IMAGES, rel=0.15)


def test_auto_epochs_take_a_minimum_of_steps_and_stay_within_bounds():
    epochs = auto_epochs(1500, 1024)  # one step per epoch: the image budget alone would take 18 steps
    assert epochs * (1500 // 1024) >= MIN_AUTO_STEPS
    assert auto_epochs(50, 128) == 200 and auto_epochs(1_000_000, 128) == 10
    assert TrainConfig(epochs=3).epochs_for(1500) == 3
