"""From images folder + CSV to LabelledImages: a status for every row, arrays for audited ones."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import labelaudit.data.images as images_module
from labelaudit.data.dataset import LabelledImages, load_labelled_images, read_classes_file
from labelaudit.errors import LabelAuditError

SIZE = 8


def colour_of(name: str) -> tuple[int, int, int]:
    """A distinct, deterministic colour per file name, to trace images back to rows."""
    code = sum(ord(char) * (i + 1) for i, char in enumerate(name))
    return (code * 37 % 256, code * 91 % 256, code * 53 % 256)


def make_image(root: Path, name: str, size: tuple[int, int] = (12, 12)) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour_of(name)).save(path)
    return path


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture()
def hostile(tmp_path: Path) -> dict:
    """One dataset with every way a row can fail, and the status each row must get."""
    root = tmp_path / "images"
    outside = tmp_path / "outside"
    outside.mkdir()
    make_image(outside, "secret.png")
    for name in ["cat1.png", "cat2.png", "dog1.png", "dog2.png", "dup.png", "clash.png",
                 "blank.png", "bird.png", "sub/cat3.png", "broken_dup.png"]:
        make_image(root, name)
    make_image(root, "huge.png", size=(40, 40))
    (root / "not_image.png").write_text("hello")
    (root / "broken_dup.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (root / "folder").mkdir()
    (root / "leak.png").symlink_to(outside / "secret.png")
    expected = [  # (path, label, note, expected status)
        ("cat1.png", "cat", "first", "audited"),
        ("dog1.png", " dog ", "", "audited"),
        ("", "cat", "", "empty_path"),
        ("../outside/secret.png", "cat", "", "outside_root"),
        (str(outside / "secret.png"), "cat", "", "outside_root"),
        ("leak.png", "dog", "", "outside_root"),
        ("nowhere.png", "dog", "", "missing_file"),
        ("folder", "dog", "", "not_a_file"),
        ("not_image.png", "cat", "", "unreadable_image"),
        ("huge.png", "cat", "", "image_too_large"),
        ("blank.png", "   ", "", "empty_label"),
        ("bird.png", "bird", "", "unknown_label"),
        ("dup.png", "dog", "a", "audited"),
        ("clash.png", "cat", "", "duplicate_conflict"),
        ("./dup.png", "dog", "b", "duplicate"),
        ("clash.png", "dog", "", "duplicate_conflict"),
        ("sub\\cat3.png", "cat", "", "audited"),
        ("cat2.png", "cat", "NA", "audited"),
        ("broken_dup.png", "dog", "", "unreadable_image"),
        ("sub/../dup.png", "dog", "c", "duplicate"),
        ("broken_dup.png", "dog", "", "unreadable_image"),
        ("dog2.png", "dog", "last", "audited"),
    ]
    labels_csv = write_csv(
        tmp_path / "labels.csv",
        ["path", "label", "note", "status"],
        [[path, label, note, f"csv-{i}"] for i, (path, label, note, _) in enumerate(expected)],
    )
    return {"root": root, "csv": labels_csv, "expected": expected, "tmp": tmp_path}


def load_hostile(hostile: dict, **options) -> LabelledImages:
    options = {"image_size": SIZE, "classes": ["dog", "cat"], "max_pixels": 1000, "workers": 2} | options
    return load_labelled_images(hostile["root"], hostile["csv"], **options)


def test_every_row_gets_its_status_in_csv_order(hostile):
    data = load_hostile(hostile)
    expected = hostile["expected"]
    assert data.rows["status"].tolist() == [status for *_, status in expected]
    assert data.rows["path"].tolist() == [path for path, *_ in expected]
    assert data.rows["given_label"].tolist() == [label.strip() for _, label, *_ in expected]


def test_extra_columns_are_kept_and_colliding_names_prefixed(hostile):
    data = load_hostile(hostile)
    assert list(data.rows.columns) == ["path", "given_label", "status", "note", "csv_status"]
    assert data.rows["note"].tolist() == [note for _, _, note, _ in hostile["expected"]]
    assert data.rows["csv_status"].tolist() == [f"csv-{i}" for i in range(len(hostile["expected"]))]
    assert all(type(value) is str for value in data.rows.to_numpy().ravel())


def test_arrays_hold_the_audited_rows_in_csv_order(hostile):
    data = load_hostile(hostile)
    audited = [i for i, (*_, status) in enumerate(hostile["expected"]) if status == "audited"]
    assert data.row_index.tolist() == audited
    assert data.row_index.dtype == np.int64 and data.labels.dtype == np.int64
    assert data.images.shape == (len(audited), SIZE, SIZE, 3) and data.images.dtype == np.uint8
    assert data.classes == ["dog", "cat"]  # the given order, not sorted
    for k, row in enumerate(audited):
        path, label, *_ = hostile["expected"][row]
        file_name = path.replace("\\", "/")
        assert tuple(data.images[k, 0, 0]) == colour_of(file_name)
        assert data.classes[data.labels[k]] == label.strip()
    assert data.images_root == hostile["root"].resolve()


def test_status_counts(hostile):
    counts = load_hostile(hostile).status_counts()
    assert list(counts)[0] == "audited"
    assert counts["audited"] == 6 and counts["unreadable_image"] == 3 and counts["outside_root"] == 3
    assert sum(counts.values()) == len(hostile["expected"])
    later = list(counts.values())[1:]
    assert later == sorted(later, reverse=True)


def test_each_distinct_file_decoded_once_and_progress_reported(hostile, monkeypatch):
    decoded: list[Path] = []
    real_decode = images_module._decode

    def counting_decode(path, size, max_pixels, **options):
        decoded.append(path)
        return real_decode(path, size, max_pixels, **options)

    monkeypatch.setattr(images_module, "_decode", counting_decode)
    calls: list[tuple[int, int]] = []
    load_hostile(hostile, progress=lambda done, total: calls.append((done, total)))
    assert len(decoded) == len(set(decoded))
    # cat1 dog1 not_image huge dup sub/cat3 cat2 broken_dup dog2 (conflicts are not decoded)
    assert len(decoded) == 9
    assert calls[-1] == (9, 9)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_default_classes_are_sorted_labels_of_audited_rows(tmp_path):
    root = tmp_path / "images"
    for name in ["z.png", "y.png", "x.png", "w.png"]:
        make_image(root, name)
    (root / "broken.png").write_bytes(b"")
    labels_csv = write_csv(
        tmp_path / "labels.csv",
        ["path", "label"],
        [["z.png", "zebra"], ["y.png", "ant"], ["x.png", "moth"], ["w.png", "ant"],
         ["broken.png", "unicorn"], ["gone.png", "yak"]],
    )
    data = load_labelled_images(root, labels_csv, image_size=SIZE, workers=1)
    assert data.classes == ["ant", "moth", "zebra"]  # unicorn/yak had no usable image
    assert data.labels.tolist() == [2, 0, 1, 0]


def test_custom_columns_and_delimiter(tmp_path):
    root = tmp_path / "images"
    make_image(root, "a.png")
    make_image(root, "b.png")
    labels_csv = tmp_path / "labels.csv"
    labels_csv.write_text("file;klasse\na.png;x\nb.png;y\n", encoding="utf-8")
    data = load_labelled_images(
        root, labels_csv, image_size=SIZE, path_column="file", label_column="klasse", delimiter=";"
    )
    assert data.rows["path"].tolist() == ["a.png", "b.png"]
    assert data.rows["given_label"].tolist() == ["x", "y"]
    assert list(data.rows.columns) == ["path", "given_label", "status"]


def test_classes_from_file(tmp_path):
    classes_file = tmp_path / "classes.txt"
    classes_file.write_bytes(b"\xef\xbb\xbfzebra\n\n  ant \r\nmoth\n\n")
    assert read_classes_file(classes_file) == ["zebra", "ant", "moth"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"a\nb\n a\n", "lists 'a' twice (lines 1 and 3)"),
        (b"\n \n", "has no class names"),
        (b"caf\xe9\n", "is not UTF-8"),
    ],
)
def test_bad_classes_file(tmp_path, content, message):
    classes_file = tmp_path / "classes.txt"
    classes_file.write_bytes(content)
    with pytest.raises(LabelAuditError, match=re.escape(message)):
        read_classes_file(classes_file)


def test_missing_classes_file(tmp_path):
    with pytest.raises(LabelAuditError, match="does not exist"):
        read_classes_file(tmp_path / "nope.txt")


def test_duplicate_names_in_class_argument(hostile):
    with pytest.raises(LabelAuditError, match="names 'cat' more than once"):
        load_hostile(hostile, classes=["cat", "dog", "cat "])


def refusal(root: Path, labels_csv: Path, **options) -> str:
    with pytest.raises(LabelAuditError) as caught:
        load_labelled_images(root, labels_csv, image_size=SIZE, workers=1, **options)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_images_root_missing_or_a_file(hostile):
    assert "does not exist" in refusal(hostile["tmp"] / "nope", hostile["csv"])
    assert "is not a directory" in refusal(hostile["csv"], hostile["csv"])


def test_bad_csv_is_refused_before_any_decoding(hostile, tmp_path):
    bad_csv = write_csv(tmp_path / "bad.csv", ["path", "class"], [["cat1.png", "cat"]])
    assert "has no column 'label'" in refusal(hostile["root"], bad_csv)


def test_bad_image_size(hostile):
    for size in (0, -3, 2.5, True):
        with pytest.raises(LabelAuditError, match="image size"):
            load_labelled_images(hostile["root"], hostile["csv"], image_size=size)


def test_no_usable_row_names_the_top_reasons(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    (root / "bad.png").write_text("x")
    labels_csv = write_csv(
        tmp_path / "labels.csv",
        ["path", "label"],
        [["a.png", "cat"], ["bad.png", "dog"], ["b.png", "cat"], ["", "dog"], ["c.png", "dog"]],
    )
    message = refusal(root, labels_csv)
    assert message.endswith("no usable image in " + str(labels_csv) + ": 3 missing_file, 1 empty_path, 1 unreadable_image")


def test_only_one_class_is_refused(tmp_path):
    root = tmp_path / "images"
    make_image(root, "a.png")
    make_image(root, "b.png")
    labels_csv = write_csv(
        tmp_path / "labels.csv", ["path", "label"], [["a.png", "cat"], ["b.png", "cat"], ["c.png", "dog"]]
    )
    message = refusal(root, labels_csv)
    assert "only one class 'cat'" in message and "nothing to compare" in message
    # a given class list does not help when only one of its classes has usable rows
    assert "only one class 'cat'" in refusal(root, labels_csv, classes=["cat", "dog"])
