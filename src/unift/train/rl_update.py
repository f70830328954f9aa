"""The update of one RL step: rl.epochs x rl.updates_per_step optimizer steps on a rollout batch.

    for each epoch, for each mini-batch (whole prompt groups):
        for each micro-batch:  loss = uft_loss(...)  (unift.rl.objective, UFT Eq. 4)  ->  backward
        all-reduce gradients over ranks  ->  clip  ->  AdamW step (skipped when non-finite)

Normalisers (`rl.normalizer`):
- unift: each term is divided by a count over the whole mini-batch (all micro-batches and
  ranks), so the gradient does not depend on the micro-batch split; work that cannot change the
  loss is pruned first (`unift.rl.rollout.prune_for_update`) and micro-batches are length-sorted.
- official: verl's actor in the official UFT code: per micro-batch a masked token mean of each
  term (policy and entropy over generated tokens, hint NLL over hint tokens with logits clamped
  to +-100, 0 without any), divided by the number of micro-batches (x ranks: verl averages
  gradients over ranks); micro-batches in rollout order, nothing pruned, so zero-advantage
  completions count in the means.

pi_old: with one update per rollout batch it is the trainer's own log-prob of the same forward
pass, detached (ratio 1, no extra pass); with several, one no-grad pass computes it first. The
sampler's log-probs only enter the truncated importance weight min(pi_old / pi_sampler, rl.tis_cap).

The metrics are sums over micro-batches kept in `UpdateTotals`, apart from the loss arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from unift.config import Config
from unift.data.batching import collate
from unift.data.render import GENERATED, HINT
from unift.device import autocast
from unift.logprobs import model_chunk, sequence_logprobs, sequence_logprobs_and_entropy
from unift.rl.objective import uft_loss
from unift.rl.policy_loss import truncated_is_weight
from unift.rl.rollout import Sequence, prune_for_update
from unift.train.distributed import World
from unift.train.setup import clip_gradients
from unift.train.sharding import catch_up
from unift.weights import disabled_adapter


@dataclass
class UpdateTotals:
    """Sums over the micro-batches of one rollout batch; `reduce` adds the other ranks' (the
    fields up to `pruned_sequences`; the optimizer-step figures are the same on every rank)."""

    loss: float = 0.0
    policy_loss: float = 0.0
    hint_loss: float = 0.0
    kl: float = 0.0
    clip_ratio_weighted: float = 0.0   # clip ratio x tokens it is over
    clip_tokens: float = 0.0
    entropy_sum: float = 0.0           # over generated tokens
    gen_tokens: float = 0.0            # generated tokens that entered the update
    mismatch_abs_sum: float = 0.0      # |pi_old - pi_sampler| log-prob gaps
    tis_capped: float = 0.0            # tokens whose importance weight hit rl.tis_cap
    pruned_sequences: float = 0.0
    grad_norm_sum: float = 0.0
    skipped_nonfinite: float = 0.0
    has_hint_loss: float = 0.0         # 1.0 once some micro-batch had the term
    has_kl: float = 0.0

    def add_micro(self, loss: torch.Tensor, terms: dict, entropy: torch.Tensor, gen_mask: torch.Tensor,
                  mismatch: torch.Tensor, tis_cap: float) -> None:
        """One micro-batch: its loss and terms, entropy [b, T-1], and the sampler gaps of its generated tokens."""
        self.loss += loss.item()
        if "policy_loss" in terms:
            self.policy_loss += float(terms["policy_loss"])
        if "hint_loss" in terms:
            self.hint_loss, self.has_hint_loss = self.hint_loss + float(terms["hint_loss"]), 1.0
        if "kl" in terms:
            self.kl, self.has_kl = self.kl + float(terms["kl"]), 1.0
        self.clip_ratio_weighted += float(terms["clip_ratio"]) * float(terms["num_tokens"])
        self.clip_tokens += float(terms["num_tokens"])
        self.entropy_sum += float((entropy.detach() * gen_mask).sum())
        self.gen_tokens += float(gen_mask.sum())
        self.mismatch_abs_sum += float(mismatch.abs().sum())
        if tis_cap > 0:
            self.tis_capped += float((mismatch.exp() > tis_cap).sum())

    def reduce(self, world: World) -> None:
        if not world.distributed:
            return
        names = [f.name for f in fields(self) if f.name not in ("grad_norm_sum", "skipped_nonfinite")]
        for name, value in zip(names, world.sum([getattr(self, name) for name in names])):
            setattr(self, name, value)

    def metrics(self, n_updates: int) -> dict[str, float | None]:
        gen = self.gen_tokens
        per_gen = (lambda value: value / gen) if gen else (lambda value: None)  # no generated token: no figure
        out = {"loss": self.loss / n_updates, "policy_loss": self.policy_loss / n_updates,
               "policy_clip_ratio": self.clip_ratio_weighted / max(1.0, self.clip_tokens),
               "entropy": per_gen(self.entropy_sum),
               "sampler_logp_abs_diff": per_gen(self.mismatch_abs_sum),
               "pruned_sequences": self.pruned_sequences,
               "tis_capped_fraction": per_gen(self.tis_capped),
               "grad_norm": self.grad_norm_sum / n_updates,
               "skipped_nonfinite": self.skipped_nonfinite}
        if self.has_hint_loss > 0:
            out["hint_loss"] = self.hint_loss / n_updates  # NLL (or DFT) per hint token
        if self.has_kl > 0:
            out["kl"] = self.kl / n_updates
        return out


@dataclass
class MiniBatch:
    sequences: list[Sequence]
    policy_normalizer: float   # rl.normalizer=unift: the global mini-batch's count for loss_aggregation


def plan_minibatches(sequences: list[Sequence], cfg: Config, world: World, prune: bool) -> list[MiniBatch]:
    """Split a rollout batch into rl.updates_per_step mini-batches of whole groups, each with its
    global policy normaliser; pruned unless rl.normalizer=official (see the module docstring)."""
    r = cfg.rl
    group = r.num_generations
    per_update = len(sequences) // group // r.updates_per_step
    out = []
    for u in range(r.updates_per_step):
        mini = sequences[u * per_update * group:(u + 1) * per_update * group]
        gen_tokens = sum(s.rendered.roles[1:].count(GENERATED) * (not (r.mask_truncated and s.truncated))
                         for s in mini)
        gen_tokens, n_seqs = world.sum([gen_tokens, len(mini)])  # normalisers of the global mini-batch
        norm = {"token-mean": max(1, gen_tokens), "seq-mean-token-mean": n_seqs,
                "dr-grpo": n_seqs * r.max_new_tokens}[r.loss_aggregation]
        if r.normalizer != "official":
            mini = prune_for_update(mini, group, keep_all=not prune or r.kl_coef > 0 or r.entropy_coef > 0,
                                    hint_loss=cfg.hints.beta > 0)
        out.append(MiniBatch(mini, norm))
    return out


def update(model, reference, optimizer, scheduler, sequences: list[Sequence], cfg: Config, pad_id, device,
           amp, prune: bool = True, world: World = World()) -> dict[str, float | None]:  # noqa: B008 (frozen)
    """Optimizer updates on one rollout batch (see the module docstring); returns its metrics.

    prune: skip the work that cannot change the loss (see `unift.rl.rollout.prune_for_update`)."""
    r = cfg.rl
    n_updates = r.epochs * r.updates_per_step
    minis = plan_minibatches(sequences, cfg, world, prune)
    totals = UpdateTotals(pruned_sequences=float(len(sequences) - sum(len(m.sequences) for m in minis)))
    if n_updates > 1:
        _set_old_logp(model, [s for m in minis for s in m.sequences], cfg, pad_id, device, amp)
    for _ in range(r.epochs):
        for mini in minis:
            hint_tokens = world.sum([sum(s.rendered.roles[1:].count(HINT) for s in mini.sequences)])[0]
            micro = list(_micro_batches(mini.sequences, cfg.train.micro_batch_size, pad_id, device,
                                        sort=r.normalizer != "official"))
            catch_up(model, len(micro), device, amp, backward=True, reference=reference)  # FSDP2
            n_micro = len(micro) * world.size
            for part, batch, gen_mask, hint_mask in micro:
                if r.normalizer == "official":  # masked means of this micro-batch, / number of micro-batches
                    norms = (max(1.0, float(gen_mask.sum())) * n_micro, max(1.0, float(hint_mask.sum())) * n_micro)
                else:
                    norms = (mini.policy_normalizer, max(1, hint_tokens))
                micro_loss(model, reference, part, batch, gen_mask, hint_mask, norms, cfg, n_updates, amp, totals)
            _optimizer_step(model, optimizer, scheduler, cfg, world, totals)
    totals.reduce(world)
    return totals.metrics(n_updates)


def micro_loss(model, reference, part: list[Sequence], batch, gen_mask: torch.Tensor, hint_mask: torch.Tensor,
               norms: tuple[float, float], cfg: Config, n_updates: int, amp, totals: UpdateTotals) -> None:
    """Forward and backward of one micro-batch (b sequences, T tokens); its figures go into `totals`."""
    r, h = cfg.rl, cfg.hints
    device = gen_mask.device
    sampler_logp = _scatter(gen_mask, torch.tensor([lp for s in part for lp in s.sampler_logp],
                                                   dtype=torch.float32, device=device))      # [b, T-1]
    advantages = torch.tensor([s.advantage for s in part], dtype=torch.float32, device=device)  # [b]
    policy_mask = gen_mask.clone()                                                              # [b, T-1]
    if r.mask_truncated:
        policy_mask[torch.tensor([s.truncated for s in part], device=device)] = False
    with autocast(device, amp):
        logp, entropy = sequence_logprobs_and_entropy(
            model, batch.input_ids, batch.attention_mask, gen_mask | hint_mask, r.temperature,
            entropy_grad=r.entropy_coef > 0, clamp_mask=hint_mask if r.normalizer == "official" else None,
            chunk=model_chunk(model, cfg.train.logprob_chunk_mb))
        ref_logp = None
        if reference is not None:
            with torch.no_grad(), disabled_adapter(reference):
                ref_logp = sequence_logprobs(reference, batch.input_ids, batch.attention_mask, gen_mask,
                                             r.temperature, chunk=model_chunk(reference, cfg.train.logprob_chunk_mb))
    old_logp = logp.detach() if n_updates == 1 else _scatter(gen_mask, torch.cat([s.old_logp for s in part]))
    is_weight = truncated_is_weight(old_logp, sampler_logp, r.tis_cap) if r.tis_cap > 0 else None
    loss, terms = uft_loss(logp, old_logp, advantages, policy_mask, hint_mask,
                           policy_normalizer=norms[0], hint_normalizer=norms[1],
                           epsilon=r.epsilon, epsilon_high=r.epsilon_high or None,
                           aggregation=r.loss_aggregation, beta=h.beta, hint_loss=h.loss,
                           ref_logp=ref_logp, kl_coef=r.kl_coef, entropy=entropy,
                           entropy_coef=r.entropy_coef, is_weight=is_weight)
    loss.backward()
    with torch.no_grad():  # how far the sampler is from the trainer, per generated token
        mismatch = (old_logp - sampler_logp)[gen_mask]
    totals.add_micro(loss, terms, entropy, gen_mask, mismatch, r.tis_cap)


def _optimizer_step(model, optimizer, scheduler, cfg: Config, world: World, totals: UpdateTotals) -> None:
    for param in model.parameters():  # nothing left to backpropagate: the same step as zero gradients
        if param.requires_grad and param.grad is None:
            param.grad = torch.zeros_like(param)
    world.reduce_gradients(model)  # the global mini-batch's gradient on every rank
    grad_norm = clip_gradients(model, cfg.train.grad_clip)
    if math.isfinite(grad_norm):
        optimizer.step()
    else:
        totals.skipped_nonfinite += 1.0
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    totals.grad_norm_sum += grad_norm


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
            logp = sequence_logprobs(model, batch.input_ids, batch.attention_mask, gen_mask, cfg.rl.temperature,
                                     chunk=model_chunk(model, cfg.train.logprob_chunk_mb))
        for s, row, m in zip(part, logp, gen_mask):
            s.old_logp = row[m].float()
