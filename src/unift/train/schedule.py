"""Learning-rate schedule: linear warm-up, then cosine / linear decay or constant.

    lr(t) = lr * t / W                                             for t < W
    lr(t) = lr * (m + (1 - m) * 0.5 * (1 + cos(pi * (t - W) / (T - W))))   cosine, t >= W
where W = warm-up steps, T = total steps, m = min_lr_ratio. Returned as a multiplier of lr.
"""

from __future__ import annotations

import math


def lr_multiplier(step: int, total: int, warmup: int, schedule: str = "cosine", min_ratio: float = 0.0) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    if schedule == "linear":
        decay = 1.0 - progress
    else:
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_ratio + (1.0 - min_ratio) * decay
