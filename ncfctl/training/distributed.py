"""torch.distributed plumbing: who am I, and how a batch is shared among ranks.

Training code calls these helpers whether or not a process group exists, so one code path serves
a single process, ``ncfctl train --nproc N`` and a multi-instance SageMaker job.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return rank_and_world()[0] == 0


def init_from_env(device: torch.device) -> bool:
    """Join the process group torchrun/elastic launch describes in the environment, if any.

    gloo on CPU, nccl on GPU. Returns whether a group was created here (the caller destroys it).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return True


def shard(start: int, stop: int) -> tuple[int, int] | None:
    """This rank's contiguous part of the global batch ``[start, stop)``; ``None`` if too small.

    Every rank takes the same decision (it depends only on sizes), so all ranks run the same
    number of steps, which DDP requires.
    """
    rank, world = rank_and_world()
    size = stop - start
    if size < world:
        return None
    return start + size * rank // world, start + size * (rank + 1) // world


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum over ranks (identity in a single process)."""
    if rank_and_world()[1] == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def broadcast_flags(flags: list[bool], device: torch.device) -> list[bool]:
    """Rank 0's decisions (keep this epoch? stop?) for every rank, so ranks never diverge."""
    if rank_and_world()[1] == 1:
        return flags
    tensor = torch.tensor([float(f) for f in flags], dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return [bool(v) for v in tensor.tolist()]
