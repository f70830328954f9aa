import torch

from unift.logprobs import sequence_logprobs
from unift.losses import token_logprobs


def test_matches_full_logits_and_gradients(tiny):
    model, _ = tiny
    torch.manual_seed(0)
    ids = torch.randint(0, 1000, (2, 9))
    attn = torch.ones_like(ids)
    attn[1, 7:] = 0
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[0, 3:] = True
    mask[1, 2:6] = True
    fast = sequence_logprobs(model, ids, attn, mask)
    full = token_logprobs(model(input_ids=ids, attention_mask=attn).logits[:, :-1], ids[:, 1:])
    assert torch.allclose(fast[mask], full[mask], atol=1e-5)
    assert torch.all(fast[~mask] == 0)
    (g_fast,) = torch.autograd.grad(fast[mask].sum(), model.model.embed_tokens.weight)
    (g_full,) = torch.autograd.grad(full[mask].sum(), model.model.embed_tokens.weight)
    assert torch.allclose(g_fast, g_full, atol=1e-5)
