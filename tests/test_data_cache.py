"""The decode-once cache: reuse, invalidation, corruption, equality with uncached decoding."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

import labelaudit.data.images as images_module
from labelaudit.data.cache import cache_stem, decode_files
from labelaudit.data.dataset import load_labelled_images
from labelaudit.report.parquet import write_parquet
from labelaudit.report.stream import write_frame_in_batches, write_parquet_batches

SIZE = 8
N_GOOD = 12


def write_rows(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    return path


def random_png(path: Path, seed: int, size: tuple[int, int] = (13, 11)) -> None:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.fixture
def folder(tmp_path) -> dict:
    """N_GOOD random PNGs in two classes, one non-image, one huge image, one duplicate row."""
    root = tmp_path / "images"
    root.mkdir()
    rows = []
    for i in range(N_GOOD):
        random_png(root / f"img{i:02d}.png", seed=i)
        rows.append([f"img{i:02d}.png", "a" if i % 2 else "b"])
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    rows.append(["broken.png", "a"])
    random_png(root / "huge.png", seed=99, size=(40, 40))
    rows.append(["huge.png", "b"])
    rows.append(["img00.png", "b"])  # duplicate with the same label
    rows.append(["missing.png", "a"])
    csv_path = write_rows(tmp_path / "labels.csv", rows)
    return {"root": root, "csv": csv_path, "cache": tmp_path / "out" / "cache"}


@pytest.fixture
def decode_calls(monkeypatch) -> list[Path]:
    calls: list[Path] = []
    real_decode = images_module._decode

    def counting_decode(path, size, max_pixels, **options):
        calls.append(Path(path))
        return real_decode(path, size, max_pixels, **options)

    monkeypatch.setattr(images_module, "_decode", counting_decode)
    return calls


def load(folder: dict, *, cache: bool = True, workers: int = 1, max_pixels: int | None = 1000):
    return load_labelled_images(folder["root"], folder["csv"], image_size=SIZE, workers=workers,
                                max_pixels=max_pixels, cache_dir=folder["cache"] if cache else None)


def assert_same_data(left, right) -> None:
    pd.testing.assert_frame_equal(left.rows, right.rows)
    assert left.classes == right.classes
    np.testing.assert_array_equal(np.asarray(left.images), np.asarray(right.images))
    np.testing.assert_array_equal(left.measures, right.measures)  # measures survive the cache
    np.testing.assert_array_equal(left.labels, right.labels)
    np.testing.assert_array_equal(left.row_index, right.row_index)


def only_pixel_file(folder: dict) -> Path:
    files = sorted(folder["cache"].glob("*.u8"))
    assert len(files) == 1, files
    return files[0]


def test_second_load_decodes_nothing_and_equals_uncached(folder, decode_calls):
    first = load(folder)
    assert len(decode_calls) == N_GOOD + 2  # good images, broken, huge (duplicate and missing: not decoded)
    assert first.decoding.cache_used and first.decoding.decoded == N_GOOD + 2
    decode_calls.clear()
    second = load(folder)
    assert decode_calls == []
    assert (second.decoding.decoded, second.decoding.reused) == (0, N_GOOD + 2)
    uncached = load(folder, cache=False)
    assert not uncached.decoding.cache_used
    assert_same_data(second, uncached)
    assert_same_data(first, uncached)
    statuses = dict(zip(second.rows["path"], second.rows["status"]))
    assert statuses["broken.png"] == "unreadable_image"  # statuses come back from the cache too
    assert statuses["huge.png"] == "image_too_large"
    assert isinstance(second.images, np.memmap)  # a view of the cache file, not a copy


def test_changed_file_is_decoded_again(folder, decode_calls):
    load(folder)
    changed = folder["root"] / "img03.png"
    random_png(changed, seed=1234)
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    decode_calls.clear()
    again = load(folder)
    assert decode_calls == [changed.resolve()]
    assert (again.decoding.decoded, again.decoding.reused) == (1, N_GOOD + 1)
    assert_same_data(again, load(folder, cache=False))


def test_file_that_became_unreadable_gets_its_new_status(folder):
    load(folder)
    victim = folder["root"] / "img05.png"
    victim.write_bytes(victim.read_bytes()[:20])  # truncated: new size
    again = load(folder)
    assert dict(zip(again.rows["path"], again.rows["status"]))["img05.png"] == "unreadable_image"
    assert_same_data(again, load(folder, cache=False))


def test_truncated_pixel_file_is_detected_and_rebuilt(folder, decode_calls):
    load(folder)
    pixel_file = only_pixel_file(folder)
    with open(pixel_file, "r+b") as handle:
        handle.truncate(pixel_file.stat().st_size // 2)
    decode_calls.clear()
    again = load(folder)
    assert again.decoding.decoded == N_GOOD + 2 and len(decode_calls) == N_GOOD + 2
    assert "rebuilt" in again.decoding.note and "truncated" in again.decoding.note
    assert_same_data(again, load(folder, cache=False))
    assert load(folder).decoding.decoded == 0  # and the rebuilt cache is good


@pytest.mark.parametrize("damage", ["garbage", "empty", "wrong_slots"])
def test_damaged_index_is_detected_and_rebuilt(folder, damage):
    load(folder)
    index = folder["cache"] / f"{cache_stem(SIZE, 1000)}.index.parquet"
    if damage == "garbage":
        index.write_bytes(b"PAR1 this is not a parquet file")
    elif damage == "empty":
        index.write_bytes(b"")
    else:  # a well-formed file whose slots point past the pixel file
        table = pq.read_table(index)
        slots = pa.array([s + 1000 if s >= 0 else s for s in table.column("slot").to_pylist()], pa.int64())
        pq.write_table(table.set_column(3, "slot", slots), index)
    again = load(folder)
    assert again.decoding.decoded == N_GOOD + 2
    assert again.decoding.note.startswith("rebuilt the image cache")
    assert_same_data(again, load(folder, cache=False))
    only_pixel_file(folder)  # the old pixel file was removed


def test_other_settings_use_their_own_cache_files(folder):
    load(folder, max_pixels=1000)
    unlimited = load(folder, max_pixels=None)
    assert unlimited.decoding.decoded == N_GOOD + 2  # huge.png is usable now: nothing can be reused
    assert dict(zip(unlimited.rows["path"], unlimited.rows["status"]))["huge.png"] == "audited"
    assert load(folder, max_pixels=1000).decoding.decoded == 0
    assert len(list(folder["cache"].glob("*.index.parquet"))) == 2


def test_workers_1_and_2_give_identical_arrays(folder):
    serial = load(folder, workers=1, cache=False)
    parallel = load(folder, workers=2, cache=False)
    assert_same_data(serial, parallel)
    cached_parallel = load(folder, workers=2)
    assert_same_data(serial, cached_parallel)


def test_mostly_dead_pixel_file_is_compacted(folder):
    load(folder)
    image_bytes = SIZE * SIZE * 3
    for bump in (1, 2):  # every file changes twice: 2/3 of the slots belong to old versions
        for path in folder["root"].glob("*.png"):
            stat = path.stat()
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + bump * 1_000_000_000))
        again = load(folder)
    assert again.decoding.decoded == N_GOOD + 2
    assert only_pixel_file(folder).stat().st_size == N_GOOD * image_bytes
    assert_same_data(again, load(folder, cache=False))


def test_unusable_cache_folder_falls_back_to_decoding_in_memory(folder):
    folder["cache"].parent.mkdir(parents=True)
    folder["cache"].write_text("a file where the cache folder should be")
    data = load(folder)
    assert not data.decoding.cache_used and "not used" in data.decoding.note
    assert_same_data(data, load(folder, cache=False))


def test_decode_files_maps_each_file_to_its_slot(folder):
    files = [folder["root"] / name for name in ("img01.png", "broken.png", "img02.png")]
    decoded = decode_files(files, SIZE, cache_dir=folder["cache"], workers=1)
    assert decoded.reasons == [None, "unreadable_image", None]
    reordered = decode_files(files[::-1], SIZE, cache_dir=folder["cache"], workers=1)
    assert reordered.report.decoded == 0
    img02_then_img01 = reordered.images_at([0, 2])  # slots 1, 0: gathered, not a view
    assert not isinstance(img02_then_img01, np.memmap)
    np.testing.assert_array_equal(img02_then_img01[0], decoded.images_at([2])[0])
    np.testing.assert_array_equal(img02_then_img01[1], decoded.images_at([0])[0])
    assert not np.array_equal(img02_then_img01[0], img02_then_img01[1])
    with pytest.raises(ValueError):
        decoded.images_at([1])


def test_scan_reuses_cache_and_writes_identical_samples(tmp_path, tiny_dataset):
    from typer.testing import CliRunner

    from labelaudit.cli.app import app
    from tiny import tiny_train_args

    out = tmp_path / "run"
    args = ["scan", str(tiny_dataset / "images"), str(tiny_dataset / "labels.csv"), "-o", str(out), "--json",
            *tiny_train_args(epochs=1)]
    runner = CliRunner()
    summaries, samples = [], []
    for extra in ([], [], ["--no-cache"]):
        result = runner.invoke(app, [*args, *extra])
        assert result.exit_code == 0, result.output
        summaries.append(json.loads(result.stdout))
        samples.append(pd.read_parquet(out / "samples.parquet"))
    first, second, uncached = (summary["image_cache"] for summary in summaries)
    assert first["cache_used"] and first["decoded"] == 96 and first["reused"] == 0
    assert second["cache_used"] and second["decoded"] == 0 and second["reused"] == 96
    assert not uncached["cache_used"] and uncached["decoded"] == 96
    pd.testing.assert_frame_equal(samples[0], samples[1])
    pd.testing.assert_frame_equal(samples[0], samples[2])


def report_frame(n_rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    p_given = rng.random(n_rows).astype(np.float32)
    p_given[::7] = np.nan
    rank = pd.array(np.arange(1, n_rows + 1), dtype="Int32")
    rank[::5] = pd.NA
    return pd.DataFrame({
        "path": [f"x/{i}.png" for i in range(n_rows)],
        "given_label": rng.choice(["a", "b", "ç"], n_rows),
        "suggested_label": [None if i % 3 == 0 else "a" for i in range(n_rows)],
        "p_given": p_given, "label_quality": p_given, "error_probability": 1 - p_given,
        "is_issue": rng.random(n_rows) < 0.3, "rank": rank,
        "status": ["audited"] * n_rows, "fold": np.zeros(n_rows, np.int16),
        "notes": [f"note {i}" if i % 4 else None for i in range(n_rows)],  # an extra CSV column
    })


@pytest.mark.parametrize("batch_rows", [1, 7, 1000])
def test_streaming_writer_output_equals_in_memory_writer(tmp_path, batch_rows):
    from labelaudit.report.schema import SAMPLES_SCHEMA

    frame = report_frame(50)
    metadata = {"classes": ["a", "b"], "created_at": "2024-01-01T00:00:00+00:00"}
    whole = write_parquet(frame, tmp_path / "whole.parquet", schema=SAMPLES_SCHEMA, metadata=metadata)
    batched = write_frame_in_batches(frame, tmp_path / "batched.parquet", schema=SAMPLES_SCHEMA,
                                     metadata=metadata, batch_rows=batch_rows)
    expected, actual = pq.read_table(whole), pq.read_table(batched)
    assert actual.schema.equals(expected.schema, check_metadata=True)
    assert actual.equals(expected)
    assert pq.ParquetFile(batched).metadata.num_row_groups == -(-50 // batch_rows)


def test_streaming_writer_takes_a_generator_and_refuses_nothing(tmp_path):
    frame = report_frame(10)
    target = write_parquet_batches((frame.iloc[i:i + 3] for i in range(0, 10, 3)), tmp_path / "g.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(target)[["path", "is_issue"]], frame[["path", "is_issue"]])
    with pytest.raises(ValueError):
        write_parquet_batches(iter([]), tmp_path / "none.parquet")
    assert not (tmp_path / "none.parquet").exists()
