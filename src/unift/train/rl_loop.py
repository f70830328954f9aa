"""Online RL: RFT (GRPO), UFT (hints + log-likelihood on hints) and R3 — one visible loop.

    for each step t (`rl_step`):
        prompts    <- next rl.prompts_per_step examples of the seeded epoch order
        hints      <- per prompt a prefix of its reference solution (`unift.rl.hint_schedule`):
                      chunks ~ Binomial(num, p(t)) (UFT, cosine p(t)), Uniform(0..num) (R3),
                      per-prompt adaptive, or none (RFT); one hint shared by the prompt's group
        generate   <- rl.num_generations completions per prompt continuing prompt + hint (no grad),
                      each until EOS or rl.max_new_tokens; the sampler returns the log-prob of every
                      sampled token (a hint that is already a finished response is not generated)
        score      <- reward of hint + completion: the row's task under `protocol`, or the user's
                      reward.funcs called as TRL calls them (`unift.scoring`, `unift.rl.trajectory`)
        advantages <- group-normalised rewards (`unift.rl.advantages`)
        update     <- per mini-batch of whole groups: micro-batches -> uft_loss -> backward ->
                      AdamW step (`unift.train.rl_update`)

Where it is decided, trained and logged: the hint of each prompt is chosen by `HintSchedule`
(unift/rl/hint_schedule.py), trained by the beta term of `uft_loss` (unift/rl/objective.py), and
logged by `HintSchedule.metrics` (hint_fraction, hint_chunks_mean, hint_tokens_mean).

Several processes (torchrun) touch this loop only at its edges: each rank generates and trains
its prompt groups (`PromptShard.local`), the scores are gathered back into the step's global order
(`PromptShard.gather`), and the update all-reduces gradients (unift.train.distributed).

How a trained model learns to stop (so transformers, vLLM or a chat UI, with no stop string,
see the answer and then the end). Three parts, none of which trains a token the policy did not
sample, so the update stays on-policy:
- rollouts run until the model samples EOS (or the chat template's end-of-turn token, which the
  engine stops on too) or hit rl.max_new_tokens; the sampled EOS is a GENERATED token like any
  other and gets the completion's advantage. A stop string (`rl.stop`, or protocol=unift's
  `</answer>`) would cut every rollout before EOS could be sampled, so the model would never be
  trained to stop: it is an opt-in speed knob only.
- under protocol=official the reward reads the answer from the last line of the response
  (`unift.tasks.official`): a completion that goes on after its answer line earns nothing, one
  that ends there earns the reward, so the advantage favours EOS right after the answer.
- with hints.answer_piece a full hint is the whole reference response followed by EOS, as HINT
  tokens: the hint log-likelihood (beta) teaches the end like SFT does, as forced text, never as
  a sampled action. Such a finished hint is not sent to the sampler.
The token that ended the full hint (EOS for plain prompts, the end of turn for chat prompts) is
added to the model's generation_config.eos_token_id, which is saved with every checkpoint and
final model, so plain clients stop on the token that was trained.

Deviations from the textbook, stated as nanochat does: with one update per rollout batch pi_old
is the trainer's own log-prob of the same forward pass, detached (ratio 1, no extra pass); with
several, one no-grad pass computes it first. The sampler's log-probs (bf16 engine copy, or vLLM)
only enter the truncated importance weight min(pi_old / pi_sampler, rl.tis_cap). Hints are drawn
from a generator seeded by (seed, step) and rollouts from seeds per (seed, step, prompt
position), so a resumed run, or one on another number of processes, draws the same.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from unift.compiled_decode import check_compile_supported
from unift.config import Config
from unift.data.loading import load_examples, row_name
from unift.data.render import HINT, Rendered, end_of_response, render_prompt
from unift.engine import Completion, HFEngine, RolloutEngine, SamplingParams, completion_text
from unift.errors import UserError
from unift.files import create_dir
from unift.models import add_end_tokens
from unift.protocol import check_ground_truth, stop_strings
from unift.rl.advantages import group_advantages, zero_std_fraction
from unift.rl.hint_schedule import HintSchedule, StepHints
from unift.rl.rollout import rollout
from unift.rl.trajectory import Scores, score_completions, to_sequences
from unift.scoring import Scorer
from unift.tasks.base import Example
from unift.train.distributed import PromptShard, current_world
from unift.train.faults import kill_point
from unift.train.rl_update import update
from unift.train.run import Run
from unift.train.schedule import lr_multiplier
from unift.train.setup import build_optimizer, load_policy, load_reference


@dataclass
class RLRun:
    """What every step of a run uses: data, policy (and reference), optimizer, sampler, hints."""

    cfg: Config
    examples: list[Example]
    prompts: list[Rendered]      # each example's prompt without a hint
    model: Any
    reference: Any               # the frozen initial model, only for a KL term
    tokenizer: Any
    device: torch.device
    amp: Any                     # the autocast dtype, or None
    optimizer: torch.optim.Optimizer
    scheduler: Any
    params: SamplingParams
    hints: HintSchedule
    shard: PromptShard           # this rank's prompt groups
    scorer: Scorer               # the row's task under the protocol, or reward.funcs
    engine: RolloutEngine | None = None  # built once the run has started (after a resume's weights)

    def state(self) -> dict:
        """Trainer state beyond weights, optimizer and data position, saved with every checkpoint."""
        return {"adaptive_hints": self.hints.state_dict()}


def train_rl(cfg: Config, reward_funcs: list[Any] | None = None) -> Path:
    """Run RFT, UFT or R3 as configured; returns the directory of the final Hugging Face model.
    reward_funcs: Python callables (or references) scored after reward.funcs (`unift.api.train`)."""
    if cfg.rl.rollout_backend == "vllm":  # before any data or model is loaded
        from unift.vllm_engine import INSTALL_HINT, vllm_available

        if not vllm_available():
            raise UserError(INSTALL_HINT)
    ctx, output_dir, total = set_up(cfg, reward_funcs)
    run = Run(cfg, output_dir, ctx.model, ctx.tokenizer, ctx.optimizer, ctx.scheduler, total, ctx.amp)
    step, cursor, state = run.start()
    try:
        ctx.hints.load_state_dict(state.get("adaptive_hints"))
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise UserError(f"checkpoint {run.last_checkpoint}: its trainer_state.json adaptive_hints is not "
                        f"adaptive hint state ({exc}); resume another checkpoint") from None
    ctx.engine = build_engine(cfg, ctx.model, ctx.tokenizer, ctx.amp, output_dir)
    try:
        while step < total:
            ids, next_cursor = cursor.take(cfg.rl.prompts_per_step, len(ctx.examples), cfg.seed, cfg.data.shuffle)
            metrics = rl_step(ctx, step, ids)
            step, cursor = step + 1, next_cursor
            run.end_step(step, cursor, metrics, {"reward": metrics["reward"], "acc": metrics["accuracy"],
                                                 "hint": round(metrics["hint_chunks_mean"], 2)}, ctx.state())
        return run.finish(step, cursor, ctx.state())
    except KeyboardInterrupt:
        raise run.interrupted(step, cursor, ctx.state()) from None
    finally:
        ctx.engine.close()  # a vLLM engine: after the last collective (see VLLMEngine.close)


def rl_step(ctx: RLRun, step: int, ids: list[int]) -> dict[str, Any]:
    """One RL step on the prompts `ids` after `step` completed steps; returns its metrics."""
    cfg, n = ctx.cfg, ctx.cfg.rl.num_generations
    t0 = time.perf_counter()
    examples = [ctx.examples[i] for i in ids]
    # ---- 1. hints: a prefix of each prompt's reference solution, shared by its group
    hints = ctx.hints.choose(step, ids, [ex.pieces for ex in examples])
    prompts = [render_prompt(ex, ctx.tokenizer, cfg.data.template, hint=h, finished=f) if h else ctx.prompts[i]
               for i, ex, h, f in zip(ids, examples, hints.texts, hints.finished)]
    # ---- 2. generate: n completions per prompt of this rank's groups, with the current weights (no grad)
    compiled = getattr(ctx.engine, "compile_seconds", 0.0)
    completions = generate(ctx, step, prompts, hints)
    t1 = time.perf_counter()
    compiled = getattr(ctx.engine, "compile_seconds", 0.0) - compiled  # part of the rollout time
    kill_point("rollout", step + 1)  # test hook (unift.train.faults); a no-op otherwise
    # ---- 3. score hint + completion, gathered in the step's global order [P * n]
    scores = score(ctx, examples, hints, completions, step + 1)
    ctx.hints.observe(ids, hints, scores.success_per_prompt(n))
    # ---- 4. advantages: group-normalised rewards [P * n]
    advantages = group_advantages(scores.rewards, n, cfg.rl.scale_rewards)
    t2 = time.perf_counter()
    # ---- 5. update on this rank's sequences
    stats = update(ctx.model, ctx.reference, ctx.optimizer, ctx.scheduler,
                   to_sequences(prompts, completions, advantages, n), cfg, ctx.tokenizer.pad_token_id,
                   ctx.device, ctx.amp, world=ctx.shard.world)
    kill_point("update", step + 1)
    t3 = time.perf_counter()
    every = cfg.log.completions_every
    shown = completion_samples(ctx, ids, hints, completions, scores, advantages) if every and (step + 1) % every == 0 \
        else []
    return {**score_metrics(scores, n),
            **ctx.hints.metrics(step, hints, [p.roles.count(HINT) for p in prompts]),
            **completion_metrics(scores), **stats, "lr": ctx.scheduler.get_last_lr()[0],
            "time_rollout_s": t1 - t0, "time_scoring_s": t2 - t1, "time_update_s": t3 - t2,
            **({"time_compile_s": compiled} if cfg.rl.compile_decode else {}),
            "generated_tokens_per_s": float(scores.lengths.sum()) / max(t1 - t0, 1e-9), "step_time_s": t3 - t0,
            "example_ids": ids,  # the prompts of this step (resume checks)
            **({"completions": shown} if shown else {})}  # to completions.jsonl (unift.train.metrics)


def generate(ctx: RLRun, step: int, prompts: list[Rendered], hints: StepHints) -> list[Completion]:
    """This rank's completions, n per prompt, each with the prompt's position in the step's batch.
    Seeds depend on (seed, step, position) only: the same samples on any number of processes."""
    ctx.engine.sync_weights()
    mine = ctx.shard.mine
    ctx.params.seeds = [(ctx.cfg.seed * 7919 + step) * 100_003 + g for g in mine]
    completions = rollout(ctx.engine, [p.input_ids for p in ctx.shard.local(prompts)],
                          ctx.shard.local(hints.finished), ctx.params)
    for c in completions:  # local prompt index -> position in the step's global batch
        c.prompt_index = mine[c.prompt_index]
    return completions


def score(ctx: RLRun, examples: list[Example], hints: StepHints, completions: list[Completion], step: int) -> Scores:
    """This rank's completions scored, gathered in the step's global order. A user reward that fails
    on one rank stops every rank with its message (no rank is left waiting in the gather)."""
    failure = ""
    try:
        rows = score_completions(ctx.scorer, examples, hints.texts, completions, ctx.tokenizer, step)
    except UserError as exc:
        if not ctx.scorer.funcs or not ctx.shard.world.distributed:
            raise
        rows, failure = [], str(exc)
    if ctx.scorer.funcs and ctx.shard.world.distributed:
        failures = [f for f in ctx.shard.world.gather([failure]) if f]
        if failures:
            raise UserError(failures[0])
    return Scores.from_rows(ctx.shard.gather(rows, ctx.cfg.rl.num_generations), tuple(ctx.scorer.names),
                            ctx.scorer.threshold)


def completion_samples(ctx: RLRun, ids: list[int], hints: StepHints, completions: list[Completion], scores: Scores,
                       advantages: torch.Tensor) -> list[dict[str, Any]]:
    """The first log.completions_groups groups of this rank, one record per completion."""
    n, groups = ctx.cfg.rl.num_generations, ctx.cfg.log.completions_groups
    out = []
    for j, c in enumerate(completions[:groups * n]):
        g = c.prompt_index * n + j % n  # position in the step's global order
        parts = {name: (None if (v := float(scores.parts[g, k])) != v else v) for k, name in enumerate(scores.names)} \
            if scores.parts is not None else {}
        out.append({"prompt_id": ids[c.prompt_index], "hint": hints.texts[c.prompt_index],
                    "completion": completion_text(ctx.tokenizer, c), "reward": float(scores.rewards[g]),
                    **({"rewards": parts} if parts else {}), "advantage": float(advantages[g]),
                    "finish_reason": c.finish_reason, "tokens": len(c.token_ids)})
    return out


def score_metrics(scores: Scores, n: int) -> dict[str, float]:
    correct = scores.correct
    out = {"reward": float(scores.rewards.mean()), "reward_std": float(scores.rewards.std()),
           "accuracy": float(correct.mean()),  # hint + completion, as the reward sees it
           "accuracy_completion": float((correct * scores.own).mean()),  # solved where the hint alone was not
           "frac_reward_zero_std": zero_std_fraction(scores.rewards, n)}
    if scores.parts is not None:  # TRL's names: rewards/<name>/mean and /std over the rows it scored
        for k, name in enumerate(scores.names):
            given = scores.parts[:, k][~scores.parts[:, k].isnan()]
            out[f"rewards/{name}/mean"] = float(given.mean()) if len(given) else float("nan")
            out[f"rewards/{name}/std"] = float(given.std()) if len(given) > 1 else 0.0
        out["reward_unscored_rows"] = float(scores.parts.isnan().all(dim=1).sum())
    return out


def completion_metrics(scores: Scores) -> dict[str, float]:
    lengths = scores.lengths
    return {"completion_length_mean": float(lengths.mean()), "completion_length_min": float(lengths.min()),
            "completion_length_max": float(lengths.max()), "completion_clipped_ratio": float(scores.clipped.mean()),
            "completion_eos_ratio": float(scores.ended.mean())}  # ended with EOS / end of turn (or a finished hint)


def set_up(cfg: Config, reward_funcs: list[Any] | None = None) -> tuple[RLRun, Path, int]:
    """Data, policy, reference, optimizer, sampler and hint schedule of a run; (run, output_dir, steps)."""
    r = cfg.rl
    stops = stop_strings(cfg.protocol, r.stop)  # official: none, a rollout ends with EOS or max_new_tokens
    hints = HintSchedule.from_config(cfg, stops)
    scorer = Scorer.from_config(cfg, reward_funcs)  # user reward code is imported and checked before the model loads
    examples = load_rl_data(cfg, hints, scorer)
    if r.compile_decode and r.rollout_backend == "hf":
        check_compile_supported(cfg.train.device)
    output_dir, device, model, tokenizer, amp = load_policy(cfg)
    # the token a finished hint ends with is the one served clients must stop on (generation_config.json)
    add_end_tokens(model, end_of_response(examples[0], tokenizer, cfg.data.template)[:1])
    world = current_world()
    if r.prompts_per_step % (r.updates_per_step * world.size):
        raise UserError(f"rl.prompts_per_step={r.prompts_per_step} must be divisible by rl.updates_per_step x "
                        f"processes = {r.updates_per_step * world.size} (whole prompt groups per rank and update)")
    prompts = [render_prompt(ex, tokenizer, cfg.data.template, max_prompt_tokens=cfg.data.max_prompt_tokens,
                             where=row_name(ex, f"{cfg.data.train} row {i}")) for i, ex in enumerate(examples)]
    reference = load_reference(cfg, model, device) if r.kl_coef > 0 else None  # LoRA: the policy, adapter off
    create_dir(output_dir)
    total = cfg.train.steps or max(1, math.ceil(cfg.train.epochs * len(examples) / r.prompts_per_step))
    optimizer = build_optimizer(model, cfg)
    updates_per_step = r.updates_per_step * r.epochs
    updates, warmup = total * updates_per_step, int(cfg.train.warmup_ratio * total * updates_per_step)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_multiplier(
        s, updates, warmup, cfg.train.schedule, cfg.train.min_lr_ratio))
    shard = PromptShard.build(r.prompts_per_step, r.updates_per_step, world)
    params = SamplingParams(max_new_tokens=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p,
                            n=r.num_generations, stop=stops)
    return RLRun(cfg, examples, prompts, model, reference, tokenizer, device, amp, optimizer, scheduler,
                 params, hints, shard, scorer), output_dir, total


def load_rl_data(cfg: Config, hints: HintSchedule, scorer: Scorer) -> list[Example]:
    """The training rows, checked for what the reward and the hints need (user reward functions
    need no task or ground truth)."""
    examples = load_examples(cfg.data.train, limit=cfg.data.limit, task=cfg.data.task)
    for i, ex in enumerate(examples):
        where = row_name(ex, f"{cfg.data.train} row {i}")
        if not scorer.funcs and not ex.task:
            raise UserError(f"{where}: no task to score it (no data_source column); set data.task or reward.funcs")
        if scorer.needs_ground_truth and ex.ground_truth is None:
            raise UserError(f"{where}: no ground truth for the reward (column ground_truth "
                            f"or reward_model.ground_truth)")
        if not scorer.funcs:
            check_ground_truth(cfg.protocol, ex, where)
        if hints.enabled and not ex.pieces:
            raise UserError(f"{where}: {cfg.method} needs reference solution pieces "
                            f"(column 'hint') to cut hints from")
        ex.pieces = hints.prepare(ex.pieces, ex.completion)
    return examples


def build_engine(cfg: Config, model, tokenizer, amp, output_dir: Path):
    """The rollout backend: the built-in sampler (bf16 copy under amp) or a vLLM engine in this process."""
    r = cfg.rl
    if r.rollout_backend == "vllm":
        from unift.vllm_engine import VLLMEngine

        longest = cfg.data.max_prompt_tokens + cfg.data.max_response_tokens + r.max_new_tokens
        return VLLMEngine(model, tokenizer, seed=cfg.seed, max_model_len=longest,
                          kv_cache_gb=r.vllm_kv_cache_gb, workdir=output_dir)
    return HFEngine(model, tokenizer, batch_size=r.generation_batch_size, dtype=amp, compile=r.compile_decode)
