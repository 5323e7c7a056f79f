"""Process group from torchrun's environment; small collective helpers that also work single-process.

Under ``torchrun --nproc_per_node N [--nnodes M ...]`` the variables ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` are set; the process group is initialised
from them (``env://``) with NCCL on CUDA and gloo on CPU. Without them everything runs in one
process and the helpers below are no-ops.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from zoo.errors import InputError


@dataclass
class DistInfo:
    """Where this process stands in the (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the process group torchrun describes (if any) and pick this process's device.

    ``device``: ``"cpu"``, ``"cuda"`` or None (CUDA when available). Under torchrun each process
    uses ``cuda:LOCAL_RANK``.
    """
    if device not in (None, "cpu", "cuda"):
        raise InputError(f"--device: expected cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available (use --device cpu)")
    use_cuda = device == "cuda" or (device is None and torch.cuda.is_available())
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        where = torch.device("cuda", local_rank)
    else:
        where = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        kwargs = {"device_id": where} if use_cuda else {}
        dist.init_process_group("nccl" if use_cuda else "gloo", init_method="env://", **kwargs)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=where)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (a one-element list when not distributed)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_min(value: int) -> int:
    """The smallest ``value`` over the ranks (e.g. so that every rank takes the same number of steps)."""
    return min(all_gather_object(value))


def mean_over_ranks(metrics: dict[str, float]) -> dict[str, float]:
    """Average logged scalars over the ranks; a key missing on some rank averages over those that have it."""
    gathered = all_gather_object(metrics)
    keys = sorted({k for m in gathered for k in m})
    return {k: sum(m[k] for m in gathered if k in m) / sum(1 for m in gathered if k in m) for k in keys}


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the module itself)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
