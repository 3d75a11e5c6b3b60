"""Data parallelism under torchrun: which rank this process is, the process group, the DDP wrapper, and the few
collectives the training loop needs.

`torchrun --nproc_per_node=N -m training train ...` starts N processes and gives each RANK, WORLD_SIZE,
LOCAL_RANK and a rendezvous (MASTER_ADDR/MASTER_PORT). Every rank builds the same model from the same seed
and reads the same global data position; DistributedDataParallel (Li et al. 2020, "PyTorch Distributed")
averages the ranks' gradients during backward, so every rank takes the same optimizer step. Without torchrun's
environment there is one process and no process group: `SINGLE`, and every method below is a no-op.

Global batch semantics: the recipe's batch is the global one. Rank r of W takes rows [r*n//W, (r+1)*n//W) of
each global batch of n rows, and a task's loss is its rank's *share* of the global batch's mean loss
(the sum of its rows' losses over the global count), so the shares sum to the one-process loss. DDP divides
the summed gradients by W, hence the loop back-propagates W * share.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    rank: int = 0  # this process, 0 .. size - 1 (global across nodes)
    size: int = 1  # processes in the job (torchrun's WORLD_SIZE)

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs, evaluates, samples and writes checkpoints."""
        return self.rank == 0

    def rows(self, n: int) -> slice:
        """This rank's contiguous share of n rows (shares differ by at most one row)."""
        return slice(self.rank * n // self.size, (self.rank + 1) * n // self.size)

    def even_rows(self, n: int, field: str) -> slice:
        """rows(n), refusing a global batch that does not split evenly (the LM's streams, full classifier batches)."""
        if n % self.size:
            raise ValueError(f"{field} ({n}) is the global batch and must be divisible by the number of ranks "
                             f"({self.size}): each rank takes {field} / ranks rows")
        return self.rows(n)

    def share(self, idx: np.ndarray) -> tuple[np.ndarray, float]:
        """This rank's items of a global batch, and the weight of their loss: 1, or 0 when the batch has fewer
        items than ranks and this rank's share is empty. Such a rank runs the batch's first item at weight 0,
        because every rank must run forward and backward for DDP's gradient all-reduce to complete."""
        mine = idx[self.rows(len(idx))]
        return (mine, 1.0) if len(mine) else (idx[:1], 0.0)

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module to train through: DDP around the model on several ranks (it broadcasts rank 0's weights
        once, then all-reduces gradients in buckets during backward), the model itself on one."""
        if self.size == 1:
            return model
        return nn.parallel.DistributedDataParallel(model)

    def agree(self, loss_share: float, units: int, budget_used: float) -> tuple[float, int, float]:
        """One all-reduce per step: the global batch's loss (sum of the shares), its units (characters,
        examples, tokens), and rank 0's budget clock, so every rank sets the same learning rate and stops on
        the same step."""
        if self.size == 1:
            return loss_share, units, budget_used
        t = torch.tensor([loss_share, float(units), budget_used if self.is_main else 0.0], dtype=torch.float64)
        dist.all_reduce(t)
        return t[0].item(), round(t[1].item()), t[2].item()

    def gather_rows(self, t: torch.Tensor, dim: int) -> torch.Tensor:
        """Every rank's equal-sized share of a tensor, concatenated along dim in rank order (e.g. the LM's
        carried state of all B streams, for the checkpoint)."""
        if self.size == 1:
            return t
        parts = [torch.empty_like(t) for _ in range(self.size)]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts, dim=dim)

    def reseed(self, seed: int, step: int) -> None:
        """Ranks > 0 draw their own dropout masks, from (seed, rank, step), so that resuming at any step with
        the same ranks draws what the uninterrupted run drew. Rank 0 keeps the stream the checkpoint saves."""
        if self.rank:
            torch.manual_seed(int(np.random.SeedSequence([seed, self.rank, step]).generate_state(1)[0]))

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


SINGLE = World()


def world_from_env(env: Mapping[str, str] = os.environ) -> World:
    """The rank and world size torchrun set, or SINGLE outside torchrun."""
    size = int(env.get("WORLD_SIZE", "1"))
    rank = int(env.get("RANK", "0"))
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"RANK {rank} and WORLD_SIZE {size} are inconsistent")
    return World(rank, size)


def backend() -> str:
    """gloo for CPU tensors (the training loop's); where CUDA and NCCL exist, CUDA tensors go through NCCL."""
    if torch.cuda.is_available() and dist.is_nccl_available():
        return "cpu:gloo,cuda:nccl"
    return "gloo"


@contextmanager
def session(env: Mapping[str, str] = os.environ) -> Iterator[World]:
    """Join torchrun's process group for the duration (the rendezvous comes from env://), or run alone."""
    world = world_from_env(env)
    if world.size == 1:
        yield world
        return
    dist.init_process_group(backend(), rank=world.rank, world_size=world.size)
    try:
        yield world
    finally:
        dist.destroy_process_group()
