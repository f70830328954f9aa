"""The KV-cache sampler: greedy output equals a full recomputation, log-probs are right,
stop strings and EOS end a row, sampling is seeded."""

import torch

from unift.engine import HFEngine, SamplingParams, sample_categorical, sample_next


def test_greedy_matches_full_forward_with_left_padding(tiny):
    model, tok = tiny
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15]]
    engine = HFEngine(model, tok, batch_size=3)
    out = engine.generate(prompts, SamplingParams(max_new_tokens=6, temperature=0.0, stop=()))
    for comp, prompt in zip(out, prompts):
        seq = list(prompt)
        for token, logp in zip(comp.token_ids, comp.logprobs):
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([seq])).logits[0, -1]
            assert token == int(logits.argmax())
            assert abs(logp - float(logits.log_softmax(-1)[token])) < 1e-4
            seq.append(token)
        assert comp.finish_reason in ("length", "eos")


def test_n_samples_grouped_and_seeded(tiny):
    model, tok = tiny
    params = SamplingParams(max_new_tokens=5, temperature=1.0, n=3, stop=(), seed=7)
    a = HFEngine(model, tok, batch_size=4).generate([[5, 6], [7, 8, 9]], params)
    b = HFEngine(model, tok, batch_size=2).generate([[5, 6], [7, 8, 9]], params)
    assert [c.prompt_index for c in a] == [0, 0, 0, 1, 1, 1]
    assert len({tuple(c.token_ids) for c in a}) > 1
    c = HFEngine(model, tok, batch_size=4).generate([[5, 6], [7, 8, 9]], params)
    assert [x.token_ids for x in a] == [x.token_ids for x in c]  # same seed, same batching: same samples
    assert len(b) == 6
    assert all(len(c.token_ids) == len(c.logprobs) == 5 for c in a)


def test_stop_string_ends_a_row(tiny):
    model, tok = tiny
    engine = HFEngine(model, tok)
    out = engine.generate([[5, 6]], SamplingParams(max_new_tokens=8, temperature=0.0, stop=()))
    text = tok.decode(out[0].token_ids[:3])
    stopped = engine.generate([[5, 6]], SamplingParams(max_new_tokens=8, temperature=0.0, stop=(text,)))
    assert stopped[0].finish_reason == "stop" and len(stopped[0].token_ids) <= 3


def test_top_p_keeps_only_the_nucleus():
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1]]))
    g = torch.Generator().manual_seed(0)
    draws = {int(sample_next(logits, 1.0, 0.5, g)[0]) for _ in range(50)}
    assert draws == {0}
    tokens, logp = sample_next(logits, 0.0, 1.0, None)
    assert int(tokens[0]) == 0 and abs(float(logp[0]) - torch.log(torch.tensor(0.6)).item()) < 1e-6


def test_categorical_sampling_follows_probabilities_and_skips_zeros():
    probs = torch.tensor([[0.5, 0.0, 0.25, 0.25]]).repeat(4000, 1)
    g = torch.Generator().manual_seed(0)
    tokens = sample_categorical(probs, g)
    counts = torch.bincount(tokens, minlength=4).float() / len(tokens)
    assert counts[1] == 0
    assert torch.allclose(counts, torch.tensor([0.5, 0.0, 0.25, 0.25]), atol=0.03)
    edge = sample_categorical(torch.tensor([[0.0, 0.0, 1.0, 0.0]]), g)  # u may reach the total
    assert int(edge[0]) == 2


def test_bf16_engine_copy_follows_synced_weights(tiny):
    import copy

    model, tok = copy.deepcopy(tiny[0]), tiny[1]   # the shared tiny model must stay unchanged
    engine = HFEngine(model, tok, dtype=torch.bfloat16)
    assert engine.model is not model and next(engine.model.parameters()).dtype == torch.bfloat16
    assert next(model.parameters()).dtype == torch.float32          # the policy keeps fp32 weights
    greedy = SamplingParams(max_new_tokens=4, temperature=0.0, stop=())
    before = engine.generate([[5, 6, 7]], greedy)[0]
    with torch.no_grad():  # close to the fp32 policy: bf16 rounding only
        logits = model(input_ids=torch.tensor([[5, 6, 7]])).logits[0, -1]
    assert abs(before.logprobs[0] - float(logits.log_softmax(-1)[before.token_ids[0]])) < 0.05
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(3.0)               # sharper next-token distribution

    def policy_logp(token):
        with torch.no_grad():
            return float(model(input_ids=torch.tensor([[5, 6, 7]])).logits[0, -1].log_softmax(-1)[token])

    stale = engine.generate([[5, 6, 7]], greedy)[0]
    assert abs(stale.logprobs[0] - policy_logp(stale.token_ids[0])) > 0.1   # not synced yet
    engine.sync_weights()
    fresh = engine.generate([[5, 6, 7]], greedy)[0]
    assert abs(fresh.logprobs[0] - policy_logp(fresh.token_ids[0])) < 0.05


def test_u_at_the_total_mass_draws_the_last_positive_token(monkeypatch):
    monkeypatch.setattr(torch, "rand", lambda shape, **kw: torch.ones(shape, dtype=kw.get("dtype")))
    tokens = sample_categorical(torch.tensor([[0.2, 0.8, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]), None)
    assert tokens.tolist() == [1, 3]


def test_bf16_copy_keeps_fp32_buffers(tiny):
    model, tok = tiny
    engine = HFEngine(model, tok, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in engine.model.parameters())
    floats = [b for b in engine.model.buffers() if b.is_floating_point()]
    assert floats and all(b.dtype == torch.float32 for b in floats)   # e.g. rotary inv_freq
