"""PathConfiner (one images folder, many CSV paths) decides exactly as the pathlib rules it replaced."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labelaudit.data.paths import PathConfiner, resolve_under_root


def pathlib_reference(root: Path, relative: str) -> tuple[Path | None, str | None]:
    """The rules of labelaudit.data.paths written the slow, obvious way (root resolved per call)."""

    def once(text: str) -> tuple[Path | None, str | None]:
        if not text.strip():
            return None, "empty_path"
        normalised = text.replace("\\", "/")
        if "\x00" in normalised or normalised.startswith("/") or (len(normalised) > 1 and normalised[1] == ":"
                                                                  and normalised[0].isascii()
                                                                  and normalised[0].isalpha()):
            return None, "outside_root"
        depth = 0
        for segment in normalised.split("/"):
            depth += -1 if segment == ".." else (0 if segment in ("", ".") else 1)
            if depth < 0:
                return None, "outside_root"
        root_resolved = root.resolve()
        try:
            resolved = (root_resolved / normalised).resolve()
        except (OSError, RuntimeError, ValueError):
            return None, "missing_file"
        if not resolved.is_relative_to(root_resolved):
            return None, "outside_root"
        try:
            if not resolved.exists():
                return None, "missing_file"
            if not resolved.is_file():
                return None, "not_a_file"
        except (OSError, ValueError):
            return None, "missing_file"
        return resolved, None

    resolved, reason = once(relative)
    if reason == "missing_file" and relative.strip() != relative:
        return once(relative.strip())
    return resolved, reason


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """Files, folders, a FIFO, symlinks out of the root, back into it, dangling and looping."""
    base = tmp_path_factory.mktemp("confiner")
    root, outside = base / "root", base / "outside"
    (root / "a" / "b c").mkdir(parents=True)
    outside.mkdir()
    for folder in (root, root / "a", root / "a" / "b c", outside, base):
        for name in ("f", "é"):
            (folder / name).write_bytes(b"x")
    (root / "out").symlink_to(outside, target_is_directory=True)
    (root / "a" / "up").symlink_to(root, target_is_directory=True)
    (root / "a" / "leak").symlink_to(outside / "f")
    (outside / "back").symlink_to(root / "a" / "f")
    (root / "dangling").symlink_to(root / "gone")
    (root / "loop1").symlink_to(root / "loop2")
    (root / "loop2").symlink_to(root / "loop1")
    if hasattr(os, "mkfifo"):
        os.mkfifo(root / "pipe")
    (base / "linked").symlink_to(root, target_is_directory=True)
    return base


SEGMENTS = st.sampled_from(["a", "f", "é", "b c", "..", ".", "", "out", "up", "leak", "back", "dangling",
                            "loop1", "pipe", " f", "C:", "x\x00"])


@settings(max_examples=400, deadline=None)
@given(parts=st.lists(SEGMENTS, min_size=1, max_size=7),
       separators=st.lists(st.sampled_from(["/", "\\", "//", ""]), max_size=7),
       pad=st.sampled_from(["", " "]))
def test_confiner_matches_the_pathlib_rules(tree, parts, separators, pad):
    relative = pad + "".join(part + (separators[i] if i < len(separators) else "/")
                             for i, part in enumerate(parts)) + pad
    for root in (tree / "root", tree / "linked"):
        expected = pathlib_reference(root, relative)
        resolved, reason = PathConfiner(root).resolve(relative)
        assert ((Path(resolved) if resolved is not None else None), reason) == expected, relative
        assert resolve_under_root(root, relative) == expected, relative


def test_one_confiner_gives_the_same_answers_in_any_order(tree):
    """Folder results are remembered between calls; that must not leak one path's answer into another's."""
    paths = ["a/f", "a/up/a/f", "out/f", "a/leak", "out/back", "out/../a/f", "a/../f", "loop1/f", "a//f",
             "a/./b c/é", "a/b c/../../out/f", "dangling", "pipe", ".", "a/", "a/f/", "a/f/x", "out/back/",
             "loop1//", "loop1/./", "a//up//f"]
    root = tree / "root"
    expected = [pathlib_reference(root, p) for p in paths]
    for order in (paths, paths[::-1]):
        confiner = PathConfiner(root)
        answers = {p: confiner.resolve(p) for p in order}
        assert [((Path(answers[p][0]) if answers[p][0] else None), answers[p][1]) for p in paths] == expected


def test_the_root_is_resolved_once_and_returned_paths_are_strings_inside_it(tree):
    confiner = PathConfiner(tree / "linked")
    assert confiner.root == os.path.realpath(tree / "root")
    resolved, reason = confiner.resolve("a\\b c\\é")
    assert reason is None and resolved == os.path.join(confiner.root, "a", "b c", "é")
    assert confiner.resolve("out/back") == (os.path.join(confiner.root, "a", "f"), None)
    assert confiner.resolve("a/leak") == (None, "outside_root")
