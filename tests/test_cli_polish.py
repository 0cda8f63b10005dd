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


# --------------------------------------------------------------------------- output anywhere

def test_quiet_scan_prints_the_one_line_result(tmp_path, tiny_dataset):
    out = tmp_path / "out"
    result = runner.invoke(app, ["scan", str(tiny_dataset / "images"), str(tiny_dataset / "labels.csv"), "-o", str(out),
                                 "--quiet", *tiny_train_args(1)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    lines = [f"Audited 96 of 96 rows: estimated wrong labels {summary['estimated_error_rate']:.1%} "
             f"({summary['estimated_errors']:.0f}), {summary['n_issues']} flagged; run directory {out}"]
    if summary["reliable"] is False:
        lines.append(f"Unreliable audit: {summary['reliability_reason']}")
    assert result.stdout == "\n".join(lines) + "\n"
    assert result.stderr == ""


def fake_summary(out: Path, *, reliable: bool) -> dict:
    return {"audited": 1500, "rows": 1500, "estimated_error_rate": 0.098, "estimated_errors": 147.2,
            "n_issues": 147, "run_directory": str(out), "reliable": reliable,
            "reliability_reason": "the model agrees with the given labels on 31% of rows, barely above chance (12%)"}


@pytest.fixture
def fake_scan(monkeypatch, tmp_path):
    """``run_scan`` replaced by a stand-in that records torch's thread count and returns a fixed summary."""
    import torch

    import labelaudit.audit
    from labelaudit.audit import ScanResult

    seen = {}
    threads = torch.get_num_threads()

    def run_scan(settings, **kwargs):
        seen["threads"] = torch.get_num_threads()
        out = Path(settings.out)
        return ScanResult(out=out, summary=fake_summary(out, reliable=False), samples=pd.DataFrame(),
                          classes=pd.DataFrame())

    monkeypatch.setattr(labelaudit.audit, "run_scan", run_scan)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels.csv").write_text("path,label\n")
    yield ["scan", str(tmp_path / "images"), str(tmp_path / "labels.csv"), "-o", "labelaudit-out"], seen
    torch.set_num_threads(threads)


def test_quiet_scan_adds_the_unreliable_line_and_json_stays_json(fake_scan):
    args, _ = fake_scan
    result = runner.invoke(app, [*args, "--quiet"])
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == ("Audited 1500 of 1500 rows: estimated wrong labels 9.8% (147), 147 flagged; run "
                             "directory labelaudit-out\nUnreliable audit: the model agrees with the given labels on "
                             "31% of rows, barely above chance (12%)\n")
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == fake_summary(Path("labelaudit-out"), reliable=False)


def test_threads_sets_torchs_intra_op_threads(fake_scan):
    import torch

    args, seen = fake_scan
    before = torch.get_num_threads()
    assert runner.invoke(app, [*args, "--quiet"]).exit_code == 0
    assert seen["threads"] == before  # default: what torch picked
    result = runner.invoke(app, [*args, "--quiet", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert seen["threads"] == 1
    result = runner.invoke(app, [*args, "--threads", "0"])
    assert result.exit_code == 2
    assert result.stderr == "Error: Invalid value for '--threads': Input should be greater than or equal to 1\n"
    for command in ("scan", "train", "matrix", "check"):
        assert "--threads" in runner.invoke(app, [command, "--help"]).output


def test_quiet_matrix_and_train_print_one_line(run_dir):
    result = runner.invoke(app, ["matrix", "-o", str(run_dir), "--bootstrap", "0", "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads((run_dir / "summary.json").read_text())
    assert result.stdout == (f"Re-scored with T from {summary['transition_estimator']}: estimated wrong labels "
                             f"{summary['estimated_error_rate']:.1%} ({summary['estimated_errors']:.0f}), "
                             f"{summary['n_issues']} flagged; run directory {run_dir}\n")

    result = runner.invoke(app, ["train", "-o", str(run_dir), "--method", "ce", "--epochs", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Trained ce on 96 images in ") and result.stdout.endswith(
        f" s; model {run_dir / 'model'}\n")
    assert result.stdout.count("\n") == 1


def test_output_to_a_pipe_is_not_wrapped(run_dir):
    env = {key: value for key, value in os.environ.items() if key != "COLUMNS"}
    done = subprocess.run([sys.executable, "-m", "labelaudit", "report", "-o", str(run_dir), "--top", "3"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    ranked = by_rank(run_dir).head(3)
    description = f"top 3 rows by rank, {n_flagged(ranked)} of them flagged"
    wrote = f"Wrote {run_dir / 'report.html'} ({description}), {run_dir / 'suspects.png'}"
    assert len(wrote) > 200 and done.stdout.splitlines()[-1] == wrote


def modules_loaded_after(code: str) -> tuple[set[str], str]:
    script = textwrap.dedent(code) + "\nimport sys\nprint(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    *printed, modules = done.stdout.splitlines()
    return set(modules.split()), "\n".join(printed)


def test_missing_inputs_are_refused_at_once_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "labelaudit", "scan", "missing/", "missing.csv"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", "Error: images folder missing does not exist\n")
    (tmp_path / "images").mkdir()
    loaded, printed = modules_loaded_after(f"""
        import os
        from typer.testing import CliRunner
        from labelaudit.cli.app import app

        os.chdir({str(tmp_path)!r})
        for args in (["scan", "missing/", "missing.csv"], ["scan", "images", "missing.csv"],
                     ["scan", "images", "images"], ["scan", "images", "missing.csv", "--weights", "w.pt"],
                     ["train", "images", "missing.csv"]):
            result = CliRunner().invoke(app, args)
            print(result.exit_code, repr(result.stderr))
    """)
    assert printed.splitlines() == [
        "2 'Error: images folder missing does not exist\\n'",
        "2 'Error: labels file missing.csv does not exist\\n'",
        "2 'Error: labels file images is not a regular file\\n'",
        "2 'Error: labels file missing.csv does not exist\\n'",
        "2 'Error: labels file missing.csv does not exist\\n'",
    ]
    assert not loaded & {"torch", "timm", "pandas"}, loaded & {"torch", "timm", "pandas"}


def test_csv_without_a_header_row_gets_its_own_message(tmp_path, tiny_dataset):
    csv = tmp_path / "labels.csv"
    csv.write_text("img1.png,cat\nimg2.png,dog\n")
    result = runner.invoke(app, ["scan", str(tiny_dataset / "images"), str(csv), "-o", str(tmp_path / "out")])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (f"Error: labels file {csv} needs a header row (e.g. path,label) naming its columns; "
                             "its first line looks like data: img1.png,cat\n")
    csv.write_text("file,label\nimg1.png,cat\n")  # a header with another name: the column message stays
    result = runner.invoke(app, ["scan", str(tiny_dataset / "images"), str(csv), "-o", str(tmp_path / "out")])
    assert result.stderr == (f"Error: labels file {csv} has no column 'path' (columns found: file, label); "
                             "use --path-column\n")


def test_unknown_model_is_refused_before_decoding(tmp_path, tiny_dataset):
    out = tmp_path / "out"
    result = runner.invoke(app, ["scan", str(tiny_dataset / "images"), str(tiny_dataset / "labels.csv"), "-o", str(out),
                                 "--model", "no_such_net_xyz"])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == "Error: unknown timm model 'no_such_net_xyz' (see timm.list_models())\n"
    assert not out.exists()  # no decode cache left behind


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
