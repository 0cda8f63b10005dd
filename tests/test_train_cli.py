"""``labelaudit train`` end to end: model files, metrics.json with validation, reuse of the scan,
the NAL channel in transition.parquet, GLC with trusted rows, ``scan --method elr+``, exit-2 cases."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import labelaudit
from labelaudit.cli.app import app
from labelaudit.methods.elr_plus import ema_decay_for

from tiny import TINY_MODEL, TINY_SIZE, tiny_train_args

runner = CliRunner()


@pytest.fixture(scope="module")
def split_dataset(tmp_path_factory, sample_maker):
    """96 labelled images (15% symmetric noise) and 24 clean held-out ones in test.csv."""
    root = tmp_path_factory.mktemp("split")
    sample_maker.make_dataset(root, n_images=120, size=TINY_SIZE, noise="symmetric", noise_rate=0.15, seed=4,
                              test_fraction=0.2)
    return root


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_train_with_val_writes_model_and_metrics(tmp_path, split_dataset):
    val = tmp_path / "val.csv"
    test_rows = (split_dataset / "test.csv").read_text().splitlines()
    val.write_text("\n".join(test_rows + ["img_00001.png,hexagon", "img_00002.png,hexagon"]) + "\n")
    out = tmp_path / "out"
    result = invoke("train", split_dataset / "images", split_dataset / "labels.csv", "--method", "elr+",
                    "--val", val, "-o", out, "--json", *tiny_train_args(2))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    model_dir = out / "model"
    assert summary["model_dir"] == str(model_dir) and summary["method"] == "elr+"
    for name in ("model.safetensors", "config.json", "classes.json", "metrics.json"):
        assert (model_dir / name).is_file()

    metrics = json.loads((model_dir / "metrics.json").read_text())
    classes = json.loads((model_dir / "classes.json").read_text())
    n_val = len(test_rows) - 1
    assert len(metrics["train_loss"]) == 2 and len(metrics["history"]) == 2
    assert all({"epoch", "train_loss", "val_accuracy", "val_loss"} <= set(row) for row in metrics["history"])
    assert 0.0 <= metrics["val_accuracy"] <= 1.0 and metrics["val_loss"] > 0
    assert metrics["val_accuracy"] == metrics["history"][-1]["val_accuracy"]
    assert set(metrics["val_per_class_accuracy"]) == set(classes)
    assert metrics["val_used"] == n_val and metrics["val_rows"] == n_val + 2
    assert metrics["val_skipped"] == 2 and metrics["val_skipped_reasons"] == {"unknown_label": 2}
    assert summary["val_skipped"] == 2 and summary["val_accuracy"] == metrics["val_accuracy"]

    # val accuracy is the accuracy of the saved model on the usable val rows
    loaded = labelaudit.load_model(model_dir)
    test = pd.read_csv(split_dataset / "test.csv")
    predictions = loaded.predict_folder(split_dataset / "images").set_index("path").loc[test["path"], "label"]
    assert np.mean(predictions.to_numpy() == test["label"].to_numpy()) == pytest.approx(metrics["val_accuracy"])
    config = json.loads((model_dir / "config.json").read_text())
    n_train = len(pd.read_csv(split_dataset / "labels.csv"))
    assert config["method"] == "elr+"  # the EMA averages over a fixed share of an epoch of 32-row steps
    assert config["method_settings"]["ema_decay"] == pytest.approx(ema_decay_for(n_train // 32))
    assert config["architecture"] == TINY_MODEL and config["image_size"] == TINY_SIZE


def test_train_prints_a_summary(tmp_path, split_dataset):
    out = tmp_path / "out"
    result = invoke("train", split_dataset / "images", split_dataset / "labels.csv", "--method", "forward",
                    "--val", split_dataset / "test.csv", "-o", out, *tiny_train_args(1))
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "Trained forward on 96 images" in text
    assert "anchor_percentile=97" in text and "Final train loss" in text and "Validation accuracy" in text
    assert f"Model {out / 'model'}" in text


def test_train_reuses_the_scan_and_writes_the_nal_channel(tmp_path, scanned_run):
    run = tmp_path / "run"
    shutil.copytree(scanned_run, run)
    classes = json.loads((run / "model" / "classes.json").read_text())
    k = len(classes)
    for attempt in range(2):  # a second run replaces the nal rows instead of adding more
        result = invoke("train", "--method", "nal", "-o", run, "--epochs", "1", "--quiet")
        assert result.exit_code == 0, result.output
        transition = pd.read_parquet(run / "transition.parquet")
        assert (transition["estimator"] == "confident_joint").sum() == k * k
        nal = transition[transition["estimator"] == "nal"]
        assert len(nal) == k * k
    assert np.allclose(nal.groupby("true_label")["probability"].sum(), 1.0)
    theta = labelaudit.load_model(run / "model").method.transition()
    index = {name: i for i, name in enumerate(classes)}
    for row in nal.itertuples():
        assert row.probability == pytest.approx(theta[index[row.true_label], index[row.noisy_label]], abs=1e-9)
    config = json.loads((run / "model" / "config.json").read_text())
    # scan settings (tiny model and size) reused; --epochs overrides
    assert config["architecture"] == TINY_MODEL and config["image_size"] == TINY_SIZE
    assert config["train"]["epochs"] == 1 and config["method"] == "nal"


def test_train_glc_with_trusted_rows(tmp_path, tiny_dataset):
    truth = pd.read_csv(tiny_dataset / "truth.csv")
    gold = tmp_path / "gold.csv"
    truth.iloc[::6].to_csv(gold, index=False)
    out = tmp_path / "out"
    result = invoke("train", tiny_dataset / "images", tiny_dataset / "labels.csv", "--method", "glc",
                    "--trusted", gold, "-o", out, "--json", *tiny_train_args(1))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["glc"]["trusted_rows"] == len(truth.iloc[::6])
    assert summary["method_settings"]["glc_corruption_source"] == "given"
    matrix = np.array(summary["method_settings"]["glc_corruption"])
    assert matrix.shape == (8, 8) and np.allclose(matrix.sum(axis=1), 1.0, atol=1e-5)
    assert labelaudit.load_model(out / "model").predict_proba(np.zeros((2, 16, 16, 3), np.uint8)).shape == (2, 8)


def test_scan_with_elr_plus(tmp_path, tiny_dataset):
    out = tmp_path / "out"
    result = invoke("scan", tiny_dataset / "images", tiny_dataset / "labels.csv", "--method", "elr+", "-o", out,
                    "--quiet", *tiny_train_args(1))
    assert result.exit_code == 0, result.output
    samples = pd.read_parquet(out / "samples.parquet")
    assert len(samples) == 96 and samples["error_probability"].between(0, 1).all()
    loaded = labelaudit.load_model(out / "model")
    assert loaded.info["method"] == "elr+" and len(loaded.method.networks()) == 4


@pytest.mark.parametrize("args, message", [
    (["--method", "glc"], "Error: --method glc needs --trusted CSV: GLC estimates the label corruption from rows "
                          "whose true label an expert confirmed"),
    (["--method", "magic"], "Error: unknown method 'magic'; choose one of ce, elr, elr+, forward, glc, nal"),
    (["--method", "ce", "--mixup-alpha", "0.5"], "Error: --mixup-alpha applies to --method elr+, not ce"),
    (["--method", "nal", "--elr-beta", "0.5"], "Error: --elr-beta applies to --method elr or elr+, not nal"),
    (["--method", "elr", "--trusted", "{csv}"], "Error: --trusted is used by --method glc only, not by elr"),
    (["--val", "{images}/nothing.csv"], "Error: validation CSV {images}/nothing.csv does not exist"),
])
def test_bad_input_is_one_error_line_with_exit_2(tmp_path, tiny_dataset, args, message):
    fill = {"images": tiny_dataset / "images", "csv": tiny_dataset / "labels.csv"}
    filled = [a.format(**fill) for a in args]
    result = invoke("train", fill["images"], fill["csv"], *filled, "-o", tmp_path / "out", *tiny_train_args(1))
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [message.format(**fill)]
    assert not (tmp_path / "out" / "model").exists()


def test_without_dataset_arguments_a_scan_is_needed(tmp_path, tiny_dataset):
    out = tmp_path / "empty"
    result = invoke("train", "--method", "ce", "-o", out)
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"Error: no scan in {out} to reuse: pass IMAGES LABELS.csv, or run "
                                     f"`labelaudit scan IMAGES LABELS.csv -o {out}` first")
    result = invoke("train", tiny_dataset / "images", "-o", out)
    assert result.exit_code == 2
    assert result.stderr.strip() == "Error: pass both IMAGES and LABELS.csv, or neither to reuse the scan in --out"
    result = invoke("train", "--label-column", "class", "-o", out)
    assert result.exit_code == 2
    assert result.stderr.strip() == ("Error: --label-column needs IMAGES LABELS.csv; without them the scan's "
                                     "dataset is reused")


def test_training_into_a_run_of_other_inputs_needs_force(tmp_path, scanned_run, split_dataset):
    run = tmp_path / "run"
    shutil.copytree(scanned_run, run)
    args = ["train", split_dataset / "images", split_dataset / "labels.csv", "-o", run, "--method", "ce",
            "--quiet", *tiny_train_args(1)]
    result = invoke(*args)
    assert result.exit_code == 2 and "use another --out or pass --force" in result.stderr
    assert invoke(*args, "--force").exit_code == 0
