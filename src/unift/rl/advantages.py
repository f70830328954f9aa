"""Group-relative advantages (GRPO, Shao et al. 2024, arXiv 2402.03300; Dr. GRPO, Liu et al. 2025,
arXiv 2503.20783).

The G*n completions of a batch come as G consecutive groups of n = `group_size` completions of
the same prompt. For completion i of group g with reward r_gi:

    A_gi = (r_gi - mean_g(r)) / (s + eps)

with s = std of group g ("group", GRPO and TRL's default scale_rewards="group"), s = std of the
whole batch ("batch", TRL scale_rewards="batch"), or no division at all ("none", Dr. GRPO).

Standard deviations are *unbiased* (Bessel's correction, divide by n - 1): that is what
`torch.std` computes by default and what TRL's GRPOTrainer (`rewards.view(-1, G).std(dim=1)`,
`rewards.std()`) and verl's GRPO estimator (used by the official UFT code) both use. eps = 1e-4
is TRL's constant (verl uses 1e-6).

Groups whose rewards are all equal carry no signal and get an advantage of exactly 0 (TRL gets
~0 only up to the rounding of the mean). A group of size 1 is constant by definition.
"""

from __future__ import annotations

import torch

from unift.choices import SCALES
from unift.errors import UserError, suggest


def _grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """[G*n] -> [G, n], checking the shape."""
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [G*n], got shape {tuple(rewards.shape)}")
    if group_size < 1 or rewards.numel() % group_size != 0:
        raise ValueError(f"{rewards.numel()} rewards cannot be split into groups of {group_size}")
    return rewards.view(-1, group_size)


def _constant(grouped: torch.Tensor) -> torch.Tensor:
    """[G, n] -> [G] bool: every reward of the group is the same."""
    return grouped.amax(dim=1) == grouped.amin(dim=1)


def group_advantages(rewards: torch.Tensor, group_size: int, scale: str = "group",
                     eps: float = 1e-4) -> torch.Tensor:
    """Advantages of G*n completions in G consecutive groups of `group_size`.

    rewards: [G*n] -> [G*n] float (same dtype as rewards if floating, else fp32); no gradient.
    scale: "group" (GRPO), "batch" (TRL scale_rewards="batch") or "none" (Dr. GRPO).
    """
    if scale not in SCALES:
        raise UserError(f"unknown advantage scale '{scale}'" + suggest(scale, SCALES))
    rewards = rewards.detach()
    if not rewards.is_floating_point():
        rewards = rewards.float()
    grouped = _grouped(rewards, group_size)                       # [G, n]
    centred = grouped - grouped.mean(dim=1, keepdim=True)         # [G, n]
    if scale == "group":
        std = grouped.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(grouped[:, :1])
        centred = centred / (std + eps)                           # [G, n] / [G, 1]
    elif scale == "batch":
        std = rewards.std() if rewards.numel() > 1 else torch.zeros((), dtype=rewards.dtype)
        centred = centred / (std + eps)
    centred = torch.where(_constant(grouped)[:, None], torch.zeros_like(centred), centred)
    return centred.reshape(-1)


def zero_std_fraction(rewards: torch.Tensor, group_size: int) -> float:
    """Fraction of groups whose rewards are all equal (TRL's `frac_reward_zero_std`)."""
    grouped = _grouped(rewards.detach(), group_size)
    if grouped.shape[0] == 0:
        return 0.0
    return _constant(grouped).float().mean().item()
