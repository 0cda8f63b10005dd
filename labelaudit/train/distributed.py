"""Data-parallel training across the processes ``torchrun`` starts; everything distributed lives here.

``torchrun --nproc-per-node N -m labelaudit scan …`` starts N copies of the command with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set. Each copy decodes the data,
then the training loop (``labelaudit.train.loop``) calls the hooks below:

- every epoch all processes draw the same seeded permutation and process ``r`` trains on its rows
  ``r::N`` (:func:`shard`), cut so that all do the same number of steps (:func:`shard_size`);
- gradients are averaged over processes after each backward pass (:func:`average_gradients`);
- at each epoch's end the per-sample buffers a method keeps (ELR's targets) are made identical by
  gathering the rows each process updated, and BatchNorm statistics are copied from process 0
  (:func:`sync_epoch_state`);
- predictions over all rows are computed in blocks, one per process, and gathered in row order
  (:func:`predict_in_shards`);
- with ``--folds K`` fold k is trained by process k mod N alone (:func:`assigned_folds`,
  :func:`local_only`) and the out-of-fold predictions are gathered (:func:`merge_fold_results`);
- only process 0 writes files and prints (:func:`is_main_process`).

Without torchrun (or with one process) every hook returns at once and no process group is made.
The group is created on first use: gloo for CPU tensors, plus NCCL for CUDA tensors on GPUs.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import math
import os
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist

from ..errors import LabelAuditError

#: gradients are all-reduced in flat buckets of at most this many elements (bounded extra memory)
GRADIENT_BUCKET_ELEMENTS = 1 << 23

_local_only = contextvars.ContextVar("labelaudit_local_only", default=False)


def rank() -> int:
    """This process's rank among all processes of the run (0 without torchrun)."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """How many processes torchrun started for the run (1 without torchrun)."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1")))


def local_rank() -> int:
    """This process's rank on its machine (selects its GPU)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """True in the one process that writes files and prints (rank 0), and without torchrun."""
    return rank() == 0


def data_parallel() -> bool:
    """True when training is split over processes: under torchrun with 2+ processes, outside :func:`local_only`."""
    return world_size() > 1 and not _local_only.get()


@contextlib.contextmanager
def local_only() -> Iterator[None]:
    """Within the block, training and prediction use this process alone (e.g. one fold per process)."""
    token = _local_only.set(True)
    try:
        yield
    finally:
        _local_only.reset(token)


def init_process_group() -> None:
    """Join the torchrun process group (once; a no-op without torchrun or when already joined).

    All processes must call it. CPU tensors travel over gloo; when PyTorch sees CUDA, CUDA tensors
    travel over NCCL and this process is bound to GPU ``LOCAL_RANK``.
    """
    if world_size() == 1 or dist.is_initialized():
        return
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise LabelAuditError(f"WORLD_SIZE is {world_size()} but {', '.join(missing)} is not set; "
                              "start distributed runs with torchrun")
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank() % torch.cuda.device_count())
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, rank=rank(), world_size=world_size())
    atexit.register(teardown)


def teardown() -> None:
    """Leave the process group (registered to run at exit)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if world_size() > 1:
        init_process_group()
        dist.barrier()


@contextlib.contextmanager
def main_process_first(enabled: bool = True) -> Iterator[None]:
    """Process 0 runs the block first (e.g. decoding into the shared cache), the others after it;
    all at once when not ``enabled`` (e.g. decoding without a cache, which each process does itself)."""
    if world_size() == 1 or not enabled:
        yield
        return
    if not is_main_process():
        barrier()
    yield
    if is_main_process():
        barrier()


# --- sharding -------------------------------------------------------------------------------------


def shard_size(n_samples: int) -> int:
    """Rows each process trains on per epoch: ``n_samples // N`` (the remainder, a different few rows
    each epoch, is left out so every process does the same number of steps); ``n_samples`` alone."""
    if not data_parallel():
        return n_samples
    per_process = n_samples // world_size()
    if per_process < 2:
        raise LabelAuditError(f"{n_samples} images are too few to train on {world_size()} processes "
                              "(each needs at least 2)")
    return per_process


