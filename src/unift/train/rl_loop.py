"""Online RL: RFT (GRPO), UFT (hints + log-likelihood on hints) and R3 — one visible loop.

    for each step t:
        prompts   <- next rl.prompts_per_step examples of the seeded epoch order
        hints     <- per prompt a prefix of its reference solution: chunks ~ Binomial(num, p(t))
                     (UFT, cosine p(t)), Uniform(0..num) (R3), per-prompt adaptive, or none (RFT);
                     one hint shared by the prompt's whole group
        rollout   <- rl.num_generations completions per prompt continuing prompt + hint (no grad),
                     each until EOS or rl.max_new_tokens; the sampler returns the log-prob of every
                     sampled token (a hint that is already a finished response is not generated)
        scoring   <- reward of hint + completion under `protocol`; group-normalised advantages
        update    <- per mini-batch (whole groups, zero-advantage completions left out):
                     micro-batches -> uft_loss -> backward -> AdamW step

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
from a generator seeded by (seed, step), so a resumed run draws the same hints.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import torch

from unift.config import Config
from unift.data.batching import collate
from unift.data.loading import load_examples, row_name
from unift.data.render import GENERATED, HINT, Rendered, end_of_response, render_prompt
from unift.device import autocast
from unift.engine import HFEngine, SamplingParams, completion_text
from unift.errors import UserError
from unift.logprobs import sequence_logprobs, sequence_logprobs_and_entropy
from unift.lora import disabled_adapter
from unift.models import add_end_tokens
from unift.protocol import check_ground_truth, score, stop_strings
from unift.rl.advantages import group_advantages, zero_std_fraction
from unift.rl.hints import (AdaptiveHints, cosine_hint_fraction, hint_for, num_chunks, official_stage_chunks,
                            sample_chunks_binomial, sample_chunks_uniform, with_answer_piece)
from unift.rl.objective import uft_loss
from unift.rl.policy_loss import truncated_is_weight
from unift.rl.rollout import Sequence, prune_for_update, rollout
from unift.tasks.base import CORRECT_SCORE
from unift.train.distributed import World, current_world
from unift.train.faults import kill_point
from unift.train.run import Run
from unift.train.schedule import lr_multiplier
from unift.train.setup import build_optimizer, clip_gradients, create_dir, load_policy, load_reference
from unift.train.sharding import catch_up


def load_rl_data(cfg: Config):
    examples = load_examples(cfg.data.train, limit=cfg.data.limit, task=cfg.data.task)
    for i, ex in enumerate(examples):
        where = row_name(ex, f"{cfg.data.train} row {i}")
        if not ex.task:
            raise UserError(f"{where}: no task to score it (no data_source column); set data.task")
        if ex.ground_truth is None:
            raise UserError(f"{where}: no ground truth for the reward (column ground_truth "
                            f"or reward_model.ground_truth)")
        check_ground_truth(cfg.protocol, ex, where)
        if cfg.method in ("uft", "r3") and not ex.pieces:
            raise UserError(f"{where}: {cfg.method} needs reference solution pieces "
                            f"(column 'hint') to cut hints from")
        if cfg.hints.answer_piece:
            ex.pieces = with_answer_piece(ex.pieces, ex.completion)
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
    if cfg.rl.rollout_backend == "vllm":  # before any data or model is loaded
        from unift.vllm_engine import INSTALL_HINT, vllm_available

        if not vllm_available():
            raise UserError(INSTALL_HINT)
    examples = load_rl_data(cfg)
    output_dir, device, model, tokenizer, amp = load_policy(cfg)
    # the token a finished hint ends with is the one served clients must stop on (generation_config.json)
    add_end_tokens(model, end_of_response(examples[0], tokenizer, cfg.data.template)[:1])
    world = current_world()
    if cfg.rl.prompts_per_step % (cfg.rl.updates_per_step * world.size):
        raise UserError(f"rl.prompts_per_step={cfg.rl.prompts_per_step} must be divisible by rl.updates_per_step x "
                        f"processes = {cfg.rl.updates_per_step * world.size} (whole prompt groups per rank and update)")
    prompts = [render_prompt(ex, tokenizer, cfg.data.template, max_prompt_tokens=cfg.data.max_prompt_tokens,
                             where=row_name(ex, f"{cfg.data.train} row {i}")) for i, ex in enumerate(examples)]
    reference = None
    if cfg.rl.kl_coef > 0:  # the frozen initial model (LoRA: the policy, adapter off), only for a KL term
        reference = load_reference(cfg, model, device)
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
    mine = rank_positions(r.prompts_per_step, r.updates_per_step, world)  # this rank's prompts of every step
    everyone = world.gather(mine)  # all ranks' positions, in rank order
    if adaptive is not None and state.get("adaptive_hints"):
        try:
            adaptive.load_state_dict(state["adaptive_hints"])
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise UserError(f"checkpoint {run.last_checkpoint}: its trainer_state.json adaptive_hints is not "
                            f"adaptive hint state ({exc}); resume another checkpoint") from None

    def extra_state() -> dict:
        return {"adaptive_hints": adaptive.state_dict() if adaptive else None}

    engine = build_engine(cfg, model, tokenizer, amp, output_dir)
    stops = stop_strings(cfg.protocol, r.stop)  # official: none, a rollout ends with EOS or max_new_tokens
    params = SamplingParams(max_new_tokens=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p,
                            n=r.num_generations, stop=stops)

    try:
        while step < total:
            t0 = time.perf_counter()
            # ---- 1. prompts and hints
            ids, next_cursor = cursor.take(r.prompts_per_step, len(examples), cfg.seed, cfg.data.shuffle)
            rng = random.Random(cfg.seed * 1_000_003 + step)
            nums = [num_chunks(examples[i].pieces, cfg.hints.max_chunks) for i in ids]
            chunks = [choose_chunks(cfg, step, num, i, rng, adaptive) for i, num in zip(ids, nums)]
            hints = [hint_for(examples[i].pieces, k, cfg.hints.max_chunks) if k else "" for i, k in zip(ids, chunks)]
            # a full hint with the answer piece is the whole reference: it ends with EOS and is not generated on
            finished = [bool(h) and ((cfg.hints.answer_piece and k == num) or any(x in h for x in stops))
                        for h, k, num in zip(hints, chunks, nums)]
            batch_prompts = [render_prompt(examples[i], tokenizer, cfg.data.template, hint=h, finished=f)
                             if h else prompts[i] for i, h, f in zip(ids, hints, finished)]
            # ---- 2. rollout (no grad) with the current weights: this rank's prompt groups
            engine.sync_weights()
            params.seeds = [(cfg.seed * 7919 + step) * 100_003 + g for g in mine]  # independent of batching/ranks
            completions = rollout(engine, [batch_prompts[g].input_ids for g in mine], [finished[g] for g in mine],
                                  params)
            for c in completions:  # local prompt index -> position in the step's global batch
                c.prompt_index = mine[c.prompt_index]
            t1 = time.perf_counter()
            kill_point("rollout", step + 1)  # test hook (unift.train.faults); a no-op otherwise
            # ---- 3. scoring and advantages
            scored = score_rollouts(cfg.protocol, [examples[i] for i in ids], hints, completions, tokenizer)
            rewards, lengths, clipped, ended, own = (torch.tensor(column, dtype=torch.float32) for column in
                                                     zip(*in_global_order(world, everyone, scored, r.num_generations)))
            advantages = group_advantages(rewards, r.num_generations, r.scale_rewards)  # [P * n]
            correct = (rewards >= CORRECT_SCORE).float()                             # [P * n]
            if adaptive is not None:
                for g, i in enumerate(ids):
                    adaptive.update(i, chunks[g], float(correct[g * r.num_generations:(g + 1) * r.num_generations].mean()))
            n = r.num_generations
            sequences = [Sequence(Rendered(batch_prompts[c.prompt_index].input_ids + c.token_ids,
                                           batch_prompts[c.prompt_index].roles + [GENERATED] * len(c.token_ids)),
                                  c.logprobs, float(advantages[c.prompt_index * n + j % n]), c.finish_reason == "length")
                         for j, c in enumerate(completions)]
            t2 = time.perf_counter()
            # ---- 4. update: whole groups per mini-batch
            stats = update(model, reference, optimizer, scheduler, sequences, cfg, tokenizer.pad_token_id, device, amp,
                           world=world)
            kill_point("update", step + 1)
            step, cursor = step + 1, next_cursor
            t3 = time.perf_counter()

            hint_tokens = [p.roles.count(HINT) for p in batch_prompts]
            metrics = {
                "reward": float(rewards.mean()), "reward_std": float(rewards.std()),
                "accuracy": float(correct.mean()),  # hint + completion, as the reward sees it
                "accuracy_completion": float((correct * own).mean()),  # solved where the hint alone was not
                "frac_reward_zero_std": zero_std_fraction(rewards, r.num_generations),
                "hint_fraction": cosine_hint_fraction(step - 1, cfg.hints.p_high, cfg.hints.p_low, cfg.hints.t_hint)
                if cfg.method == "uft" and cfg.hints.schedule == "cosine" else None,
                "hint_chunks_mean": sum(chunks) / len(chunks),
                "hint_tokens_mean": sum(hint_tokens) / len(hint_tokens),
                "completion_length_mean": float(lengths.mean()), "completion_length_min": float(lengths.min()),
                "completion_length_max": float(lengths.max()),
                "completion_clipped_ratio": float(clipped.mean()),
                "completion_eos_ratio": float(ended.mean()),  # ended with EOS / end of turn (or a finished hint)
                **stats,
                "lr": scheduler.get_last_lr()[0],
                "time_rollout_s": t1 - t0, "time_scoring_s": t2 - t1, "time_update_s": t3 - t2,
                "generated_tokens_per_s": float(lengths.sum()) / max(t1 - t0, 1e-9),
                "step_time_s": t3 - t0,
                "example_ids": ids,  # the prompts of this step (resume checks)
            }
            if adaptive is not None:
                metrics.update({f"adaptive_{k}": v for k, v in adaptive.summary().items()})
            run.end_step(step, cursor, metrics, {"reward": metrics["reward"], "acc": metrics["accuracy"],
                                                 "hint": round(metrics["hint_chunks_mean"], 2)}, extra_state())
        return run.finish(step, cursor, extra_state())
    except KeyboardInterrupt:
        raise run.interrupted(step, cursor, extra_state()) from None
    finally:
        if hasattr(engine, "close"):  # a vLLM engine: after the last collective (see VLLMEngine.close)
            engine.close()


def score_rollouts(protocol: str, examples: list, hints: list[str], completions: list, tokenizer) -> list[tuple]:
    """Per completion: (reward of hint + completion under `protocol`, generated tokens, cut by the
    budget, ended with EOS, 1.0 if the hint alone does not already earn the full reward).

    examples, hints: per prompt position of the step; completions carry their prompt_index."""
    hint_solves = [bool(h) and score(protocol, ex, h).score >= CORRECT_SCORE for ex, h in zip(examples, hints)]
    return [(score(protocol, examples[c.prompt_index], hints[c.prompt_index] + completion_text(tokenizer, c)).score,
             len(c.token_ids), c.finish_reason == "length", c.finish_reason == "eos",
             float(not hint_solves[c.prompt_index])) for c in completions]


def build_engine(cfg: Config, model, tokenizer, amp, output_dir: Path):
    """The rollout backend: the built-in sampler (bf16 copy under amp) or a vLLM engine in this process."""
    r = cfg.rl
    if r.rollout_backend == "vllm":
        from unift.vllm_engine import VLLMEngine

        longest = cfg.data.max_prompt_tokens + cfg.data.max_response_tokens + r.max_new_tokens
        return VLLMEngine(model, tokenizer, seed=cfg.seed, max_model_len=longest,
                          kv_cache_gb=r.vllm_kv_cache_gb, workdir=output_dir)
    return HFEngine(model, tokenizer, batch_size=r.generation_batch_size, dtype=amp)


def rank_positions(prompts_per_step: int, updates: int, world: World) -> list[int]:
    """The positions, in a step's global prompt list, whose groups this rank generates and trains.

    Update u trains the global block u of prompts_per_step / updates prompts; each rank takes every
    world.size-th prompt of each block, so the ranks' u-th mini-batches together are that block."""
    block = prompts_per_step // updates
    return [u * block + g for u in range(updates) for g in world.share(list(range(block)))]


