"""``labelaudit scan`` end to end: every column, every CSV row, planted errors ranked first, exit codes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from labelaudit.cli.app import app
from labelaudit.core.metrics import average_precision
from labelaudit.report.schema import SAMPLES_COLUMNS

from tiny import NAMES, tiny_train_args, write_colour_images, write_csv

runner = CliRunner()


def test_scan_writes_every_file_and_column(scanned_run, tiny_dataset):
    samples = pd.read_parquet(scanned_run / "samples.parquet")
    labels = pd.read_csv(tiny_dataset / "labels.csv")
    assert list(samples.columns[: len(SAMPLES_COLUMNS)]) == SAMPLES_COLUMNS
    assert samples["path"].tolist() == labels["path"].tolist()
    assert samples["given_label"].tolist() == labels["label"].tolist()
    assert (samples["status"] == "audited").all()
    assert samples["rank"].min() == 1 and sorted(samples["rank"]) == list(range(1, len(samples) + 1))
    assert samples["error_probability"].between(0, 1).all()
    assert (samples["p_given"] == samples["label_quality"]).all()
    assert (samples["is_issue"] == (samples["suggested_label"] != samples["given_label"])).all()
    assert (samples["fold"] == 0).all()

    schema = pq.read_schema(scanned_run / "samples.parquet")
    types = {name: str(schema.field(name).type) for name in SAMPLES_COLUMNS}
    assert types == {"path": "string", "given_label": "string", "suggested_label": "string", "p_given": "float",
                     "label_quality": "float", "error_probability": "float", "is_issue": "bool",
                     "rank": "int32", "status": "string", "fold": "int16", "duplicate_set": "int32",
                     "is_duplicate": "bool", "is_leak": "bool", "outlier_score": "float", "is_outlier": "bool",
                     "quality_issues": "list<element: string>", "brightness": "float", "sharpness": "float",
                     "entropy": "float", "brightness_p99": "float", "brightness_p05": "float",
                     "colourfulness": "float", "width": "int32", "height": "int32"}
    metadata = {k.decode() for k in schema.metadata}
    assert {"labelaudit_version", "config", "classes", "created_at", "images_root", "labels_sha256"} <= metadata

    classes = pd.read_parquet(scanned_run / "classes.parquet")
    assert list(classes.columns) == ["label", "n", "n_issues", "estimated_noise_rate", "most_confused_with",
                                     "share", "is_underrepresented", "agreement", "is_weak"]
    assert classes["n"].sum() == len(samples)
    assert classes["n_issues"].sum() == samples["is_issue"].sum()

    transition = pd.read_parquet(scanned_run / "transition.parquet")
    k = len(classes)
    assert len(transition) == k * k and set(transition["estimator"]) == {"confident_joint"}
    row_sums = transition.groupby("true_label")["probability"].sum()
    assert np.allclose(row_sums, 1.0)
    assert (transition["ci_low"] <= transition["probability"] + 1e-12).all()
    assert (transition["probability"] <= transition["ci_high"] + 1e-12).all()

    summary = json.loads((scanned_run / "summary.json").read_text())
    assert summary["rows"] == summary["audited"] == len(samples)
    assert summary["n_issues"] == int(samples["is_issue"].sum())
    assert 0 <= summary["label_health"] <= 1
    assert (scanned_run / "model" / "model.safetensors").is_file()


def test_planted_errors_rank_above_clean_rows(tmp_path):
    # Classes a tiny model learns in a few epochs (colour), so the ranking, not the model, is under test.
    data = tmp_path / "data"
    rows = write_colour_images(data, 150, seed=7)
    rng = np.random.default_rng(0)
    flipped = rng.choice(len(rows), size=20, replace=False)
    given = [(path, NAMES[(NAMES.index(label) + 1) % len(NAMES)] if i in flipped else label)
             for i, (path, label) in enumerate(rows)]
    write_csv(data / "labels.csv", given)
    out = tmp_path / "out"
    result = runner.invoke(app, ["scan", str(data / "images"), str(data / "labels.csv"), "-o", str(out), "--quiet",
                                 *tiny_train_args(epochs=12)])
    assert result.exit_code == 0, result.output
    samples = pd.read_parquet(out / "samples.parquet")
    is_error = np.zeros(len(rows), bool)
    is_error[flipped] = True
    ranks = samples["rank"].to_numpy()
    assert average_precision(is_error, -ranks.astype(float)) > 0.8  # a random order gives about 0.13
    assert average_precision(is_error, samples["error_probability"].to_numpy(float)) > 0.8
    assert samples["is_issue"][is_error].mean() > 0.5
    assert samples["is_issue"][~is_error].mean() < 0.1


def test_bad_rows_are_skipped_not_lost(tmp_path, tiny_dataset):
    images = tmp_path / "images"
    shutil.copytree(tiny_dataset / "images", images)
    (images / "broken.png").write_bytes(b"not an image")
    csv = tmp_path / "labels.csv"
    original = (tiny_dataset / "labels.csv").read_text().splitlines()
    rows = original + ["missing.png,circle", "broken.png,ring", "../escape.png,ring", f"{original[1].split(',')[0]},"]
    csv.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    result = runner.invoke(app, ["scan", str(images), str(csv), "-o", str(out), "--json", *tiny_train_args(1)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    samples = pd.read_parquet(out / "samples.parquet")
    assert len(samples) == len(rows) - 1
    assert samples["status"].tolist()[-4:] == ["missing_file", "unreadable_image", "outside_root", "empty_label"]
    assert samples["rank"].iloc[-4:].isna().all()
    assert summary["skipped"] == 4 and summary["status_counts"]["missing_file"] == 1


@pytest.mark.parametrize("args, message", [
    (["scan", "nowhere", "nowhere.csv"], "Error: "),
    (["scan", "{images}", "{csv}", "--method", "magic"], "Error: unknown method 'magic'; choose one of"),
    (["scan", "{images}", "{csv}", "--device", "tpu"], "Error: unknown device 'tpu'"),
    (["scan", "{images}", "{csv}", "--model", "no_such_net_xyz"], "Error: unknown timm model 'no_such_net_xyz'"),
    (["scan", "{images}", "{csv}", "--folds", "50"], "Error: --folds 50 needs at least 50 rows per class"),
    (["scan", "{images}", "{csv}", "--bogus"], "Error: No such option: --bogus"),
])
def test_bad_input_is_one_error_line_with_exit_2(tmp_path, tiny_dataset, args, message):
    filled = [a.format(images=tiny_dataset / "images", csv=tiny_dataset / "labels.csv") for a in args]
    result = runner.invoke(app, [*filled, "-o", str(tmp_path / "out"), "--epochs", "1", "--image-size", "16"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert "Traceback" not in result.output


def test_rerun_on_other_inputs_needs_force(tmp_path, tiny_dataset, scanned_run):
    out = tmp_path / "out"
    shutil.copytree(scanned_run, out)
    other = tmp_path / "other.csv"
    other.write_text((tiny_dataset / "labels.csv").read_text() + "\n")
    args = ["scan", str(tiny_dataset / "images"), str(other), "-o", str(out), "--quiet", *tiny_train_args(1)]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2 and "use another --out or pass --force" in refused.stderr
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0


def test_out_of_fold_scores_every_row_once(tmp_path, tiny_dataset):
    out = tmp_path / "out"
    result = runner.invoke(app, ["scan", str(tiny_dataset / "images"), str(tiny_dataset / "labels.csv"), "-o",
                                 str(out), "--quiet", "--folds", "3", *tiny_train_args(1)])
    assert result.exit_code == 0, result.output
    samples = pd.read_parquet(out / "samples.parquet")
    assert sorted(samples["fold"].unique()) == [0, 1, 2]
    assert samples["fold"].value_counts().min() >= len(samples) // 3 - 8
    assert samples["error_probability"].notna().all()


def test_same_seed_gives_the_same_report(tmp_path, tiny_dataset):
    reports = []
    for name in ("a", "b"):
        out = tmp_path / name
        result = runner.invoke(app, ["scan", str(tiny_dataset / "images"), str(tiny_dataset / "labels.csv"),
                                     "-o", str(out), "--quiet", "--seed", "11", *tiny_train_args(2)])
        assert result.exit_code == 0, result.output
        reports.append(pd.read_parquet(out / "samples.parquet"))
    first, second = reports
    assert np.allclose(first["error_probability"], second["error_probability"], atol=1e-6, rtol=0)
    assert first["rank"].tolist() == second["rank"].tolist()
