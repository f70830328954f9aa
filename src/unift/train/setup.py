"""Run set-up shared by the training loops: data checks, output directory, seeding, optimizer."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from unift.config import Config
from unift.data.loading import load_examples, row_name
from unift.device import autocast_dtype, pick_device
from unift.errors import UserError
from unift.evaluate import evaluate
from unift.lora import apply_lora
from unift.models import load_model
from unift.train.distributed import current_world
from unift.train.sharding import shard
from unift.weights import full_tensor


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def load_sft_data(cfg: Config):
    """Load the training rows and check they carry what SFT/DFT needs."""
    examples = load_examples(cfg.data.train, limit=cfg.data.limit, task=cfg.data.task)
    for i, ex in enumerate(examples):
        if ex.completion is None:
            raise UserError(f"{row_name(ex, f'{cfg.data.train} row {i}')}: no reference response for {cfg.method} "
                            f"(needs a 'completion' column, an 'answer' column in verl data, or an "
                            f"assistant message last in 'messages')")
    return examples


def check_output_dir(cfg: Config) -> Path:
    """Refuse an output_dir that is a file, an earlier run (unless resuming) or not writable.

    Creates nothing: the directory is made only once the run is about to write to it."""
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"output_dir {out} exists and is not a directory")
    if out.is_dir() and not cfg.resume and any((out / name).exists() for name in ("checkpoints", "final")):
        raise UserError(f"output_dir {out} already holds a run; set resume=true to continue it "
                        f"or choose another output_dir")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"output_dir {out} is not writable ({existing} does not accept new files)")
    return out


def build_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norm weights (1-D parameters)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.train.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.train.lr, betas=(cfg.train.beta1, cfg.train.beta2),
                             fused=False)


def clip_gradients(model: torch.nn.Module, max_norm: float) -> float:
    """Clip the global gradient norm to max_norm (0 = no clipping); returns the norm before clipping.

    Sharded gradients (FSDP2) give the norm of the whole gradient, the same on every rank."""
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm if max_norm > 0 else float("inf"))
    return float(full_tensor(norm))


class PeriodicEval:
    """Greedy pass@1 on the held-out set every `eval.every` steps under the run's protocol, for learning curves."""

    def __init__(self, cfg: Config, tokenizer, amp):
        self.cfg, self.tokenizer, self.amp = cfg, tokenizer, amp
        self.examples = load_examples(cfg.eval.data, limit=cfg.eval.limit, task=cfg.eval.task) \
            if cfg.eval.every else []

    def due(self, step: int, total: int) -> bool:
        return bool(self.examples) and (step % self.cfg.eval.every == 0 or step == total)

    def __call__(self, model) -> dict[str, float]:
        e = self.cfg.eval
        r = evaluate(model, self.tokenizer, self.examples, protocol=self.cfg.protocol, template=self.cfg.data.template,
                     max_new_tokens=e.max_new_tokens, batch_size=e.batch_size, dtype=self.amp,
                     max_prompt_tokens=self.cfg.data.max_prompt_tokens)
        return {"eval_pass@1": r["overall"]["pass@1"], "eval_formatted": r["overall"]["formatted"],
                "eval_stopped": r["overall"]["stopped"]}


def load_policy(cfg: Config):
    """After the data checks: check eval data and output_dir, seed, then load the model to train.

    Returns (output_dir, device, model, tokenizer, autocast dtype); with lora.enabled the model is
    a peft model whose base weights are frozen. Nothing is written yet."""
    if cfg.eval.data:
        load_examples(cfg.eval.data, limit=1, task=cfg.eval.task)
    output_dir = check_output_dir(cfg)
    seed_everything(cfg.seed)
    device = pick_device(cfg.train.device)
    world = current_world()
    if device.type == "cuda" and device.index is None and world.distributed:  # torchrun: one GPU per rank
        device = torch.device("cuda", world.local_rank)
    model, tokenizer = load_model(cfg.model, seed=cfg.seed)
    if cfg.lora.enabled:  # only the adapters require gradients, so only they reach the optimizer

        model = apply_lora(model, cfg.lora)
    if cfg.train.gradient_checkpointing:  # each decoder layer recomputed in the backward (transformers)
        enable = getattr(model, "activation_checkpointing_enable", None)  # older transformers: only the gradient_ name
        if enable is not None:
            enable({"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.to(device).train()
    return output_dir, device, _maybe_shard(model, cfg), tokenizer, autocast_dtype(cfg.train.precision, device)


def _maybe_shard(model, cfg: Config):
    """parallel.strategy=fsdp2 under torchrun: shard the model over the ranks (unift.train.sharding)."""
    world = current_world()
    if cfg.parallel.strategy != "fsdp2" or not world.distributed:
        return model

    return shard(model, world)


def load_reference(cfg: Config, policy, device):
    """The frozen initial model of the KL term: with LoRA the policy itself, used with its adapter
    disabled (`unift.lora.disabled_adapter`); else a second copy of the starting model."""
    if cfg.lora.enabled:
        return policy
    reference, _ = load_model(cfg.model, seed=cfg.seed)
    return _maybe_shard(reference.to(device).eval().requires_grad_(False), cfg)
