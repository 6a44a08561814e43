"""Data-parallel training under ``torchrun``: process group, sharding, gathering, rank-0-only writes.

``torchrun --nproc_per_node N cli.py deep --run-dir RUN_DIR ...`` sets RANK, WORLD_SIZE and
LOCAL_RANK; without them everything here degrades to a single process (world size 1, no process
group). Write ``--run-dir``, not ``--run``: torchrun's argument parser takes ``--run`` as an
ambiguous abbreviation of its own ``--run-path`` and refuses to start.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main_process() -> bool:
    """Rank 0, or a single process; usable before :func:`init_distributed` (reads torchrun's RANK)."""
    return int(os.environ.get("RANK", "0")) == 0


def init_distributed(device: torch.device) -> DistContext:
    """Join the process group torchrun describes (nccl on CUDA, gloo on the CPU), or stay single.

    On CUDA the process's GPU is ``LOCAL_RANK``'s, already made current by the backend resolver
    (:func:`core.backend.bind_local_cuda_device`, before any CUDA work); NCCL is bound to it with
    ``device_id`` so its communicators are created there, not on GPU 0.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext(device=device)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        if device.type == "cuda":
            dist.init_process_group(backend="nccl", device_id=device)
        else:
            dist.init_process_group(backend="gloo")
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def shutdown(context: DistContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, context: DistContext) -> nn.Module:
    if not context.enabled:
        return model
    device_ids = [context.local_rank] if context.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model under DDP and torch.compile wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod  # type: ignore[assignment]
        else:
            return model


def barrier(context: DistContext) -> None:
    if context.enabled:
        dist.barrier()


def gather_objects(obj: T, context: DistContext) -> list[T]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not context.enabled:
        return [obj]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: T, context: DistContext) -> T:
    """Rank 0's ``obj`` on every rank."""
    if not context.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(value: float, context: DistContext) -> float:
    if not context.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=_collective_device(context))
    dist.all_reduce(tensor)
    return float(tensor.item())


def on_every_rank(flag: bool, context: DistContext) -> bool:
    """Whether ``flag`` holds on every rank (one all-reduce under DDP), so that all ranks decide alike."""
    if not context.enabled:
        return flag
    value = torch.tensor([int(flag)], dtype=torch.int32, device=_collective_device(context))
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def _collective_device(context: DistContext) -> torch.device:
    return context.device if context.device.type == "cuda" else torch.device("cpu")


def in_lockstep(batches: Iterable[T], context: DistContext) -> Iterator[T]:
    """Yield batches while EVERY rank still has one, so DDP's gradient all-reduce never waits forever
    on a rank whose shard ran out (shards may differ by a batch)."""
    iterator = iter(batches)
    if not context.enabled:
        yield from iterator
        return
    device = _collective_device(context)
    while True:
        try:
            batch: T | None = next(iterator)
        except StopIteration:
            batch = None
        flag = torch.tensor([0 if batch is None else 1], dtype=torch.int32, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        if int(flag.item()) == 0:
            return
        assert batch is not None
        yield batch
