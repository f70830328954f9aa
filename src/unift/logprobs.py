"""Per-token log-probs of a batch under the model, computed only where they are needed.

The language-model head and the log-softmax over the vocabulary (49k entries for SmolLM2)
are the most memory-hungry part of a training step. Only positions whose next token is
trained (TARGET in SFT/DFT; GENERATED and HINT in RL) go through the head: the decoder's
hidden states are gathered at those positions first, then projected and normalised in fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sequence_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      mask: torch.Tensor) -> torch.Tensor:
    """log p(input_ids[:, t+1] | input_ids[:, :t+1]) where mask[:, t] is true, else 0.

    input_ids, attention_mask: [B, T]; mask: [B, T-1] bool (next-token positions to score)
    returns [B, T-1] fp32, differentiable at the masked positions.
    """
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # [B, T, H]
    picked = hidden[:, :-1][mask]                                                           # [N, H]
    logits = head(picked).float()                                                           # [N, V]
    logp = -F.cross_entropy(logits, input_ids[:, 1:][mask], reduction="none")               # [N]
    out = torch.zeros(mask.shape, dtype=torch.float32, device=input_ids.device)
    return out.masked_scatter(mask, logp)
