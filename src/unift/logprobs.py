"""Per-token log-probs of a batch under the model, computed only where they are needed, in chunks.

The language-model head and the log-softmax over the vocabulary (49k entries for SmolLM2, 152k
for Qwen2.5) are the most memory-hungry part of a training step: N scored positions need an
[N, V] fp32 logit matrix, and its softmax, entropy and gradient are as large again. Two things
keep that small:
- Only positions whose next token is trained (TARGET in SFT/DFT; GENERATED and HINT in RL) go
  through the head: the decoder's hidden states are gathered at those positions first.
- Those positions go through the head `chunk` at a time, each chunk under activation
  checkpointing (`torch.utils.checkpoint`): its logits are freed after the forward and
  recomputed in the backward, so at most one chunk's [chunk, V] logits are alive at once. This is
  the position-chunking of cut cross-entropy (Wijmans et al. 2024) without its fused kernel; it
  costs one extra head forward per step. Values are row-wise and do not depend on the chunk
  size; the head's weight gradient is summed over chunks, so its float order does.
- The chunk is sized by its logits, not by a fixed count of positions (`train.logprob_chunk_mb`,
  `positions_per_chunk`): 64 MB of fp32 logits are 341 positions of SmolLM2's vocabulary and
  110 of Qwen2.5's, so a larger vocabulary costs more passes instead of more memory (Liger's
  fused linear cross-entropy sizes its chunks from the vocabulary the same way).

Per position t with logits z = head(h_t) / temperature (fp32):
    log p_t = z[y_t] - logsumexp(z)            entropy_t = -sum_v softmax(z)_v log softmax(z)_v
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

LOGIT_CLAMP = 100.0
DEFAULT_CHUNK_MB = 64.0  # MB of fp32 logits per pass through the head, as train.logprob_chunk_mb's default


def positions_per_chunk(chunk_mb: float, vocab_size: int) -> int:
    """Positions whose [positions, vocab_size] fp32 logits fit in chunk_mb MB (at least 1)."""
    return max(1, int(chunk_mb * 2 ** 20) // (4 * vocab_size))


def model_chunk(model, chunk_mb: float) -> int:
    """positions_per_chunk for this model's LM head (its global width, also when sharded)."""
    head = model.get_output_embeddings()
    vocab = head.weight.shape[0] if head is not None else model.config.vocab_size
    return positions_per_chunk(chunk_mb, vocab)


def final_logit_transform(config, logits: torch.Tensor) -> torch.Tensor:
    """What some architectures apply after the head (Cohere's logit_scale, Gemma's soft-capping)."""
    scale = getattr(config, "logit_scale", None)
    if scale is not None:
        logits = logits * scale
    cap = getattr(config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def token_stats(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, mask: torch.Tensor,
                temperature: float = 1.0, with_entropy: bool = True, entropy_grad: bool = False,
                clamp_mask: torch.Tensor | None = None, chunk: int | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (and entropies) of the next tokens at the positions where mask is true.

    input_ids, attention_mask: [B, T]; mask, clamp_mask: [B, T-1] bool
    returns logp [N] and entropy [N] (or None), N = mask.sum(), in mask's row-major order.
    A model sharded with FSDP2 runs this as a registered forward method (unift.train.sharding).
    """
    chunk = chunk or model_chunk(model, DEFAULT_CHUNK_MB)
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # [B, T, H]
    picked = hidden[:, :-1][mask]                                                           # [N, H]
    labels = input_ids[:, 1:][mask]                                                         # [N]
    clamp = clamp_mask[mask] if clamp_mask is not None else torch.zeros_like(labels, dtype=torch.bool)  # [N]
    grad = torch.is_grad_enabled()
    logps, entropies = [], []
    for start in range(0, max(len(labels), 1), chunk):  # one (empty) pass when N = 0 keeps the graph whole
        part = slice(start, start + chunk)
        args = (head, model.config, picked[part], labels[part], clamp[part], temperature, with_entropy,
                entropy_grad and grad)
        logp, entropy = checkpoint(_chunk_stats, *args, use_reentrant=False, preserve_rng_state=False) \
            if grad else _chunk_stats(*args)
        logps.append(logp)
        entropies.append(entropy)
    return torch.cat(logps), (torch.cat(entropies) if with_entropy else None)


def _chunk_stats(head, config, hidden: torch.Tensor, labels: torch.Tensor, clamp: torch.Tensor,
                 temperature: float, with_entropy: bool, entropy_grad: bool,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk: hidden [n, H], labels [n], clamp [n] bool -> logp [n], entropy [n] (zeros if unused)."""
    logits = final_logit_transform(config, head(hidden).float())                            # [n, V]
    if temperature != 1.0:
        logits = logits / temperature
    if bool(clamp.any()):
        logits = torch.where(clamp[:, None], logits.clamp(-LOGIT_CLAMP, LOGIT_CLAMP), logits)
    logp = -F.cross_entropy(logits, labels, reduction="none")                               # [n]
    if not with_entropy:
        return logp, torch.zeros_like(logp)
    with torch.set_grad_enabled(entropy_grad):
        log_probs = logits.log_softmax(-1)                                                  # [n, V]
        entropy = -(log_probs.exp() * log_probs).sum(-1)                                    # [n]
    return logp, entropy


def sequence_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      mask: torch.Tensor, temperature: float = 1.0, chunk: int | None = None) -> torch.Tensor:
    """log p(input_ids[:, t+1] | input_ids[:, :t+1]) where mask[:, t] is true, else 0.

    input_ids, attention_mask: [B, T]; mask: [B, T-1] bool (next-token positions to score)
    returns [B, T-1] fp32, differentiable at the masked positions.
    """
    return sequence_logprobs_and_entropy(model, input_ids, attention_mask, mask, temperature,
                                         with_entropy=False, chunk=chunk)[0]


def sequence_logprobs_and_entropy(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                                  mask: torch.Tensor, temperature: float = 1.0, entropy_grad: bool = False,
                                  with_entropy: bool = True, clamp_mask: torch.Tensor | None = None,
                                  chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs as `sequence_logprobs` and the entropy of the next-token distribution, [B, T-1] each.

    Logits are divided by `temperature` (the sampling temperature, as TRL/verl do for RL).
    The entropy carries a gradient only when `entropy_grad` (an entropy bonus is trained).
    clamp_mask: [B, T-1] bool, positions (a subset of mask) whose logits are clamped to
    [-LOGIT_CLAMP, LOGIT_CLAMP] after the temperature, as the official UFT actor does for the
    hint log-likelihood (rl.normalizer=official). chunk: positions per pass through the head
    (None: DEFAULT_CHUNK_MB of logits).
    """
    if chunk is not None and chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    stats = getattr(model, "unift_token_stats", None) or functools.partial(token_stats, model)
    logp, entropy = stats(input_ids, attention_mask, mask, temperature, with_entropy, entropy_grad,
                          clamp_mask, chunk)                                                 # [N], [N]
    zeros = torch.zeros(mask.shape, dtype=torch.float32, device=input_ids.device)
    return zeros.masked_scatter(mask, logp), (zeros.masked_scatter(mask, entropy) if with_entropy else None)
