"""PPO-clipped policy loss for GRPO-style training, and the k3 KL estimator.

Per generated token t of completion i, with r_it = pi(y_it | ...) / pi_old(y_it | ...) =
exp(logp - old_logp) and the sequence advantage A_i:

    l_it = -min(r_it * A_i, clip(r_it, 1 - eps_low, 1 + eps_high) * A_i)

PPO (Schulman et al. 2017, arXiv 1707.06347, Eq. 7) with eps_low = eps_high = eps (0.2); DAPO's
"clip-higher" (Yu et al. 2025, arXiv 2503.14476) decouples eps_high > eps_low (0.28) so
low-probability tokens can still gain mass. GRPO (Shao et al. 2024, arXiv 2402.03300, Eq. 3)
uses group-relative A_i (see `unift.rl.advantages`). With old_logp = logp (one update per
rollout) r = 1 and the gradient is the REINFORCE gradient -A_i * grad logp.

Aggregation over tokens. Every mode returns `sum of per-micro-batch parts / normalizer`, with the
normaliser supplied by the caller for the whole optimizer step (all micro-batches, all ranks),
so summing the micro-batch losses gives the same value and gradient however the batch is split:

    "token-mean"          sum_i sum_t l_it / N_tokens                (DAPO; TRL "bnpo"/"dapo")
    "seq-mean-token-mean" sum_i (sum_t l_it / |y_i|) / N_sequences   (GRPO paper, TRL "grpo")
    "dr-grpo"             sum_i sum_t l_it / (N_sequences * L_max)   (Dr. GRPO, Liu et al. 2025,
                                                                      arXiv 2503.20783; TRL "dr_grpo")

where L_max = max_completion_length. "token-mean" and "dr-grpo" compute the same sum; only the
normaliser the caller passes differs. Sequences without any masked token contribute 0 in
"seq-mean-token-mean" (whether they count in N_sequences is the caller's choice).

Sampler mismatch. The rollout engine may compute log-probs differently from the trainer (bf16
copy of the weights, vLLM kernels), so pi_sampler != pi_old even on-policy. Truncated importance
sampling (Yao et al. 2025, "Your efficient RL framework secretly brings you off-policy RL
training"; TRL's vllm_importance_sampling_cap, verl's tis_imp_ratio_cap) multiplies each token's
loss by w_it = min(pi_old / pi_sampler, C), a constant.

KL: the k3 estimator (Schulman 2020, "Approximating KL divergence") of KL(pi || pi_ref) per
token, exp(ref - logp) - (ref - logp) - 1 >= 0, unbiased for samples from pi; used by GRPO,
TRL (beta > 0) and the KL term of the official UFT code, which clamps it to [-10, 10] (verl's
`low_var_kl`); so does unift (a token past 10 then carries no KL gradient).
"""

from __future__ import annotations

import torch

from unift.choices import AGGREGATIONS
from unift.errors import UserError, suggest
from unift.losses import masked_sum

KL_CLAMP = 10.0


def aggregate(values: torch.Tensor, mask: torch.Tensor, aggregation: str, normalizer: float) -> torch.Tensor:
    """Aggregate per-token values [B, T] over masked tokens into a scalar (see module docstring).

    Usable for any per-token term (policy loss, KL) so that it follows the same rule.
    """
    if aggregation not in AGGREGATIONS:
        raise UserError(f"unknown loss aggregation '{aggregation}'" + suggest(aggregation, AGGREGATIONS))
    m = mask.to(values.dtype)                                      # [B, T]
    if aggregation == "seq-mean-token-mean":
        per_seq = (values * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)   # [B]
        return per_seq.sum() / normalizer
    return masked_sum(values, mask) / normalizer


def ppo_clip_terms(ratio: torch.Tensor, advantages: torch.Tensor, eps_low: float,
                   eps_high: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token clipped loss and where each clip bound is active.

    ratio: [B, T]; advantages: [B] -> (loss [B, T], low_clipped [B, T] bool, high_clipped [B, T] bool).
    low_clipped: r < 1 - eps_low and A < 0; high_clipped: r > 1 + eps_high and A > 0 (TRL's
    definition: exactly the tokens whose gradient the clip removes).
    """
    adv = advantages.detach()[:, None].to(ratio.dtype)             # [B, 1]
    unclipped = ratio * adv                                        # [B, T]
    clipped = ratio.clamp(1.0 - eps_low, 1.0 + eps_high) * adv     # [B, T]
    loss = -torch.minimum(unclipped, clipped)                      # [B, T]
    with torch.no_grad():
        low = (ratio < 1.0 - eps_low) & (adv < 0)
        high = (ratio > 1.0 + eps_high) & (adv > 0)
    return loss, low, high


def clipped_policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor, *, epsilon: float = 0.2, epsilon_high: float | None = None,
                        aggregation: str = "token-mean", normalizer: float,
                        is_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO-clipped surrogate over the masked (generated) tokens.

    logp: [B, T] current log-probs (with grad); old_logp: [B, T] log-probs of the sampling policy
    (treated as constants); advantages: [B]; mask: [B, T] bool; epsilon: lower clip (and upper
    when epsilon_high is None); normalizer: the global count that `aggregation` divides by;
    is_weight: [B, T] constant per-token weight (truncated importance sampling), or None.

    Returns (loss, stats). stats are detached 0-dim tensors over this call's masked tokens:
    clip_ratio_low, clip_ratio_high, clip_ratio (either bound), ratio_mean, and num_tokens, the
    weight to average them over micro-batches.
    """
    eps_high = epsilon if epsilon_high is None else epsilon_high
    ratio = torch.exp(logp - old_logp.detach())                    # [B, T]
    per_token, low, high = ppo_clip_terms(ratio, advantages, epsilon, eps_high)
    if is_weight is not None:
        per_token = per_token * is_weight.detach()
    loss = aggregate(per_token, mask, aggregation, normalizer)
    with torch.no_grad():
        n = mask.sum()
        denom = n.clamp(min=1).to(torch.float32)
        stats = {
            "clip_ratio_low": (low & mask).sum() / denom,
            "clip_ratio_high": (high & mask).sum() / denom,
            "clip_ratio": ((low | high) & mask).sum() / denom,
            "ratio_mean": masked_sum(ratio.float(), mask) / denom,
            "num_tokens": n.to(torch.float32),
        }
    return loss, stats


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi || pi_ref): exp(ref - logp) - (ref - logp) - 1, clamped to
    [-10, 10] as verl's low_var_kl. [B, T] -> [B, T].

    Gradient flows through logp only; ref_logp is treated as a constant.
    """
    delta = ref_logp.detach() - logp                               # [B, T]
    return (torch.exp(delta) - delta - 1.0).clamp(min=-KL_CLAMP, max=KL_CLAMP)


def truncated_is_weight(old_logp: torch.Tensor, sampler_logp: torch.Tensor, cap: float) -> torch.Tensor:
    """min(pi_old / pi_sampler, cap) per token, a constant. [B, T], [B, T] -> [B, T]."""
    return torch.exp(old_logp.detach() - sampler_logp.detach()).clamp(max=cap)
