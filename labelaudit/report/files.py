"""Atomic file output: write to a temporary name in the same directory, then rename.

An interrupted run therefore leaves either the previous complete file or none, never half of one.
The temporary file is flushed to disk before the rename, so that after a power cut too the name
holds either the old or the new content. A writer killed mid-way (SIGKILL) can leave its hidden
``.NAME.*.tmp`` file behind; it is never read, the next write uses a fresh name, and the next
successful write of the same NAME removes such leftovers once they are :data:`STALE_SECONDS` old
(younger ones may belong to a writer still at work).

While :func:`record_writes` is active, every completed write is noted, so that a command stopped
by Ctrl-C can say which files it had already replaced.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

#: a temporary file or directory of a killed writer is removed by the next write once this old
STALE_SECONDS = 60.0
#: the characters and length of the random part tempfile puts in a name
_RANDOM_PART = "[a-z0-9_]{8}"

_recorded_writes: list[list[Path]] = []


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target`` in one rename."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    temporary_path = Path(temporary)
    os.chmod(temporary_path, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the usual mode
    try:
        yield temporary_path
        _fsync(temporary_path)
        os.replace(temporary_path, target)
        _fsync(target.parent)
        note_written(target)
        remove_stale_temporaries(target, directories=False)
    finally:
        temporary_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; fill it, and on success it replaces ``target``.

    The new files are flushed to disk, the old ``target`` (if any) is renamed aside, the new folder is
    renamed into place and the old one deleted. An error or Ctrl-C at any point leaves the old folder
    (renamed back if need be) and removes the new one. A writer killed between the two renames leaves
    no ``target``, only the complete old and new folders under hidden ``.NAME.*.tmp`` names, which
    are never read and are removed by a later successful write.
    """
    import shutil

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(temporary, 0o777 & ~_current_umask())  # mkdtemp makes 0700; give the usual mode
    try:
        yield temporary
        for path in sorted(temporary.rglob("*")):
            _fsync(path)
        _fsync(temporary)
        _swap_directory_in(temporary, target)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)  # gone after a successful swap
    note_written(target)
    remove_stale_temporaries(target, directories=True)


def _swap_directory_in(new: Path, target: Path) -> None:
    """Rename ``new`` to ``target``, the old ``target`` aside first and deleted last."""
    import shutil

    aside = None
    if os.path.lexists(target):
        # a fresh hidden name in the temporaries' pattern, so a leftover is cleaned up like one
        aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        os.rmdir(aside)
        os.rename(target, aside)
    try:
        os.rename(new, target)
    except BaseException:
        if aside is not None:
            os.rename(aside, target)
        raise
    _fsync(target.parent)
    if aside is not None:
        if aside.is_dir() and not aside.is_symlink():
            shutil.rmtree(aside, ignore_errors=True)
        else:
            aside.unlink(missing_ok=True)


def temporary_name_pattern(target: str | Path) -> re.Pattern[str]:
    """Names that :func:`atomic_path` (and ``tempfile`` with prefix ``.NAME.``, suffix ``.tmp``) gives
    temporaries of ``target``: ``.NAME.`` + 8 random characters + ``.tmp``."""
    return re.compile(rf"\.{re.escape(Path(target).name)}\.{_RANDOM_PART}\.tmp")


def remove_stale_temporaries(target: str | Path, *, directories: bool,
                             older_than: float = STALE_SECONDS) -> list[Path]:
    """Delete leftovers of killed writers of ``target``: files (or, with ``directories``, folders)
    beside it named like its temporaries and not modified for ``older_than`` seconds. Nothing else
    is touched; symlinks never. Returns what was removed."""
    import shutil

    target = Path(target)
    pattern = temporary_name_pattern(target)
    now = time.time()
    removed = []
    try:
        candidates = [entry for entry in os.scandir(target.parent) if pattern.fullmatch(entry.name)]
    except OSError:
        return removed
    for entry in candidates:
        try:
            info = entry.stat(follow_symlinks=False)
            wanted = stat.S_ISDIR(info.st_mode) if directories else stat.S_ISREG(info.st_mode)
            if not wanted or now - info.st_mtime < older_than:
                continue
            if directories:
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:  # gone already (another writer cleaned up), or not ours to remove
            continue
    return removed


@contextlib.contextmanager
def record_writes() -> Iterator[list[Path]]:
    """Within the block, every file (or model folder) written completely is appended to the list yielded."""
    written: list[Path] = []
    _recorded_writes.append(written)
    try:
        yield written
    finally:
        _recorded_writes.remove(written)


def note_written(target: Path) -> None:
    """Tell the active :func:`record_writes` blocks that ``target`` was written completely."""
    for written in _recorded_writes:
        written.append(target)


def _fsync(path: Path) -> None:
    """Flush a file's (or a directory's entries') data to disk; a no-op where the OS cannot."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. directories on Windows
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def json_text(payload: Any) -> str:
    """``payload`` as indented UTF-8 JSON text (numpy values and paths converted), ending in a newline."""
    return json.dumps(payload, indent=2, ensure_ascii=False, default=_json_default) + "\n"


def write_json(target: str | Path, payload: Any) -> None:
    with atomic_path(target) as temporary:
        temporary.write_text(json_text(payload), encoding="utf-8")


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
