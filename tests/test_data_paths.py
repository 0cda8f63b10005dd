"""Confinement of CSV paths to the images folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labelaudit.data.paths import resolve_under_root


@pytest.fixture()
def tree(tmp_path: Path) -> dict[str, Path]:
    """root/ with a.png, sub/b.png, sub/deeper/; outside/ next to it with secret files."""
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    (root / "sub" / "deeper").mkdir(parents=True)
    (outside / "deep").mkdir(parents=True)
    (root / "a.png").write_bytes(b"a")
    (root / "sub" / "b.png").write_bytes(b"b")
    (outside / "secret.png").write_bytes(b"s")
    (outside / "deep" / "x.png").write_bytes(b"x")
    return {"root": root, "outside": outside}


def test_plain_and_nested_paths_resolve_inside_root(tree):
    root = tree["root"]
    assert resolve_under_root(root, "a.png") == ((root / "a.png").resolve(), None)
    assert resolve_under_root(root, "sub/b.png") == ((root / "sub" / "b.png").resolve(), None)
    assert resolve_under_root(root, "./sub/./b.png") == ((root / "sub" / "b.png").resolve(), None)
    assert resolve_under_root(root, "sub/../a.png") == ((root / "a.png").resolve(), None)


def test_backslashes_are_separators(tree):
    root = tree["root"]
    assert resolve_under_root(root, "sub\\b.png") == ((root / "sub" / "b.png").resolve(), None)
    assert resolve_under_root(root, "..\\outside\\secret.png") == (None, "outside_root")


def test_surrounding_whitespace_is_tolerated(tree):
    root = tree["root"]
    assert resolve_under_root(root, "  a.png ") == ((root / "a.png").resolve(), None)


def test_a_relative_root_works(tree, monkeypatch):
    monkeypatch.chdir(tree["root"].parent)
    assert resolve_under_root(Path("root"), "a.png") == ((tree["root"] / "a.png").resolve(), None)


@pytest.mark.parametrize("relative", ["", "   ", "\t"])
def test_empty_path(tree, relative):
    assert resolve_under_root(tree["root"], relative) == (None, "empty_path")


def test_absolute_paths_are_refused_even_when_inside_root(tree):
    inside_absolute = str((tree["root"] / "a.png").resolve())
    for relative in [
        inside_absolute,
        str(tree["outside"] / "secret.png"),
        "/etc/passwd",
        "C:\\images\\a.png",
        "c:a.png",
        "\\\\server\\share\\a.png",
    ]:
        assert resolve_under_root(tree["root"], relative) == (None, "outside_root"), relative


@pytest.mark.parametrize(
    "relative", ["../outside/secret.png", "sub/../../outside/secret.png", "sub/../..", "..", "./../root/a.png"]
)
def test_dotdot_leaving_root_is_refused(tree, relative):
    assert resolve_under_root(tree["root"], relative) == (None, "outside_root")


def test_nul_byte_is_refused_without_raising(tree):
    assert resolve_under_root(tree["root"], "a.png\x00.txt") == (None, "outside_root")


def test_symlinked_file_pointing_outside(tree):
    (tree["root"] / "leak.png").symlink_to(tree["outside"] / "secret.png")
    assert resolve_under_root(tree["root"], "leak.png") == (None, "outside_root")


def test_symlinked_directory_pointing_outside(tree):
    (tree["root"] / "sub" / "door").symlink_to(tree["outside"] / "deep", target_is_directory=True)
    assert resolve_under_root(tree["root"], "sub/door/x.png") == (None, "outside_root")


def test_dotdot_after_a_symlinked_directory_follows_the_link(tree):
    # Lexically "door/../secret.png" is root/secret.png (which exists), but the OS follows
    # door -> outside/deep first, so open() would read outside/secret.png.
    root = tree["root"]
    (root / "secret.png").write_bytes(b"decoy")
    (root / "door").symlink_to(tree["outside"] / "deep", target_is_directory=True)
    assert resolve_under_root(root, "door/../secret.png") == (None, "outside_root")


def test_symlinks_inside_root_are_followed(tree):
    root = tree["root"]
    (root / "alias.png").symlink_to(root / "sub" / "b.png")
    (root / "subalias").symlink_to(root / "sub", target_is_directory=True)
    target = (root / "sub" / "b.png").resolve()
    assert resolve_under_root(root, "alias.png") == (target, None)
    assert resolve_under_root(root, "subalias/b.png") == (target, None)


def test_root_that_is_itself_a_symlink(tree, tmp_path):
    link_root = tmp_path / "linked_root"
    link_root.symlink_to(tree["root"], target_is_directory=True)
    assert resolve_under_root(link_root, "a.png") == ((tree["root"] / "a.png").resolve(), None)


def test_missing_file(tree):
    assert resolve_under_root(tree["root"], "nope.png") == (None, "missing_file")
    assert resolve_under_root(tree["root"], "a.png/inside-a-file.png") == (None, "missing_file")
    assert resolve_under_root(tree["root"], "x" * 5000) == (None, "missing_file")


def test_dangling_and_looping_symlinks_are_missing(tree):
    root = tree["root"]
    (root / "dangling.png").symlink_to(root / "gone.png")
    (root / "loop1").symlink_to(root / "loop2")
    (root / "loop2").symlink_to(root / "loop1")
    assert resolve_under_root(root, "dangling.png") == (None, "missing_file")
    assert resolve_under_root(root, "loop1") == (None, "missing_file")


@pytest.mark.parametrize("relative", ["sub", "sub/deeper/", ".", "./"])
def test_directories_are_not_files(tree, relative):
    assert resolve_under_root(tree["root"], relative) == (None, "not_a_file")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs mkfifo")
def test_fifo_is_not_a_file(tree):
    os.mkfifo(tree["root"] / "pipe.png")
    assert resolve_under_root(tree["root"], "pipe.png") == (None, "not_a_file")


@pytest.fixture(scope="module")
def hostile_tree(tmp_path_factory) -> Path:
    """A root whose tree has files, dirs and symlinks out of it, for the property test."""
    base = tmp_path_factory.mktemp("prop")
    root = base / "a"
    outside = base / "b"
    (root / "a" / "b c").mkdir(parents=True)
    (root / "é").mkdir()
    outside.mkdir()
    (root / "é" / "b").symlink_to(outside, target_is_directory=True)  # dir link out
    (root / "a" / "b").symlink_to(root, target_is_directory=True)  # dir link to root itself
    (root / "a" / "b c" / "é").symlink_to(outside / "é")  # file link out
    for folder in (root, root / "a", root / "a" / "b c", root / "é", outside, base):
        for name in ("a", "b", "b c", "é"):
            if not (folder / name).exists() and not (folder / name).is_symlink():
                (folder / name).write_bytes(b"file")
    return root


SEGMENTS = st.sampled_from(["a", "..", ".", "", "/", "\\", "b c", "é", "b"])


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(SEGMENTS, max_size=8), separators=st.lists(st.sampled_from(["/", "\\", ""]), max_size=8))
def test_resolver_never_escapes_and_never_raises(hostile_tree, parts, separators):
    relative = "".join(part + (separators[i] if i < len(separators) else "/") for i, part in enumerate(parts))
    resolved, reason = resolve_under_root(hostile_tree, relative)
    root = hostile_tree.resolve()
    if resolved is None:
        assert reason in {"empty_path", "outside_root", "missing_file", "not_a_file"}
    else:
        assert reason is None
        assert resolved.is_absolute()
        assert resolved.is_relative_to(root)
        assert resolved.is_file()
        assert Path(os.path.realpath(resolved)) == resolved
