"""The online loop on the tiny model: RFT/UFT/R3/adaptive run and log every metric; UFT with
beta = 0 and no hint is exactly RFT."""

import json

import pytest
import torch
from safetensors.torch import load_file

from unift.config import load_config
from unift.train.rl_loop import train_rl

BASE = ["model=tiny", "train.precision=fp32", "train.steps=2", "train.lr=1e-3", "train.warmup_ratio=0",
        "rl.prompts_per_step=2", "rl.num_generations=3", "rl.max_new_tokens=6", "train.micro_batch_size=4",
        "log.progress=false", "log.tensorboard=false"]


def run(tmp_path, data, name, *extra):
    cfg = load_config(None, [f"output_dir={tmp_path / name}", f"data.train={data}", *BASE, *extra])
    final = train_rl(cfg)
    lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
    return final, [json.loads(x) for x in lines]


@pytest.mark.parametrize("method, extra", [("rft", []), ("uft", ["hints.beta=0.1"]), ("r3", []),
                                           ("uft", ["hints.schedule=adaptive"]),
                                           ("uft", ["rl.kl_coef=0.1", "rl.entropy_coef=0.01",
                                                    "rl.updates_per_step=2", "rl.loss_aggregation=dr-grpo"])])
def test_methods_run_and_log(tmp_path, countdown_jsonl, method, extra):
    final, metrics = run(tmp_path, countdown_jsonl, method, f"method={method}", *extra)
    assert len(metrics) == 2 and (final / "model.safetensors").exists()
    m = metrics[0]
    for key in ("reward", "accuracy", "frac_reward_zero_std", "hint_tokens_mean", "completion_length_mean",
                "completion_clipped_ratio", "policy_clip_ratio", "entropy", "time_rollout_s", "time_scoring_s",
                "time_update_s", "generated_tokens_per_s"):
        assert key in m, key
    if method == "rft":
        assert m["hint_tokens_mean"] == 0
    if method == "uft" and not extra[0].startswith("rl."):
        assert m["hint_tokens_mean"] > 0
    if "rl.kl_coef=0.1" in extra:
        assert "kl" in m


def test_uft_without_hint_and_beta_equals_rft(tmp_path, countdown_jsonl):
    a, ma = run(tmp_path, countdown_jsonl, "rft", "method=rft")
    b, mb = run(tmp_path, countdown_jsonl, "uft0", "method=uft", "hints.p_high=0", "hints.p_low=0", "hints.beta=0")
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [m["reward"] for m in ma] == [m["reward"] for m in mb]


def test_rl_needs_ground_truth_and_pieces(tmp_path):
    from unift.errors import UserError

    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "p", "completion": "c", "task": "countdown",
                                "ground_truth": {"numbers": [1, 2], "target": 3}}) + "\n")
    with pytest.raises(UserError, match="needs reference solution pieces"):
        train_rl(load_config(None, [f"output_dir={tmp_path / 'o'}", f"data.train={data}", "method=uft", *BASE]))
    with pytest.raises(UserError, match="num_generations must be at least 2"):
        load_config(None, [f"data.train={data}", "method=rft", "rl.num_generations=1"])
    with pytest.raises(UserError, match="p_low <= p_high"):
        load_config(None, [f"data.train={data}", "method=uft", "hints.p_low=0.9", "hints.p_high=0.1"])


def test_sampler_mismatch_is_measured(tmp_path, countdown_jsonl):
    """fp32: the engine samples with the policy itself, so sampler and trainer agree; bf16: the
    engine's bf16 copy differs by rounding, which is logged and weighted by truncated IS.
    (An entropy bonus keeps zero-advantage groups in the update, so every step has tokens.)"""
    _, same = run(tmp_path, countdown_jsonl, "fp32", "method=rft", "rl.entropy_coef=0.01")
    assert all(m["sampler_logp_abs_diff"] < 1e-4 for m in same)
    _, bf16 = run(tmp_path, countdown_jsonl, "bf16", "method=rft", "train.precision=bf16",
                  "rl.entropy_coef=0.01")
    assert all(0 < m["sampler_logp_abs_diff"] < 0.5 for m in bf16)
    assert all(0 <= m["tis_capped_fraction"] <= 1 for m in bf16)


