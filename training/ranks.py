"""Which process of a multi-GPU run this is, from the launcher's environment (``deepspeed`` and ``torchrun``
set RANK, WORLD_SIZE and LOCAL_RANK) or the process group once one is up.

Every rank runs the same command: each must read its own share of the data (the same seed everywhere would
give every GPU the same batches), load its model on its own GPU, and leave writing files to the first rank,
except for what is its own (its optimizer partition, its place in the data).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

RANK_SEED_STRIDE = 1_000_003  # a rank's stream seed: the run's seed plus this times the rank


def rank() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (a no-op in a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def rank_seed(seed: int) -> int:
    """The seed of this rank's data stream; rank 0's is the run's own, so one process reads what it always did."""
    return seed + RANK_SEED_STRIDE * rank()


def local_device(device: str) -> str:
    """``cuda`` means this rank's GPU (LOCAL_RANK) under a launcher, where every rank on GPU 0 would run out of
    memory; any other device is kept as given."""
    if device != "cuda" or "LOCAL_RANK" not in os.environ:
        return device
    index = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(index)
    return f"cuda:{index}"
