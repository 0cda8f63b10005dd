"""Issue 7 through the command line: every hostile row accounted for in samples.parquet, summary.json
and the printed summary; ``--max-pixels``; one-line exit-2 refusals for bad datasets."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from labelaudit.cli.app import app

from tiny import tiny_train_args, write_colour_images, write_csv

runner = CliRunner()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    """24 good images in 3 classes plus one row for every way a row can fail; (images, csv, statuses)."""
    root = tmp_path_factory.mktemp("hostile")
    good = write_colour_images(root, 24, seed=1)
    images = root / "images"
    outside = root / "outside.png"
    Image.new("RGB", (16, 16)).save(outside)
    Image.new("RGB", (300, 300), (200, 30, 30)).save(images / "huge.png")
    (images / "empty.png").write_bytes(b"")
    (images / "folder").mkdir()
    (images / "leak.png").symlink_to(outside)
    first, second, third = good[0][0], good[1][0], good[2][0]
    hostile_rows = [  # (path, label, status)
        ("missing.png", "red", "missing_file"),
        ("folder", "red", "not_a_file"),
        ("../outside.png", "red", "outside_root"),
        ("leak.png", "red", "outside_root"),
        ("empty.png", "red", "unreadable_image"),
        ("huge.png", "red", "image_too_large"),
        (third, " ", "empty_label"),
        (first, "blue", "duplicate_conflict"),  # same file as row 0 with another label: both marked
        (f"./{second}", good[1][1], "duplicate"),  # same file, same label: counted once, noted
    ]
    rows = [(path, label) for path, label in good] + [(path, label) for path, label, _ in hostile_rows]
    statuses = ["audited"] * len(good) + [status for *_, status in hostile_rows]
    statuses[0] = "duplicate_conflict"
    return images, write_csv(root / "labels.csv", rows), statuses


def test_every_hostile_row_is_in_the_report_and_every_reason_counted(tmp_path, hostile):
    images, labels_csv, statuses = hostile
    out = tmp_path / "out"
    result = runner.invoke(app, ["scan", str(images), str(labels_csv), "-o", str(out), "--max-pixels", "40000",
                                 *tiny_train_args(1)])
    assert result.exit_code == 0, result.output

    samples = pd.read_parquet(out / "samples.parquet")
    written = pd.read_csv(labels_csv, keep_default_na=False)
    assert samples["path"].tolist() == written["path"].tolist()  # one row per CSV row, in CSV order
    assert samples["status"].tolist() == statuses
    assert samples.loc[samples["status"] == "audited", "rank"].notna().all()
    assert samples.loc[samples["status"] != "audited", "rank"].isna().all()

    counts = Counter(statuses)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status_counts"] == dict(counts)
    assert summary["rows"] == len(statuses) and summary["skipped"] == len(statuses) - counts["audited"]
    printed = " ".join(result.stdout.split())
    assert f"Audited {counts['audited']} of {len(statuses)} rows (skipped {summary['skipped']}: " in printed
    for reason, n in counts.items():
        if reason != "audited":
            assert f"{n} {reason}" in printed, reason


def test_without_max_pixels_a_large_image_is_audited(tmp_path, hostile):
    images, labels_csv, statuses = hostile
    out = tmp_path / "out"
    result = runner.invoke(app, ["scan", str(images), str(labels_csv), "-o", str(out), "--quiet",
                                 *tiny_train_args(1)])
    assert result.exit_code == 0, result.output
    samples = pd.read_parquet(out / "samples.parquet")
    assert samples.loc[samples["path"] == "huge.png", "status"].item() == "audited"


def refusal(tmp_path: Path, *args: str) -> str:
    result = runner.invoke(app, ["scan", *map(str, args), "-o", str(tmp_path / "out"), *tiny_train_args(1)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.output
    return lines[0]


def test_semicolon_csv_suggests_the_delimiter(tmp_path, hostile):
    images, labels_csv, _ = hostile
    semicolons = tmp_path / "labels.csv"
    semicolons.write_text(labels_csv.read_text().replace(",", ";"))
    assert refusal(tmp_path, images, semicolons).endswith("looks ';'-delimited; pass --delimiter ';'")


def test_missing_label_column_names_the_columns_found(tmp_path, hostile):
    images, labels_csv, _ = hostile
    other = tmp_path / "labels.csv"
    other.write_text(labels_csv.read_text().replace("path,label", "path,class", 1))
    assert "has no column 'label' (columns found: path, class); use --label-column" in refusal(tmp_path, images, other)


def test_images_root_without_a_usable_image(tmp_path, hostile):
    _, labels_csv, _ = hostile
    (tmp_path / "empty").mkdir()
    assert "no usable image in" in refusal(tmp_path, tmp_path / "empty", labels_csv)


def test_missing_images_root(tmp_path, hostile):
    _, labels_csv, _ = hostile
    assert "does not exist" in refusal(tmp_path, tmp_path / "nowhere", labels_csv)


def test_a_single_class_is_refused(tmp_path, hostile):
    images, labels_csv, _ = hostile
    reds = tmp_path / "reds.csv"
    write_csv(reds, [row for row in pd.read_csv(labels_csv).itertuples(index=False) if row.label == "red"][:8])
    assert "only one class 'red'" in refusal(tmp_path, images, reds)


def test_too_few_rows_per_class_for_the_folds_names_the_classes(tmp_path, hostile):
    images, labels_csv, _ = hostile
    uneven = tmp_path / "uneven.csv"
    rows = [row for row in pd.read_csv(labels_csv).itertuples(index=False) if str(row.path).startswith(
        ("red_", "green_", "blue_"))]
    kept = [row for row in rows if row.label != "blue"] + [row for row in rows if row.label == "blue"][:2]
    write_csv(uneven, [(row.path, row.label) for row in kept])
    message = refusal(tmp_path, images, uneven, "--folds", "3")
    assert message.endswith("--folds 3 needs at least 3 rows per class; too few: blue (2)")
