"""Atomic file output: write to a temporary name in the same directory, then rename.

An interrupted run therefore leaves either the previous complete file or none, never half of one.
The temporary file is flushed to disk before the rename, so that after a power cut too the name
holds either the old or the new content. A writer killed mid-way (SIGKILL) can leave its hidden
``.NAME.*.tmp`` file behind; it is never read, and the next write uses a fresh name.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


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
    finally:
        temporary_path.unlink(missing_ok=True)


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


def write_json(target: str | Path, payload: Any) -> None:
    with atomic_path(target) as temporary:
        temporary.write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=_json_default) + "\n",
                             encoding="utf-8")


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
