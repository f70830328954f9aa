"""The training loop for the offline methods, SFT and DFT: one visible loop.

    for each optimizer step:
        batch      <- next `batch_size` examples of the seeded epoch order
        normaliser <- number of TARGET tokens in the whole batch (global token mean)
        for each micro-batch:  forward (bf16 autocast) -> token log-probs -> loss / normaliser -> backward
        clip gradients -> AdamW step -> lr schedule step -> log -> checkpoint

Because the loss of every micro-batch is divided by the token count of the whole step, the
gradient does not depend on how the batch is split. Prompt tokens never carry loss: only
tokens whose role is TARGET enter the mask. The online methods (RFT, UFT) keep the same
shape with the batch replaced by a rollout, scoring and advantages.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from unift import losses
from unift.config import Config
from unift.data.batching import collate
from unift.data.loading import row_name
from unift.data.render import TARGET, Rendered, end_of_response, render_sft
from unift.device import autocast
from unift.errors import UserError
from unift.files import create_dir
from unift.logprobs import model_chunk, sequence_logprobs
from unift.models import add_end_tokens
from unift.train.distributed import World, current_world
from unift.train.faults import kill_point
from unift.train.run import Run
from unift.train.schedule import lr_multiplier
from unift.train.setup import (
    build_optimizer,
    clip_gradients,
    load_policy,
    load_sft_data,
)
from unift.train.sharding import catch_up


def loss_function(cfg: Config) -> Callable[..., torch.Tensor]:
    """(logp [B, T], mask [B, T], normalizer) -> scalar loss, for cfg.method."""
    if cfg.method == "sft":
        return losses.nll_loss
    if cfg.method == "dft":
        return lambda logp, mask, norm: losses.dft_loss(logp, mask, norm, cfg.loss.dft_min_weight,
                                                        cfg.loss.dft_nll_mix)
    raise UserError(f"method '{cfg.method}' is not an offline method (sft, dft)")


@dataclass
class SFTRun:
    """What every step of an SFT/DFT run uses."""

    cfg: Config
    data: list[Rendered]         # every example rendered: prompt + reference response, with roles
    model: Any
    tokenizer: Any
    device: torch.device
    amp: Any                     # the autocast dtype, or None
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loss_fn: Callable[..., torch.Tensor]
    world: World


def train(cfg: Config) -> Path:
    """Run SFT/DFT as configured; returns the directory of the final Hugging Face model."""
    ctx, output_dir, total = set_up(cfg)
    run = Run(cfg, output_dir, ctx.model, ctx.tokenizer, ctx.optimizer, ctx.scheduler, total, ctx.amp)
    step, cursor, _ = run.start()
    try:
        while step < total:
            started = time.perf_counter()
            indices, next_cursor = cursor.take(cfg.train.batch_size, len(ctx.data), cfg.seed, cfg.data.shuffle)
            metrics = sft_step(ctx, step, indices)
            step, cursor = step + 1, next_cursor  # the step is complete: its data counts as seen
            elapsed = time.perf_counter() - started
            metrics.update({"epoch": cursor.consumed / len(ctx.data), "tokens_per_s": metrics.pop("tokens") / elapsed,
                            "step_time_s": elapsed, "example_ids": indices})  # the rows it trained on (resume checks)
            if metrics["skipped_nonfinite"]:
                print(f"step {step}: non-finite loss or gradient, update skipped")
            run.end_step(step, cursor, metrics, {"loss": metrics["loss"], "tok/s": round(metrics["tokens_per_s"])})
    except KeyboardInterrupt:
        raise run.interrupted(step, cursor) from None
    return run.finish(step, cursor)


def sft_step(ctx: SFTRun, step: int, indices: list[int]) -> dict[str, Any]:
    """One optimizer step on the examples `indices` after `step` completed steps; returns its metrics."""
    cfg, world, device = ctx.cfg, ctx.world, ctx.device
    normalizer = max(1, sum(ctx.data[i].roles[1:].count(TARGET) for i in indices))  # global token count
    # this rank's rows of the step (all of them in one process), sorted: less padding per micro-batch
    batch = sorted((ctx.data[i] for i in world.share(indices)), key=lambda r: len(r.input_ids))
    stats = {"loss": 0.0, "nll_sum": 0.0, "prob_sum": 0.0, "tokens": 0}
    starts = range(0, len(batch), cfg.train.micro_batch_size)
    catch_up(ctx.model, len(starts), device, ctx.amp, backward=True)  # FSDP2: as many passes as the busiest rank
    for start in starts:
        micro = collate(batch[start:start + cfg.train.micro_batch_size], ctx.tokenizer.pad_token_id, device)
        mask = micro.roles[:, 1:] == TARGET                                   # [b, T-1]
        with autocast(device, ctx.amp):
            logp = sequence_logprobs(ctx.model, micro.input_ids, micro.attention_mask, mask,
                                     chunk=model_chunk(ctx.model, cfg.train.logprob_chunk_mb))  # [b, T-1]
        loss = ctx.loss_fn(logp, mask, normalizer)
        loss.backward()
        with torch.no_grad():
            stats["loss"] += loss.item()
            stats["nll_sum"] += losses.masked_sum(-logp, mask).item()
            stats["prob_sum"] += logp[mask].exp().sum().item()
            stats["tokens"] += int(micro.attention_mask.sum())
    world.reduce_gradients(ctx.model)  # several processes: the whole batch's gradient on every rank
    stats["loss"], stats["nll_sum"], stats["prob_sum"], stats["tokens"] = world.sum(
        [stats["loss"], stats["nll_sum"], stats["prob_sum"], stats["tokens"]])
    grad_norm = clip_gradients(ctx.model, cfg.train.grad_clip)
    finite = math.isfinite(grad_norm) and math.isfinite(stats["loss"])
    if finite:
        ctx.optimizer.step()
    ctx.optimizer.zero_grad(set_to_none=True)
    ctx.scheduler.step()
    kill_point("update", step + 1)  # test hook (unift.train.faults); a no-op otherwise
    return {"loss": stats["loss"], "nll": stats["nll_sum"] / normalizer,
            "mean_token_prob": stats["prob_sum"] / normalizer, "grad_norm": grad_norm,
            "lr": ctx.scheduler.get_last_lr()[0], "target_tokens": normalizer, "tokens": stats["tokens"],
            "skipped_nonfinite": int(not finite)}


def set_up(cfg: Config) -> tuple[SFTRun, Path, int]:
    """Data, policy and optimizer of a run; (run, output_dir, steps). Everything a user can get
    wrong is checked before the model is loaded."""
    examples = load_sft_data(cfg)
    output_dir, device, model, tokenizer, amp = load_policy(cfg)
    data = render_all(examples, tokenizer, cfg)
    # every target ends with this token: name it in generation_config.json, so plain clients stop on it
    add_end_tokens(model, end_of_response(examples[0], tokenizer, cfg.data.template)[:1])
    create_dir(output_dir)
    steps_per_epoch = math.ceil(len(data) / cfg.train.batch_size)
    total = cfg.train.steps or max(1, math.ceil(cfg.train.epochs * steps_per_epoch))
    warmup = int(cfg.train.warmup_ratio * total)
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_multiplier(s, total, warmup, cfg.train.schedule, cfg.train.min_lr_ratio))
    ctx = SFTRun(cfg, data, model, tokenizer, device, amp, optimizer, scheduler, loss_function(cfg), current_world())
    return ctx, output_dir, total


def render_all(examples, tokenizer, cfg: Config) -> list[Rendered]:
    out = []
    truncated = 0
    for i, ex in enumerate(examples):
        r = render_sft(ex, tokenizer, cfg.data.template, cfg.data.max_prompt_tokens,
                       cfg.data.max_response_tokens, where=row_name(ex, f"{cfg.data.train} row {i}"))
        truncated += r.truncated
        out.append(r)
    if truncated:
        print(f"note: {truncated} of {len(out)} reference responses were cut to "
              f"data.max_response_tokens={cfg.data.max_response_tokens}")
    return out




