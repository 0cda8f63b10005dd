"""``labelaudit check`` end to end with a small trained model: exit codes 0/1/2, the batch report,
JUnit, the GitHub step summary and annotations, JSON, and the baseline comparison.

The model is trained once per session on images whose class is their colour (with pixel noise), so
even a tiny network separates the classes after a few epochs and clean and flipped batches differ
by far more than the model's own mistakes: the exit-code assertions test the gate, not luck.
"""

from __future__ import annotations

import csv
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from labelaudit.report.schema import SAMPLES_COLUMNS

from tiny import NAMES, TINY_MODEL, TINY_SIZE, write_colour_images, write_csv

runner = CliRunner()
@pytest.fixture(scope="session")
def colour_run(tmp_path_factory) -> Path:
    """A run directory (model/, transition.parquet, samples.parquet) from scanning 90 colour images."""
    from labelaudit.audit import DatasetSpec, ScanSettings, run_scan
    from labelaudit.train.loop import TrainConfig

    root = tmp_path_factory.mktemp("colour_train")
    write_csv(root / "labels.csv", write_colour_images(root, 90, seed=1))
    out = root / "run"
    run_scan(ScanSettings(
        dataset=DatasetSpec(images=root / "images", labels_csv=root / "labels.csv"), out=out, method="ce",
        train=TrainConfig(model=TINY_MODEL, image_size=TINY_SIZE, epochs=12, batch_size=32, device="cpu"),
    ))
    return out


@pytest.fixture(scope="session")
def batch(tmp_path_factory) -> Path:
    """60 new colour images with CSVs: clean.csv (true labels), flipped.csv (every label moved to the
    next colour), half.csv (every other label moved)."""
    root = tmp_path_factory.mktemp("colour_batch")
    rows = write_colour_images(root, 60, seed=2)
    write_csv(root / "clean.csv", rows)
    write_csv(root / "flipped.csv", [(p, NAMES[(NAMES.index(label) + 1) % 3]) for p, label in rows])
    write_csv(root / "half.csv", [(p, NAMES[(NAMES.index(label) + i % 2) % 3]) for i, (p, label) in enumerate(rows)])
    return root


def check(batch: Path, csv_name: str, colour_run: Path, *args: str, env=None):
    from labelaudit.cli.app import app

    return runner.invoke(app, ["check", str(batch / "images"), str(batch / csv_name),
                               "--model", str(colour_run / "model"), "-o", str(colour_run), "--device", "cpu",
                               *args], env=env)


def summary_of(result) -> dict:
    return json.loads(result.stdout)


def test_clean_batch_passes_and_flipped_batch_fails(batch, colour_run, tmp_path):
    clean = check(batch, "clean.csv", colour_run, "--max-error-rate", "0.25", "--json",
                  "--report", str(tmp_path / "clean.parquet"))
    flipped = check(batch, "flipped.csv", colour_run, "--max-error-rate", "0.25", "--json",
                    "--report", str(tmp_path / "flipped.parquet"))
    assert clean.exit_code == 0, clean.output
    assert flipped.exit_code == 1, flipped.output
    clean_summary, flipped_summary = summary_of(clean), summary_of(flipped)
    assert clean_summary["passed"] and not flipped_summary["passed"]
    assert flipped_summary["error_rate"]["estimate"] > clean_summary["error_rate"]["estimate"] + 0.5
    # every label of the flipped batch is wrong: its interval must not exclude that by much
    assert flipped_summary["error_rate"]["high"] > 0.8
    assert flipped_summary["n_issues"] > 45
    [limit] = flipped_summary["limits"]
    assert limit["name"] == "max_error_rate" and not limit["passed"] and limit["offenders"]


