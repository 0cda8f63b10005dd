"""Everything that differs between CPU and accelerators lives here, so the training loop stays plain.

On CUDA: bf16 autocast, channels_last memory format, pinned host memory with non-blocking copies,
optional ``torch.compile``. On CPU none of it is applied, so the CPU path pays for nothing.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from ..errors import LabelAuditError
from .config import AUTO_BATCH_CAP, DEFAULT_BATCH_SIZE, DEFAULT_LR, TrainConfig

if TYPE_CHECKING:  # pragma: no cover
    from ..methods.base import TrainingMethod

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def select_device(name: str = "auto") -> torch.device:
    """Resolve ``--device``: ``auto`` prefers CUDA, then Apple MPS, then CPU."""
    if name not in DEVICE_CHOICES:
        raise LabelAuditError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    cuda_ok = torch.cuda.is_available()
    mps_ok = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        if cuda_ok:
            return _cuda_device_for_this_process()
        return torch.device("mps" if mps_ok else "cpu")
    if name == "cuda" and not cuda_ok:
        raise LabelAuditError("--device cuda was asked for, but PyTorch sees no CUDA GPU")
    if name == "mps" and not mps_ok:
        raise LabelAuditError("--device mps was asked for, but PyTorch sees no Apple MPS device")
    if name == "cuda":
        return _cuda_device_for_this_process()
    return torch.device(name)


def set_threads(threads: int | None) -> int:
    """``--threads``: how many threads torch's CPU operations use (intra-op); None leaves torch's own choice
    (one per core). On a machine shared with other work, fewer threads than cores avoid oversubscription.
    Returns the number in effect."""
    if threads is not None:
        if threads < 1:
            raise LabelAuditError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def _cuda_device_for_this_process() -> torch.device:
    # Under torchrun each process drives the GPU named by LOCAL_RANK.
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))


@dataclass(frozen=True)
class Accelerator:
    """How tensors and models are placed and run on one device."""

    device: torch.device
    compile: bool = False

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(self.device)
        if self.is_cuda:
            model = model.to(memory_format=torch.channels_last)
        return model

    def maybe_compile(self, model: torch.nn.Module) -> torch.nn.Module:
        return torch.compile(model) if self.compile else model

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.is_cuda:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def host_tensor(self, array_like) -> torch.Tensor:
        """A host tensor ready for fast transfer (pinned when a GPU will read it)."""
        tensor = torch.as_tensor(array_like)
        return tensor.pin_memory() if self.is_cuda else tensor

    def host_batch(self, images: np.ndarray, rows: torch.Tensor | np.ndarray | slice) -> torch.Tensor:
        """``images[rows]`` as a (B, 3, H, W) uint8 host tensor, pinned when a GPU will read it.

        ``images`` is (N, H, W, 3) uint8, typically a memory map of the decode cache: only the
        batch's rows are read (and pinned), never the whole array.
        """
        if isinstance(rows, torch.Tensor):
            rows = rows.cpu().numpy()
        batch = torch.from_numpy(np.ascontiguousarray(images[rows])).permute(0, 3, 1, 2)
        return batch.pin_memory() if self.is_cuda else batch

    def resolve_batch_size(self, config: TrainConfig, method: "TrainingMethod", *, n_samples: int,
                           n_classes: int, create_network: Callable[[], torch.nn.Module]) -> TrainConfig:
        """``config`` with ``--batch-size auto`` settled for this device: see :func:`resolve_batch_size`."""
        return resolve_batch_size(config, method, self, n_samples=n_samples, n_classes=n_classes,
                                  create_network=create_network)

    def network_input(self, images: torch.Tensor) -> torch.Tensor:
        """A (B, C, H, W) batch on this device in the memory format of :meth:`prepare_model`'s networks
        (channels_last on CUDA; augmentation's gather returns the default layout)."""
        if self.is_cuda:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.device == self.device:
            return tensor
        moved = tensor.to(self.device, non_blocking=self.is_cuda)
        if self.is_cuda and moved.dim() == 4:
            moved = moved.contiguous(memory_format=torch.channels_last)
        return moved


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global RNGs and return a CPU generator for data order and augmentation."""
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


@dataclass(frozen=True)
class BatchProbe:
    """What :func:`probe_batch_size` found: the batch to use, the largest that fit, every size tried."""

    batch_size: int
    largest_fit: int
    cap: int
    tried: tuple[int, ...]

    def describe(self, device: torch.device) -> str:
        limit = f"capped at {self.cap}" if self.batch_size == self.cap else "half of it, as a safety margin"
        return (f"auto: probed on {device}: a training step of {self.largest_fit} fit in memory "
                f"(tried {', '.join(map(str, self.tried))}); using {self.batch_size}, {limit}")


def probe_batch_size(step: Callable[[int], None], cap: int, *,
                     release_memory: Callable[[], None] | None = None) -> BatchProbe:
    """The batch size to train with: half of the largest size whose training ``step(size)`` fits, at most ``cap``.

    Sizes 2·cap, cap, cap/2, … down to 2 are tried until one does not raise
    ``torch.cuda.OutOfMemoryError``; ``release_memory()`` (default: empty CUDA's cache) runs after
    each failed try. Other errors propagate.

    Why half: the probe measures one step on a synthetic batch, but a real run also holds what it
    builds later (ELR's (N, K) targets, a first-stage model's predictions, batches in flight), the
    allocator fragments over thousands of steps, cuDNN may pick other kernels, and a shared GPU's
    free memory changes. One halving below the largest size that fit — the next size the search
    itself would have tried — leaves room for all of that without a second, slower search. Starting
    at 2·cap keeps the same margin when the cap is what limits the batch.
    """
    if cap < 2:
        raise LabelAuditError(f"need at least 2 rows per batch to probe a batch size, not {cap}")
    release_memory = release_memory or _release_cuda_memory
    tried: list[int] = []
    size = 2 * cap
    while True:
        tried.append(size)
        out_of_memory = False
        try:
            step(size)
        except torch.cuda.OutOfMemoryError:
            out_of_memory = True  # memory is released outside the handler: the traceback holds tensors
        if not out_of_memory:
            return BatchProbe(batch_size=max(2, min(cap, size // 2)), largest_fit=size, cap=cap, tried=tuple(tried))
        release_memory()
        if size == 2:
            raise LabelAuditError("--batch-size auto: not even a batch of 2 fits in the GPU's memory; "
                                  "try a smaller --image-size or --model")
        size = max(2, size // 2)


def _release_cuda_memory() -> None:
    gc.collect()
    torch.cuda.empty_cache()  # a no-op when CUDA was never used


def resolve_batch_size(config: TrainConfig, method: "TrainingMethod", accelerator: Accelerator, *,
                       n_samples: int, n_classes: int, create_network: Callable[[], torch.nn.Module]) -> TrainConfig:
    """``config`` with its batch size settled before training and how it was chosen recorded: a copy
    (``TrainConfig.with_batch_size``), or ``config`` itself when that is already done.

    A number is kept. ``auto`` on CUDA probes the largest batch that fits (:func:`probe_batch_size`)
    with a copy of ``method``, at most the rows each process trains on; on CPU and MPS memory is not
    what limits the batch, so ``auto`` is the default (DEFAULT_BATCH_SIZE). Under torchrun each process probes its own
    GPU and, when training data-parallel, all take the smallest result (they must step together).
    ``create_network()`` gives a backbone on the device, as the training loop makes them.
    """
    if not config.auto_batch_size:
        return config if config.batch_size_choice is not None else config.with_batch_size(config.batch_size, "given")
    if not accelerator.is_cuda:
        return config.with_batch_size(DEFAULT_BATCH_SIZE, f"auto on {accelerator.device.type}: the default "
                                      f"{DEFAULT_BATCH_SIZE} (memory does not limit the batch on CPU or MPS)")
    from . import distributed

    cap = min(AUTO_BATCH_CAP, distributed.shard_size(n_samples))
    cuda_devices = [accelerator.device] if accelerator.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):  # the probe must not change the seeded run
        step = method_probe_step(method, config, accelerator, n_classes=n_classes, n_rows=2 * cap,
                                 create_network=create_network)
        probe = probe_batch_size(step, cap)
        del step
    _release_cuda_memory()
    batch_size, choice = probe.batch_size, probe.describe(accelerator.device)
    if distributed.data_parallel():
        batch_size = min(distributed.all_gather_objects(batch_size))
        if batch_size != probe.batch_size:
            choice += f"; {batch_size}, the smallest of the {distributed.world_size()} processes"
    return config.with_batch_size(batch_size, choice)


def method_probe_step(method: "TrainingMethod", config: TrainConfig, accelerator: Accelerator, *, n_classes: int,
                      n_rows: int, create_network: Callable[[], torch.nn.Module]) -> Callable[[int], None]:
    """``step(size)``: one forward + backward + optimiser step of a copy of ``method`` on a synthetic
    batch of ``size`` ≤ ``n_rows`` images at ``config.image_size``, under the accelerator's autocast and
    memory format. ``method`` itself is not changed."""
    probe = copy.deepcopy(method)
    probe.prepare(_ProbeContext(n_rows, n_classes, config, accelerator, create_network))
    probe.networks().train()
    side = config.image_size

    def step(size: int) -> None:
        from ..methods.base import Batch

        if size > n_rows:
            raise ValueError(f"probe batch {size} is larger than the {n_rows} synthetic rows")
        batch = Batch(
            images=accelerator.to_device(torch.randn(size, 3, side, side)),
            labels=accelerator.to_device(torch.randint(n_classes, (size,))),
            indices=accelerator.to_device(torch.arange(size)),
            trusted=accelerator.to_device(torch.zeros(size, dtype=torch.bool)),
        )
        optimizer = torch.optim.SGD(probe.trainable_parameters(), lr=config.with_default_lr(DEFAULT_LR).lr,
                                    momentum=config.momentum,
                                    weight_decay=config.weight_decay)
        try:
            with accelerator.autocast():
                loss = probe.loss(batch, 0.0)
            loss.backward()
            optimizer.step()
            probe.after_step(0.0)
        finally:
            optimizer.zero_grad(set_to_none=True)

    return step


class _ProbeContext:
    """A stand-in for the training loop's ``TrainContext`` over ``n_rows`` synthetic rows, so a method
    can be prepared for a probe step: networks and per-row state are built, but a first-stage model
    (``ctx.fit``) is only built, not trained, and ``predict_train`` gives uniform probabilities."""

    def __init__(self, n_rows: int, n_classes: int, config: TrainConfig, accelerator: Accelerator,
                 create_network: Callable[[], torch.nn.Module]) -> None:
        side = config.image_size
        # one black image seen n_rows times: no memory for rows nobody reads
        self.images = np.broadcast_to(np.zeros((1, side, side, 3), np.uint8), (n_rows, side, side, 3))
        self.labels = np.arange(n_rows, dtype=np.int64) % n_classes
        self.n_samples, self.n_classes, self.config = n_rows, n_classes, config
        self.epochs = 1
        self.accelerator, self.device = accelerator, accelerator.device
        self.trusted = np.arange(n_rows) < n_rows // 2  # GLC estimating its matrix needs both kinds of rows
        self.method = None
        self._create_network = create_network

    def create_network(self) -> torch.nn.Module:
        return self._create_network()

    def predict_train(self, method: Any = None) -> np.ndarray:
        return np.full((self.n_samples, self.n_classes), 1.0 / self.n_classes)

    def fit(self, method: "TrainingMethod", **_: Any) -> Any:
        from .loop import FitResult

        method.prepare(self)
        return FitResult(method, self.config)
