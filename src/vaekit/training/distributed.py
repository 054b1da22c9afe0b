"""PyTorch's own distributed engine (DDP under torchrun), nanoGPT style.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; with WORLD_SIZE > 1 we join the process group
(NCCL on GPUs, gloo on CPUs), rank 0 alone writes files, and every rank seeds with its rank.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from vaekit.devices import pick_device


@dataclass
class Dist:
    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum a tensor over all ranks (a no-op in a single process)."""
        if self.world > 1:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t


def setup(device_name: str = "auto") -> tuple[Dist, torch.device]:
    """Join the process group when started by torchrun; return the rank info and this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), pick_device(device_name)
    info = Dist(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), world)
    device = pick_device(device_name, info.local_rank)
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return info, device


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
