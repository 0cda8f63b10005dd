"""Everything that differs between CPU and accelerators lives here, so the training loop stays plain.

On CUDA: bf16 autocast, channels_last memory format, pinned host memory with non-blocking copies,
optional ``torch.compile``. On CPU none of it is applied, so the CPU path pays for nothing.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import LabelAuditError

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
