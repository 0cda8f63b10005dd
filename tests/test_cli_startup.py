"""The command line starts without importing torch: ``--help`` and light commands stay fast."""

from __future__ import annotations

import json
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
                     ["scan", "IMAGES", "LABELS.csv", "--batch-size", "1"], ["train", "IMAGES"],
                     ["check", "IMAGES", "BATCH.csv", "--model", {str(tmp_path)!r}]):
            result = CliRunner().invoke(app, args)
            assert result.exit_code == 2 and result.output.startswith("Error:"), result.output
    """)
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_garbage_collection_waits_for_the_imports_then_runs_during_the_work(scanned_run, tiny_dataset, tmp_path):
    """Each command resumes collection (after freezing what start-up made) once its libraries are loaded."""
    run = tmp_path / "run"
    shutil.copytree(scanned_run, run)
    images, labels = str(tiny_dataset / "images"), str(tiny_dataset / "labels.csv")  # they exist: no early refusal
    script = textwrap.dedent(f"""
        import gc, json, sys
        import labelaudit.audit, labelaudit.gate, labelaudit.report.views
        import labelaudit.matrix, labelaudit.training
        from labelaudit.cli.app import main
        from labelaudit.errors import LabelAuditError

        seen = {{}}

        def stand_in(command):
            def record(*args, **kwargs):
                seen[command] = {{"collecting": gc.isenabled(), "frozen": gc.get_freeze_count(),
                                  "timm": "timm" in sys.modules}}
                raise LabelAuditError("stopped by the test")
            return record

        labelaudit.audit.run_scan = stand_in("scan")
        labelaudit.training.run_train = stand_in("train")
        labelaudit.matrix.run_matrix = stand_in("matrix")
        labelaudit.gate.run_check = stand_in("check")
        # report and export load their run with the same function: recorded under the command's name
        labelaudit.report.views.load_run = lambda *args, **kwargs: stand_in(sys.argv[1])(*args, **kwargs)
        run, images, labels = {str(run)!r}, {images!r}, {labels!r}
        for args in (["scan", images, labels, "-o", run + "-new"], ["train", images, labels, "-o", run],
                     ["matrix", "-o", run], ["check", images, labels, "--model", run + "/model"],
                     ["report", "-o", run], ["export", "-o", run]):
            gc.unfreeze()
            sys.argv = ["labelaudit", *args]
            try:
                main()
            except SystemExit as exit:
                assert exit.code == 2, (args, exit.code)
            assert gc.isenabled(), args
        print(json.dumps(seen))
    """)
    finished = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    seen = json.loads(finished.stdout.strip().splitlines()[-1])
    assert set(seen) == {"scan", "train", "matrix", "check", "report", "export"}
    for command, state in seen.items():
        assert state["collecting"], command
        assert state["frozen"] > 1000, (command, state)  # start-up's objects were frozen, not collected
    assert all(seen[command]["timm"] for command in ("scan", "train", "matrix", "check"))