def shard(order: torch.Tensor) -> torch.Tensor:
    """This process's rows of an epoch's permutation ``order`` (N,): ``order[r::N][:N // world]``.

    Every process draws the same ``order`` from the same seeded generator, so the shards are disjoint.
    """
    if not data_parallel():
        return order
    return order[rank()::world_size()][:shard_size(len(order))]


def prediction_rows(n_rows: int) -> np.ndarray:
    """Rows this process predicts: the r-th of N equal contiguous blocks of ``ceil(n_rows / N)``,
    padded by repeating the last row so every block has the same length (the padding is cut after gathering)."""
    per_process = math.ceil(n_rows / world_size())
    start = rank() * per_process
    return np.minimum(np.arange(start, start + per_process), n_rows - 1)


def assigned_folds(n_folds: int) -> list[int]:
    """The folds this process trains: k with k mod N == r (all of them without torchrun)."""
    if world_size() == 1:
        return list(range(n_folds))
    return list(range(rank(), n_folds, world_size()))


# --- collectives ------------------------------------------------------------------------------------


def all_gather_array(array: np.ndarray) -> list[np.ndarray]:
    """Every process's ``array``, in rank order. Arrays may differ in their first dimension only."""
    array = np.ascontiguousarray(array)
    if world_size() == 1:
        return [array]
    init_process_group()
    length_parts = [torch.zeros(1, dtype=torch.int64) for _ in range(world_size())]
    dist.all_gather(length_parts, torch.tensor([len(array)], dtype=torch.int64))
    lengths = [int(part) for part in length_parts]
    longest = max(lengths)
    padded = torch.zeros((longest, *array.shape[1:]), dtype=torch.from_numpy(array[:0]).dtype)
    padded[:len(array)] = torch.from_numpy(array)
    parts = [torch.empty_like(padded) for _ in range(world_size())]
    dist.all_gather(parts, padded)
    return [part[:length].numpy() for part, length in zip(parts, lengths)]


def all_gather_objects(value: Any) -> list[Any]:
    """Every process's picklable ``value``, in rank order (for small things: settings, counts)."""
    if world_size() == 1:
        return [value]
    init_process_group()
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def average_over_processes(value: float) -> float:
    """The mean of a number over the data-parallel processes (itself on one process)."""
    if not data_parallel():
        return value
    return float(np.mean(np.concatenate(all_gather_array(np.array([value], np.float64)))))


def broadcast_from_main(modules: torch.nn.Module) -> None:
    """Copy every parameter and buffer of ``modules`` from process 0, so all start identical."""
    if not data_parallel():
        return
    init_process_group()
    with torch.no_grad():
        for tensor in [*modules.parameters(), *modules.buffers()]:
            _broadcast_from_main(tensor.data)


def _broadcast_from_main(tensor: torch.Tensor) -> None:
    if tensor.is_contiguous():
        dist.broadcast(tensor, src=0)
        return
    # e.g. channels_last convolution weights on a GPU: send a plain copy, keep the layout
    plain = tensor.contiguous()
    dist.broadcast(plain, src=0)
    tensor.copy_(plain)


