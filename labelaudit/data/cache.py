"""Decode once: a cache of resized images in the run directory.

Decoding and resizing is the only per-image work besides the model, so a second ``scan``,
``train`` or ``matrix`` on the same images reuses the pixels of the first run instead of
decoding again. For each image size (and ``max_pixels`` limit) the cache folder holds

``images-<size>[-max<max_pixels>].index.parquet``
    One row per image file decoded so far: ``path`` (resolved), ``file_size``, ``mtime_ns``,
    ``slot`` (the image's row in the pixel file, -1 when it was unusable) and ``reason`` (null,
    ``unreadable_image`` or ``image_too_large``), so statuses are reused as well as pixels, and
    the raw quality measures taken while the image was decoded (:mod:`labelaudit.data.measures`:
    one float32 column each, null for unusable images), so a reused image is not read again for them.
    Its key-value metadata records the format, the settings, Pillow's version and
    decompression-bomb limit, the decoding rules' version, and the pixel file's name and length.
``images-<size>[-max<max_pixels>].<token>.u8``
    Raw ``(slots, size, size, 3)`` uint8 RGB, read through a memory map.

A file is reused when its resolved path, size and modification time (ns) all match its row;
otherwise it is decoded again into a new slot at the end of the pixel file. New pixels are
written with ordinary writes (a full disk is then an error, not a crash inside a memory map)
and flushed before the index that points at them is replaced atomically, so an interrupted
run leaves the previous consistent cache. An index that cannot be read, that does not match
its pixel file (missing, truncated, slots out of range) or that was made by another Pillow,
decoding or measures version or cache format (format 1 had no measures) is discarded and the cache
rebuilt. Bytes flipped inside the pixel file are
not detected (that would mean reading every pixel on every run). When more than half of the
pixel file belongs to files that have changed since, the live slots are copied to a new one.
A lock file serialises processes sharing the cache (e.g. distributed ranks), so each file is
decoded once.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import PIL
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from labelaudit.data.images import DECODE_VERSION, IMAGE_TOO_LARGE, UNREADABLE_IMAGE, decode_images
from labelaudit.data.measures import MEASURE_NAMES, MEASURES_VERSION, N_MEASURES, empty_measures
from labelaudit.report.files import atomic_path

#: name of the cache folder inside a run directory
CACHE_DIR_NAME = "cache"
FORMAT_VERSION = "2"
#: new images are decoded and written in chunks of about this many bytes (bounded memory)
CHUNK_BYTES = 64 << 20
MAX_CHUNK_IMAGES = 4096
LOCK_FILE = "lock"

INDEX_SCHEMA = pa.schema([
    ("path", pa.string()),
    ("file_size", pa.int64()),
    ("mtime_ns", pa.int64()),
    ("slot", pa.int64()),
    ("reason", pa.string()),
    *[(name, pa.float32()) for name in MEASURE_NAMES],
])
_KNOWN_REASONS = {UNREADABLE_IMAGE, IMAGE_TOO_LARGE}

DecodeProgress = Callable[[int, int], None]


@dataclass
class DecodeReport:
    """How the images of one load were obtained.

    Attributes
    ----------
    cache_used : bool
        Whether the decode cache was read and updated.
    decoded, reused : int
        Distinct files decoded now, and files whose pixels (or skip reason) came from the cache.
    cache_index : str or None
        The cache's index file, when used.
    note : str or None
        Why an existing cache was rebuilt, or why no cache could be used.
    """

    cache_used: bool
    decoded: int
    reused: int
    cache_index: str | None = None
    note: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DecodedFiles:
    """Pixels and statuses of N distinct image files.

    Attributes
    ----------
    pixels : numpy.ndarray
        ``(S, size, size, 3)`` uint8; a copy-on-write memory map of the cache's pixel file
        when the cache is used (writes never reach the file), else an in-memory array.
    slots : numpy.ndarray
        ``(N,)`` int64 row of ``pixels`` for each file, -1 where it is unusable.
    reasons : list of (str or None)
        Length N: None for a usable image, else ``"unreadable_image"`` or ``"image_too_large"``.
    report : DecodeReport
    measures : numpy.ndarray or None
        ``(N, N_MEASURES)`` float32 raw quality measures of each file (``MEASURE_NAMES`` order),
        NaN for unusable ones.
    """

    pixels: np.ndarray
    slots: np.ndarray
    reasons: list[str | None]
    report: DecodeReport
    measures: np.ndarray | None = None

    def images_at(self, positions: Sequence[int] | np.ndarray) -> np.ndarray:
        """``(len(positions), size, size, 3)`` pixels of the (usable) files at ``positions``.

        A view of ``pixels`` (no copy, still memory-mapped) when their slots are consecutive and
        ascending, as they are for the files of a first run in file order; otherwise a copy.
        """
        slots = self.slots[np.asarray(positions, dtype=np.int64)]
        if len(slots) and slots.min() < 0:
            raise ValueError("images_at() was given the position of an unusable file")
        first = int(slots[0]) if len(slots) else 0
        if np.array_equal(slots, np.arange(first, first + len(slots))):
            return self.pixels[first:first + len(slots)]
        gathered = np.empty((len(slots), *self.pixels.shape[1:]), dtype=np.uint8)
        np.take(self.pixels, slots, axis=0, out=gathered)
        return gathered


def cache_stem(image_size: int, max_pixels: int | None) -> str:
    """Common name of the index and pixel files for these settings, e.g. ``images-32``."""
    return f"images-{image_size}" + (f"-max{max_pixels}" if max_pixels is not None else "")


def decode_files(
    files: Sequence[Path],
    image_size: int,
    *,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    max_pixels: int | None = None,
    progress: DecodeProgress | None = None,
) -> DecodedFiles:
    """Decode N distinct image files to ``image_size`` squares, through the cache in ``cache_dir``.

    Parameters
    ----------
    files
        N distinct image files (resolved paths).
    image_size
        Side length of each output image.
    cache_dir
        Cache folder (created if missing); None decodes everything into memory, caching nothing.
        When the folder cannot be used (unwritable, full disk) every file is decoded into memory
        and ``report.note`` says why.
    workers, max_pixels
        As in :func:`labelaudit.data.images.decode_images`.
    progress
        Called as ``progress(done, total)`` while images decode; ``total`` is the number of files
        that have to be decoded (not found in the cache). Not called when there are none.
    """
    if cache_dir is None:
        return _decode_in_memory(files, image_size, workers, max_pixels, progress, note=None)
    try:
        return _decode_through_cache(Path(cache_dir), files, image_size, workers, max_pixels, progress)
    except OSError as error:
        note = f"image cache in {cache_dir} not used: {error.strerror or error}"
        return _decode_in_memory(files, image_size, workers, max_pixels, progress, note=note)


def _decode_in_memory(files: Sequence[Path], image_size: int, workers: int | None, max_pixels: int | None,
                      progress: DecodeProgress | None, *, note: str | None) -> DecodedFiles:
    measures = empty_measures(len(files))
    images, reasons = decode_images(list(files), image_size, workers=workers, max_pixels=max_pixels,
                                    progress=_cumulative(progress, 0, len(files)), measures=measures)
    usable = [i for i, reason in enumerate(reasons) if reason is None]
    # Move usable images to the front in place: no second full-size array.
    for target, source in enumerate(usable):
        if target != source:
            images[target] = images[source]
    slots = np.full(len(files), -1, dtype=np.int64)
    slots[usable] = np.arange(len(usable))
    report = DecodeReport(cache_used=False, decoded=len(files), reused=0, note=note)
    return DecodedFiles(images[:len(usable)], slots, reasons, report, measures)


@dataclass
class _Entry:
    file_size: int
    mtime_ns: int
    slot: int
    reason: str | None
    measures: np.ndarray  # (N_MEASURES,) float32, NaN when unusable


@dataclass
class _Index:
    entries: dict[str, _Entry]
    pixel_file: str | None
    n_slots: int


def _decode_through_cache(cache_dir: Path, files: Sequence[Path], image_size: int, workers: int | None,
                          max_pixels: int | None, progress: DecodeProgress | None) -> DecodedFiles:
    cache_dir.mkdir(parents=True, exist_ok=True)
    stem = cache_stem(image_size, max_pixels)
    index_path = cache_dir / f"{stem}.index.parquet"
    settings = _settings(image_size, max_pixels)
    image_bytes = image_size * image_size * 3
    with _exclusive_lock(cache_dir / LOCK_FILE):
        index, note = _read_index(index_path, cache_dir, stem, settings, image_bytes)
        keys = [_file_key(file) for file in files]
        slots = np.full(len(files), -1, dtype=np.int64)
        reasons: list[str | None] = [None] * len(files)
        measures = empty_measures(len(files))
        misses: list[int] = []
        for i, (file, key) in enumerate(zip(files, keys)):
            entry = index.entries.get(str(file))
            if key is not None and entry is not None and (entry.file_size, entry.mtime_ns) == key:
                slots[i], reasons[i], measures[i] = entry.slot, entry.reason, entry.measures
            else:
                misses.append(i)
        if misses:
            if index.pixel_file is None:
                index.pixel_file = f"{stem}.{secrets.token_hex(4)}.u8"
            new_slots, new_reasons, new_measures = _append_decoded(
                cache_dir / index.pixel_file, index.n_slots, [files[i] for i in misses], image_size, workers,
                max_pixels, _cumulative(progress, 0, len(misses)))
            for i, slot, reason, measured in zip(misses, new_slots, new_reasons, new_measures):
                slots[i], reasons[i], measures[i] = slot, reason, measured
                if keys[i] is not None:  # a file that vanished mid-run is reported, not remembered
                    index.entries[str(files[i])] = _Entry(keys[i][0], keys[i][1], int(slot), reason, measured)
            index.n_slots += int(np.count_nonzero(new_slots >= 0))
            remap = _compact_if_mostly_dead(cache_dir, stem, index, image_bytes)
            if remap is not None:
                slots = np.where(slots >= 0, remap[np.maximum(slots, 0)], -1)
            _write_index(index_path, index, settings)
            _remove_unused_pixel_files(cache_dir, stem, keep=index.pixel_file)
        pixels = _map_pixels(cache_dir, index, image_size)
    report = DecodeReport(cache_used=True, decoded=len(misses), reused=len(files) - len(misses),
                          cache_index=str(index_path), note=note)
    return DecodedFiles(pixels, slots, reasons, report, measures)


def _settings(image_size: int, max_pixels: int | None) -> dict[str, str]:
    """What the cached pixels and statuses depend on besides the files themselves."""
    return {
        "format": FORMAT_VERSION,
        "decode_version": str(DECODE_VERSION),
        "measures_version": str(MEASURES_VERSION),
        "pillow": PIL.__version__,
        "pillow_max_image_pixels": str(Image.MAX_IMAGE_PIXELS),
        "image_size": str(image_size),
        "max_pixels": str(max_pixels),
    }


def _file_key(path: Path) -> tuple[int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return int(status.st_size), int(status.st_mtime_ns)


def _empty_index() -> _Index:
    return _Index(entries={}, pixel_file=None, n_slots=0)


def _read_index(index_path: Path, cache_dir: Path, stem: str, settings: dict[str, str],
                image_bytes: int) -> tuple[_Index, str | None]:
    """The cache's index, or an empty one and the reason the cache is rebuilt."""
    if not index_path.exists():
        return _empty_index(), None
    try:
        table = pq.read_table(index_path)
        metadata = {key.decode(): value.decode() for key, value in (table.schema.metadata or {}).items()}
        for name, expected in settings.items():
            if metadata.get(name) != expected:
                return _empty_index(), (f"rebuilt the image cache: it was made with {name} "
                                        f"{metadata.get(name)}, this run uses {expected}")
        index = _validated_index(table, metadata, cache_dir, stem, image_bytes)
    except (OSError, pa.ArrowException, ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        return _empty_index(), f"rebuilt the image cache: {index_path.name} is damaged ({_one_line(error)})"
    return index, None


def _validated_index(table: pa.Table, metadata: dict[str, str], cache_dir: Path, stem: str,
                     image_bytes: int) -> _Index:
    """Check the index against its pixel file; ValueError says what does not fit."""
    if not table.schema.remove_metadata().equals(INDEX_SCHEMA):
        raise ValueError("unexpected columns")
    pixel_file = metadata["pixel_file"]
    n_slots = int(metadata["slots"])
    if Path(pixel_file).name != pixel_file or not pixel_file.startswith(f"{stem}.") or n_slots < 0:
        raise ValueError("bad pixel file entry")
    pixel_path = cache_dir / pixel_file
    if not pixel_path.is_file() or pixel_path.stat().st_size < n_slots * image_bytes:
        raise ValueError(f"pixel file {pixel_file} is missing or truncated")
    slot = table.column("slot").to_numpy()
    file_size = table.column("file_size").to_numpy()
    mtime_ns = table.column("mtime_ns").to_numpy()
    reason = table.column("reason").to_pylist()
    path = table.column("path").to_pylist()
    usable = slot >= 0
    if (slot < -1).any() or (slot >= n_slots).any() or len(np.unique(slot[usable])) != int(usable.sum()):
        raise ValueError("slots out of range or shared")
    if any((r is None) != bool(u) or (r is not None and r not in _KNOWN_REASONS) for r, u in zip(reason, usable)):
        raise ValueError("reasons do not match slots")
    if any(p is None for p in path):
        raise ValueError("empty path")
    measures = np.stack([table.column(name).to_numpy(zero_copy_only=False).astype(np.float32)
                         for name in MEASURE_NAMES], axis=1) if len(path) else empty_measures(0)
    if not np.isfinite(measures[usable]).all():
        raise ValueError("measures missing for usable images")
    entries = {p: _Entry(int(s), int(m), int(k), r, measures[i])
               for i, (p, s, m, k, r) in enumerate(zip(path, file_size, mtime_ns, slot, reason))}
    return _Index(entries=entries, pixel_file=pixel_file, n_slots=n_slots)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:160]}" if text else type(error).__name__