def test_half_flipped_batch_is_estimated_near_half(batch, colour_run, tmp_path):
    result = check(batch, "half.csv", colour_run, "--json", "--report", str(tmp_path / "half.parquet"))
    assert result.exit_code == 0  # no limits set: report only
    rate = summary_of(result)["error_rate"]
    assert 0.3 < rate["estimate"] < 0.7
    assert rate["low"] <= 0.5 <= rate["high"]
    report = pd.read_parquet(tmp_path / "half.parquet")
    truth_wrong = np.arange(60) % 2 == 1
    # the flipped rows are the ones ranked most suspicious
    assert report["error_probability"][truth_wrong].mean() > report["error_probability"][~truth_wrong].mean() + 0.3


def test_report_has_samples_columns_and_metadata(batch, colour_run):
    result = check(batch, "clean.csv", colour_run, "--quiet")
    assert result.exit_code == 0, result.output
    report_path = colour_run / "check" / "clean.parquet"  # default: RUN_DIR/check/<batch stem>.parquet
    report = pd.read_parquet(report_path)
    assert list(report.columns[: len(SAMPLES_COLUMNS)]) == SAMPLES_COLUMNS
    assert len(report) == 60 and (report["status"] == "audited").all()
    assert sorted(report["rank"]) == list(range(1, 61))
    metadata = {k.decode(): v.decode() for k, v in pq.read_schema(report_path).metadata.items()}
    assert {"labelaudit_version", "config", "classes", "created_at", "images_root", "labels_sha256"} <= set(metadata)
    assert json.loads(metadata["classes"]) == sorted(NAMES)
    assert "confident_joint" in json.loads(metadata["config"])["noise_model"]["structure_source"]
    assert result.stdout.startswith("clean.csv: no limits set")


def test_missing_file_row_is_skipped_and_counted(batch, colour_run, tmp_path):
    rows = list(csv.reader((batch / "clean.csv").open()))[1:]
    write_csv(tmp_path / "with_missing.csv", rows + [["no_such_image.png", "red"]])
    from labelaudit.cli.app import app

    result = runner.invoke(app, ["check", str(batch / "images"), str(tmp_path / "with_missing.csv"),
                                 "--model", str(colour_run / "model"), "--report", str(tmp_path / "r.parquet"),
                                 "--min-images", "60", "--junit", str(tmp_path / "j.xml")])
    assert result.exit_code == 0, result.output
    assert "Audited 60 of 61 rows" in result.stdout and "1 missing_file" in result.stdout
    report = pd.read_parquet(tmp_path / "r.parquet")
    assert report["status"].iloc[-1] == "missing_file" and pd.isna(report["rank"].iloc[-1])
    suite = ET.parse(tmp_path / "j.xml").getroot().find("testsuite")
    assert {p.get("name"): p.get("value") for p in suite.iter("property")}["skipped"] == "1"


