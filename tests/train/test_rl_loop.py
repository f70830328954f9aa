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
    from unift.train.rl_loop import update

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
