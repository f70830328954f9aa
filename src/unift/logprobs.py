"""Per-token log-probs of a batch under the model, computed only where they are needed.

The language-model head and the log-softmax over the vocabulary (49k entries for SmolLM2)
are the most memory-hungry part of a training step. Only positions whose next token is
trained (TARGET in SFT/DFT; GENERATED and HINT in RL) go through the head: the decoder's
hidden states are gathered at those positions first, then projected and normalised in fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOGIT_CLAMP = 100.0


def final_logit_transform(config, logits: torch.Tensor) -> torch.Tensor:
    """What some architectures apply after the head (Cohere's logit_scale, Gemma's soft-capping)."""
    scale = getattr(config, "logit_scale", None)
    if scale is not None:
        logits = logits * scale
    cap = getattr(config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def picked_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
    """fp32 next-token logits at the positions where mask is true: [B, T], [B, T], [B, T-1] -> [N, V]."""
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # [B, T, H]
    picked = hidden[:, :-1][mask]                                                           # [N, H]
    return final_logit_transform(model.config, head(picked).float())                       # [N, V]


def sequence_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log p(input_ids[:, t+1] | input_ids[:, :t+1]) where mask[:, t] is true, else 0.

    input_ids, attention_mask: [B, T]; mask: [B, T-1] bool (next-token positions to score)
    returns [B, T-1] fp32, differentiable at the masked positions.
    """
    return sequence_logprobs_and_entropy(model, input_ids, attention_mask, mask, temperature,
                                         with_entropy=False)[0]


def sequence_logprobs_and_entropy(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                                  mask: torch.Tensor, temperature: float = 1.0, entropy_grad: bool = False,
                                  with_entropy: bool = True, clamp_mask: torch.Tensor | None = None,
                                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs as `sequence_logprobs` and the entropy of the next-token distribution, [B, T-1] each.

    Logits are divided by `temperature` (the sampling temperature, as TRL/verl do for RL).
    The entropy carries a gradient only when `entropy_grad` (an entropy bonus is trained).
    clamp_mask: [B, T-1] bool, positions (a subset of mask) whose logits are clamped to
    [-LOGIT_CLAMP, LOGIT_CLAMP] after the temperature, as the official UFT actor does for the
    hint log-likelihood (rl.normalizer=official).
    """
    # a model sharded with FSDP2 runs this inside its forward hooks (unift.train.sharding)
    sharded_forward = getattr(model, "unift_picked_logits", None)
    logits = sharded_forward(input_ids, attention_mask, mask) if sharded_forward \
        else picked_logits(model, input_ids, attention_mask, mask)                          # [N, V]
    if temperature != 1.0:
        logits = logits / temperature
    if clamp_mask is not None and bool(clamp_mask.any()):
        rows = clamp_mask[mask][:, None]                                                     # [N, 1]
        logits = torch.where(rows, logits.clamp(-LOGIT_CLAMP, LOGIT_CLAMP), logits)
    logp = -F.cross_entropy(logits, input_ids[:, 1:][mask], reduction="none")               # [N]
    zeros = torch.zeros(mask.shape, dtype=torch.float32, device=input_ids.device)
    if not with_entropy:
        return zeros.masked_scatter(mask, logp), None
    with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
        log_probs = logits.log_softmax(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)                                     # [N]
    return zeros.masked_scatter(mask, logp), zeros.masked_scatter(mask, entropy)
