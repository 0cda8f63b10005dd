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


def has_text(path: Path) -> bool:
    """The writer creates the file, then writes to it: wait for both."""
    return path.exists() and bool(path.read_text())


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
    wait_for(lambda: has_text(half_written), writer)
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


# --- leftovers of killed writers are cleaned up by the next write of the same file -------------------

def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


def test_next_write_removes_only_stale_temporaries_of_the_same_file(tmp_path):
    from labelaudit.report.files import STALE_SECONDS

    target = tmp_path / "summary.json"
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    stale = tmp_path / ".summary.json.a1b2c3d_.tmp"
    fresh = tmp_path / ".summary.json.zz99yy88.tmp"  # may belong to a writer still at work
    kept = {
        "other target": tmp_path / ".classes.parquet.a1b2c3d4.tmp",
        "not a temporary name": tmp_path / ".summary.json.my-notes.tmp",
        "no leading dot": tmp_path / "summary.json.a1b2c3d4.tmp",
        "other suffix": tmp_path / ".summary.json.a1b2c3d4.bak",
        "folder": tmp_path / ".summary.json.f0f0f0f0.tmp",
        "symlink": tmp_path / ".summary.json.1111aaaa.tmp",
    }
    for path in [stale, fresh, *kept.values()]:
        if path.name.startswith(".summary.json.f0"):
            path.mkdir()
            (path / "inside").write_text("x")
        elif path.name.startswith(".summary.json.1111"):
            path.symlink_to(outside)
        else:
            path.write_text("left by a killed writer")
        age(path, 0 if path == fresh else STALE_SECONDS + 60)

    with pytest.raises(RuntimeError):  # a failed write cleans up nothing
        with atomic_path(target):
            raise RuntimeError()
    assert stale.exists()

    write_json(target, {"version": 1})
    assert not stale.exists() and fresh.exists()
    for reason, path in kept.items():
        assert os.path.lexists(path), reason
    assert outside.read_text() == "keep me"
    assert json.loads(target.read_text()) == {"version": 1}


def test_a_killed_writers_temporary_is_removed_once_stale(tmp_path):
    target, half_written = tmp_path / "samples.parquet", tmp_path / "half-written"
    writer = start(HANGING_PARQUET_WRITER, target, half_written)
    wait_for(lambda: has_text(half_written), writer)
    kill(writer)
    stale = Path(half_written.read_text())
    write_parquet(OLD, target)
    assert temporaries(target) == [stale]  # too young: it could be another writer's
    age(stale, 3600)
    write_parquet(OLD, target)
    assert temporaries(target) == []


# --- a model folder is replaced as a whole ------------------------------------------------------------

# Saves a model whose weights come from seed argv[2] into argv[1]; with argv[3] = "config", hangs
# once the weights are written and config.json is next; with "swap", hangs between moving the old
# folder aside and moving the new one in. Touches argv[4] when it hangs.
HANGING_MODEL_WRITER = """
import os, sys, time
from pathlib import Path
import torch
from labelaudit.methods.registry import create_method
from labelaudit.train import checkpoint
from labelaudit.train.config import TrainConfig
from labelaudit.train.loop import create_network
from labelaudit.report import files

target, seed, where, hanging = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])

def hang():
    hanging.touch()
    time.sleep(600)

if where == "config":
    original_write = checkpoint._write_json_file
    def write_then_hang(path, payload):
        if path.name == "config.json":
            hang()
        original_write(path, payload)
    checkpoint._write_json_file = write_then_hang
else:
    original_rename = os.rename
    def rename_then_hang(source, destination):
        if Path(destination) == target:
            hang()
        original_rename(source, destination)
    files.os.rename = rename_then_hang

torch.manual_seed(seed)
config = TrainConfig(model="test_resnet", image_size=16)
method = create_method("ce")
method.build_networks(lambda: create_network(config, 3), 3)
checkpoint.save_model(target, method, config, ["a", "b", "c"], metrics={"seed": seed})
"""


