"""``labelaudit matrix`` end to end on the tiny scanned run, with and without trusted labels."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from labelaudit.cli.app import app
from labelaudit.matrix import top_confusions, write_transition
from labelaudit.report.schema import SAMPLES_COLUMNS
from labelaudit.report.tables import TransitionEstimate

runner = CliRunner()


@pytest.fixture
def run_copy(scanned_run, tmp_path):
    """A private copy of the shared scanned run (matrix rewrites files in it)."""
    out = tmp_path / "out"
    shutil.copytree(scanned_run, out)
    return out


@pytest.fixture
def gold_csv(tiny_dataset, tmp_path):
    """Trusted labels (from truth.csv) for the first 40 rows, including every planted error among them,
    plus one path that is not in the scan."""
    truth = pd.read_csv(tiny_dataset / "truth.csv")
    gold = truth.head(40).copy()
    gold.loc[len(gold)] = ["not_in_scan.png", gold["label"].iloc[0]]
    path = tmp_path / "gold.csv"
    gold.to_csv(path, index=False)
    return path


def check_transition_file(out, estimators: set[str], n_classes: int) -> pd.DataFrame:
    transition = pd.read_parquet(out / "transition.parquet")
    assert set(transition["estimator"]) == estimators
    for _, part in transition.groupby("estimator"):
        assert len(part) == n_classes * n_classes
        assert part[["true_label", "noisy_label"]].drop_duplicates().shape[0] == n_classes * n_classes
        assert np.allclose(part.groupby("true_label")["probability"].sum(), 1.0)
        assert part["probability"].between(0, 1).all()
        assert (part["ci_low"] <= part["probability"] + 1e-12).all()
        assert (part["probability"] <= part["ci_high"] + 1e-12).all()
    types = {f.name: str(f.type) for f in pq.read_schema(out / "transition.parquet")}
    assert types["no_trusted_examples"] == "bool" and types["count"] == "double"
    return transition


def test_matrix_without_trusted_labels(run_copy):
    before = pd.read_parquet(run_copy / "samples.parquet")
    result = runner.invoke(app, ["matrix", "-o", str(run_copy), "--bootstrap", "30"])
    assert result.exit_code == 0, result.output
    assert "Noise transition matrix T (confident_joint)" in result.output
    assert "transition.parquet" in result.output and "transition.png" in result.output

    n_classes = len(json.loads((run_copy / "run.json").read_text())["classes"])
    transition = check_transition_file(run_copy, {"confident_joint", "anchor"}, n_classes)
    assert not transition["no_trusted_examples"].any()
    assert transition.loc[transition["estimator"] == "anchor", "count"].isna().all()
    assert (run_copy / "transition.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    samples = pd.read_parquet(run_copy / "samples.parquet")
    assert list(samples.columns[: len(SAMPLES_COLUMNS) + 1]) == [*SAMPLES_COLUMNS, "trusted_label"]
    assert samples["trusted_label"].isna().all()
    assert samples["path"].tolist() == before["path"].tolist()
    assert sorted(samples["rank"]) == list(range(1, len(samples) + 1))
    # The scan's own T was the confident joint too, so the scores do not move.
    np.testing.assert_allclose(samples["error_probability"], before["error_probability"], atol=1e-6)

    summary = json.loads((run_copy / "summary.json").read_text())
    assert summary["transition_estimator"] == "confident_joint"
    assert summary["calibration"]["method"] == "none"
    assert summary["trusted"] is None
    assert "clean class" in summary["anchor_probabilities"]  # the scan was ELR: anchor is weak, and says so


def test_matrix_with_trusted_labels(run_copy, gold_csv, tiny_dataset):
    result = runner.invoke(app, ["matrix", "--trusted", str(gold_csv), "-o", str(run_copy), "--bootstrap", "30"])
    assert result.exit_code == 0, result.output
    assert "Noise transition matrix T (glc)" in result.output
    assert "1 row of" in result.stderr and "not_in_scan.png" in result.stderr

    classes = json.loads((run_copy / "run.json").read_text())["classes"]
    transition = check_transition_file(run_copy, {"glc", "confident_joint", "anchor"}, len(classes))

    truth = pd.read_csv(tiny_dataset / "truth.csv")
    samples = pd.read_parquet(run_copy / "samples.parquet")
    trusted_rows = samples["trusted_label"].notna()
    assert trusted_rows.sum() == 40
    assert samples.loc[trusted_rows, "trusted_label"].tolist() == truth["label"].head(40).tolist()
    confirmed = trusted_rows & (samples["trusted_label"] != samples["given_label"])
    assert confirmed.sum() >= 1  # the tiny dataset plants 10% errors
    assert samples.loc[confirmed, "is_issue"].all()
    assert (samples.loc[confirmed, "error_probability"] == 1.0).all()
    assert (samples.loc[confirmed, "suggested_label"] == samples.loc[confirmed, "trusted_label"]).all()
    agreed = trusted_rows & ~confirmed
    assert (~samples.loc[agreed, "is_issue"]).all() and (samples.loc[agreed, "error_probability"] == 0.0).all()
    assert sorted(samples["rank"]) == list(range(1, len(samples) + 1))
    assert set(samples.loc[confirmed, "rank"]) == set(range(1, confirmed.sum() + 1))  # confirmed errors first

    glc = transition[transition["estimator"] == "glc"]
    counts = glc.pivot(index="true_label", columns="noisy_label", values="count")
    assert counts.to_numpy().sum() == 40  # trusted rows by (trusted label, given label)
    missing = set(glc.loc[glc["no_trusted_examples"], "true_label"])
    covered = set(truth["label"].head(40))
    assert missing == set(classes) - covered
    for name in missing:  # identity row
        row = glc[glc["true_label"] == name].set_index("noisy_label")["probability"]
        assert row[name] == 1.0 and row.drop(name).eq(0).all()

    classes_table = pd.read_parquet(run_copy / "classes.parquet")
    given_counts = samples.groupby("given_label")["error_probability"].mean()
    np.testing.assert_allclose(classes_table.set_index("label").loc[given_counts.index, "estimated_noise_rate"],
                               given_counts, rtol=1e-5)

    summary = json.loads((run_copy / "summary.json").read_text())
    assert summary["transition_estimator"] == "glc"
    assert summary["calibration"]["method"] in ("platt", "none") and summary["calibration"]["reason"]
    assert summary["trusted"]["rows"] == 40 and summary["trusted"]["ignored"] == 1
    assert summary["trusted"]["ignored_paths"] == ["not_in_scan.png"]
    assert summary["trusted"]["confirmed_errors"] == int(confirmed.sum())
    assert summary["n_issues"] == int(samples["is_issue"].sum())
    weights = run_copy / "glc" / "ce_model" / "model.safetensors"
    assert weights.is_file()

    # Again with the same trusted CSV and settings: the GLC cross-entropy model is reused, not retrained.
    stamp = weights.stat().st_mtime_ns
    again = runner.invoke(app, ["matrix", "--trusted", str(gold_csv), "-o", str(run_copy), "--bootstrap", "30",
                                "--quiet"])
    assert again.exit_code == 0, again.output
    assert again.output == ""
    assert weights.stat().st_mtime_ns == stamp
    assert pd.read_parquet(run_copy / "samples.parquet").equals(samples)


def test_matrix_json_output(run_copy):
    result = runner.invoke(app, ["matrix", "-o", str(run_copy), "--bootstrap", "0", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["transition_estimator"] == "confident_joint"
    assert summary["transition_estimators"] == ["confident_joint", "anchor"]
    transition = pd.read_parquet(run_copy / "transition.parquet")
    assert transition["ci_low"].isna().all()  # --bootstrap 0: no intervals


def test_matrix_without_a_scan_says_run_scan_first(tmp_path):
    result = runner.invoke(app, ["matrix", "-o", str(tmp_path / "empty")])
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: no scan in") and "run `labelaudit scan" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("content, message", [
    ("", "is empty"),
    ("path,label\n", "no data rows"),
    ("path,label\nimg_00001.png,wolf\nimg_00002.png,Circle\n", "not classes of the scan: 'wolf', 'Circle'"),
])
def test_matrix_refuses_bad_trusted_csv_with_exit_2(run_copy, tmp_path, content, message):
    gold = tmp_path / "bad.csv"
    gold.write_text(content, encoding="utf-8")
    result = runner.invoke(app, ["matrix", "--trusted", str(gold), "-o", str(run_copy)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: ") and message in lines[-1], result.stderr
    assert "Traceback" not in result.output


def test_write_transition_keeps_rows_of_other_estimators(tmp_path):
    classes = ["a", "b"]
    metadata = {"classes": classes}
    nan = np.full((2, 2), np.nan)
    write_transition(tmp_path, classes, [TransitionEstimate("nal", np.eye(2), nan, nan, nan)], metadata)
    mine = TransitionEstimate("confident_joint", np.array([[0.9, 0.1], [0.0, 1.0]]), nan, nan, np.ones((2, 2)))
    write_transition(tmp_path, classes, [mine], metadata)
    frame = pd.read_parquet(tmp_path / "transition.parquet")
    assert frame["estimator"].tolist() == ["confident_joint"] * 4 + ["nal"] * 4
    write_transition(tmp_path, ["a", "c"], [mine], {"classes": ["a", "c"]})  # other classes: start afresh
    assert set(pd.read_parquet(tmp_path / "transition.parquet")["estimator"]) == {"confident_joint"}


def test_top_confusions_in_words_order():
    matrix = np.array([[0.7, 0.3, 0.0], [0.05, 0.95, 0.0], [0.004, 0.12, 0.876]])
    assert top_confusions(matrix, ["cat", "dog", "fox"]) == [("cat", "dog", 0.3), ("fox", "dog", 0.12),
                                                             ("dog", "cat", 0.05)]
    skip = np.array([True, False, False])
    assert top_confusions(matrix, ["cat", "dog", "fox"], skip_rows=skip, top=1) == [("fox", "dog", 0.12)]
