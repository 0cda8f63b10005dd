"""The command line in a newcomer's first hour (issue 16): --version, python -m, review by rank, output that
reads well anywhere, report files that do not overwrite each other, --threads."""

from __future__ import annotations

import io
import subprocess
import sys

from typer.testing import CliRunner

from labelaudit import __version__
from labelaudit.cli.app import app

runner = CliRunner()


# --------------------------------------------------------------------------- --version, python -m

def test_version_prints_the_version_and_exits_0():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"labelaudit {__version__}\n"


def test_python_dash_m_runs_the_same_command_line():
    done = subprocess.run([sys.executable, "-m", "labelaudit", "--version"], capture_output=True, text=True,
                          timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"labelaudit {__version__}\n", "")
    done = subprocess.run([sys.executable, "-m", "labelaudit", "report", "--top", "0"], capture_output=True,
                          text=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", "Error: --top must be at least 1, got 0\n")


# --------------------------------------------------------------------------- shared

import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import textwrap  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from tiny import TINY_MODEL, tiny_train_args  # noqa: E402


@pytest.fixture
def run_dir(scanned_run, tmp_path) -> Path:
    """A private copy of the session's scan, under a long path (report writes into the run directory)."""
    copy = tmp_path / ("a-run-directory-with-a-long-name-" * 3) / "run"
    shutil.copytree(scanned_run, copy, ignore=shutil.ignore_patterns("model"))
    return copy


def by_rank(run: Path) -> pd.DataFrame:
    samples = pd.read_parquet(run / "samples.parquet")
    return samples[samples["rank"].notna()].sort_values("rank", kind="stable")


def n_flagged(rows: pd.DataFrame) -> int:
    return int((rows["is_issue"] == True).sum())  # noqa: E712 (nullable)


def cards(html: Path) -> list[tuple[int, str]]:
    """(rank, data-flagged) of each suspect card of a report page."""
    import re

    text = html.read_text(encoding="utf-8")
    return [(int(rank), flagged) for rank, flagged in re.findall(r'data-rank="(\d+)" data-flagged="(\w+)"', text)]


# --------------------------------------------------------------------------- review by rank

def test_report_top_n_selects_by_rank_flagged_or_not(run_dir):
    ranked = by_rank(run_dir)
    flagged = n_flagged(ranked)
    top = flagged + 5  # more than the flagged rows: the rest are not flagged
    assert len(ranked) > top
    chosen = ranked.head(top)
    result = runner.invoke(app, ["report", "-o", str(run_dir), "--top", str(top)])
    assert result.exit_code == 0, result.output
    description = f"top {top} rows by rank, {n_flagged(chosen)} of them flagged"
    listed = " (first 20 listed)" if top > 20 else ""
    assert f"Most suspicious labels: {description}{listed}" in result.output.splitlines()
    assert result.output.splitlines()[-1] == (f"Wrote {run_dir / 'report.html'} ({description}), "
                                              f"{run_dir / 'suspects.png'}")
    assert cards(run_dir / "report.html") == [(int(row.rank), "true" if row.is_issue else "false")
                                              for row in chosen.itertuples()]
    assert f'<span class="tag">{description}</span>' in (run_dir / "report.html").read_text(encoding="utf-8")


def test_report_default_is_the_flagged_rows(run_dir):
    ranked = by_rank(run_dir)
    flagged = n_flagged(ranked)
    assert flagged > 1
    result = runner.invoke(app, ["report", "-o", str(run_dir)])
    assert result.exit_code == 0, result.output
    listed = " (first 20 listed)" if flagged > 20 else ""
    assert f"Most suspicious labels: the {flagged} flagged rows{listed}" in result.output.splitlines()
    assert cards(run_dir / "report.html") == [(int(rank), "true") for rank in ranked["rank"].head(flagged)]


def test_export_top_n_and_min_error_probability_select_flagged_or_not(run_dir):
    ranked = by_rank(run_dir)
    flagged = n_flagged(ranked)
    top = flagged + 3
    target = run_dir / "top.csv"
    result = runner.invoke(app, ["export", "-o", str(run_dir), "--top", str(top), "--output", str(target)])
    assert result.exit_code == 0, result.output
    chosen = ranked.head(top)
    assert result.stderr == f"Wrote {top} rows to {target}: top {top} rows by rank, {n_flagged(chosen)} of them flagged\n"
    exported = pd.read_csv(target, keep_default_na=False)
    assert list(exported.columns) == ["path", "given_label", "suggested_label", "error_probability", "is_issue"]
    assert exported["path"].tolist() == chosen["path"].tolist()
    assert exported["is_issue"].tolist() == (chosen["is_issue"] == True).tolist()  # noqa: E712

    result = runner.invoke(app, ["export", "-o", str(run_dir), "--min-error-probability", "0", "--output", "-"])
    assert result.exit_code == 0, result.output
    assert pd.read_csv(io.StringIO(result.stdout))["path"].tolist() == ranked["path"].tolist()
    assert result.stderr == (f"Wrote {len(ranked)} rows to stdout: {len(ranked)} rows with error probability ≥ 0, "
                             f"{flagged} of them flagged\n")

    threshold = float(ranked["error_probability"].median())
    result = runner.invoke(app, ["export", "-o", str(run_dir), "--min-error-probability", str(threshold),
                                 "--top", "5", "--output", "-"])
    chosen = ranked[ranked["error_probability"] >= threshold].head(5)
    assert pd.read_csv(io.StringIO(result.stdout))["path"].tolist() == chosen["path"].tolist()
    assert result.stderr == (f"Wrote 5 rows to stdout: top 5 rows by rank with error probability ≥ {threshold:g}, "
                             f"{n_flagged(chosen)} of them flagged\n")


def test_export_default_is_the_flagged_rows(run_dir):
    ranked = by_rank(run_dir)
    flagged = ranked[ranked["is_issue"] == True]  # noqa: E712
    result = runner.invoke(app, ["export", "-o", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert result.stderr == f"Wrote {len(flagged)} rows to {run_dir / 'relabel.csv'}: the {len(flagged)} flagged rows\n"
    assert pd.read_csv(run_dir / "relabel.csv")["path"].tolist() == flagged["path"].tolist()


@pytest.mark.parametrize("args, message", [
    (["export", "--top", "0"], "Error: --top must be at least 1, got 0"),
    (["export", "--min-error-probability", "-0.1"], "Error: --min-error-probability must be between 0 and 1, got -0.1"),
    (["report", "--top", "-3"], "Error: --top must be at least 1, got -3"),
])
def test_bad_selections_are_one_error_line(run_dir, args, message):
    result = runner.invoke(app, [*args, "-o", str(run_dir)])
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", message + "\n")


# --------------------------------------------------------------------------- report files

def test_views_of_a_class_or_elsewhere_keep_the_default_views(run_dir, tmp_path):
    assert runner.invoke(app, ["report", "-o", str(run_dir), "-q"]).exit_code == 0
    defaults = {name: (run_dir / name).read_bytes() for name in ("report.html", "suspects.png")}
    label = by_rank(run_dir)["given_label"].iloc[0]

    result = runner.invoke(app, ["report", "-o", str(run_dir), "--class", label])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1].endswith(f", {run_dir / f'suspects-{label}.png'}")
    assert (run_dir / f"report-{label}.html").is_file() and (run_dir / f"suspects-{label}.png").is_file()

    elsewhere = tmp_path / "review" / "page.html"
    assert runner.invoke(app, ["report", "-o", str(run_dir), "--html", str(elsewhere), "-q"]).exit_code == 0
    assert elsewhere.is_file() and (tmp_path / "review" / "page-suspects.png").is_file()
    assert {name: (run_dir / name).read_bytes() for name in defaults} == defaults


def test_class_names_become_safe_distinct_file_names(tmp_path):
    from labelaudit.report.views import class_slug, view_paths

    assert class_slug("shirt") == "shirt"
    assert class_slug("T-shirt.top_2") == "T-shirt.top_2"
    assert class_slug("a/b") != class_slug("a_b") and class_slug("a/b").startswith("a_b-")
    assert "/" not in class_slug("../x") and not class_slug("../x").startswith(".")
    assert view_paths(tmp_path) == (tmp_path / "report.html", tmp_path / "suspects.png")
    assert view_paths(tmp_path, given_label="dog") == (tmp_path / "report-dog.html", tmp_path / "suspects-dog.png")
    assert view_paths(tmp_path, html=tmp_path / "report.html") == (tmp_path / "report.html", tmp_path / "suspects.png")


def test_help_names_the_sheet_size_of_the_contact_sheet():
    from labelaudit.cli import report
    from labelaudit.report import contact_sheet

    assert report.SHEET_CELLS == contact_sheet.SHEET_CELLS