def test_pruned_update_equals_full_update(tiny):
    """Dropping zero-advantage completions and duplicate hints changes no weight."""
    import copy

    from unift.data.render import GENERATED, HINT, PROMPT, Rendered
    from unift.rl.rollout import Sequence
    from unift.train.rl_update import update

    model, tok = tiny
    cfg = load_config(None, ["model=tiny", "method=uft", "data.train=x.jsonl", "hints.beta=0.5", "rl.num_generations=2",
                             "train.micro_batch_size=2", "train.lr=1e-2"])

    def s(hint, gen, adv):
        roles = [PROMPT] * 4 + [HINT] * len(hint) + [GENERATED] * len(gen)
        return Sequence(Rendered([5, 6, 7, 8] + hint + gen, roles), [-2.0] * len(gen), adv, False)

    seqs = [s([9, 10], [11, 12, 13], 0.0), s([9, 10], [14, 15], 0.0), s([], [16, 17], 0.0),
            s([], [18, 19, 20], 0.0), s([21], [22, 23], 1.0), s([21], [24], -1.0)]
    weights = []
    for prune in (False, True):
        m = copy.deepcopy(model)
        opt = torch.optim.SGD(m.parameters(), lr=1.0)  # weights move by the gradient itself
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
        stats = update(m, None, opt, sched, seqs, cfg, tok.pad_token_id, torch.device("cpu"), None, prune=prune)
        weights.append([p.detach().clone() for p in m.parameters()])
        assert stats["pruned_sequences"] == (3 if prune else 0)
    assert max(float((a - b).abs().max()) for a, b in zip(*weights)) < 1e-5  # fp32 sums in another order
    assert any(not torch.equal(a, p) for a, p in zip(weights[0], model.parameters()))  # it did train


def _seq(prompt, hint, gen, adv, sampler=-2.0):
    from unift.data.render import GENERATED, HINT, PROMPT, Rendered
    from unift.rl.rollout import Sequence

    roles = [PROMPT] * len(prompt) + [HINT] * len(hint) + [GENERATED] * len(gen)
    return Sequence(Rendered(prompt + hint + gen, roles), [sampler] * len(gen), adv, False)


def _logp_of(model, ids: list[int]) -> float:
    """log p(ids[-1] | ids[:-1]) under `model`."""
    with torch.no_grad():
        logits = model(torch.tensor([ids[:-1]])).logits[0, -1].float()
    return float(logits.log_softmax(-1)[ids[-1]])


def _sgd_update(model, seqs, *overrides):
    import copy

    from unift.train.rl_update import update

    m = copy.deepcopy(model)
    cfg = load_config(None, ["model=tiny", "data.train=x.jsonl", "train.micro_batch_size=2", *overrides])
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    stats = update(m, None, opt, sched, seqs, cfg, 0, torch.device("cpu"), None)
    return m, stats


def test_a_sampled_eos_is_trained(tiny):
    """A completion that ended with EOS and did better than its group mates: its EOS gains mass."""
    model, tok = tiny
    eos, prompt = tok.eos_token_id, [5, 6, 7, 8, 11]
    better = [_seq(prompt[:4], [], [11, eos], 1.0), _seq(prompt[:4], [], [11, 12], -1.0)]
    worse = [_seq(prompt[:4], [], [11, eos], -1.0), _seq(prompt[:4], [], [11, 12], 1.0)]
    up, _ = _sgd_update(model, better, "method=rft", "rl.num_generations=2", "train.grad_clip=0")
    down, _ = _sgd_update(model, worse, "method=rft", "rl.num_generations=2", "train.grad_clip=0")
    base = _logp_of(model, prompt + [eos])
    # (the tiny random model's gradients are small: 1e-4 is far above fp32 noise of a deterministic run)
    assert _logp_of(up, prompt + [eos]) > base + 1e-4 and _logp_of(down, prompt + [eos]) < base - 1e-4


def test_a_finished_hint_ends_with_eos_and_trains_it(tiny):
    """hints.answer_piece: a full hint is the whole reference + EOS (HINT tokens): nothing is generated
    and the hint log-likelihood raises p(EOS) after the answer."""
    from unift.data.render import HINT, render_prompt
    from unift.tasks.base import Example

    model, tok = tiny
    ex = Example(prompt="Use 1 2 3 to make 6.\n<think> ", completion="1 + 2 = 3 </think>\n<answer> 1+2+3 </answer>")
    r = render_prompt(ex, tok, "plain", hint=ex.completion, finished=True)
    assert r.input_ids[-1] == tok.eos_token_id and r.roles[-1] == HINT
    assert render_prompt(ex, tok, "plain", hint=ex.completion).input_ids[-1] != tok.eos_token_id
    cut = r.roles.index(HINT)
    seqs = [_seq(r.input_ids[:cut], r.input_ids[cut:], [], 0.0), _seq(r.input_ids[:cut], r.input_ids[cut:], [], 0.0)]
    trained, stats = _sgd_update(model, seqs, "method=uft", "rl.num_generations=2", "hints.beta=1.0",
                                 "train.grad_clip=0")
    assert stats["hint_loss"] > 0
    assert _logp_of(trained, r.input_ids) > _logp_of(model, r.input_ids) + 1e-3


