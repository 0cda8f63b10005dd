"""``scan`` data-issue columns end to end: planted duplicates, a label conflict, leakage across
``--split-column`` values, a dark and a blurred image; ``check`` failing on leakage."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFilter
from typer.testing import CliRunner

from labelaudit.cli.app import app

from tiny import TINY_SIZE, tiny_train_args, write_csv

runner = CliRunner()


def textured(seed: int) -> Image.Image:
    """A coloured picture with sharp 2x2-pixel blocks, so that blurring it is visible at 16 px."""
    rng = np.random.default_rng(seed)
    base = np.array([(220, 40, 40), (40, 190, 60), (40, 70, 220)][seed % 3], dtype=float)
    blocks = rng.normal(0, 60, (TINY_SIZE // 2, TINY_SIZE // 2, 1))
    pixels = base + np.kron(blocks, np.ones((2, 2, 1)))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("issues")
    images = root / "images"
    images.mkdir()
    rows = []
    for i in range(48):
        name = f"textured_{i}.png"
        textured(i).save(images / name)
        rows.append((name, ["red", "green", "blue"][i % 3]))
    table = [(path, label, "train") for path, label in rows]
    first, second = rows[0], rows[1]
    shutil.copyfile(images / first[0], images / "copy_in_test.png")  # the same picture in the test split
    table.append(("copy_in_test.png", first[1], "test"))
    shutil.copyfile(images / second[0], images / "relabelled.png")  # the same picture, another label
    table.append(("relabelled.png", "blue" if second[1] != "blue" else "red", "train"))
    table.append((first[0], first[1], "val"))  # the very same file listed again, in another split
    dark = np.asarray(textured(100), dtype=float) * 0.15  # a picture not in the dataset otherwise
    Image.fromarray(dark.astype(np.uint8)).save(images / "dark.png")
    table.append(("dark.png", "red", "train"))
    textured(101).filter(ImageFilter.GaussianBlur(1.5)).save(images / "blurred.png")
    table.append(("blurred.png", "green", "train"))
    write_csv(root / "labels.csv", table, header=("path", "label", "split"))
    out = root / "run"
    result = runner.invoke(app, ["scan", str(images), str(root / "labels.csv"), "-o", str(out), "--split-column",
                                 "split", "--quiet", "--threads", "1", *tiny_train_args(epochs=2)])
    assert result.exit_code == 0, result.output
    return {"root": root, "run": out, "first": first[0], "second": second[0]}


def test_duplicates_conflicts_and_leaks_are_found(planted):
    samples = pd.read_parquet(planted["run"] / "samples.parquet").set_index("path", drop=False)
    first, second = planted["first"], planted["second"]
    leak_rows = samples[samples["is_leak"] == True]  # noqa: E712
    assert sorted(leak_rows["path"]) == sorted([first, "copy_in_test.png", first])
    assert set(leak_rows["split"]) == {"train", "test", "val"}
    # the label conflict is the set to look at first; the leak set comes next
    conflict = samples.loc[[second, "relabelled.png"]]
    assert (conflict["duplicate_set"] == 1).all()
    assert (leak_rows["duplicate_set"] == 2).all()
    assert samples["is_duplicate"].sum() == 5
    others = samples[~samples["path"].isin([first, second, "copy_in_test.png", "relabelled.png"])]
    assert not others["is_duplicate"].any() and others["duplicate_set"].isna().all()
    assert samples.loc["dark.png", "quality_issues"].tolist() == ["dark"]
    assert "blurry" in samples.loc["blurred.png", "quality_issues"].tolist()
    clean = samples[~samples["path"].isin(["dark.png", "blurred.png"]) & (samples["status"] == "audited")]
    assert sum(len(issues) for issues in clean["quality_issues"]) <= 1
    audited = samples[samples["status"] == "audited"]
    assert audited["width"].eq(TINY_SIZE).all() and audited["brightness"].between(0, 1).all()
    assert audited["outlier_score"].gt(0).all() and audited["is_outlier"].notna().all()

    summary = json.loads((planted["run"] / "summary.json").read_text())
    issues = summary["data_issues"]
    assert issues["leakage"] == {"sets": 1, "rows": 3, "splits": ["test", "train", "val"]}
    assert issues["duplicates"]["label_conflict_sets"] == 1 and issues["duplicates"]["sets"] == 2
    assert issues["quality"]["counts"]["dark"] == 1
    classes = pd.read_parquet(planted["run"] / "classes.parquet")
    assert classes["share"].sum() == pytest.approx(1.0)


def test_terminal_summary_names_the_leak(planted):
    root = planted["root"]
    result = runner.invoke(app, ["scan", str(root / "images"), str(root / "labels.csv"), "-o", str(planted["run"]),
                                 "--split-column", "split", "--threads", "1", *tiny_train_args(epochs=2)])
    assert result.exit_code == 0, result.output
    assert "leakage: 3 rows in 1 sets span split values" in result.output
    assert "1 sets with different labels" in result.output


def test_unknown_split_column_is_one_line_error(planted, tmp_path):
    root = planted["root"]
    result = runner.invoke(app, ["scan", str(root / "images"), str(root / "labels.csv"), "-o", str(tmp_path / "x"),
                                 "--split-column", "fold_name", "--quiet", *tiny_train_args(epochs=1)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "Error: --split-column 'fold_name' is not a column of the CSV (its other columns: split)"]


def test_export_lists_rows_to_drop_and_recheck(planted):
    result = runner.invoke(app, ["export", "--format", "data-issues-csv", "-o", str(planted["run"])])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(planted["run"] / "data-issues.csv")
    by_path = {(row.path, row.action): row.reason for row in frame.itertuples()}
    # the relabelled copy: both rows re-checked; the copies of the first image: all but one dropped as leaks
    assert (planted["second"], "recheck") in by_path and ("relabelled.png", "recheck") in by_path
    assert by_path[("copy_in_test.png", "drop")] == f"leak: duplicate of {planted['first']}"
    assert list(frame["action"]).count("drop") == 2
    assert by_path[("dark.png", "recheck")] == "image quality: dark"
    assert "Wrote" in result.output and "2 to drop" in result.output


def test_html_report_has_a_section_per_issue_type(planted):
    result = runner.invoke(app, ["report", "-o", str(planted["run"]), "--quiet"])
    assert result.exit_code == 0, result.output
    page = (planted["run"] / "report.html").read_text(encoding="utf-8")
    assert 'id="duplicates"' in page and "Set 1 · 2 rows" in page and "different labels" in page
    assert "leak across split" in page
    assert 'id="quality"' in page and 'id="outliers"' in page
    duplicates = page[page.index('id="duplicates"'):page.index('id="outliers"')]
    assert duplicates.count("<img ") == 5  # every row of both sets, side by side


@pytest.fixture(scope="module")
def batch(planted):
    root = planted["root"] / "batch"
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(200, 209):
        textured(i).save(root / "images" / f"new_{i}.png")
        rows.append((f"new_{i}.png", ["red", "green", "blue"][i % 3]))
    shutil.copyfile(root / "images" / "new_200.png", root / "images" / "new_200_again.png")
    rows.append(("new_200_again.png", rows[0][1]))
    write_csv(root / "clean.csv", rows)
    shutil.copyfile(planted["root"] / "images" / "textured_5.png", root / "images" / "from_training.png")
    write_csv(root / "leaky.csv", [*rows[1:], ("from_training.png", "blue")])
    return root


def check(batch, csv_name, run, *options):
    return runner.invoke(app, ["check", str(batch / "images"), str(batch / csv_name), "--model", str(run / "model"),
                               "-o", str(run), "--device", "cpu", "--threads", "1", "--report",
                               str(batch / f"{csv_name}.parquet"), *options])


def test_check_fails_on_leakage_and_on_duplicates(planted, batch):
    junit = batch / "leaky.xml"
    leaky = check(batch, "leaky.csv", planted["run"], "--fail-on-leakage", "--json", "--junit", str(junit))
    assert leaky.exit_code == 1, leaky.output
    summary = json.loads(leaky.stdout)
    [limit] = summary["limits"]
    assert limit["name"] == "leakage" and not limit["passed"] and limit["offenders"] == ["from_training.png"]
    report = pd.read_parquet(batch / "leaky.csv.parquet").set_index("path")
    assert report.loc["from_training.png", "is_leak"] == True  # noqa: E712
    assert not report.drop(index="from_training.png")["is_leak"].any()
    assert 'name="--fail-on-leakage"' in junit.read_text(encoding="utf-8")

    clean = check(batch, "clean.csv", planted["run"], "--fail-on-leakage", "--quiet")
    assert clean.exit_code == 0, clean.output
    duplicated = check(batch, "clean.csv", planted["run"], "--max-duplicates", "0", "--json")
    assert duplicated.exit_code == 1
    [limit] = json.loads(duplicated.stdout)["limits"]
    assert limit["value"] == 2 and limit["message"].startswith("2 rows in 1 duplicate sets within the batch")
    allowed = check(batch, "clean.csv", planted["run"], "--max-duplicates", "2", "--quiet")
    assert allowed.exit_code == 0, allowed.output


def test_no_data_checks_leaves_the_columns_null(planted, tmp_path):
    root, out = planted["root"], tmp_path / "plain"
    base = ["scan", str(root / "images"), str(root / "labels.csv"), "-o", str(out), "--quiet", "--threads", "1",
            *tiny_train_args(epochs=1)]
    refused = runner.invoke(app, [*base, "--no-data-checks", "--split-column", "split"])
    assert refused.exit_code == 2
    assert refused.output.strip() == "Error: --split-column needs the data checks; drop --no-data-checks"
    result = runner.invoke(app, [*base, "--no-data-checks"])
    assert result.exit_code == 0, result.output
    samples = pd.read_parquet(out / "samples.parquet")
    assert samples["duplicate_set"].isna().all() and samples["quality_issues"].isna().all()
    assert json.loads((out / "summary.json").read_text())["data_issues"] is None
    export = runner.invoke(app, ["export", "--format", "data-issues-csv", "-o", str(out)])
    assert export.exit_code == 2
    assert "has no data-issue columns; scan again without --no-data-checks" in export.output
