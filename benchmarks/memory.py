"""The `memory` workload of benchmarks/bench.py: peak memory and time at 1,024-token responses.

One RL update and one SFT step on 8 sequences of a 64-token prompt and a 1,024-token response,
micro-batch size 2 (4 micro-batches, gradients accumulated), AdamW, bf16 autocast (fp32 on a CPU
without native bf16, for every system alike), on two models:

    smol   the embedded SmolLM2-135M (49,152-token vocabulary)
    qwenv  random weights with Qwen2.5's 151,936-token vocabulary and a small body (hidden 256,
           4 layers, tied embeddings; about 42M parameters, 39M of them the embedding), fed
           token ids of the embedded tokenizer: the logits are 151,936 wide all the same

Systems: unift (log-probs through the LM head in chunks of train.logprob_chunk_mb MB of logits,
each recomputed in the backward; `unift_mbX` sets X MB), unift with one chunk of every position
(`unift_onechunk`, what the chunking saves), unift with train.gradient_checkpointing (`unift_gc`,
each decoder layer recomputed in the backward, as TRL 1.16 does by default), `floor` (the same model and AdamW, the decoder's
forward and backward and the optimizer step, no LM head at all: the memory no loss computation
can go below), and TRL (GRPOTrainer._compute_loss on the same tensors, no generation;
SFTTrainer.train). A run that dies of memory is a result: the parent records its error.
Peak RSS is the whole process's (VmHWM), loading included, the same way for every system.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

SEQS, MICRO, PROMPT_TOKENS, RESPONSE_TOKENS = 8, 2, 64, 1024
QWEN_VOCAB = 151_936


def precision() -> str:
    """bf16 autocast where the CPU has native bf16, else fp32 (emulated bf16 runs ~30x slower), for every system."""
    from unift.device import cpu_has_fast_bf16

    return "bf16" if cpu_has_fast_bf16() else "fp32"


def model_path(model: str, tmp: Path) -> str:
    """`smollm2-135m`, or a directory with the random Qwen-vocabulary model (built here, seed 0)."""
    if model == "smol":
        return "smollm2-135m"
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from unift.models import load_model, save_model
    from unift.models.embedded import embedded_model_dir

    _, tokenizer = load_model("tiny")  # the embedded tokenizer, without the embedded weights
    config = AutoConfig.from_pretrained(embedded_model_dir())
    config.update({"vocab_size": QWEN_VOCAB, "hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4,
                   "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64, "tie_word_embeddings": True})
    torch.manual_seed(0)
    return str(save_model(AutoModelForCausalLM.from_config(config), tokenizer, tmp / "qwenv"))


def token_rows(n: int) -> list[tuple[list[int], list[int]]]:
    """n (prompt ids, response ids) pairs of PROMPT_TOKENS + RESPONSE_TOKENS ids, fixed seed."""
    import torch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 40_000, (n, PROMPT_TOKENS + RESPONSE_TOKENS), generator=g).tolist()
    return [(row[:PROMPT_TOKENS], row[PROMPT_TOKENS:]) for row in ids]


def _timed_steps(step, steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return times


def peer_model(model: str, tmp: Path):
    """(model, tokenizer) as a peer loads them: the embedded model, or the random model's directory
    with the embedded tokenizer."""
    from transformers import AutoModelForCausalLM

    from unift.models import load_model

    path = model_path(model, tmp)
    return load_model(path) if model == "smol" else (AutoModelForCausalLM.from_pretrained(path), load_model("tiny")[1])


# ----------------------------------------------------------------------------- RL update

def rl_unift(model: str, steps: int, tmp: Path, chunk: float | None, extra: list[str]) -> dict:
    import torch

    from unift.config import load_config
    from unift.data.render import GENERATED, PROMPT, Rendered
    from unift.logprobs import model_chunk
    from unift.rl.rollout import Sequence
    from unift.train.rl_update import update
    from unift.train.setup import build_optimizer, load_policy

    overrides = [f"model={model_path(model, tmp)}", "method=rft", f"output_dir={tmp / 'run'}", "data.train=unused",
                 f"train.micro_batch_size={MICRO}", "rl.prompts_per_step=1", f"rl.num_generations={SEQS}",
                 "rl.kl_coef=0", "rl.entropy_coef=0", "train.lr=1e-6", f"train.precision={precision()}"]
    cfg = load_config(None, overrides + extra + ([f"train.logprob_chunk_mb={chunk}"] if chunk else []))
    _, device, policy, tokenizer, amp = load_policy(cfg)
    optimizer = build_optimizer(policy, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    seqs = [Sequence(Rendered(p + r, [PROMPT] * len(p) + [GENERATED] * len(r)), [-1.0] * len(r),
                     advantage=1.0 if i % 2 else -1.0, truncated=False) for i, (p, r) in enumerate(token_rows(SEQS))]
    times = _timed_steps(lambda: update(policy, None, optimizer, scheduler, seqs, cfg, tokenizer.pad_token_id,
                                        device, amp), steps)
    return {"step_s": times, "logprob_chunk_mb": cfg.train.logprob_chunk_mb,
            "logprob_chunk_positions": model_chunk(policy, cfg.train.logprob_chunk_mb)}


def floor(model: str, steps: int, tmp: Path) -> dict:
    """The model, its gradients and AdamW's state, with the decoder's forward and backward on the
    same micro-batches and no LM head: what every system here needs before any logits."""
    import torch

    policy, _ = peer_model(model, tmp)
    policy.train()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-6, fused=False)
    ids = torch.tensor([p + r for p, r in token_rows(SEQS)])
    decoder = policy.get_decoder()

    def step():
        for start in range(0, SEQS, MICRO):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision() == "bf16"):
                hidden = decoder(input_ids=ids[start:start + MICRO]).last_hidden_state
            hidden.float().square().mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return {"step_s": _timed_steps(step, steps)}


def rl_trl(model: str, steps: int, tmp: Path) -> dict:
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from unift import rewards

    policy, tokenizer = peer_model(model, tmp)
    args = GRPOConfig(output_dir=str(tmp / "trl"), use_cpu=True, bf16=precision() == "bf16", per_device_train_batch_size=SEQS,
                      num_generations=SEQS, max_completion_length=RESPONSE_TOKENS, beta=0.0, max_steps=steps,
                      learning_rate=1e-6, report_to=[], save_strategy="no", gradient_accumulation_steps=1, seed=0)
    trainer = GRPOTrainer(model=policy, processing_class=tokenizer, reward_funcs=rewards.countdown, args=args,
                          train_dataset=Dataset.from_list([{"prompt": "x", "ground_truth": "{}"}] * SEQS))
    trainer.current_gradient_accumulation_steps = SEQS // MICRO
    model_ = trainer.model.train()
    optimizer = torch.optim.AdamW(model_.parameters(), lr=1e-6)
    rows = token_rows(SEQS)

    def step():
        for start in range(0, SEQS, MICRO):
            part = rows[start:start + MICRO]
            inputs = {"prompt_ids": torch.tensor([p for p, _ in part]),
                      "completion_ids": torch.tensor([r for _, r in part]),
                      "advantages": torch.tensor([1.0 if (start + i) % 2 else -1.0 for i in range(len(part))]),
                      "num_items_in_batch": torch.tensor(float(SEQS * RESPONSE_TOKENS))}
            inputs["prompt_mask"] = torch.ones_like(inputs["prompt_ids"])
            inputs["completion_mask"] = torch.ones_like(inputs["completion_ids"])
            with trainer.compute_loss_context_manager():
                loss = trainer._compute_loss(model_, inputs)
            trainer.accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return {"step_s": _timed_steps(step, steps), "loss_type": args.loss_type,
            "gradient_checkpointing": args.gradient_checkpointing}


# ----------------------------------------------------------------------------- SFT step

def _sft_rows(tokenizer) -> list[dict]:
    """Text rows whose prompt and response encode to about PROMPT_TOKENS and RESPONSE_TOKENS tokens."""
    return [{"prompt": tokenizer.decode(p), "completion": tokenizer.decode(r)} for p, r in token_rows(SEQS * 3)]


def sft_unift(model: str, steps: int, tmp: Path, chunk: float | None, extra: list[str]) -> dict:
    from unift.config import load_config
    from unift.models import load_model
    from unift.train.loop import train

    _, tokenizer = load_model("tiny")
    data = tmp / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _sft_rows(tokenizer)))
    cfg = load_config(None, [f"model={model_path(model, tmp)}", "method=sft", f"output_dir={tmp / 'run'}",
                             f"data.train={data}", f"train.steps={steps}", f"train.batch_size={SEQS}",
                             f"train.micro_batch_size={MICRO}", "train.lr=1e-5", "data.template=plain", f"train.precision={precision()}",
                             f"data.max_response_tokens={RESPONSE_TOKENS}", "log.progress=false",
                             "log.tensorboard=false", "checkpoint.every=0", *extra]
                      + ([f"train.logprob_chunk_mb={chunk}"] if chunk else []))
    train(cfg)
    rows = [json.loads(x) for x in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "step_time_s" in r]
    return {"step_s": [r["step_time_s"] for r in rows],
            "tokens_per_step": round(rows[-1]["tokens_per_s"] * rows[-1]["step_time_s"])}


def sft_trl(model: str, steps: int, tmp: Path) -> dict:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer


    policy, tokenizer = peer_model(model, tmp)
    from bench import _StepTimer  # the per-step timer the other TRL workloads use

    timer = _StepTimer()
    args = SFTConfig(output_dir=str(tmp / "trl"), use_cpu=True, bf16=precision() == "bf16", per_device_train_batch_size=MICRO,
                     gradient_accumulation_steps=SEQS // MICRO, max_length=PROMPT_TOKENS + RESPONSE_TOKENS + 8,
                     max_steps=steps, learning_rate=1e-5, logging_steps=1, report_to=[], save_strategy="no", seed=0,
                     packing=False)
    trainer = SFTTrainer(model=policy, processing_class=tokenizer, args=args,
                         train_dataset=Dataset.from_list(_sft_rows(tokenizer)), callbacks=[timer])
    trainer.train()
    return {"step_s": timer.times, "gradient_checkpointing": args.gradient_checkpointing}


def run(system: str, steps: int, tmp: Path) -> dict:
    """system = PEER-KIND-MODEL, e.g. unift-rl-qwenv, unift_onechunk-sft-smol, unift_mb16-rl-qwenv, floor-rl-qwenv, trl-rl-smol."""
    peer, kind, model = system.split("-")
    chunk = 10 ** 9 if peer == "unift_onechunk" else float(peer[len("unift_mb"):]) if peer.startswith("unift_mb") \
        else None  # unift_mbX: train.logprob_chunk_mb=X
    if peer == "floor":
        out = floor(model, steps, tmp)
    elif peer == "trl":
        out = rl_trl(model, steps, tmp) if kind == "rl" else sft_trl(model, steps, tmp)
    else:
        extra = ["train.gradient_checkpointing=true"] if peer == "unift_gc" else []
        out = (rl_unift if kind == "rl" else sft_unift)(model, steps, tmp, chunk, extra)
    times = out.pop("step_s")
    return {"step_s": statistics.median(times[1:] or times), "step_times_s": times,  # the first is a warm-up
            "sequences": SEQS, "micro_batch": MICRO, "precision": precision(), "prompt_tokens": PROMPT_TOKENS, "response_tokens": RESPONSE_TOKENS,
            **out}


def report_lines(results: dict[str, dict]) -> list[str]:
    """The memory table of the bench report (rows only for what this run measured). "Above the
    floor" is each system's peak less the floor's (model, gradients, AdamW state, decoder)."""
    names = {"smol": "embedded SmolLM2-135M", "qwenv": "random, 151,936-token vocabulary"}
    gb = lambda r: r["peak_rss_mb"] / 1024  # noqa: E731
    lines = []
    for model in names:
        base = results.get(f"mem:floor-rl-{model}", {})
        for kind in ("rl", "sft"):
            cells = {}
            for peer in ("unift", "unift_onechunk", "unift_gc", "trl"):
                r = results.get(f"mem:{peer}-{kind}-{model}")
                if r is None:
                    continue
                cells[peer] = ("failed: " + r["error"][:80] if "error" in r else f"{gb(r):.2f} GB, {r['step_s']:.1f} s")
            if not cells:
                continue
            ours, trl = results.get(f"mem:unift-{kind}-{model}", {}), results.get(f"mem:trl-{kind}-{model}", {})
            ratio = "-"
            if "peak_rss_mb" in ours and "peak_rss_mb" in trl and "step_s" in trl:
                ratio = f"{gb(trl) / gb(ours):.1f}x less memory, {trl['step_s'] / ours['step_s']:.2f}x the speed"
                if "peak_rss_mb" in base and gb(ours) > gb(base):
                    ratio += f"; above the floor {(gb(trl) - gb(base)) / (gb(ours) - gb(base)):.1f}x less"
            label = "RL update" if kind == "rl" else "SFT step"
            floor_cell = f"{gb(base):.2f} GB" if "peak_rss_mb" in base else "-"
            lines.append(f"| {label}, {names[model]} | {cells.get('unift', '-')} | {cells.get('unift_onechunk', '-')} "
                         f"| {cells.get('unift_gc', '-')} "
                         f"| {cells.get('trl', '-')} | {floor_cell} | {ratio} |")
    if not lines:
        return []
    return ["", f"Memory: {SEQS} sequences of {PROMPT_TOKENS} + {RESPONSE_TOKENS} tokens, micro-batch {MICRO}, "
                f"{precision()}; peak RSS of the whole process and median seconds per step; the floor is the "
                "model, its gradients, AdamW's state and the decoder's forward and backward, with no LM head",
            "", "| workload | unift | unift, one chunk | unift, layers recomputed | TRL (layers recomputed) | floor "
                "| unift vs TRL |", "|---|---|---|---|---|---|---|",
            *lines]