def average_gradients(parameters: Sequence[torch.Tensor]) -> None:
    """Replace each parameter's gradient by its mean over the data-parallel processes.

    Why not wrap the networks in ``DistributedDataParallel``: DDP only sees gradients of calls
    through the wrapper, but the methods call their networks themselves (ELR+ runs two networks and
    their EMA copies, which take no gradient; NAL's channel parameter is used outside any forward),
    so each would need to know about DDP. Averaging the gradients of exactly the parameters the
    optimiser updates, after ``backward()``, is the same arithmetic as DDP for every method, at the
    price of not overlapping communication with the backward pass. Parameters without a gradient
    (unused in this step on every process, since all run the same code) are left without one.
    """
    if not data_parallel():
        return
    init_process_group()
    world = world_size()
    gradients = [p.grad for p in parameters if p.grad is not None]
    bucket: list[torch.Tensor] = []
    size = 0
    for gradient in gradients:
        if bucket and (size + gradient.numel() > GRADIENT_BUCKET_ELEMENTS or gradient.dtype != bucket[0].dtype
                       or gradient.device != bucket[0].device):
            _all_reduce_mean(bucket, world)
            bucket, size = [], 0
        bucket.append(gradient)
        size += gradient.numel()
    if bucket:
        _all_reduce_mean(bucket, world)


def _all_reduce_mean(tensors: list[torch.Tensor], world: int) -> None:
    flat = torch.cat([tensor.reshape(-1) for tensor in tensors])
    dist.all_reduce(flat)
    flat.div_(world)
    offset = 0
    for tensor in tensors:
        tensor.copy_(flat[offset:offset + tensor.numel()].view_as(tensor))
        offset += tensor.numel()


def sync_rows(buffers: Sequence[torch.Tensor], rows: torch.Tensor) -> None:
    """Make per-sample ``buffers`` (each (N, …), indexed by training row) identical on all processes.

    ``rows`` (R,) are the rows this process updated since the last sync (its shard of the epoch);
    each process's rows are disjoint from the others', and each is copied to every other process.
    """
    if not data_parallel() or not buffers:
        return
    me = rank()
    rows_of = all_gather_array(rows.cpu().numpy())
    for buffer in buffers:
        values_of = all_gather_array(buffer[rows.to(buffer.device)].detach().cpu().numpy())
        with torch.no_grad():
            for process, (process_rows, values) in enumerate(zip(rows_of, values_of)):
                if process != me:
                    index = torch.from_numpy(process_rows).to(buffer.device)
                    buffer[index] = torch.from_numpy(values).to(buffer.device, buffer.dtype)


def sync_epoch_state(networks: torch.nn.Module, per_sample_buffers: Sequence[torch.Tensor],
                     trained_rows: torch.Tensor) -> None:
    """At an epoch's end: gather the per-sample buffers' rows every process updated, and copy
    buffers of the networks (BatchNorm running statistics, which each process computed on its own
    batches) from process 0, as DDP does, so that every process predicts with the same model."""
    if not data_parallel():
        return
    init_process_group()
    sync_rows(per_sample_buffers, trained_rows)
    with torch.no_grad():
        for buffer in networks.buffers():
            _broadcast_from_main(buffer.data)


def predict_in_shards(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> np.ndarray:
    """``predict(images)`` (N, K), computed in one block of rows per process and gathered in row order.

    ``predict`` maps (M, …) images to (M, K) and runs in :func:`local_only` mode.
    """
    n_rows = len(images)
    if not data_parallel() or n_rows == 0:
        return predict(images)
    with local_only():
        local = predict(images[prediction_rows(n_rows)])
    return np.concatenate(all_gather_array(local))[:n_rows]


def merge_fold_results(pred_probs: np.ndarray, settings: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """Combine what each process's folds produced: ``pred_probs`` (N, K) filled at the held-out rows
    of its folds and zero elsewhere (the folds partition the rows, so the sum is exact), and the
    per-fold ``settings`` dicts."""
    if world_size() == 1:
        return pred_probs, settings
    combined = np.sum(all_gather_array(pred_probs), axis=0)
    merged: dict[str, Any] = {}
    for part in all_gather_objects(settings):
        merged.update(part)
    return combined, dict(sorted(merged.items(), key=lambda item: _fold_number(item[0])))


def _fold_number(key: str) -> tuple[int, str]:
    number = key.rsplit("_", 1)[-1]
    return (int(number), key) if number.isdigit() else (-1, key)
