"""Building blocks of the online RL loop (GRPO, UFT), as pure functions and small state objects.

- `advantages`: group-relative advantages from per-completion rewards (GRPO / Dr. GRPO).
- `policy_loss`: the PPO-clipped surrogate with micro-batch invariant aggregation, and the k3 KL.
- `hints`: UFT hints (chunk cut points, cosine / staged / uniform schedules) and per-prompt
  adaptive hint lengths.
"""
