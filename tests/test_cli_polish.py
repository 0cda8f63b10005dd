"""The command line in a newcomer's first hour (issue 16): --version, python -m, review by rank, output that
reads well anywhere, report files that do not overwrite each other, --threads."""

from __future__ import annotations

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
