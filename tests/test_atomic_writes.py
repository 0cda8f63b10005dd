"""A report writer killed mid-way (SIGKILL) leaves the previous complete file, or none — never half of one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from labelaudit.report.files import atomic_path, write_json
from labelaudit.report.parquet import write_parquet

from tiny import REPO

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")

# Writes half of a Parquet file through labelaudit's writer, says so, and hangs until killed.
HANGING_PARQUET_WRITER = """
import sys, time
from pathlib import Path
import pandas as pd
import pyarrow.parquet as pq
from labelaudit.report.parquet import write_parquet

target, half_written = Path(sys.argv[1]), Path(sys.argv[2])

def write_half_then_hang(table, where, **options):
    writer = pq.ParquetWriter(where, table.schema)
    writer.write_table(table.slice(0, len(table) // 2))  # a row group on disk, no footer yet
    half_written.write_text(str(where))
    time.sleep(600)

pq.write_table = write_half_then_hang
write_parquet(pd.DataFrame({"value": range(50_000), "text": ["new"] * 50_000}), target)
"""

# Writes a large report with labelaudit's real writers.
LARGE_WRITER = """
import sys
from pathlib import Path
import pandas as pd
from labelaudit.report.files import write_json
from labelaudit.report.parquet import write_parquet

kind, target = sys.argv[1], Path(sys.argv[2])
rows = 1_500_000
if kind == "parquet":
    write_parquet(pd.DataFrame({"value": range(rows), "text": [f"row {i} new" for i in range(rows)]}), target)
else:
    write_json(target, {"rows": [{"index": i, "text": "new"} for i in range(rows)]})
"""


def start(script: str, *args: object) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(condition, process: subprocess.Popen, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"writer exited early: {process.communicate()[1]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("writer never started writing")
        time.sleep(0.001)


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL


def temporaries(target: Path) -> list[Path]:
    return sorted(target.parent.glob(f".{target.name}.*.tmp"))


OLD = pd.DataFrame({"value": [1, 2, 3], "text": ["old", "old", "old"]})


@pytest.mark.parametrize("previous", [True, False], ids=["over an old report", "no old report"])
def test_writer_killed_half_way_leaves_the_old_parquet_or_none(tmp_path, previous):
    target, half_written = tmp_path / "samples.parquet", tmp_path / "half-written"
    if previous:
        write_parquet(OLD, target)
    writer = start(HANGING_PARQUET_WRITER, target, half_written)
    wait_for(half_written.exists, writer)
    kill(writer)

    stale = Path(half_written.read_text())
    assert stale.parent == tmp_path and stale.stat().st_size > 0  # the half-written temporary is left
    with pytest.raises(Exception):
        pq.read_table(stale)  # and it is not a readable Parquet file
    if previous:
        pd.testing.assert_frame_equal(pd.read_parquet(target), OLD)
    else:
        assert not target.exists()

    # The stale temporary does not get in the way of the next write.
    new = pd.DataFrame({"value": [7], "text": ["next"]})
    write_parquet(new, target)
    pd.testing.assert_frame_equal(pd.read_parquet(target), new)
    assert stale.exists() and temporaries(target) == [stale]


@pytest.mark.parametrize("kind", ["parquet", "json"])
def test_real_writer_killed_while_writing_a_large_report(tmp_path, kind):
    target = tmp_path / ("samples.parquet" if kind == "parquet" else "summary.json")
    if kind == "parquet":
        write_parquet(OLD, target)
    else:
        write_json(target, {"rows": "old"})
    writer = start(LARGE_WRITER, kind, target)
    wait_for(lambda: bool(temporaries(target)), writer)
    kill(writer)

    # Killed before the rename (almost always): the old file; after it: the complete new one.
    if kind == "parquet":
        written = pd.read_parquet(target)
        assert written.equals(OLD) or (len(written) == 1_500_000 and written["text"].iloc[-1] == "row 1499999 new")
    else:
        written = json.loads(target.read_text(encoding="utf-8"))
        assert written == {"rows": "old"} or len(written["rows"]) == 1_500_000
    # A stale temporary left by the killed writer does not get in the way of the next write.
    if kind == "parquet":
        write_parquet(OLD.head(1), target)
        pd.testing.assert_frame_equal(pd.read_parquet(target), OLD.head(1))
    else:
        write_json(target, {"rows": "next"})
        assert json.loads(target.read_text(encoding="utf-8")) == {"rows": "next"}


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, error):
    target = tmp_path / "summary.json"
    write_json(target, {"version": 1})
    with pytest.raises(error):
        with atomic_path(target) as temporary:
            temporary.write_text('{"version": 2, "trunc')
            raise error()
    assert json.loads(target.read_text()) == {"version": 1}
    assert temporaries(target) == []


def test_temporary_is_beside_the_target_and_gets_the_usual_mode(tmp_path):
    target = tmp_path / "deep" / "er" / "file.json"
    with atomic_path(target) as temporary:
        assert temporary.parent == target.parent and temporary.name.startswith(".file.json.")
        temporary.write_text("{}")
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