def _append_decoded(pixel_path: Path, first_slot: int, paths: list[Path], image_size: int, workers: int | None,
                    max_pixels: int | None, progress: Callable[[int], None] | None,
                    ) -> tuple[np.ndarray, list[str | None], np.ndarray]:
    """Decode ``paths`` and append the usable ones to the pixel file from ``first_slot`` on.

    Returns the (len(paths),) slot of each (-1 when unusable), its reason and its (N_MEASURES,) measures.
    """
    image_bytes = image_size * image_size * 3
    chunk = max(1, min(MAX_CHUNK_IMAGES, CHUNK_BYTES // image_bytes))
    slots = np.full(len(paths), -1, dtype=np.int64)
    reasons: list[str | None] = []
    measures = empty_measures(len(paths))
    next_slot = first_slot
    descriptor = os.open(pixel_path, os.O_RDWR | os.O_CREAT, 0o666)
    with os.fdopen(descriptor, "r+b") as handle:
        handle.truncate(first_slot * image_bytes)  # bytes of an interrupted earlier append are garbage
        handle.seek(first_slot * image_bytes)
        for start in range(0, len(paths), chunk):
            images, chunk_reasons = decode_images(paths[start:start + chunk], image_size, workers=workers,
                                                  max_pixels=max_pixels, progress=progress,
                                                  measures=measures[start:start + chunk])
            usable = [i for i, reason in enumerate(chunk_reasons) if reason is None]
            handle.write(np.ascontiguousarray(images[usable]).data)
            slots[[start + i for i in usable]] = np.arange(next_slot, next_slot + len(usable))
            next_slot += len(usable)
            reasons.extend(chunk_reasons)
        handle.flush()
        os.fsync(handle.fileno())  # pixels on disk before the index that points at them
    return slots, reasons, measures


def _compact_if_mostly_dead(cache_dir: Path, stem: str, index: _Index, image_bytes: int) -> np.ndarray | None:
    """When most slots belong to no file any more, copy the live ones to a new pixel file.

    Returns the (old n_slots,) map old slot -> new slot (-1 for dead ones), or None if nothing moved.
    """
    live_slots = np.sort(np.array([e.slot for e in index.entries.values() if e.slot >= 0], dtype=np.int64))
    dead = index.n_slots - len(live_slots)
    if dead <= len(live_slots):
        return None
    remap = np.full(index.n_slots, -1, dtype=np.int64)
    remap[live_slots] = np.arange(len(live_slots))
    new_name = f"{stem}.{secrets.token_hex(4)}.u8"
    old = np.memmap(cache_dir / index.pixel_file, dtype=np.uint8, mode="r", shape=(index.n_slots, image_bytes))
    chunk = max(1, CHUNK_BYTES // image_bytes)
    with open(cache_dir / new_name, "wb") as handle:
        for start in range(0, len(live_slots), chunk):
            handle.write(np.ascontiguousarray(old[live_slots[start:start + chunk]]).data)
        handle.flush()
        os.fsync(handle.fileno())
    del old
    for entry in index.entries.values():
        if entry.slot >= 0:
            entry.slot = int(remap[entry.slot])
    index.pixel_file, index.n_slots = new_name, len(live_slots)
    return remap


def _write_index(index_path: Path, index: _Index, settings: dict[str, str]) -> None:
    paths = list(index.entries)
    entries = list(index.entries.values())
    table = pa.Table.from_arrays([
        pa.array(paths, pa.string()),
        pa.array([e.file_size for e in entries], pa.int64()),
        pa.array([e.mtime_ns for e in entries], pa.int64()),
        pa.array([e.slot for e in entries], pa.int64()),
        pa.array([e.reason for e in entries], pa.string()),
        *[pa.array(column, pa.float32(), mask=np.isnan(column))
          for column in (np.array([e.measures for e in entries], dtype=np.float32).reshape(-1, N_MEASURES).T)],
    ], schema=INDEX_SCHEMA)
    metadata = {**settings, "pixel_file": index.pixel_file or "", "slots": str(index.n_slots)}
    table = table.replace_schema_metadata(metadata)
    with atomic_path(index_path) as temporary:
        pq.write_table(table, temporary)


def _remove_unused_pixel_files(cache_dir: Path, stem: str, *, keep: str | None) -> None:
    """Pixel files left by a rebuild, a compaction or an interrupted run (this stem only)."""
    for path in cache_dir.glob(f"{stem}.*.u8"):
        if path.name != keep:
            with contextlib.suppress(OSError):  # e.g. still mapped by a process on Windows
                path.unlink()


def _map_pixels(cache_dir: Path, index: _Index, image_size: int) -> np.ndarray:
    if index.n_slots == 0 or index.pixel_file is None:
        return np.zeros((0, image_size, image_size, 3), dtype=np.uint8)
    # Copy-on-write: arrays stay writable (torch.from_numpy warns on read-only ones) but no
    # write ever reaches the cache file.
    return np.memmap(cache_dir / index.pixel_file, dtype=np.uint8, mode="c",
                     shape=(index.n_slots, image_size, image_size, 3))


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; concurrent runs may decode the same files twice
        yield
        return
    with open(lock_path, "a+b") as handle:
        with contextlib.suppress(OSError):  # a file system without locks: carry on unlocked
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def _cumulative(progress: DecodeProgress | None, done: int, total: int) -> Callable[[int], None] | None:
    """Turn per-chunk increments into ``progress(done, total)`` calls."""
    if progress is None:
        return None
    state = {"done": done}

    def report(increment: int) -> None:
        state["done"] += increment
        progress(state["done"], total)

    return report
