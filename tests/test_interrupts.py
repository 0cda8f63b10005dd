"""Ctrl-C in any command: one line on stderr saying what was kept, exit code 130, never a traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labelaudit.cli.app import SHOWN_WRITES, app, interrupted_message

runner = CliRunner()


def press_ctrl_c(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.fixture()
def run_dir(tmp_path, scanned_run) -> Path:
    out = tmp_path / "out"
    shutil.copytree(scanned_run, out)
    return out


def snapshot(out: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(out.iterdir()) if path.is_file()}


def one_line(result) -> str:
    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("command, target", [
    (["matrix"], "labelaudit.matrix.estimate_transitions"),
    (["report", "--quiet"], "labelaudit.report.views.select_rows"),
    (["export"], "labelaudit.report.views.relabel_frame"),
])
def test_ctrl_c_before_any_write_says_nothing_was_written(run_dir, monkeypatch, command, target):
    module, name = target.rsplit(".", 1)
    before = snapshot(run_dir)
    monkeypatch.setattr(f"{module}.{name}", press_ctrl_c)
    result = runner.invoke(app, [*command, "-o", str(run_dir)])
    assert one_line(result) == "Interrupted; nothing was written"
    assert snapshot(run_dir) == before


def test_ctrl_c_after_some_writes_names_the_complete_files(run_dir, monkeypatch):
    monkeypatch.setattr("labelaudit.matrix.write_transition", press_ctrl_c)
    before = snapshot(run_dir)
    result = runner.invoke(app, ["matrix", "-o", str(run_dir), "--quiet"])
    line = one_line(result)
    assert line == (f"Interrupted; kept 2 complete files written before it: {run_dir / 'samples.parquet'}, "
                    f"{run_dir / 'classes.parquet'}")
    after = snapshot(run_dir)
    changed = sorted(name for name in before if after.get(name) != before[name])
    assert changed == ["classes.parquet", "samples.parquet"]  # transition.parquet, summary.json untouched


def test_ctrl_c_in_report_keeps_the_html_it_finished(run_dir, monkeypatch):
    monkeypatch.setattr("labelaudit.report.contact_sheet.write_contact_sheet", press_ctrl_c)
    result = runner.invoke(app, ["report", "-o", str(run_dir), "--quiet"])
    assert one_line(result) == f"Interrupted; kept 1 complete file written before it: {run_dir / 'report.html'}"
    assert (run_dir / "report.html").is_file() and not (run_dir / "suspects.png").exists()


def test_ctrl_c_while_scan_decodes(tmp_path, tiny_dataset, monkeypatch):
    from tiny import tiny_train_args

    monkeypatch.setattr("labelaudit.audit.load_labelled_images", press_ctrl_c)
    out = tmp_path / "out"
    result = runner.invoke(app, ["scan", str(tiny_dataset / "images"), str(tiny_dataset / "labels.csv"), "-o",
                                 str(out), *tiny_train_args()])
    assert one_line(result) == "Interrupted; nothing was saved to resume from"
    assert not out.exists() or not any(out.glob("*.parquet"))


def test_ctrl_c_while_check_loads_its_model(tmp_path, scanned_run, tiny_dataset, monkeypatch):
    monkeypatch.setattr("labelaudit.train.checkpoint.load_model", press_ctrl_c)
    report = tmp_path / "junit.xml"
    result = runner.invoke(app, ["check", str(tiny_dataset / "images"), str(tiny_dataset / "labels.csv"),
                                 "--model", str(scanned_run / "model"), "--junit", str(report), "-o",
                                 str(tmp_path / "out")])
    assert one_line(result) == "Interrupted; nothing was written"
    assert not report.exists() and not (tmp_path / "out").exists()


def test_the_line_counts_files_beyond_the_first_few():
    written = [Path(f"out/file{i}") for i in range(SHOWN_WRITES + 2)] + [Path("out/file0")]
    message = interrupted_message(written)
    assert message.startswith(f"Interrupted; kept {SHOWN_WRITES + 2} complete files written before it: out/file0, ")
    assert message.endswith(" and 2 more") and "out/file3" not in message
