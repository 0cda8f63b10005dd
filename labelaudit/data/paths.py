"""Confining CSV paths to the images folder.

A label CSV comes from someone else; its paths must not make labelaudit read files outside
IMAGES. Rules, in order:

* Empty or whitespace-only -> ``empty_path``.
* Backslashes are path separators (CSVs written on Windows): ``"cat\\\\1.jpg"`` means
  ``cat/1.jpg``. A POSIX file whose name contains a backslash therefore cannot be listed.
* Absolute paths (``/x``, ``\\\\server\\share``, ``C:\\x``, ``C:x``), a NUL byte (no real
  file name has one; it is the classic truncation trick), or ``..`` climbing above IMAGES
  -> ``outside_root``, without touching the file system.
* The path is then resolved through symlinks; landing outside ``root.resolve()`` (a
  symlinked file, or any symlinked directory on the way) -> ``outside_root``. Symlinks
  that stay inside IMAGES are followed.
* Nothing there (or a symlink loop, or a name the OS rejects) -> ``missing_file``;
  a directory, FIFO, device or socket -> ``not_a_file``.

Surrounding whitespace is tolerated: the path as written is tried first and, if nothing
is there, the stripped path.
"""

from __future__ import annotations

import re
from pathlib import Path

EMPTY_PATH = "empty_path"
OUTSIDE_ROOT = "outside_root"
MISSING_FILE = "missing_file"
NOT_A_FILE = "not_a_file"

_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


def resolve_under_root(root: Path, relative: str) -> tuple[Path | None, str | None]:
    """Resolve a CSV path against the images folder, refusing anything that leaves it.

    Parameters
    ----------
    root
        The images folder (need not be resolved already).
    relative
        The path as written in the CSV.

    Returns
    -------
    (Path, None)
        The absolute, symlink-free path of a regular file inside ``root.resolve()``.
    (None, str)
        The reason it cannot be used: ``"empty_path"``, ``"outside_root"``,
        ``"missing_file"`` or ``"not_a_file"``. Never raises for any string.
    """
    root_resolved = Path(root).resolve()
    resolved, reason = _resolve_once(root_resolved, relative)
    stripped = relative.strip()
    if reason == MISSING_FILE and stripped != relative:
        return _resolve_once(root_resolved, stripped)
    return resolved, reason


def _resolve_once(root_resolved: Path, relative: str) -> tuple[Path | None, str | None]:
    if not relative.strip():
        return None, EMPTY_PATH
    normalised = relative.replace("\\", "/")
    if "\x00" in normalised or normalised.startswith("/") or _WINDOWS_DRIVE.match(normalised):
        return None, OUTSIDE_ROOT
    if _climbs_above_start(normalised):
        return None, OUTSIDE_ROOT
    try:
        # Resolve the joined path as written (not lexically normalised): "link/../x" must
        # follow the symlink first, exactly as open() would.
        resolved = (root_resolved / normalised).resolve()
    except (OSError, RuntimeError, ValueError):  # RuntimeError: symlink loop (Python < 3.13)
        return None, MISSING_FILE
    if not resolved.is_relative_to(root_resolved):
        return None, OUTSIDE_ROOT
    try:
        if not resolved.exists():
            return None, MISSING_FILE
        if not resolved.is_file():
            return None, NOT_A_FILE
    except (OSError, ValueError):
        return None, MISSING_FILE
    return resolved, None


def _climbs_above_start(relative_posix: str) -> bool:
    """Whether ``..`` segments would leave the starting folder, judged on the text alone."""
    depth = 0
    for segment in relative_posix.split("/"):
        if segment == "..":
            depth -= 1
            if depth < 0:
                return True
        elif segment not in ("", "."):
            depth += 1
    return False
