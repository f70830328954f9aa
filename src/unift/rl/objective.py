"""The UFT objective for one micro-batch, as a pure function of per-token tensors.

UFT (Liu et al. 2025, arXiv 2505.16984, Eq. 4 / Algorithm 1; official loss per step):

    loss = PG(GENERATED)                              PPO-clipped GRPO surrogate, see policy_loss
         + beta * LL(HINT)                            NLL of the hint tokens (or DFT-weighted NLL)
         + kl_coef * KL_k3(GENERATED)                 to the frozen reference model (optional)
         - entropy_coef * H(GENERATED)                entropy bonus (optional)

Hint tokens are forced text: they never enter the policy-gradient or KL terms, only the
log-likelihood term. Prompt tokens enter nothing. With beta = 0 and no hint this is GRPO (RFT);
R3 is beta = 0 with uniformly drawn hint lengths. Every term is divided by a normaliser for the
whole optimizer step, so results do not depend on the micro-batch split.
"""

from __future__ import annotations

import torch

from unift.losses import dft_loss, nll_loss
from unift.rl.policy_loss import aggregate, clipped_policy_loss, kl_k3


def uft_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, gen_mask: torch.Tensor,
             hint_mask: torch.Tensor, *, policy_normalizer: float, hint_normalizer: float,
             epsilon: float = 0.2, epsilon_high: float | None = None, aggregation: str = "token-mean",
             beta: float = 0.0, hint_loss: str = "nll", ref_logp: torch.Tensor | None = None,
             kl_coef: float = 0.0, entropy: torch.Tensor | None = None,
             entropy_coef: float = 0.0,
             is_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """logp, old_logp, gen_mask, hint_mask, ref_logp, entropy, is_weight: [B, T]; advantages: [B].

    Returns the scalar loss and detached per-term values (each already divided by its normaliser).
    """
    pg, stats = clipped_policy_loss(logp, old_logp, advantages, gen_mask, epsilon=epsilon,
                                    epsilon_high=epsilon_high, aggregation=aggregation,
                                    normalizer=policy_normalizer, is_weight=is_weight)
    loss = pg
    terms = {"policy_loss": pg.detach(), **stats}
    if beta > 0 and bool(hint_mask.any()):
        fn = dft_loss if hint_loss == "dft" else nll_loss
        hint = fn(logp, hint_mask, hint_normalizer)
        loss = loss + beta * hint
        terms["hint_loss"] = hint.detach()
    if kl_coef > 0 and ref_logp is not None:
        kl = aggregate(kl_k3(logp, ref_logp), gen_mask, aggregation, policy_normalizer)
        loss = loss + kl_coef * kl
        terms["kl"] = kl.detach()
    if entropy_coef > 0 and entropy is not None:
        ent = aggregate(entropy, gen_mask, aggregation, policy_normalizer)
        loss = loss - entropy_coef * ent
    return loss, terms
