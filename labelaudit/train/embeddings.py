"""Embeddings of a frozen backbone, computed once and cached in the run directory (fast mode).

``--freeze-backbone`` runs the timm backbone (its classifier removed, so it returns pooled features)
over the audited images once and keeps the ``(N, D)`` float32 result in the run directory's cache
folder as

``embeddings-<model>-<image size>-<weights hash>.npy``
    The features, row i belonging to the i-th audited row (``LabelledImages`` order).
``embeddings-<model>-<image size>-<weights hash>.json``
    The key they were made with: model, image size, identity of the starting weights, a hash of
    the audited rows' paths, file sizes and modification times, and the timm/torch versions.

A later run whose key matches reads the file instead of running the backbone; any difference (an
image changed, a row added, other weights) means the features are computed again and replace the
old file. The ``.npy`` is written batch by batch into a memory map under a temporary name and
renamed into place before its key is written, so an interrupted run leaves no key pointing at a
half-written file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..data.images import DECODE_VERSION
from ..errors import LabelAuditError
from ..report.files import atomic_path, write_json
from .augment import normalise
from .config import TrainConfig
from .device import Accelerator, seed_everything, select_device
from .loop import create_network, normalisation_of
from .progress import ProgressReporter, SilentProgress

FORMAT_VERSION = "1"
#: images per backbone forward pass (inference only, so larger than a training batch)
EMBED_BATCH_SIZE = 256
COMPUTED, REUSED = "computed", "reused"


@dataclass(frozen=True)
class EmbeddingKey:
    """What cached embeddings depend on; a cache is reused only when every field matches."""

    model: str
    image_size: int
    weights: str
    rows_sha256: str
    n_rows: int
    timm_version: str
    torch_version: str
    decode_version: int = DECODE_VERSION
    format: str = FORMAT_VERSION

    def file_stem(self) -> str:
        safe_model = re.sub(r"[^A-Za-z0-9._-]+", "_", self.model)
        weights_hash = hashlib.sha256(self.weights.encode("utf-8")).hexdigest()[:12]
        return f"embeddings-{safe_model}-{self.image_size}-{weights_hash}"


@dataclass
class Embeddings:
    """Features of the audited rows and where they came from.

    features: (N, D) float32; status: ``"computed"`` or ``"reused"``; path: the cached ``.npy``;
    seconds: time to compute or read them.
    """

    features: np.ndarray
    status: str
    key: EmbeddingKey
    path: Path
    seconds: float

    def describe(self) -> dict:
        return {"status": self.status, "file": str(self.path), "dim": int(self.features.shape[1]),
                "rows": int(self.features.shape[0]), "backbone": self.key.model,
                "image_size": self.key.image_size, "weights": self.key.weights, "seconds": round(self.seconds, 3)}


def weights_identity(config: TrainConfig) -> str:
    """Which starting weights the backbone has: a local file (path, size, mtime), timm's pretrained
    ones, or a random initialisation from ``config.seed``."""
    timm_version = _timm_version()
    if config.weights:
        path = Path(config.weights)
        if not path.is_file():
            raise LabelAuditError(f"weights file not found: {path}")
        stat = path.stat()
        return f"file {path.resolve()} size {stat.st_size} mtime_ns {stat.st_mtime_ns}"
    if config.pretrained:
        return f"timm pretrained {config.model} (timm {timm_version})"
    return f"random init seed {config.seed} (timm {timm_version}, torch {torch.__version__})"


def _timm_version() -> str:
    # From the package metadata: importing timm takes seconds, and a reused cache needs no model.
    from importlib.metadata import version

    return version("timm")


def is_random_backbone(config: TrainConfig) -> bool:
    return not config.weights and not config.pretrained


def rows_fingerprint(images_root: str | Path, paths: Sequence[str]) -> str:
    """SHA-256 over the audited rows in order: each path as written, its file size and mtime (ns).

    A file that can no longer be read contributes -1 for both, so it never matches a later run.
    """
    root = Path(images_root)
    digest = hashlib.sha256()
    for relative in paths:
        size, mtime = -1, -1
        # The data layer also accepts a path whose surrounding spaces must be stripped to exist.
        for candidate in dict.fromkeys((relative, relative.strip())):
            try:
                stat = os.stat(root / candidate)
            except OSError:
                continue
            size, mtime = stat.st_size, stat.st_mtime_ns
            break
        digest.update(f"{relative}\0{size}\0{mtime}\n".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def embedding_key(config: TrainConfig, images_root: str | Path, paths: Sequence[str]) -> EmbeddingKey:
    return EmbeddingKey(model=config.model, image_size=int(config.image_size), weights=weights_identity(config),
                        rows_sha256=rows_fingerprint(images_root, paths), n_rows=len(paths),
                        timm_version=_timm_version(), torch_version=torch.__version__)


def create_backbone(config: TrainConfig) -> torch.nn.Module:
    """The timm model with its classifier removed (``num_classes=0``: pooled features), in eval mode.

    Seeded with ``config.seed`` first, so a random initialisation is the same every time.
    """
    seed_everything(config.seed)
    backbone = create_network(config, 0)
    return backbone.eval()


@torch.no_grad()
def forward_images(network: torch.nn.Module, images: np.ndarray, accelerator: Accelerator) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> ``network``'s (B, …) float32 output on the CPU, no augmentation."""
    mean, std = (torch.tensor(v, device=accelerator.device) for v in normalisation_of(network))
    batch = accelerator.host_tensor(torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2))
    with accelerator.autocast():
        return network(normalise(accelerator.to_device(batch), mean, std)).float().cpu()


