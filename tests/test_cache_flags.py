"""Whether a run used the decode cache: recorded in run.json, and ``matrix --no-cache`` leaves it alone."""

from __future__ import annotations

import json
import shutil

import pandas as pd
from typer.testing import CliRunner

from labelaudit.cli.app import app
from tiny import tiny_train_args

runner = CliRunner()


def test_run_json_records_whether_the_scan_used_the_cache(scanned_run, tiny_dataset, tmp_path):
    assert json.loads((scanned_run / "run.json").read_text())["image_cache"] is True
    out = tmp_path / "nocache"
    result = runner.invoke(app, ["scan", str(tiny_dataset / "images"), str(tiny_dataset / "labels.csv"), "-o",
                                 str(out), "--quiet", "--no-cache", *tiny_train_args(epochs=1)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "run.json").read_text())["image_cache"] is False
    assert not (out / "cache").exists()


def test_matrix_no_cache_decodes_without_touching_the_cache_folder(scanned_run, tiny_dataset, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(scanned_run, out)
    shutil.rmtree(out / "cache")
    gold = tmp_path / "gold.csv"
    pd.read_csv(tiny_dataset / "truth.csv").head(40).to_csv(gold, index=False)
    args = ["matrix", "--trusted", str(gold), "-o", str(out), "--bootstrap", "0", "--quiet"]

    result = runner.invoke(app, [*args, "--no-cache"])
    assert result.exit_code == 0, result.output
    assert not (out / "cache").exists()

    result = runner.invoke(app, args)  # the default does use (and so create) the cache
    assert result.exit_code == 0, result.output
    assert (out / "cache").is_dir()
