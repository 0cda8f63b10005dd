"""Confining CSV paths to the images folder.

A label CSV comes from someone else; its paths must not make labelaudit read files outside
IMAGES. Rules, in order:

* Empty or whitespace-only -> ``empty_path``.
* Backslashes are path separators (CSVs written on Windows): ``"cat\\\\1.jpg"`` means
  ``cat/1.jpg``. A POSIX file whose name contains a backslash therefore cannot be listed.
* Absolute paths (``/x``, ``\\\\server\\share``, ``C:\\x``, ``C:x``), a NUL byte (no real
  file name has one; it is the classic truncation trick), or ``..`` climbing above IMAGES
  -> ``outside_root``, without touching the file system.
* The path is then resolved through symlinks; landing outside the resolved IMAGES (a
  symlinked file, or any symlinked directory on the way) -> ``outside_root``. Symlinks
  that stay inside IMAGES are followed.
* Nothing there (or a symlink loop, or a name the OS rejects) -> ``missing_file``;
  a directory, FIFO, device or socket -> ``not_a_file``.

Surrounding whitespace is tolerated: the path as written is tried first and, if nothing
is there, the stripped path.

:class:`PathConfiner` applies these rules to many paths of one folder: it resolves the folder
once and each sub-folder once, so a typical row (``class/name.png``, no symlink) costs one
``lstat`` call.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

EMPTY_PATH = "empty_path"
OUTSIDE_ROOT = "outside_root"
MISSING_FILE = "missing_file"
NOT_A_FILE = "not_a_file"

_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


class PathConfiner:
    """Resolves CSV paths under one images folder, refusing anything that leaves it.

    The folder is resolved when the confiner is made, and each sub-folder named by a path
    the first time it is seen (a folder replaced by a symlink during one load is not noticed
    for later rows; the file itself is checked on every call).

    Parameters
    ----------
    root
        The images folder (need not be resolved already).

    Attributes
    ----------
    root : str
        The images folder, absolute and symlink-free.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.realpath(os.fspath(root))
        self._root_prefix = self.root if self.root.endswith(os.sep) else self.root + os.sep
        # folder as written in the CSV ("" for the root) -> its resolved form ending in os.sep,
        # or None when it resolves outside the root (such paths take the general route)
        self._folder_prefixes: dict[str, str | None] = {"": self._root_prefix}

    def resolve(self, relative: str) -> tuple[str | None, str | None]:
        """Resolve one CSV path.

        Returns
        -------
        (str, None)
            The absolute, symlink-free path of a regular file inside :attr:`root`.
        (None, str)
            The reason it cannot be used: ``"empty_path"``, ``"outside_root"``,
            ``"missing_file"`` or ``"not_a_file"``. Never raises for any string.
        """
        resolved, reason = self._resolve_once(relative)
        if reason == MISSING_FILE:
            stripped = relative.strip()
            if stripped != relative:
                return self._resolve_once(stripped)
        return resolved, reason

    def _resolve_once(self, relative: str) -> tuple[str | None, str | None]:
        if not relative.strip():
            return None, EMPTY_PATH
        normalised = relative.replace("\\", "/")
        if "\x00" in normalised or normalised.startswith("/") or _WINDOWS_DRIVE.match(normalised):
            return None, OUTSIDE_ROOT
        if ".." in normalised and _climbs_above_start(normalised):
            return None, OUTSIDE_ROOT
        segments = normalised.split("/")
        if "" in segments or "." in segments:
            # As pathlib reads it: "a//b/./c/" is "a/b/c" ("." alone is the root). Also keeps
            # empty segments away from os.path.realpath, which misreads "loop//" on Python 3.11.
            normalised = "/".join(segment for segment in segments if segment not in ("", "."))
        folder, _, name = normalised.rpartition("/")
        if name not in ("", ".."):
            folder_prefix = self._folder_prefix(folder)
            if folder_prefix is not None:
                candidate = folder_prefix + name
                try:
                    mode = os.lstat(candidate).st_mode
                except (OSError, ValueError):  # ValueError: a name the OS cannot encode
                    return None, MISSING_FILE
                if stat.S_ISREG(mode):
                    # realpath() of folder/name is realpath(folder)/name when name is no symlink
                    return candidate, None
                if not stat.S_ISLNK(mode):
                    return None, NOT_A_FILE
        return self._resolve_fully(normalised)

    def _folder_prefix(self, folder: str) -> str | None:
        try:
            return self._folder_prefixes[folder]
        except KeyError:
            pass
        try:
            # The folder as written, not lexically normalised: "link/.." must follow the
            # symlink first, exactly as open() would.
            resolved = os.path.realpath(os.path.join(self.root, folder))
        except (OSError, ValueError):
            resolved = None
        prefix = None
        if resolved is not None and self._is_inside(resolved):
            prefix = resolved if resolved.endswith(os.sep) else resolved + os.sep
        self._folder_prefixes[folder] = prefix
        return prefix

    def _resolve_fully(self, normalised: str) -> tuple[str | None, str | None]:
        """Any path: a symlinked file, ``..`` at the end, the root itself, a folder resolving outside."""
        try:
            resolved = os.path.realpath(os.path.join(self.root, normalised))
        except (OSError, ValueError):
            return None, MISSING_FILE
        try:
            mode = os.stat(resolved).st_mode
        except OSError as error:
            if error.errno == errno.ELOOP:  # realpath() leaves a symlink loop unresolved
                return None, MISSING_FILE
            mode = None
        except ValueError:
            return None, MISSING_FILE
        if not self._is_inside(resolved):
            return None, OUTSIDE_ROOT
        if mode is None:
            return None, MISSING_FILE
        if not stat.S_ISREG(mode):
            return None, NOT_A_FILE
        return resolved, None

    def _is_inside(self, resolved: str) -> bool:
        return resolved == self.root or resolved.startswith(self._root_prefix)


def resolve_under_root(root: str | os.PathLike[str], relative: str) -> tuple[Path | None, str | None]:
    """Resolve a CSV path against the images folder, refusing anything that leaves it.

    For many paths of one folder use :class:`PathConfiner`, which resolves the folder once.

    Parameters
    ----------
    root
        The images folder (need not be resolved already).
    relative
        The path as written in the CSV.

    Returns
    -------
    (Path, None)
        The absolute, symlink-free path of a regular file inside the resolved ``root``.
    (None, str)
        The reason it cannot be used: ``"empty_path"``, ``"outside_root"``,
        ``"missing_file"`` or ``"not_a_file"``. Never raises for any string.
    """
    resolved, reason = PathConfiner(root).resolve(relative)
    return (Path(resolved) if resolved is not None else None), reason


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
