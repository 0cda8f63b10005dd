"""The README's pandas and DuckDB queries run as written against a real run directory."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)


@pytest.fixture
def in_run_directory(tmp_path, scanned_run, monkeypatch) -> Path:
    """A working directory whose ``labelaudit-out/`` is a copy of a real scan, as after README's first command."""
    shutil.copytree(scanned_run, tmp_path / "labelaudit-out")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "labelaudit-out"


def test_readme_pandas_query_prints_the_flagged_rows(in_run_directory, capsys):
    (block,) = _blocks("python")
    exec(compile(block, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    samples = pd.read_parquet(in_run_directory / "samples.parquet")
    flagged = samples[samples.is_issue].sort_values("rank")
    assert len(flagged) > 0
    assert printed.splitlines()[0].split() == ["path", "given_label", "suggested_label", "error_probability"]
    assert flagged.iloc[0]["path"] in printed.splitlines()[1]


def test_readme_duckdb_query_counts_flagged_rows_by_label_pair(in_run_directory):
    duckdb = pytest.importorskip("duckdb")
    (block,) = _blocks("sql")
    result = duckdb.sql(block).df()
    samples = pd.read_parquet(in_run_directory / "samples.parquet")
    expected = samples[samples.is_issue].groupby(["given_label", "suggested_label"]).size()
    assert list(result.columns) == ["given_label", "suggested_label", "n"]
    assert result["n"].sum() == expected.sort_values(ascending=False).head(10).sum()
    assert result["n"].is_monotonic_decreasing
    for row in result.itertuples():
        assert expected[(row.given_label, row.suggested_label)] == row.n
