"""Data-parallel training under ``torchrun`` (gloo on CPU, NCCL on GPU).

    torchrun --nproc_per_node 2 -m nearsight train CONFIG.yaml

Every process holds the whole dataset and draws the same batch order (same seed); each
takes a contiguous share of every batch, sums its loss and divides by the size of the
whole batch, and ``torch.nn.parallel.DistributedDataParallel`` averages the gradients.
The loss each process passes to backward is multiplied by the number of processes, so
the average equals the gradient of one process on the whole batch.  Only rank 0 writes
files; every rank validates on the full validation set, so learning-rate schedules and
early stopping decide alike everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls) -> Distributed:
        """Join the process group torchrun describes in the environment, if any."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        if not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend=backend)
        return cls(rank=dist.get_rank(), world=dist.get_world_size())

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: Sequence) -> list:
        """This rank's contiguous share of ``items`` (the first ranks take one more if uneven)."""
        n, w = len(items), self.world
        sizes = [n // w + (r < n % w) for r in range(w)]
        start = sum(sizes[: self.rank])
        return list(items[start : start + sizes[self.rank]])

    def all_ok(self, ok: bool) -> bool:
        """True where every rank says True (so that all ranks stop together)."""
        if not self.enabled:
            return ok
        flag = torch.tensor([1 if ok else 0], dtype=torch.int64)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def max(self, value: float) -> float:
        """The largest ``value`` over the ranks (one clock reading that every rank acts on)."""
        if not self.enabled:
            return value
        x = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(x, op=dist.ReduceOp.MAX)
        return float(x.item())

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
