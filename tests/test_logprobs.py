import pytest
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


def _batch(seed: int = 0, b: int = 3, t: int = 12):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 1000, (b, t), generator=g)
    attn = torch.ones_like(ids)
    attn[-1, t - 3:] = 0
    mask = torch.rand(b, t - 1, generator=g) < 0.7
    mask[-1, t - 4:] = False
    return ids, attn, mask


def _stats_and_grads(model, chunk: int, **kw):
    from unift.logprobs import sequence_logprobs_and_entropy

    ids, attn, mask = _batch()
    model.zero_grad()
    logp, ent = sequence_logprobs_and_entropy(model, ids, attn, mask, chunk=chunk, **kw)
    (logp[mask].mean() + 0.3 * ent[mask].mean()).backward()  # normalised by the token count, as the losses are
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logp.detach(), ent.detach(), grads


def test_chunked_values_and_gradients_match_one_chunk(tiny):
    """Chunks of 1, 5 and 7 positions (with a short last chunk) give the log-probs, entropies and
    gradients of one pass over all positions, with temperature, a trained entropy and clamping."""
    model, _ = tiny
    _, _, mask = _batch()
    clamp = mask & (torch.arange(mask.shape[1]) % 2 == 0)
    kw = {"temperature": 0.7, "entropy_grad": True, "clamp_mask": clamp}
    logp, ent, grads = _stats_and_grads(model, int(mask.sum()), **kw)
    assert len(grads) > 3 and any(g.abs().sum() > 0 for g in grads.values())
    for chunk in (1, 5, 7):
        c_logp, c_ent, c_grads = _stats_and_grads(model, chunk, **kw)
        assert torch.allclose(c_logp, logp, atol=1e-5) and torch.allclose(c_ent, ent, atol=1e-5)
        assert c_grads.keys() == grads.keys()
        for name, g in grads.items():
            assert torch.allclose(c_grads[name], g, atol=1e-5), name


def test_no_full_vocabulary_tensor_is_kept_for_backward(tiny):
    """What autograd keeps between forward and backward outside the checkpointed chunks: nothing of
    vocabulary width with more than `chunk` rows (one pass would keep [N, V] logits)."""
    from unift.logprobs import sequence_logprobs_and_entropy

    model, _ = tiny
    vocab = model.config.vocab_size
    ids, attn, mask = _batch(b=4, t=16)
    def widest(chunk: int) -> int:
        rows = [0]

        def pack(t):
            if t.dim() >= 1 and t.shape[-1] == vocab:
                rows.append(t.numel() // vocab)
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            logp, _ = sequence_logprobs_and_entropy(model, ids, attn, mask, chunk=chunk, with_entropy=False)
        logp.sum().backward()
        return max(rows)

    assert widest(4) == 0 and widest(10_000) == 0  # checkpointed: recomputed in the backward instead


def test_no_scored_positions_still_reaches_every_parameter(tiny):
    """FSDP2's idle pass scores nothing but must run the whole graph (each layer's collectives)."""
    from unift.logprobs import sequence_logprobs

    model, _ = tiny
    model.zero_grad()
    ids = torch.zeros((1, 2), dtype=torch.long)
    logp = sequence_logprobs(model, ids, torch.ones_like(ids), torch.zeros((1, 1), dtype=torch.bool), chunk=8)
    (logp.sum() * 0.0).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_chunk_size_not_positive_and_finite_is_a_config_error(value):
    from unift.config import load_config
    from unift.errors import UserError

    with pytest.raises(UserError, match="train.logprob_chunk_mb must be a positive number"):
        load_config(None, ["data.train=x.jsonl", f"train.logprob_chunk_mb={value}"])


def test_chunks_are_sized_by_their_logits_not_by_positions():
    """64 MB of fp32 logits: 341 positions of SmolLM2's 49,152-token vocabulary, 110 of Qwen2.5's
    151,936; never fewer than one position, however wide the head."""
    from unift.logprobs import positions_per_chunk

    assert positions_per_chunk(64, 49_152) == 341
    assert positions_per_chunk(64, 151_936) == 110
    assert positions_per_chunk(1, 49_152) == 5
    assert positions_per_chunk(0.001, 151_936) == 1
    for vocab in (1_000, 49_152, 151_936, 256_000):
        n = positions_per_chunk(64, vocab)
        assert n * vocab * 4 <= 64 * 2 ** 20 < (n + 1) * vocab * 4


def test_model_chunk_reads_the_heads_width(tiny):
    from unift.logprobs import model_chunk, positions_per_chunk

    model, tokenizer = tiny
    assert model.get_output_embeddings().weight.shape[0] == len(tokenizer)
    assert model_chunk(model, 1) == positions_per_chunk(1, len(tokenizer)) == 1 * 2 ** 20 // (4 * len(tokenizer))
