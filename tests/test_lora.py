"""LoRA (unift.lora) on the tiny model: only the adapters train (SFT, DFT, UFT), the KL reference is
the base model, the bf16 rollout copy follows the merged weights, final/ and `unift merge-lora`
give plain Hugging Face models with the policy's logits, LoRA checkpoints resume, bad settings
are one-line errors."""

import copy
import shutil

import pytest
import torch
from safetensors.torch import load_file

from unift import lora
from unift.config import LoRAConfig, load_config
from unift.errors import UserError

IDS = torch.tensor([[5, 6, 7, 8, 9, 10]])
BASE = ["model=tiny", "train.precision=fp32", "train.lr=1e-2", "train.warmup_ratio=0", "train.batch_size=4",
        "train.micro_batch_size=4", "data.limit=8", "log.progress=false", "log.tensorboard=false",
        "lora.enabled=true", "lora.r=4", "lora.alpha=8"]
RL = ["rl.prompts_per_step=2", "rl.num_generations=2", "rl.max_new_tokens=4", "hints.beta=0.5",
      "rl.kl_coef=0.1", "train.precision=bf16"]   # bf16: a merged rollout copy; kl: the reference path


def wrapped(tiny, r=4, seed=1):
    """A LoRA copy of the shared tiny model with random (nonzero) B, so the adapter changes the logits."""
    model = lora.apply_lora(copy.deepcopy(tiny[0]), LoRAConfig(r=r, alpha=2.0 * r))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
    return model.eval()


def logits(model, ids=IDS):
    with torch.no_grad():
        return model(input_ids=ids).logits[0].float()


def spy(monkeypatch, module):
    """Record the policy and the optimizer a training loop builds."""
    seen = {}

    def load_policy(cfg):
        out = real_load(cfg)
        seen["model"] = out[2]
        return out

    def build_optimizer(model, cfg):
        seen["optimizer"] = real_build(model, cfg)
        return seen["optimizer"]

    real_load, real_build = module.load_policy, module.build_optimizer
    monkeypatch.setattr(module, "load_policy", load_policy)
    monkeypatch.setattr(module, "build_optimizer", build_optimizer)
    return seen


@pytest.mark.parametrize("method", ["sft", "dft", "uft"])
def test_only_the_adapters_train(tmp_path, countdown_jsonl, monkeypatch, tiny, method):
    from transformers import AutoModelForCausalLM

    from unift.train import loop, rl_loop

    online = method == "uft"
    seen = spy(monkeypatch, rl_loop if online else loop)
    cfg = load_config(None, [f"output_dir={tmp_path / method}", f"data.train={countdown_jsonl}", *BASE,
                             f"method={method}", "train.steps=1", *(RL if online else [])])
    final = (rl_loop.train_rl if online else loop.train)(cfg)
    model = seen["model"]
    assert lora.is_lora(model)
    trained = {id(p) for p in model.parameters() if p.requires_grad}
    in_optimizer = {id(p) for group in seen["optimizer"].param_groups for p in group["params"]}
    assert trained == in_optimizer and trained
    base = dict(tiny[0].named_parameters())
    changed = 0
    for name, param in model.named_parameters():
        if ".lora_" in name:
            assert param.requires_grad
            changed += "lora_B" in name and bool(param.abs().sum() > 0)   # B starts at zero
        else:
            assert not param.requires_grad
            plain = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
            assert torch.equal(param, base[plain]), name                     # W0 bit-identical
    assert changed > 0
    # final/: a plain merged Hugging Face model with the policy's logits, and the adapter beside it
    assert (final / "adapter" / "adapter_model.safetensors").is_file()
    merged = AutoModelForCausalLM.from_pretrained(final)
    assert not lora.is_lora(merged)
    assert torch.allclose(logits(merged), logits(model.eval()), atol=1e-5)


def test_reference_is_the_base_model_with_the_adapter_disabled(tiny):
    from unift.logprobs import sequence_logprobs
    from unift.train.setup import load_reference

    model = wrapped(tiny)
    cfg = load_config(None, ["data.train=x.jsonl", "method=uft", "lora.enabled=true", "rl.kl_coef=0.1"])
    reference = load_reference(cfg, model, "cpu")
    assert reference is model                                # no second copy
    mask = torch.ones((1, IDS.shape[1] - 1), dtype=torch.bool)
    attention = torch.ones_like(IDS)
    with torch.no_grad():
        with lora.disabled_adapter(reference):
            ref = sequence_logprobs(reference, IDS, attention, mask)
        policy = sequence_logprobs(model, IDS, attention, mask)
        base = sequence_logprobs(tiny[0], IDS, attention, mask)
    assert torch.allclose(ref, base, atol=1e-6)
    assert (policy - base).abs().max() > 1e-3                # the adapter is back on afterwards


