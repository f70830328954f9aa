"""Several processes, one run: torchrun, data parallelism, reductions.

    torchrun --nproc_per_node 2 -m unift train CONFIG        (one machine)
    torchrun --nnodes 2 --node_rank R --rdzv_endpoint HOST:PORT --nproc_per_node 8 -m unift train CONFIG

torchrun sets WORLD_SIZE / RANK / LOCAL_RANK; the process group uses NCCL on GPUs and gloo on
CPUs. With `parallel.strategy=ddp` (the default) every rank holds a full replica of the model
(data parallelism); with `parallel.strategy=fsdp2` the model is sharded (unift.train.sharding).
Either way every rank works on its share of each optimizer step's global batch:

- SFT/DFT: rank r takes rows r, r+W, r+2W, ... of the step's batch. The token normaliser is the
  count over the whole global batch, so each rank's loss is its part of the global token mean.
- RL: rank r generates and scores whole prompt groups (never split across ranks: advantages
  are per group); the policy and hint normalisers are summed over ranks.

After the step's backward passes the gradients are summed over ranks in one all-reduce (what
DistributedDataParallel does with `no_sync` on every micro-batch but the last), so every rank
takes the same optimizer step and the replicas stay identical: W processes compute what one
process computes on the whole batch. Only rank 0 logs, evaluates and writes checkpoints (FSDP2:
every rank writes its shards).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from unift.weights import is_sharded


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def share(self, items: list) -> list:
        """This rank's items of a global list: every size-th one, starting at rank."""
        return items[self.rank::self.size]

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (one all-reduce); identity in a single process."""
        if not self.distributed:
            return list(values)
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"  # NCCL reduces GPU tensors only
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def gather(self, values: list) -> list:
        """All ranks' lists, concatenated in rank order (small Python objects only)."""
        if not self.distributed:
            return list(values)
        parts: list = [None] * self.size
        dist.all_gather_object(parts, values)
        return [v for part in parts for v in part]

    def reduce_gradients(self, model: torch.nn.Module) -> None:
        """Sum every gradient over ranks, in one flat buffer per dtype (replicas take the same step).

        A model sharded with FSDP2 has reduce-scattered its gradients in backward: nothing to do."""
        if not self.distributed or is_sharded(model):
            return
        for param in model.parameters():  # a rank with no rows this step still joins, with zeros
            if param.requires_grad and param.grad is None:
                param.grad = torch.zeros_like(param)
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        for dtype in sorted({g.dtype for g in grads}, key=str):  # the same order on every rank
            same = [g for g in grads if g.dtype == dtype]
            flat = torch.cat([g.reshape(-1) for g in same])
            dist.all_reduce(flat)
            offset = 0
            for g in same:
                g.copy_(flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


@dataclass(frozen=True)
class PromptShard:
    """This rank's prompt groups of every RL step, and the way back to the step's global order.

    Update u trains the global block u of prompts_per_step / updates prompts; each rank takes every
    world.size-th prompt of each block, so the ranks' u-th mini-batches together are that block.
    `mine`: this rank's positions in a step's prompt list; `everyone`: all ranks' in rank order."""

    world: World
    mine: tuple[int, ...]
    everyone: tuple[int, ...]

    @classmethod
    def build(cls, prompts_per_step: int, updates: int, world: World) -> PromptShard:
        mine = rank_positions(prompts_per_step, updates, world)
        return cls(world, tuple(mine), tuple(world.gather(mine)))

    def local(self, items: list) -> list:
        """This rank's entries of a per-prompt-position list."""
        return [items[g] for g in self.mine]

    def gather(self, values: list, n: int) -> list:
        """Per-completion values of every rank (n per prompt, in `mine` order) in the step's global
        order (prompt-major, n each)."""
        gathered = self.world.gather(values)
        out: list = [None] * (len(self.everyone) * n)
        for j, g in enumerate(self.everyone):
            out[g * n:(g + 1) * n] = gathered[j * n:(j + 1) * n]
        return out


def rank_positions(prompts_per_step: int, updates: int, world: World) -> list[int]:
    """The positions, in a step's global prompt list, whose groups this rank generates and trains."""
    block = prompts_per_step // updates
    return [u * block + g for u in range(updates) for g in world.share(list(range(block)))]


def init_world(device_type: str = "cpu") -> World:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); else a world of one."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    world = current_world()
    if device_type == "cuda":
        torch.cuda.set_device(world.local_rank)
    return world


def current_world() -> World:
    """The world of an initialised process group (or a world of one)."""
    if dist.is_available() and dist.is_initialized():
        return World(rank=dist.get_rank(), size=dist.get_world_size(),
                     local_rank=int(os.environ.get("LOCAL_RANK", 0)))
    return World()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
