"""Data order and padding: a resumable cursor over seeded epoch permutations, and collation.

The order of epoch e is a permutation seeded by (seed, e). A run's position is one integer,
the number of examples consumed so far, so a resumed run continues exactly where the
interrupted one stopped: no example is replayed or skipped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from unift.data.render import Rendered


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    if not shuffle:
        return list(range(n))
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


@dataclass(frozen=True)
class Cursor:
    consumed: int = 0  # examples taken so far, across epochs

    def take(self, k: int, n: int, seed: int, shuffle: bool = True) -> tuple[list[int], Cursor]:
        """The next k example indices (crossing epoch boundaries) and the advanced cursor."""
        out: list[int] = []
        pos = self.consumed
        order_epoch, order = -1, []
        while len(out) < k:
            epoch, offset = divmod(pos, n)
            if epoch != order_epoch:
                order_epoch, order = epoch, epoch_order(n, seed, epoch, shuffle)
            out.append(order[offset])
            pos += 1
        return out, Cursor(pos)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Batch:
    input_ids: torch.Tensor       # [B, T] long, right-padded
    roles: torch.Tensor           # [B, T] long; padding gets role -1
    attention_mask: torch.Tensor  # [B, T] long


def collate(items: list[Rendered], pad_id: int | None, device: torch.device | str = "cpu") -> Batch:
    width = max(len(r.input_ids) for r in items)
    pad = 0 if pad_id is None else pad_id
    ids = torch.full((len(items), width), pad, dtype=torch.long)
    roles = torch.full((len(items), width), -1, dtype=torch.long)
    attn = torch.zeros((len(items), width), dtype=torch.long)
    for i, r in enumerate(items):
        n = len(r.input_ids)
        ids[i, :n] = torch.tensor(r.input_ids, dtype=torch.long)
        roles[i, :n] = torch.tensor(r.roles, dtype=torch.long)
        attn[i, :n] = 1
    return Batch(ids.to(device), roles.to(device), attn.to(device))