def test_engine_sync_follows_merged_weights_after_a_step(tiny):
    from unift.engine import HFEngine, SamplingParams

    model, tok = lora.apply_lora(copy.deepcopy(tiny[0]), LoRAConfig(r=4, alpha=8.0)), tiny[1]
    engine = HFEngine(model, tok, dtype=torch.bfloat16)
    assert not lora.is_lora(engine.model) and next(engine.model.parameters()).dtype == torch.bfloat16
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05)
    for _ in range(3):                                       # a few LoRA steps on an NLL loss
        loss = torch.nn.functional.cross_entropy(model(input_ids=IDS).logits[0, :-1], IDS[0, 1:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    moved = (logits(model) - logits(tiny[0])).abs().max()
    assert (logits(engine.model) - logits(tiny[0])).abs().max() < 0.05 < moved   # stale: still the base
    engine.sync_weights()
    merged = dict(lora.plain_copy(model).named_parameters())
    for name, param in engine.model.named_parameters():      # exactly the merged weights, rounded to bf16
        assert torch.equal(param, merged[name].to(torch.bfloat16)), name
    assert (logits(engine.model) - logits(model)).abs().max() < 0.05
    greedy = engine.generate([IDS[0].tolist()], SamplingParams(max_new_tokens=3, temperature=0.0, stop=()))[0]
    seq = torch.tensor([IDS[0].tolist() + greedy.token_ids])
    policy_logp = logits(model, seq)[IDS.shape[1] - 1:-1].log_softmax(-1)
    expected = policy_logp.gather(-1, torch.tensor(greedy.token_ids)[:, None]).squeeze(-1)
    assert torch.allclose(torch.tensor(greedy.logprobs), expected, atol=0.05)
    assert all(not p.requires_grad or ".lora_" in n for n, p in model.named_parameters())


def test_merge_lora_cli_gives_the_peft_logits(tmp_path, tiny, capsys):
    from transformers import AutoModelForCausalLM

    from unift.cli import main
    from unift.models import save_model

    model = wrapped(tiny)
    save_model(model, tiny[1], tmp_path / "run_final")       # merged model + adapter/
    assert main(["merge-lora", str(tmp_path / "run_final" / "adapter"), "--base", "tiny",
                 "--out", str(tmp_path / "merged")]) == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert not (tmp_path / "merged" / "adapter").exists()
    assert torch.allclose(logits(merged), logits(model), atol=1e-5)
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "run_final")
    assert torch.allclose(logits(saved), logits(model), atol=1e-5)
    capsys.readouterr()
    (tmp_path / "empty").mkdir()
    bad = [([str(tmp_path / "missing"), "--base", "tiny", "--out", str(tmp_path / "o1")], "does not exist"),
           ([str(tmp_path / "empty"), "--base", "tiny", "--out", str(tmp_path / "o2")], "holds no LoRA adapter"),
           ([str(tmp_path / "run_final"), "--base", "tiny", "--out", str(tmp_path / "merged")], "not an empty"),
           ([str(tmp_path / "run_final"), "--base", str(tmp_path / "nobase"), "--out", str(tmp_path / "o3")],
            "does not exist")]
    for args, message in bad:
        assert main(["merge-lora", *args]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and err.startswith("unift: error:"), err


def test_resume_from_a_lora_checkpoint(tmp_path, countdown_jsonl):
    from unift.train.loop import train

    def run(name, *extra):
        return train(load_config(None, [f"output_dir={tmp_path / name}", f"data.train={countdown_jsonl}", *BASE,
                                        "train.steps=4", "checkpoint.every=2", "checkpoint.keep_last=5", *extra]))

    full = run("full")
    ckpt = tmp_path / "full" / "checkpoints" / "step-000002" / "model"
    assert (ckpt / "adapter" / "adapter_model.safetensors").is_file() and (ckpt / "config.json").is_file()
    shutil.copytree(tmp_path / "full", tmp_path / "part")     # pretend the run died after step 2
    shutil.rmtree(tmp_path / "part" / "checkpoints" / "step-000004")
    shutil.rmtree(tmp_path / "part" / "final")
    resumed = run("part", "resume=true")
    a = load_file(str(full / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(resumed / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    with pytest.raises(UserError, match="trained with LoRA; set lora.enabled=true") as exc:
        run("part", "resume=true", "lora.enabled=false")
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("override, message", [
    ("lora.r=0", "lora.r must be at least 1, got 0"),
    ("lora.alpha=0", "lora.alpha must be positive"),
    ("lora.alpha=-2", "lora.alpha must be positive"),
    ("lora.dropout=1", "lora.dropout must be in [0, 1)"),
    ("lora.dropout=-0.1", "lora.dropout must be in [0, 1)"),
    ("lora.target_modules= , ", "lora.target_modules is empty"),
    ("lora.r=two", "lora.r: expected an integer"),
    ("lora.rank=4", "unknown config key 'lora.rank'"),
])
def test_bad_lora_settings_are_one_line_errors(override, message):
    with pytest.raises(UserError) as exc:
        load_config(None, ["data.train=x.jsonl", "lora.enabled=true", override])
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_unknown_target_module_is_a_one_line_error(tiny, capsys):
    with pytest.raises(UserError, match="lora.target_modules: qproj is not a linear layer") as exc:
        lora.apply_lora(copy.deepcopy(tiny[0]), LoRAConfig(target_modules="qproj,v_proj"))
    assert "\n" not in str(exc.value)


def test_lora_config_file_loads():
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "countdown_uft_lora.yaml")
    assert cfg.lora.enabled and (cfg.lora.r, cfg.lora.alpha) == (16, 32.0) and cfg.method == "uft"
    assert lora.target_list(cfg.lora.target_modules) == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                         "up_proj", "down_proj"]
