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


def test_clamp_mask_clamps_only_those_positions(tiny):
    """rl.normalizer=official: hint logits clamped to +-100 (the official actor's sft_loss), others not."""
    import copy

    from unift.logprobs import LOGIT_CLAMP, sequence_logprobs_and_entropy

    model, _ = tiny
    big = copy.deepcopy(model)
    with torch.no_grad():
        big.lm_head.weight.mul_(3000.0)  # tied: logits of hundreds
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    attn, mask = torch.ones_like(ids), torch.ones(1, 4, dtype=torch.bool)
    clamp = torch.tensor([[False, False, True, True]])
    with torch.no_grad():
        plain, _ = sequence_logprobs_and_entropy(big, ids, attn, mask)
        clamped, _ = sequence_logprobs_and_entropy(big, ids, attn, mask, clamp_mask=clamp)
        logits = big(ids).logits[0, :-1].float()
    assert logits.abs().max() > 2 * LOGIT_CLAMP
    by_hand = logits.clamp(-LOGIT_CLAMP, LOGIT_CLAMP).log_softmax(-1).gather(-1, ids[0, 1:, None])[:, 0]
    assert torch.allclose(clamped[0, 2:], by_hand[2:], atol=1e-3)
    assert torch.equal(clamped[0, :2], plain[0, :2])
    assert not torch.allclose(clamped[0, 2:], plain[0, 2:], atol=1e-3)