def save_tiny_model(target: Path, seed: int) -> Path:
    import torch

    from labelaudit.methods.registry import create_method
    from labelaudit.train.checkpoint import save_model
    from labelaudit.train.config import TrainConfig
    from labelaudit.train.loop import create_network

    torch.manual_seed(seed)
    config = TrainConfig(model="test_resnet", image_size=16)
    method = create_method("ce")
    method.build_networks(lambda: create_network(config, 3), 3)
    return save_model(target, method, config, ["a", "b", "c"], metrics={"seed": seed})


def assert_complete_model(directory: Path, seed: int, reference: dict) -> None:
    import torch
    from safetensors.torch import load_file

    from labelaudit.train.checkpoint import load_model

    assert json.loads((directory / "metrics.json").read_text()) == {"seed": seed}
    weights = load_file(str(directory / "model.safetensors"))
    assert weights.keys() == reference.keys()
    assert all(torch.equal(weights[name], reference[name]) for name in reference)
    assert load_model(directory).classes == ["a", "b", "c"]


def model_temporaries(target: Path) -> list[Path]:
    return sorted(target.parent.glob(f".{target.name}.*.tmp"))


@pytest.mark.parametrize("where", ["config", "swap"], ids=["between two files", "between the two renames"])
def test_model_save_killed_mid_way_leaves_the_previous_complete_model_or_none(tmp_path, where):
    from safetensors.torch import load_file

    target, hanging = tmp_path / "model", tmp_path / "hanging"
    old_weights = load_file(str(save_tiny_model(target, seed=1) / "model.safetensors"))
    writer = start(HANGING_MODEL_WRITER, target, 2, where, hanging)
    wait_for(hanging.exists, writer, seconds=120)
    kill(writer)

    leftovers = model_temporaries(target)
    if where == "config":  # the old model is untouched; the new files are in a hidden folder
        assert_complete_model(target, 1, old_weights)
        assert [path.is_dir() for path in leftovers] == [True]
        assert not (leftovers[0] / "config.json").exists()
    else:  # no model at all, never a mix: the complete old one (aside) and the new one are hidden
        assert not target.exists()
        assert len(leftovers) == 2 and all((path / "config.json").is_file() for path in leftovers)
        seeds = sorted(json.loads((path / "metrics.json").read_text())["seed"] for path in leftovers)
        assert seeds == [1, 2]

    # The next save replaces the folder; leftovers are removed once stale, and never read.
    new_weights = load_file(str(save_tiny_model(target, seed=3) / "model.safetensors"))
    assert_complete_model(target, 3, new_weights)
    assert model_temporaries(target) == leftovers  # too young to be sure their writer is dead
    for path in leftovers:
        age(path, 3600)
    save_tiny_model(target, seed=3)
    assert model_temporaries(target) == []
    assert_complete_model(target, 3, new_weights)


@pytest.mark.parametrize("error", [OSError, KeyboardInterrupt])
def test_model_save_that_fails_keeps_the_old_model_and_no_temporary(tmp_path, monkeypatch, error):
    from safetensors.torch import load_file

    from labelaudit.report import files

    target = tmp_path / "model"
    old_weights = load_file(str(save_tiny_model(target, seed=1) / "model.safetensors"))
    original_rename, renames_into_place = os.rename, []

    def rename_fails_into_place(source, destination):
        if Path(destination) == target:
            renames_into_place.append(source)
            if len(renames_into_place) == 1:  # the new folder's; the old one's way back succeeds
                raise error("rename failed")
        original_rename(source, destination)

    monkeypatch.setattr(files.os, "rename", rename_fails_into_place)
    with pytest.raises(error):
        save_tiny_model(target, seed=2)
    monkeypatch.undo()
    assert len(renames_into_place) == 2  # the old folder was moved aside, then put back
    assert_complete_model(target, 1, old_weights)
    assert model_temporaries(target) == []
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model"]
