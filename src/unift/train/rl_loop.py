"""Online RL: RFT (GRPO), UFT (hints + log-likelihood on hints) and R3 — one visible loop.

    for each step t:
        prompts   <- next rl.prompts_per_step examples of the seeded epoch order
        hints     <- per prompt a prefix of its reference solution: chunks ~ Binomial(num, p(t))
                     (UFT, cosine p(t)), Uniform(0..num) (R3), per-prompt adaptive, or none (RFT);
                     one hint shared by the prompt's whole group
        rollout   <- rl.num_generations completions per prompt continuing prompt + hint (no grad);
                     the sampler returns the log-prob of every sampled token
        scoring   <- task reward of hint + completion; group-normalised advantages
        update    <- per mini-batch (whole groups): micro-batches -> uft_loss -> backward -> AdamW step

Deviations from the textbook, stated as nanochat does: the rollout's own log-probs serve as
pi_old (no separate pass: with one update per rollout the ratio is 1 up to bf16 rounding);
hints are drawn from a generator seeded by (seed, step), so a resumed run draws the same hints.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from unift.config import Config
from unift.data.batching import collate
from unift.data.loading import load_examples
from unift.data.render import GENERATED, HINT, Rendered, render_prompt
from unift.device import autocast
from unift.engine import HFEngine, SamplingParams, completion_text
from unift.errors import UserError
from unift.logprobs import sequence_logprobs, sequence_logprobs_and_entropy
from unift.rl.advantages import group_advantages, zero_std_fraction
from unift.rl.hints import (AdaptiveHints, cosine_hint_fraction, hint_for, num_chunks, official_stage_chunks,
                            sample_chunks_binomial, sample_chunks_uniform)
from unift.rl.objective import uft_loss
from unift.tasks import get_task
from unift.tasks.base import CORRECT_SCORE
from unift.train.run import Run
from unift.train.schedule import lr_multiplier
from unift.train.setup import build_optimizer, create_dir, load_policy


@dataclass
class Sequence:
    """One completion in training form: prompt (+ hint) + generated tokens."""

    rendered: Rendered          # input_ids and roles (PROMPT / HINT / GENERATED)
    old_logp: list[float]       # sampler log-probs of the GENERATED tokens, in order
    advantage: float
    truncated: bool


def load_rl_data(cfg: Config):
    examples = load_examples(cfg.data.train, limit=cfg.data.limit, task=cfg.data.task)
    for i, ex in enumerate(examples):
        if not ex.task:
            raise UserError(f"{cfg.data.train} row {i}: no task to score it (no data_source column); "
                            f"set data.task")
        if ex.ground_truth is None:
            raise UserError(f"{cfg.data.train} row {i}: no ground truth for the reward (column ground_truth "
                            f"or reward_model.ground_truth)")
        if cfg.method in ("uft", "r3") and not ex.pieces:
            raise UserError(f"{cfg.data.train} row {i}: {cfg.method} needs reference solution pieces "
                            f"(column 'hint') to cut hints from")
    return examples


def choose_chunks(cfg: Config, step: int, num: int, prompt_id: int, rng: random.Random,
                  adaptive: AdaptiveHints | None) -> int:
    """How many of the `num` solution chunks the hint of this prompt reveals at `step`."""
    h = cfg.hints
    if cfg.method == "rft" or num == 0:
        return 0
    if cfg.method == "r3" or h.schedule == "uniform":
        return sample_chunks_uniform(rng, num)
    if h.schedule == "staged":
        return official_stage_chunks(step, num, h.t_hint)
    if h.schedule == "adaptive":
        return adaptive.choose(prompt_id, num, limit=num if step < h.t_hint else 0)
    return sample_chunks_binomial(rng, num, cosine_hint_fraction(step, h.p_high, h.p_low, h.t_hint))


def train_rl(cfg: Config) -> Path:
    from unift.models import load_model

    examples = load_rl_data(cfg)
    tasks = {ex.task: get_task(ex.task) for ex in examples}
    output_dir, device, model, tokenizer, amp = load_policy(cfg)
    prompts = [render_prompt(ex, tokenizer, cfg.data.template, max_prompt_tokens=cfg.data.max_prompt_tokens,
                             where=f"{cfg.data.train} row {i}") for i, ex in enumerate(examples)]
    reference = None
    if cfg.rl.kl_coef > 0:  # the frozen initial model, only when a KL term is trained
        reference, _ = load_model(cfg.model, seed=cfg.seed)
        reference.to(device).eval().requires_grad_(False)
    create_dir(output_dir)

    r = cfg.rl
    total = cfg.train.steps or max(1, math.ceil(cfg.train.epochs * len(examples) / r.prompts_per_step))
    updates_per_step = r.updates_per_step * r.epochs
    warmup = int(cfg.train.warmup_ratio * total * updates_per_step)
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_multiplier(
        s, total * updates_per_step, warmup, cfg.train.schedule, cfg.train.min_lr_ratio))
    adaptive = AdaptiveHints(target=cfg.hints.adaptive_target, alpha=cfg.hints.adaptive_alpha) \
        if cfg.hints.schedule == "adaptive" else None

    run = Run(cfg, output_dir, model, tokenizer, optimizer, scheduler, total, amp)
    step, cursor, state = run.start()
    if adaptive is not None and state.get("adaptive_hints"):
        adaptive.load_state_dict(state["adaptive_hints"])

    def extra_state() -> dict:
        return {"adaptive_hints": adaptive.state_dict() if adaptive else None}

    engine = HFEngine(model, tokenizer, batch_size=r.generation_batch_size, autocast_dtype=amp)
    params = SamplingParams(max_new_tokens=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p,
                            n=r.num_generations, stop=(r.stop,) if r.stop else ())

    try:
        while step < total:
            t0 = time.perf_counter()
            # ---- 1. prompts and hints
            ids, next_cursor = cursor.take(r.prompts_per_step, len(examples), cfg.seed, cfg.data.shuffle)
            rng = random.Random(cfg.seed * 1_000_003 + step)
            chunks = [choose_chunks(cfg, step, num_chunks(examples[i].pieces, cfg.hints.max_chunks), i, rng, adaptive)
                      for i in ids]
            hints = [hint_for(examples[i].pieces, k, cfg.hints.max_chunks) if k else "" for i, k in zip(ids, chunks)]
            batch_prompts = [render_prompt(examples[i], tokenizer, cfg.data.template, hint=h)
                             if h else prompts[i] for i, h in zip(ids, hints)]
            # ---- 2. rollout (no grad)
            params.seed = cfg.seed * 7919 + step
            completions = engine.generate([p.input_ids for p in batch_prompts], params)
            t1 = time.perf_counter()
            # ---- 3. scoring and advantages
            rewards = torch.tensor([tasks[examples[ids[c.prompt_index]].task].score(
                hints[c.prompt_index] + completion_text(tokenizer, c), examples[ids[c.prompt_index]].ground_truth).score
                for c in completions])                                                  # [P * n]
            advantages = group_advantages(rewards, r.num_generations, r.scale_rewards)  # [P * n]
            correct = (rewards >= CORRECT_SCORE).float()
            if adaptive is not None:
                for g, i in enumerate(ids):
                    adaptive.update(i, chunks[g], float(correct[g * r.num_generations:(g + 1) * r.num_generations].mean()))
            sequences = [Sequence(Rendered(batch_prompts[c.prompt_index].input_ids + c.token_ids,
                                           batch_prompts[c.prompt_index].roles + [GENERATED] * len(c.token_ids)),
                                  c.logprobs, float(a), c.finish_reason == "length")
                         for c, a in zip(completions, advantages)]
            t2 = time.perf_counter()
            # ---- 4. update: whole groups per mini-batch
            stats = update(model, reference, optimizer, scheduler, sequences, cfg, tokenizer.pad_token_id, device, amp)
            step, cursor = step + 1, next_cursor
            t3 = time.perf_counter()

            lengths = torch.tensor([len(c.token_ids) for c in completions], dtype=torch.float32)
            hint_tokens = [p.roles.count(HINT) for p in batch_prompts]
            metrics = {
                "reward": float(rewards.mean()), "reward_std": float(rewards.std()),
                "accuracy": float(correct.mean()),
                "frac_reward_zero_std": zero_std_fraction(rewards, r.num_generations),
                "hint_fraction": cosine_hint_fraction(step - 1, cfg.hints.p_high, cfg.hints.p_low, cfg.hints.t_hint)
                if cfg.method == "uft" and cfg.hints.schedule == "cosine" else None,
                "hint_chunks_mean": sum(chunks) / len(chunks),
                "hint_tokens_mean": sum(hint_tokens) / len(hint_tokens),
                "completion_length_mean": float(lengths.mean()), "completion_length_min": float(lengths.min()),
                "completion_length_max": float(lengths.max()),
                "completion_clipped_ratio": sum(s.truncated for s in sequences) / len(sequences),
                **stats,
                "lr": scheduler.get_last_lr()[0],
                "time_rollout_s": t1 - t0, "time_scoring_s": t2 - t1, "time_update_s": t3 - t2,
                "generated_tokens_per_s": float(lengths.sum()) / max(t1 - t0, 1e-9),
                "step_time_s": t3 - t0,
            }
            if adaptive is not None:
                metrics.update({f"adaptive_{k}": v for k, v in adaptive.summary().items()})
            run.end_step(step, cursor, metrics, {"reward": metrics["reward"], "acc": metrics["accuracy"],
                                                 "hint": round(metrics["hint_chunks_mean"], 2)}, extra_state())
    except KeyboardInterrupt:
        raise run.interrupted(step, cursor, extra_state()) from None
    return run.finish(step, cursor, extra_state())


def update(model, reference, optimizer, scheduler, sequences: list[Sequence], cfg: Config, pad_id, device,
           amp) -> dict[str, float]:
    """Optimizer updates on one rollout batch: rl.epochs x rl.updates_per_step mini-batches."""
    r, h = cfg.rl, cfg.hints
    group = r.num_generations
    n_groups = len(sequences) // group
    per_update = n_groups // r.updates_per_step
    beta = h.beta if cfg.method == "uft" else 0.0  # R3 and RFT have no hint log-likelihood term
    totals: dict[str, float] = {}
    micro = cfg.train.micro_batch_size
    for _ in range(r.epochs):
        for u in range(r.updates_per_step):
            mini = sequences[u * per_update * group:(u + 1) * per_update * group]
            gen_tokens = sum(s.rendered.roles[1:].count(GENERATED) * (not (r.mask_truncated and s.truncated))
                             for s in mini)
            hint_tokens = sum(s.rendered.roles[1:].count(HINT) for s in mini)
            policy_norm = {"token-mean": max(1, gen_tokens), "seq-mean-token-mean": len(mini),
                           "dr-grpo": len(mini) * r.max_new_tokens}[r.loss_aggregation]
            order = sorted(range(len(mini)), key=lambda j: len(mini[j].rendered.input_ids))
            for start in range(0, len(order), micro):
                part = [mini[j] for j in order[start:start + micro]]
                batch = collate([s.rendered for s in part], pad_id, device)
                gen_mask = batch.roles[:, 1:] == GENERATED                                  # [b, T-1]
                hint_mask = batch.roles[:, 1:] == HINT                                      # [b, T-1]
                old_logp = torch.zeros(gen_mask.shape, dtype=torch.float32, device=device)
                old_logp = old_logp.masked_scatter(gen_mask, torch.tensor(
                    [lp for s in part for lp in s.old_logp], dtype=torch.float32, device=device))
                advantages = torch.tensor([s.advantage for s in part], dtype=torch.float32, device=device)
                policy_mask = gen_mask.clone()
                if r.mask_truncated:
                    policy_mask[torch.tensor([s.truncated for s in part], device=device)] = False
                with autocast(device, amp):
                    logp, entropy = sequence_logprobs_and_entropy(
                        model, batch.input_ids, batch.attention_mask, gen_mask | hint_mask, r.temperature,
                        entropy_grad=r.entropy_coef > 0)
                    ref_logp = None
                    if reference is not None:
                        with torch.no_grad():
                            ref_logp = sequence_logprobs(reference, batch.input_ids, batch.attention_mask,
                                                         gen_mask, r.temperature)
                loss, terms = uft_loss(logp, old_logp, advantages, policy_mask, hint_mask,
                                       policy_normalizer=policy_norm, hint_normalizer=max(1, hint_tokens),
                                       epsilon=r.epsilon, epsilon_high=r.epsilon_high or None,
                                       aggregation=r.loss_aggregation, beta=beta, hint_loss=h.loss,
                                       ref_logp=ref_logp, kl_coef=r.kl_coef, entropy=entropy,
                                       entropy_coef=r.entropy_coef)
                loss.backward()
                n_gen = float(gen_mask.sum())
                _add(totals, "loss", loss.item())
                for key in ("policy_loss", "hint_loss", "kl"):
                    if key in terms:
                        _add(totals, key, float(terms[key]))
                _add(totals, "clip_ratio_weighted", float(terms["clip_ratio"]) * float(terms["num_tokens"]))
                _add(totals, "clip_tokens", float(terms["num_tokens"]))
                _add(totals, "entropy_sum", float((entropy.detach() * gen_mask).sum()))
                _add(totals, "gen_tokens", n_gen)
            grad_norm = torch.nn.utils.clip_grad_norm_(
                model.parameters(), cfg.train.grad_clip if cfg.train.grad_clip > 0 else float("inf"))
            if torch.isfinite(grad_norm):
                optimizer.step()
            else:
                _add(totals, "skipped_nonfinite", 1.0)
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            _add(totals, "grad_norm_sum", float(grad_norm))
    n_updates = r.epochs * r.updates_per_step
    out = {"loss": totals["loss"] / n_updates, "policy_loss": totals["policy_loss"] / n_updates,
           "policy_clip_ratio": totals["clip_ratio_weighted"] / max(1.0, totals["clip_tokens"]),
           "entropy": totals["entropy_sum"] / max(1.0, totals["gen_tokens"]),
           "grad_norm": totals["grad_norm_sum"] / n_updates,
           "skipped_nonfinite": totals.get("skipped_nonfinite", 0.0)}
    if "hint_loss" in totals:
        out["hint_loss"] = totals["hint_loss"] / n_updates  # NLL (or DFT) per hint token
    if "kl" in totals:
        out["kl"] = totals["kl"] / n_updates
    return out


def _add(totals: dict[str, float], key: str, value: float) -> None:
    totals[key] = totals.get(key, 0.0) + value
