"""What scan claims, end to end: verdicts that add up, --self-check, and the unreliable-audit message."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from labelaudit.cli.app import app

from tiny import NAMES, tiny_train_args, write_colour_images, write_csv

runner = CliRunner()


def test_scan_verdicts_add_up(scanned_run):
    samples = pd.read_parquet(scanned_run / "samples.parquet")
    summary = json.loads((scanned_run / "summary.json").read_text())
    n_flagged = int(round(summary["estimated_errors"]))
    assert summary["n_issues"] == n_flagged == int(samples["is_issue"].sum())
    assert set(samples.loc[samples["rank"] <= n_flagged, "path"]) == set(samples.loc[samples["is_issue"], "path"])
    assert abs(samples["error_probability"].astype(float).mean() - summary["estimated_error_rate"]) < 1e-3
    assert summary["label_health"] == 1 - summary["estimated_error_rate"]
    assert summary["noise_structure"]["ranked_by"] in ("self-confidence", "T-posterior")
    assert isinstance(summary["reliable"], bool) and summary["reliability_reason"]


def test_self_check_reports_measured_figures(tmp_path):
    rows = write_colour_images(tmp_path, 120, seed=11)
    rng = np.random.default_rng(0)
    labels = [(path, NAMES[(NAMES.index(label) + 1) % 3] if rng.random() < 0.1 else label) for path, label in rows]
    write_csv(tmp_path / "labels.csv", labels)
    out = tmp_path / "out"
    result = runner.invoke(app, ["scan", str(tmp_path / "images"), str(tmp_path / "labels.csv"), "-o", str(out),
                                 "--self-check", *tiny_train_args(epochs=4)])
    assert result.exit_code == 0, result.output
    check = json.loads((out / "summary.json").read_text())["self_check"]
    assert check["planted"] == 6  # 5% of 120, all among the rows the audit believed correct
    assert check["pool"] == 120 - json.loads((out / "summary.json").read_text())["n_issues"]
    for key in ("precision", "recall", "auprc"):
        assert check[key] is None or 0.0 <= check[key] <= 1.0
    assert check["error_rate_bias"] == check["estimated_added_rate"] - check["planted_rate"]
    assert "Self-check: 6 planted errors; the audit flagged" in " ".join(result.output.split())
    assert "--self-check audits a copy" not in result.output
    # the audit itself still covers every row, under the original labels
    samples = pd.read_parquet(out / "samples.parquet")
    assert samples["given_label"].tolist() == [label for _, label in labels]


def test_a_model_that_cannot_tell_the_classes_apart_is_called_unreliable(tmp_path):
    rows = write_colour_images(tmp_path, 90, seed=12)
    rng = np.random.default_rng(1)
    write_csv(tmp_path / "labels.csv", [(path, NAMES[rng.integers(3)]) for path, _ in rows])  # labels unrelated
    out = tmp_path / "out"
    result = runner.invoke(app, ["scan", str(tmp_path / "images"), str(tmp_path / "labels.csv"), "-o", str(out),
                                 *tiny_train_args(epochs=2)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reliable"] is False
    assert "cannot tell the classes apart" in summary["reliability_reason"]
    text = " ".join(result.output.split())
    assert "Unreliable audit:" in text and "--pretrained" in text and "--folds 5" in text


def test_a_clean_learnable_dataset_is_reliable(tmp_path):
    rows = write_colour_images(tmp_path, 90, seed=13)
    write_csv(tmp_path / "labels.csv", rows)
    out = tmp_path / "out"
    result = runner.invoke(app, ["scan", str(tmp_path / "images"), str(tmp_path / "labels.csv"), "-o", str(out),
                                 "--json", *tiny_train_args(epochs=4)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["reliable"] is True, summary["reliability_reason"]
    shown = runner.invoke(app, ["scan", str(tmp_path / "images"), str(tmp_path / "labels.csv"), "-o", str(out),
                                "--force", *tiny_train_args(epochs=4)])
    assert shown.exit_code == 0, shown.output
    assert "--self-check audits a copy with 5% planted label errors" in " ".join(shown.output.split())
    assert summary["estimated_error_rate"] < 0.05