def test_official_normalizer_is_verls_arithmetic(tiny):
    """rl.normalizer=official: per micro-batch masked means of the policy, entropy and hint terms,
    divided by the number of micro-batches; computed here by hand on a fixed batch of 6 sequences
    (3 micro-batches of 2, in rollout order; one without hint tokens)."""
    from unift.logprobs import sequence_logprobs_and_entropy

    model, _ = tiny
    seqs = [_seq([5, 6, 7], [9, 10], [11, 12, 13], 1.0), _seq([5, 6, 7], [9, 10], [14], -1.0),
            _seq([5, 6], [], [16, 17], 0.0), _seq([5, 6], [], [18, 19, 20, 21], 0.0),
            _seq([5, 8, 8, 8], [21], [22, 23], 0.5), _seq([5, 8, 8, 8], [21], [24], -0.5)]
    beta, ent_coef = 0.5, 0.1
    expected = 0.0
    for part in (seqs[0:2], seqs[2:4], seqs[4:6]):
        pg_sum = ent_sum = nll_sum = 0.0
        gen_n = hint_n = 0
        for s in part:
            ids = torch.tensor([s.rendered.input_ids])
            roles = torch.tensor([s.rendered.roles[1:]])
            gen, hint = roles == 2, roles == 1
            with torch.no_grad():
                logp, ent = sequence_logprobs_and_entropy(model, ids, torch.ones_like(ids), gen | hint)
            pg_sum += -s.advantage * int(gen.sum())        # ratio 1: -A per generated token
            ent_sum += float(ent[gen].sum())
            nll_sum += float(-logp[hint].sum())
            gen_n, hint_n = gen_n + int(gen.sum()), hint_n + int(hint.sum())
        term = pg_sum / gen_n - ent_coef * ent_sum / gen_n + (beta * nll_sum / hint_n if hint_n else 0.0)
        expected += term / 3
    common = ["method=uft", "rl.num_generations=2", f"hints.beta={beta}", f"rl.entropy_coef={ent_coef}",
              "rl.tis_cap=0"]
    _, official = _sgd_update(model, seqs, *common, "rl.normalizer=official")
    _, unift = _sgd_update(model, seqs, *common)
    assert official["loss"] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert abs(unift["loss"] - expected) > 1e-3  # the default arithmetic is a different number
    assert official["pruned_sequences"] == 0


def test_official_normalizer_needs_token_mean():
    from unift.errors import UserError

    with pytest.raises(UserError, match="rl.normalizer=official .* needs rl.loss_aggregation=token-mean"):
        load_config(None, ["data.train=x.jsonl", "method=rft", "rl.normalizer=official",
                           "rl.loss_aggregation=dr-grpo"])


@pytest.mark.slow
def test_embedded_model_learns_to_stop_after_the_answer(tmp_path):
    """A short UFT run (full hints end with EOS, rollouts run to EOS, official rewards) raises
    p(EOS | prompt + reference response) of the embedded model on held-out problems."""
    from unift.data.export import write_jsonl
    from unift.data.render import render_prompt, render_sft
    from unift.models import load_model
    from unift.tasks.countdown import CountdownTask

    train = CountdownTask().generate(16, seed=3, min_numbers=3, max_numbers=3)
    held = CountdownTask().generate(40, seed=4, min_numbers=3, max_numbers=3)[-6:]
    write_jsonl(train, tmp_path / "train.jsonl")
    cfg = load_config(None, [f"output_dir={tmp_path / 'uft'}", f"data.train={tmp_path / 'train.jsonl'}",
                             "model=smollm2-135m", "method=uft", "train.steps=4", "train.lr=1e-4",
                             "train.schedule=constant", "train.warmup_ratio=0", "rl.prompts_per_step=4",
                             "rl.num_generations=2", "rl.max_new_tokens=32", "hints.t_hint=4", "hints.beta=1.0",
                             "hints.answer_piece=true", "train.micro_batch_size=8", "log.progress=false",
                             "log.tensorboard=false"])
    final = train_rl(cfg)

    def mean_eos_logp(name):
        model, tok = load_model(name)
        rows = [render_sft(ex, tok, "plain").input_ids for ex in held]
        assert all(r[-1] == tok.eos_token_id for r in rows)
        return sum(_logp_of(model, r) for r in rows) / len(rows), model.generation_config.eos_token_id, tok

    before, _, tok = mean_eos_logp("smollm2-135m")
    after, saved_eos, _ = mean_eos_logp(str(final))
    assert after > before + 0.5, (before, after)
    assert tok.eos_token_id in (saved_eos if isinstance(saved_eos, list) else [saved_eos])
    assert render_prompt(held[0], tok, "plain").input_ids  # the prompts render as in training


def test_gradient_checkpointing_leaves_rollouts_and_losses_alone(tmp_path, countdown_jsonl):
    """The sampler runs the policy in eval mode (KV cache on) while training recomputes layers."""
    _, ma = run(tmp_path, countdown_jsonl, "plain", "method=uft", "hints.beta=0.1")
    _, mb = run(tmp_path, countdown_jsonl, "ckpt", "method=uft", "hints.beta=0.1", "train.gradient_checkpointing=true")
    assert [m["reward"] for m in ma] == [m["reward"] for m in mb]
    assert [m["completion_length_mean"] for m in ma] == [m["completion_length_mean"] for m in mb]
    assert [m["loss"] for m in ma] == pytest.approx([m["loss"] for m in mb], rel=1e-4, abs=1e-6)