@pytest.mark.parametrize("what", ["csv", "images", "model"])
def test_bad_input_exits_2_with_one_error_line(batch, colour_run, tmp_path, what):
    from labelaudit.cli.app import app

    images, labels, model = batch / "images", batch / "clean.csv", colour_run / "model"
    if what == "csv":
        labels = tmp_path / "nope.csv"
    elif what == "images":
        images = tmp_path / "no_images"
    else:
        model = tmp_path / "empty_model"
        model.mkdir()
    result = runner.invoke(app, ["check", str(images), str(labels), "--model", str(model),
                                 "--max-error-rate", "0.1", "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert {"csv": "nope.csv", "images": "no_images", "model": "empty_model"}[what] in lines[0]


def test_unknown_classes_exit_2_listing_them(batch, colour_run, tmp_path):
    rows = list(csv.reader((batch / "clean.csv").open()))[1:]
    rows[0][1], rows[1][1], rows[2][1] = "purple", "purple", "cyan"
    write_csv(tmp_path / "unknown.csv", rows)
    from labelaudit.cli.app import app

    result = runner.invoke(app, ["check", str(batch / "images"), str(tmp_path / "unknown.csv"),
                                 "--model", str(colour_run / "model"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error: ") and "2 labels the model does not know" in line
    assert "'cyan' (1 row)" in line and "'purple' (2 rows)" in line
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_model_option_accepts_the_run_directory(batch, colour_run):
    from labelaudit.cli.app import app

    result = runner.invoke(app, ["check", str(batch / "images"), str(batch / "clean.csv"),
                                 "--model", str(colour_run), "-o", str(colour_run), "--json"])
    assert result.exit_code == 0, result.output
    assert summary_of(result)["model"] == str(colour_run / "model")



@pytest.mark.parametrize("missing", ["config.json", "model.safetensors"])
def test_a_folder_without_a_model_is_one_line_naming_the_missing_file(batch, colour_run, tmp_path, missing):
    from labelaudit.cli.app import app

    model = tmp_path / "model"
    shutil.copytree(colour_run / "model", model)
    (model / missing).unlink()
    result = runner.invoke(app, ["check", str(batch / "images"), str(batch / "clean.csv"), "--model", str(model),
                                 "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert line == f"Error: {model} is not a labelaudit model directory (no {missing})"

def test_junit_has_one_case_per_limit_and_names_offenders(batch, colour_run, tmp_path):
    junit = tmp_path / "reports" / "labels.xml"
    result = check(batch, "flipped.csv", colour_run, "--max-error-rate", "0.25", "--max-class-error-rate", "0.4",
                   "--max-issues", "5", "--min-images", "10", "--junit", str(junit), "--quiet")
    assert result.exit_code == 1
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites" and root.get("tests") == "4" and root.get("failures") == "3"
    cases = {case.get("name"): case for case in root.iter("testcase")}
    assert set(cases) == {"--max-error-rate 0.25", "--max-class-error-rate 0.4", "--max-issues 5",
                          "--min-images 10"}
    assert cases["--min-images 10"].find("failure") is None
    class_failure = cases["--max-class-error-rate 0.4"].find("failure")
    assert all(name in class_failure.text for name in NAMES)
    issue_failure = cases["--max-issues 5"].find("failure")
    assert "_2_" in issue_failure.text and "suggested" in issue_failure.text  # rows named by path
    assert result.stdout.startswith("FAILED flipped.csv")


def test_github_step_summary_and_annotations(batch, colour_run, tmp_path):
    summary_file = tmp_path / "step_summary.md"
    summary_file.write_text("previous step\n", encoding="utf-8")
    result = check(batch, "flipped.csv", colour_run, "--max-error-rate", "0.25", "--format", "github",
                   "--top", "3", env={"GITHUB_STEP_SUMMARY": str(summary_file)})
    assert result.exit_code == 1
    markdown = summary_file.read_text(encoding="utf-8")
    assert markdown.startswith("previous step\n")  # appended, not overwritten
    assert "### ❌ labelaudit check `flipped.csv` failed" in markdown
    assert "| `--max-error-rate 0.25` | ❌ fail |" in markdown
    assert markdown.count("| given | suggested |") == 1
    lines = result.stdout.splitlines()
    errors = [line for line in lines if line.startswith("::error ")]
    warnings = [line for line in lines if line.startswith("::warning ")]
    assert len(errors) == 1 and errors[0].startswith("::error title=labelaudit check::--max-error-rate")
    assert "%25" in errors[0] and "%" not in errors[0].replace("%25", "")  # escaped for the runner
    assert len(warnings) == 3 and all("title=likely label error::" in w for w in warnings)


def test_json_is_the_only_stdout(batch, colour_run):
    result = check(batch, "flipped.csv", colour_run, "--max-issues", "0", "--json", "--format", "github")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)  # nothing but the JSON document
    assert summary["exit_code"] == 1 and summary["limits"][0]["name"] == "max_issues"
    assert "::error " in result.stderr  # annotations moved to stderr


def test_baseline_reports_change_and_worse_classes(batch, colour_run, tmp_path):
    check(batch, "clean.csv", colour_run, "--report", str(tmp_path / "clean.parquet"), "--quiet")
    result = check(batch, "half.csv", colour_run, "--baseline", str(tmp_path / "clean.parquet"), "--json",
                   "--report", str(tmp_path / "half.parquet"))
    assert result.exit_code == 0, result.output
    baseline = summary_of(result)["baseline"]
    assert baseline["change"] > 0.25
    assert baseline["worse_classes"]
    # a scan's samples.parquet works as a baseline too
    result = check(batch, "clean.csv", colour_run, "--baseline", str(colour_run / "samples.parquet"))
    assert result.exit_code == 0, result.output
    assert "Compared with" in result.stdout


# --------------------------------------------------------------------------- rows seen in training


@pytest.fixture(scope="session")
def fingerprinted_run(colour_run, tmp_path_factory) -> Path:
    """colour_run with its model's training fingerprints and calibration recorded (as ``save_model``
    writes them when given the training images)."""
    from labelaudit.data.dataset import load_labelled_images
    from labelaudit.train.checkpoint import load_model, record_training_data

    run = tmp_path_factory.mktemp("fingerprinted") / "run"
    shutil.copytree(colour_run, run)
    model = load_model(run / "model")
    training = load_labelled_images(colour_run.parent / "images", colour_run.parent / "labels.csv",
                                    image_size=model.image_size, classes=model.classes)
    record_training_data(run / "model", training.images, training.labels, None)
    return run


@pytest.fixture(scope="session")
def mixed_batch(colour_run, batch, tmp_path_factory) -> tuple[Path, list[bool]]:
    """A batch folder with the 60 new images and 12 training images, 6 of them under new names
    (recognised by their pixels, not their names), interleaved; and which rows are training images."""
    root = tmp_path_factory.mktemp("mixed")
    shutil.copytree(batch / "images", root / "images")
    training_rows = list(csv.reader((colour_run.parent / "labels.csv").open()))[1:13]
    new_rows = list(csv.reader((batch / "clean.csv").open()))[1:]
    rows, seen = [], []
    for i, (path, label) in enumerate(training_rows):
        name = path if i % 2 else f"renamed_{i}.png"
        shutil.copy(colour_run.parent / "images" / path, root / "images" / name)
        rows += [[name, label], *new_rows[5 * i:5 * i + 5]]
        seen += [True] + [False] * 5
    write_csv(root / "mixed.csv", rows)
    return root, seen


def test_rows_seen_in_training_are_recognised_and_set_aside(fingerprinted_run, mixed_batch, tmp_path):
    from labelaudit.cli.app import app

    root, seen = mixed_batch
    args = ["check", str(root / "images"), str(root / "mixed.csv"), "--model", str(fingerprinted_run / "model"),
            "-o", str(fingerprinted_run), "--device", "cpu", "--report", str(tmp_path / "mixed.parquet")]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    summary = summary_of(result)
    assert summary["seen_in_training"] == {
        "known": True, "rows": 12, "of": 72, "estimate_covers": 60,
        "message": "12 of 72 usable rows were in the model's training set; the estimate covers the other 60"}
    assert summary["audited"] == 60 and summary["skipped"] == 0 and summary["error_rate"]["n"] == 60
    assert summary["status_counts"] == {"audited": 60, "seen_in_training": 12}
    assert sum(c["n"] for c in summary["classes"]) == 60  # per-class figures leave them out too
    report = pd.read_parquet(tmp_path / "mixed.parquet")
    assert len(report) == 72  # every row is kept
    assert report["seen_in_training"].tolist() == seen  # exactly the training images
    assert (report["status"][report["seen_in_training"]] == "seen_in_training").all()
    assert report["error_probability"][report["seen_in_training"]].isna().all()
    assert sorted(report["rank"].dropna().astype(int)) == list(range(1, 61))
    text = runner.invoke(app, args)
    assert text.exit_code == 0, text.output
    assert "Audited 60 of 72 rows" in text.stdout
    assert "12 of 72 usable rows were in the model's training set; the estimate covers the other 60" in text.stdout


def test_a_batch_of_training_images_cannot_be_estimated(fingerprinted_run, colour_run, tmp_path):
    from labelaudit.cli.app import app

    args = ["check", str(colour_run.parent / "images"), str(colour_run.parent / "labels.csv"),
            "--model", str(fingerprinted_run / "model"), "-o", str(fingerprinted_run), "--device", "cpu",
            "--report", str(tmp_path / "train.parquet")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output  # no limits: report only
    assert "all 90 usable rows were in the model's training set" in result.stdout
    assert "cannot be estimated" in result.stdout and "Estimated error rate" not in result.stdout
    report = pd.read_parquet(tmp_path / "train.parquet")
    assert len(report) == 90 and report["seen_in_training"].all() and report["error_probability"].isna().all()
    gated = runner.invoke(app, [*args, "--max-error-rate", "0.2", "--json"])
    assert gated.exit_code == 1  # a gate does not pass what it could not measure
    summary = summary_of(gated)
    assert summary["error_rate"]["estimate"] is None and summary["audited"] == 0
    [limit] = summary["limits"]
    assert not limit["passed"] and limit["message"].startswith("cannot be checked: all 90 usable rows")


def test_a_model_without_fingerprints_says_it_cannot_tell(batch, colour_run, tmp_path):
    import shutil

    from labelaudit.train.checkpoint import CALIBRATION_FILE, FINGERPRINTS_FILE

    old_run = tmp_path / "old-run"  # a model saved before scans recorded what they trained on
    shutil.copytree(colour_run, old_run)
    for name in (FINGERPRINTS_FILE, CALIBRATION_FILE):
        (old_run / "model" / name).unlink()
    colour_run = old_run
    result = check(batch, "clean.csv", colour_run, "--json", "--report", str(tmp_path / "old.parquet"))
    assert result.exit_code == 0, result.output
    overlap = summary_of(result)["seen_in_training"]
    assert overlap["known"] is False and overlap["rows"] is None and overlap["estimate_covers"] == 60
    assert "cannot tell whether any rows were in its training set" in overlap["message"]
    assert pd.read_parquet(tmp_path / "old.parquet")["seen_in_training"].isna().all()
    text = check(batch, "clean.csv", colour_run, "--report", str(tmp_path / "old.parquet"))
    assert "cannot tell whether any rows were in its training set" in text.stdout


def test_save_model_writes_fingerprints_and_calibration(tmp_path):
    """save_model records the training images' fingerprints (sorted, unique) and, for a method that
    keeps no non-memorised probabilities, an unfitted calibration saying why."""
    from labelaudit.methods.registry import create_method
    from labelaudit.train.checkpoint import image_fingerprints, load_model, save_model
    from labelaudit.train.loop import TrainConfig, create_network

    config = TrainConfig(model=TINY_MODEL, image_size=TINY_SIZE, device="cpu")
    method = create_method("ce")
    method.build_networks(lambda: create_network(config, 3), 3)
    images = np.random.default_rng(0).integers(0, 256, (20, TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8)
    images[5] = images[2]  # a duplicate picture
    save_model(tmp_path / "model", method, config, NAMES, training_images=images,
               training_labels=np.arange(20) % 3)
    model = load_model(tmp_path / "model")
    assert model.training_fingerprints.dtype == np.uint64 and len(model.training_fingerprints) == 19
    assert np.all(np.diff(model.training_fingerprints.astype(np.float64)) > 0)
    assert model.seen_in_training(images[[0, 5]]).all()
    other = images[:2].copy()
    other[:, 0, 0, 0] ^= 1  # one pixel differs
    assert not model.seen_in_training(other).any()
    assert len(set(image_fingerprints(images).tolist())) == 19
    assert model.calibration["fitted"] is False and model.temperature == 1.0
    assert "ce keeps no non-memorised probabilities" in model.calibration["reason"]


def test_an_unreadable_fingerprint_file_is_one_error_line(batch, fingerprinted_run, tmp_path):
    from labelaudit.cli.app import app

    model = tmp_path / "model"
    shutil.copytree(fingerprinted_run / "model", model)
    (model / "training_fingerprints.npy").write_bytes(b"not numpy")
    result = runner.invoke(app, ["check", str(batch / "images"), str(batch / "clean.csv"), "--model", str(model),
                                 "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: cannot read {model / 'training_fingerprints.npy'}")
