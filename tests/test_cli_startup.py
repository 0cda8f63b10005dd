"""The command line starts without importing torch: ``--help`` and light commands stay fast."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap


HEAVY = ("torch", "timm")


def modules_loaded_after(code: str) -> set[str]:
    """Top-level modules a fresh interpreter has imported after running ``code``."""
    script = textwrap.dedent(code) + "\nimport sys\nprint(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    finished = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    return set(finished.stdout.split())


def test_building_the_app_and_its_help_imports_no_torch():
    loaded = modules_loaded_after("""
        from typer.testing import CliRunner
        from labelaudit.cli.app import app

        runner = CliRunner()
        for args in (["--help"], ["scan", "--help"], ["train", "--help"], ["matrix", "--help"],
                     ["check", "--help"], ["report", "--help"], ["export", "--help"]):
            result = runner.invoke(app, args)
            assert result.exit_code == 0, (args, result.output)
            assert "Usage" in result.output
    """)
    assert "labelaudit" in loaded  # the check would pass vacuously if the script imported nothing
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_report_on_a_scan_imports_no_torch(scanned_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(scanned_run, run)
    loaded = modules_loaded_after(f"""
        from typer.testing import CliRunner
        from labelaudit.cli.app import app

        result = CliRunner().invoke(app, ["report", "-o", {str(run)!r}, "--quiet"])
        assert result.exit_code == 0, result.output
    """)
    assert (run / "report.html").is_file()  # the report really ran
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_bad_input_fails_before_torch_is_imported(tmp_path):
    loaded = modules_loaded_after(f"""
        from typer.testing import CliRunner
        from labelaudit.cli.app import app

        for args in (["matrix", "-o", {str(tmp_path)!r}], ["report", "-o", {str(tmp_path)!r}],
                     ["scan", "IMAGES", "LABELS.csv", "--batch-size", "1"], ["train", "IMAGES"]):
            result = CliRunner().invoke(app, args)
            assert result.exit_code == 2 and result.output.startswith("Error:"), result.output
    """)
    assert not loaded & set(HEAVY), loaded & set(HEAVY)