def compute_embeddings(backbone: torch.nn.Module, images: np.ndarray, target: np.ndarray, *,
                       accelerator: Accelerator, progress: ProgressReporter | None = None,
                       batch_size: int = EMBED_BATCH_SIZE) -> None:
    """Fill ``target`` (N, D) float32 (an array or a memory map) with the backbone's features of
    ``images`` (N, H, W, 3) uint8, one batch at a time."""
    progress = progress or SilentProgress()
    progress.start("embedding images", max(1, -(-len(images) // batch_size)))
    for start in range(0, len(images), batch_size):
        features = forward_images(backbone, images[start:start + batch_size], accelerator)
        target[start:start + len(features)] = features.reshape(len(features), -1).numpy()
        progress.advance()
    progress.finish()


def load_cached_embeddings(cache_dir: str | Path, key: EmbeddingKey) -> np.ndarray | None:
    """The cached (N, D) features for ``key``, or None when absent, made with another key, or damaged."""
    stem = Path(cache_dir) / key.file_stem()
    features_path, key_path = stem.with_suffix(".npy"), stem.with_suffix(".json")
    try:
        saved_key = json.loads(key_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if saved_key != asdict(key):
        return None
    try:
        features = np.load(features_path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    if features.ndim != 2 or features.shape[0] != key.n_rows or features.dtype != np.float32:
        return None
    return features


def embeddings_for(images: np.ndarray, images_root: str | Path, paths: Sequence[str], config: TrainConfig,
                   cache_dir: str | Path, *, progress: ProgressReporter | None = None) -> Embeddings:
    """Features of the audited rows, reused from ``cache_dir`` when their key matches, else computed
    with the backbone of ``config`` (on the GPU when there is one) and cached.

    images: (N, H, W, 3) uint8 audited images; paths: (N,) their CSV paths, relative to ``images_root``.
    """
    started = time.perf_counter()
    if len(paths) != len(images):
        raise ValueError(f"{len(paths)} paths for {len(images)} images")
    key = embedding_key(config, images_root, paths)
    stem = Path(cache_dir) / key.file_stem()
    features_path = stem.with_suffix(".npy")
    cached = load_cached_embeddings(cache_dir, key)
    if cached is not None:
        return Embeddings(np.array(cached), REUSED, key, features_path, time.perf_counter() - started)

    accelerator = Accelerator(select_device(config.device), compile=config.compile)
    backbone = accelerator.maybe_compile(accelerator.prepare_model(create_backbone(config)))
    dim = int(forward_images(backbone, images[:1], accelerator).reshape(1, -1).shape[1])
    stem.with_suffix(".json").unlink(missing_ok=True)  # the old key no longer describes the file
    with atomic_path(features_path) as temporary:
        target = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.float32, shape=(len(images), dim))
        compute_embeddings(backbone, images, target, accelerator=accelerator, progress=progress)
        target.flush()
        del target
    write_json(stem.with_suffix(".json"), asdict(key))
    features = np.load(features_path)
    return Embeddings(features, COMPUTED, key, features_path, time.perf_counter() - started)