def in_global_order(world: World, positions: list[int], values: list, n: int) -> list:
    """Per-completion values of every rank, placed in the step's global order (prompt-major, n each).

    positions: every rank's prompt positions in rank order (`world.gather` of `rank_positions`)."""
    gathered = world.gather(values)
    out: list = [None] * (len(positions) * n)
    for j, g in enumerate(positions):
        out[g * n:(g + 1) * n] = gathered[j * n:(j + 1) * n]
    return out


def _micro_batches(seqs: list[Sequence], micro: int, pad_id, device, sort: bool = True):
    """Micro-batches, length-sorted unless `sort` is off: (sequences, batch, gen_mask [b, T-1], hint_mask [b, T-1])."""
    order = list(range(len(seqs)))
    if sort:
        order.sort(key=lambda j: len(seqs[j].rendered.input_ids))
    for start in range(0, len(order), micro):
        part = [seqs[j] for j in order[start:start + micro]]
        batch = collate([s.rendered for s in part], pad_id, device)
        yield part, batch, batch.roles[:, 1:] == GENERATED, batch.roles[:, 1:] == HINT


def _scatter(mask: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Place the per-token values of the masked positions (in order) into a [b, T-1] fp32 tensor."""
    return torch.zeros(mask.shape, dtype=torch.float32, device=mask.device).masked_scatter(mask, values)


@torch.no_grad()
def _set_old_logp(model, sequences: list[Sequence], cfg: Config, pad_id, device, amp) -> None:
    """pi_old for several updates per rollout batch: one no-grad pass before the first update."""
    micro = list(_micro_batches(sequences, cfg.train.micro_batch_size, pad_id, device))
    catch_up(model, len(micro), device, amp, backward=False)  # FSDP2
    for part, batch, gen_mask, _ in micro:
        with autocast(device, amp):
            logp = sequence_logprobs(model, batch.input_ids, batch.attention_mask, gen_mask, cfg.rl.temperature)
        for s, row, m in zip(part, logp, gen_mask):
            s.old_logp = row[m].float()


def update(model, reference, optimizer, scheduler, sequences: list[Sequence], cfg: Config, pad_id, device,
           amp, prune: bool = True, world: World = World()) -> dict[str, float]:
    """Optimizer updates on one rollout batch: rl.epochs x rl.updates_per_step mini-batches.

    prune: skip the work that cannot change the loss (see `unift.rl.rollout.prune_for_update`).

    rl.normalizer=unift divides each term by a count over the whole mini-batch (all micro-batches and
    ranks), so the gradient does not depend on the split. rl.normalizer=official is verl's actor in
    the official UFT code: per micro-batch a masked token mean of each term (policy and entropy over
    generated tokens, hint NLL over hint tokens with logits clamped to +-100, 0 without any), divided
    by the number of micro-batches (x ranks: verl averages gradients over ranks); micro-batches in
    rollout order, nothing pruned, so zero-advantage completions count in the means.
    """
    r, h = cfg.rl, cfg.hints
    official = r.normalizer == "official"
    group = r.num_generations
    n_groups = len(sequences) // group
    per_update = n_groups // r.updates_per_step
    n_updates = r.epochs * r.updates_per_step
    beta = h.beta if cfg.method == "uft" else 0.0  # R3 and RFT have no hint log-likelihood term
    totals: dict[str, float] = {}
    minis, norms = [], []
    for u in range(r.updates_per_step):
        mini = sequences[u * per_update * group:(u + 1) * per_update * group]
        gen_tokens = sum(s.rendered.roles[1:].count(GENERATED) * (not (r.mask_truncated and s.truncated))
                         for s in mini)
        gen_tokens, n_seqs = world.sum([gen_tokens, len(mini)])  # normalisers of the global mini-batch
        norms.append({"token-mean": max(1, gen_tokens), "seq-mean-token-mean": n_seqs,
                      "dr-grpo": n_seqs * r.max_new_tokens}[r.loss_aggregation])
        minis.append(mini if official else
                     prune_for_update(mini, group, keep_all=not prune or r.kl_coef > 0 or r.entropy_coef > 0,
                                      hint_loss=beta > 0))
    _add(totals, "pruned_sequences", float(len(sequences) - sum(len(m) for m in minis)))
    if n_updates > 1:
        _set_old_logp(model, [s for m in minis for s in m], cfg, pad_id, device, amp)
    for _ in range(r.epochs):
        for mini, mini_norm in zip(minis, norms):
            mini_hint_tokens = world.sum([sum(s.rendered.roles[1:].count(HINT) for s in mini)])[0]
            micro = list(_micro_batches(mini, cfg.train.micro_batch_size, pad_id, device, sort=not official))
            catch_up(model, len(micro), device, amp, backward=True, reference=reference)  # FSDP2
            n_micro = len(micro) * world.size
            for part, batch, gen_mask, hint_mask in micro:
                policy_norm, hint_norm = mini_norm, max(1, mini_hint_tokens)
                if official:  # masked means of this micro-batch, / number of micro-batches
                    policy_norm = max(1.0, float(gen_mask.sum())) * n_micro
                    hint_norm = max(1.0, float(hint_mask.sum())) * n_micro
                sampler_logp = _scatter(gen_mask, torch.tensor([lp for s in part for lp in s.sampler_logp],
                                                               dtype=torch.float32, device=device))
                advantages = torch.tensor([s.advantage for s in part], dtype=torch.float32, device=device)
                policy_mask = gen_mask.clone()
                if r.mask_truncated:
                    policy_mask[torch.tensor([s.truncated for s in part], device=device)] = False
                with autocast(device, amp):
                    logp, entropy = sequence_logprobs_and_entropy(
                        model, batch.input_ids, batch.attention_mask, gen_mask | hint_mask, r.temperature,
                        entropy_grad=r.entropy_coef > 0, clamp_mask=hint_mask if official else None)
                    ref_logp = None
                    if reference is not None:
                        with torch.no_grad(), disabled_adapter(reference):
                            ref_logp = sequence_logprobs(reference, batch.input_ids, batch.attention_mask,
                                                         gen_mask, r.temperature)
                old_logp = logp.detach() if n_updates == 1 else _scatter(gen_mask, torch.cat([s.old_logp for s in part]))
                is_weight = truncated_is_weight(old_logp, sampler_logp, r.tis_cap) if r.tis_cap > 0 else None
                loss, terms = uft_loss(logp, old_logp, advantages, policy_mask, hint_mask,
                                       policy_normalizer=policy_norm, hint_normalizer=hint_norm,
                                       epsilon=r.epsilon, epsilon_high=r.epsilon_high or None,
                                       aggregation=r.loss_aggregation, beta=beta, hint_loss=h.loss,
                                       ref_logp=ref_logp, kl_coef=r.kl_coef, entropy=entropy,
                                       entropy_coef=r.entropy_coef, is_weight=is_weight)
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
                with torch.no_grad():  # how far the sampler is from the trainer, per generated token
                    diff = (old_logp - sampler_logp)[gen_mask]
                    _add(totals, "mismatch_abs_sum", float(diff.abs().sum()))
                    if r.tis_cap > 0:
                        _add(totals, "tis_capped", float((diff.exp() > r.tis_cap).sum()))
            for param in model.parameters():  # nothing left to backpropagate: the same step as zero gradients
                if param.requires_grad and param.grad is None:
                    param.grad = torch.zeros_like(param)
            world.reduce_gradients(model)  # the global mini-batch's gradient on every rank
            grad_norm = clip_gradients(model, cfg.train.grad_clip)
            if math.isfinite(grad_norm):
                optimizer.step()
            else:
                _add(totals, "skipped_nonfinite", 1.0)
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            _add(totals, "grad_norm_sum", grad_norm)
    present = [k for k in ("hint_loss", "kl") if k in totals]
    if world.distributed:  # every rank's share of the step (the same keys on every rank)
        summed = world.sum([totals.get(k, 0.0) for k in ADDITIVE] + [float(k in totals) for k in ("hint_loss", "kl")])
        totals.update(zip(ADDITIVE, summed))
        present = [k for k, flag in zip(("hint_loss", "kl"), summed[len(ADDITIVE):]) if flag > 0]
    gen = totals.get("gen_tokens", 0.0)  # generated tokens that entered the update (none: no entropy figure)
    per_gen = (lambda key: totals.get(key, 0.0) / gen) if gen else (lambda key: None)
    out = {"loss": totals.get("loss", 0.0) / n_updates, "policy_loss": totals.get("policy_loss", 0.0) / n_updates,
           "policy_clip_ratio": totals.get("clip_ratio_weighted", 0.0) / max(1.0, totals.get("clip_tokens", 0.0)),
           "entropy": per_gen("entropy_sum"),
           "sampler_logp_abs_diff": per_gen("mismatch_abs_sum"),
           "pruned_sequences": totals["pruned_sequences"],
           "tis_capped_fraction": per_gen("tis_capped"),
           "grad_norm": totals["grad_norm_sum"] / n_updates,
           "skipped_nonfinite": totals.get("skipped_nonfinite", 0.0)}
    if "hint_loss" in present:
        out["hint_loss"] = totals["hint_loss"] / n_updates  # NLL (or DFT) per hint token
    if "kl" in present:
        out["kl"] = totals["kl"] / n_updates
    return out


ADDITIVE = ("loss", "policy_loss", "hint_loss", "kl", "clip_ratio_weighted", "clip_tokens", "entropy_sum",
            "gen_tokens", "mismatch_abs_sum", "tis_capped", "pruned_sequences")


def _add(totals: dict[str, float], key: str, value: float) -> None:
    totals[key] = totals.get(key, 0.0) + value
