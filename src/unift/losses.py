"""Token-level losses as pure functions of log-probs, masks and an explicit normaliser.

Every loss returns `sum over masked tokens of per-token loss / normalizer`, where the caller
passes the token count of the whole optimizer step (all micro-batches, all ranks). Summing the
micro-batch losses therefore gives the same value and gradient however the batch is split.

NLL (SFT):     l_t = -log p(y_t | y_<t, x)
DFT (Wu et al. 2025, arXiv 2508.05629, Eq. 9): l_t = -sg(p(y_t | y_<t, x)) * log p(y_t | y_<t, x)
    with an optional floor on the weight, sg(max(p, floor)), and an optional mix with NLL:
    l_t = -((1 - alpha) * sg(max(p, floor)) + alpha) * log p.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(labels) under logits, computed in fp32 by a fused cross-entropy.

    logits: [B, T, V] (any float dtype), labels: [B, T] (ids; any value where unused)
    returns [B, T] fp32 log-probs.
    """
    b, t, v = logits.shape
    safe = labels.clamp(min=0, max=v - 1)
    nll = F.cross_entropy(logits.reshape(b * t, v).float(), safe.reshape(b * t), reduction="none")
    return -nll.view(b, t)


def masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of values where mask is true. values, mask: [B, T] -> scalar."""
    return (values * mask.to(values.dtype)).sum()


def nll_loss(logp: torch.Tensor, mask: torch.Tensor, normalizer: float) -> torch.Tensor:
    """Negative log-likelihood. logp, mask: [B, T]; normalizer: global token count."""
    return masked_sum(-logp, mask) / normalizer


def dft_weights(logp: torch.Tensor, min_weight: float = 0.0, nll_mix: float = 0.0) -> torch.Tensor:
    """Detached DFT token weights (1 - alpha) * max(p, floor) + alpha. [B, T] -> [B, T]."""
    p = logp.detach().exp()
    if min_weight > 0:
        p = p.clamp(min=min_weight)
    return (1.0 - nll_mix) * p + nll_mix


def dft_loss(logp: torch.Tensor, mask: torch.Tensor, normalizer: float,
             min_weight: float = 0.0, nll_mix: float = 0.0) -> torch.Tensor:
    """Dynamic Fine-Tuning loss: NLL with each token weighted by its own detached probability.

    logp, mask: [B, T]; normalizer: global token count. Its gradient is
    d/dlogp_t = -w_t / normalizer with w_t = dft_weights(...) (no gradient through w).
    """
    return masked_sum(-dft_weights(logp, min_weight, nll_mix) * logp, mask) / normalizer
