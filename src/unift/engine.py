"""Rollout engine: batched sampling with a KV cache, behind one small interface.

    engine.generate(prompts: list[list[int]], params) -> list[Completion]

Token ids go in; each `Completion` carries the sampled token ids, the log-prob of every
sampled token under the sampling distribution (temperature-scaled logits, before top-p
filtering, as TRL/verl compute them) and a finish reason: "stop" (a stop string such as
`</answer>` was produced), "eos" or "length". Completions are grouped by prompt:
`params.n` consecutive entries per prompt. A vLLM engine can implement the same interface.

The built-in engine left-pads a batch, runs one forward over the prompts, then one token per
step with a static (pre-allocated) KV cache, and drops out of the loop as soon as every row has
finished (with `compile=True`, `rl.compile_decode`, each decode step is one compiled graph:
`unift.compiled_decode`). Like a vLLM engine it can generate with its own copy of the policy in a lower
precision (`dtype=torch.bfloat16` while the trainer keeps fp32 master weights); the trainer
pushes new weights into it with `sync_weights()` after each optimizer step, in memory. The
sampler's log-probs then differ slightly from the trainer's (see `unift.rl.policy_loss`,
truncated importance sampling).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from transformers import StaticCache

from unift.compiled_decode import CompiledDecoder, batch_bucket, length_bucket
from unift.logprobs import final_logit_transform
from unift.weights import is_sharded, named_weights, plain_copy


@dataclass
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 1.0   # 0 = greedy
    top_p: float = 1.0
    n: int = 1                 # samples per prompt
    stop: Sequence[str] = ("</answer>",)
    seed: int | None = None
    # one seed per prompt: sample k of prompt i draws from its own generator seeded by (seeds[i], k),
    # so what a prompt gets does not depend on how prompts are batched or split across ranks
    seeds: Sequence[int] | None = None


@dataclass
class Completion:
    prompt_index: int
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str = "length"  # "stop" | "eos" | "length"


class RolloutEngine(Protocol):
    """What the RL loop needs of a sampler (HFEngine here, unift.vllm_engine.VLLMEngine)."""

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]: ...

    def sync_weights(self) -> None:
        """Take the policy's current weights before the next `generate`."""

    def close(self) -> None:
        """Release what the engine holds (after the run's last collective)."""


def sample_next(logits: torch.Tensor, temperature: float, top_p: float,
                generator: torch.Generator | list[torch.Generator] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one token per row. logits: [B, V] fp32 -> (tokens [B], logprobs [B])."""
    if temperature <= 0:
        logp = logits.log_softmax(-1)
        tokens = logits.argmax(-1)
        return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)
    logp = (logits / temperature).log_softmax(-1)  # [B, V]
    probs = logp.exp()
    if top_p < 1.0:
        sorted_p, order = probs.sort(-1, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p  # always keeps the top token
        sorted_p = sorted_p * keep
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    tokens = sample_categorical(probs, generator)
    return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)


def sample_categorical(probs: torch.Tensor, generator: torch.Generator | list[torch.Generator] | None) -> torch.Tensor:
    """One draw per row by inverse CDF: probs [B, V] (unnormalised, >= 0) -> tokens [B].

    One uniform number per row instead of torch.multinomial's one per vocabulary entry (which
    costs ~30 ms per step at batch 32 x 49k on CPU). Zero-probability tokens are never drawn:
    the first index whose cumulative mass exceeds u is always one with positive mass.
    """
    cdf = probs.cumsum(-1)                                                           # [B, V]
    if isinstance(generator, list):  # one generator per row
        u = torch.cat([torch.rand((1, 1), generator=g, dtype=cdf.dtype) for g in generator]).to(probs.device)
    else:
        u = torch.rand((probs.shape[0], 1), generator=generator, device=probs.device, dtype=cdf.dtype)
    u = u * cdf[:, -1:]                                                              # [B, 1]
    tokens = torch.searchsorted(cdf, u, right=True).squeeze(-1)                      # [B]
    last_positive = (probs > 0).cumsum(-1).argmax(-1)                                # [B] (u rounded up to the total)
    return torch.minimum(tokens, last_positive)


class HFEngine:
    """Sampler over a Hugging Face causal LM (the policy being trained), with a static KV cache.

    dtype: generate with a copy of the policy in this dtype (bf16 halves the memory traffic of
    every decode step); None or the policy's own dtype generates with the policy itself.
    """

    def __init__(self, model, tokenizer, batch_size: int = 32, dtype: torch.dtype | None = None,
                 compile: bool = False):
        self.policy = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        own = next(model.parameters()).dtype
        if (dtype is None or dtype == own) and not is_sharded(model):
            self.model = model
        else:
            # a plain copy: a LoRA policy's adapters are merged into it, an FSDP2 policy's shards
            # are gathered into it (unift.weights.plain_copy)
            self.model = cast_parameters(plain_copy(model), dtype or own).eval().requires_grad_(False)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.eos_ids = end_token_ids(model, tokenizer)
        self.compiled = None
        if compile:  # one decode step as a compiled graph (unift.compiled_decode)
            self.compiled = CompiledDecoder(self.model, cache_keyword(self.model.get_decoder()))

    @property
    def compile_seconds(self) -> float:
        """Seconds spent compiling decode steps so far (0 without rl.compile_decode)."""
        return self.compiled.compile_seconds if self.compiled else 0.0

    @torch.no_grad()
    def sync_weights(self) -> None:
        """Copy the policy's current weights into the engine's copy (no-op without a copy).

        A LoRA policy gives its merged weights W0 + B A * alpha / r (`unift.weights.named_weights`)."""
        if self.model is self.policy:
            return
        for (name, dst), (src_name, src) in zip(self.model.named_parameters(), named_weights(self.policy)):
            if name != src_name or dst.shape != src.shape:
                raise RuntimeError(f"engine copy and policy differ at {name} / {src_name}: rebuild the engine")
            dst.copy_(src)

    def close(self) -> None:
        """Nothing to release: the engine holds only (a copy of) the policy."""

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        expanded = [i for i in range(len(prompts)) for _ in range(params.n)]
        generator = None
        device = next(self.model.parameters()).device
        if params.seed is not None:
            generator = torch.Generator(device=device).manual_seed(params.seed)
        # Similar lengths share a batch (less padding); results are put back in order.
        order = sorted(range(len(expanded)), key=lambda j: len(prompts[expanded[j]]))
        results: list[Completion | None] = [None] * len(expanded)
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(order), self.batch_size):
                chunk = order[start:start + self.batch_size]
                batch = [prompts[expanded[j]] for j in chunk]
                if params.seeds is not None:  # per-row generators, see SamplingParams.seeds
                    generator = [torch.Generator().manual_seed(int(params.seeds[expanded[j]]) * 1_000_003
                                                               + j % params.n) for j in chunk]
                generated = self._generate_batch(batch, params, generator)
                for j, completion in zip(chunk, generated):
                    completion.prompt_index = expanded[j]
                    results[j] = completion
        finally:
            self.model.train(was_training)
        return results  # type: ignore[return-value]

    def _generate_batch(self, prompts: list[list[int]], params: SamplingParams,
                        generator: torch.Generator | list[torch.Generator] | None) -> list[Completion]:
        device = next(self.model.parameters()).device
        b = len(prompts)
        width = max(len(p) for p in prompts)
        input_ids = torch.full((b, width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((b, width), dtype=torch.long)
        for i, p in enumerate(prompts):  # left padding
            input_ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
            attention[i, width - len(p):] = 1
        if self.compiled:
            return self._generate_compiled(input_ids, attention, params, generator)
        input_ids, attention = input_ids.to(device), attention.to(device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)

        out = [Completion(prompt_index=i) for i in range(b)]
        done = [False] * b
        stop_tail = max((len(s) for s in params.stop), default=0)
        decoder, head = self.model.get_decoder(), self.model.get_output_embeddings()
        cache = StaticCache(config=self.model.config, max_cache_len=width + params.max_new_tokens)
        past = {cache_keyword(decoder): cache}
        step_ids, step_pos, step_mask = input_ids, positions, attention
        cache_pos = torch.arange(width, device=device)
        for _ in range(params.max_new_tokens):
            hidden = decoder(input_ids=step_ids, attention_mask=step_mask, position_ids=step_pos,
                             cache_position=cache_pos, use_cache=True, **past).last_hidden_state
            cache_pos = cache_pos[-1:] + 1
            # The head sees a contiguous [B, H] matrix: a strided [B, 1, H] slice would make matmul
            # expand the [V, H] weight per row (a 1.5 s copy at batch 32 for a 49k vocabulary).
            logits = final_logit_transform(self.model.config, head(hidden[:, -1].contiguous()).float())  # [B, V]
            tokens, logps = sample_next(logits, params.temperature, params.top_p, generator)
            if self._record(tokens, logps, out, done, params.stop, stop_tail):
                break
            tokens = torch.where(torch.tensor(done, device=device), torch.full_like(tokens, self.pad_id), tokens)
            step_ids = tokens[:, None]
            step_pos = step_pos[:, -1:] + 1
            step_mask = torch.cat([step_mask, torch.ones((b, 1), dtype=step_mask.dtype, device=device)], dim=1)
        return out

    def _generate_compiled(self, input_ids: torch.Tensor, attention: torch.Tensor, params: SamplingParams,
                           generator) -> list[Completion]:
        """As `_generate_batch`, with every decode step one compiled graph of static shapes
        (unift.compiled_decode): rows padded to a batch bucket, one [B, L] mask updated in place."""
        device = next(self.model.parameters()).device
        b, width = input_ids.shape
        rows, length = batch_bucket(b, self.batch_size), length_bucket(width + params.max_new_tokens)
        ids = torch.full((rows, width), self.pad_id, dtype=torch.long)
        ids[:b] = input_ids
        mask = torch.zeros((rows, length), dtype=torch.long)
        mask[:b, :width] = attention
        mask[b:, width - 1] = 1  # padding rows see one token (a row that sees none gives NaN in attention)
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask[:, :width].cumsum(-1) - 1).clamp(min=0)
        if isinstance(generator, list):  # padding rows draw from generators of their own, never read
            generator = generator + [torch.Generator().manual_seed(0) for _ in range(rows - b)]
        cache = self.compiled.cache(rows, length)
        logits = self.compiled.forward(ids, mask[:, :width], positions, torch.arange(width, device=device),
                                       cache)  # prefill, eager: [rows, V]
        out = [Completion(prompt_index=i) for i in range(b)]
        done = [False] * b
        stop_tail = max((len(s) for s in params.stop), default=0)
        step_pos = positions[:, -1:]
        for t in range(params.max_new_tokens):
            tokens, logps = sample_next(logits, params.temperature, params.top_p, generator)
            if self._record(tokens[:b], logps[:b], out, done, params.stop, stop_tail) or t + 1 == params.max_new_tokens:
                break
            finished = torch.tensor(done + [True] * (rows - b), device=device)
            step_ids = torch.where(finished, torch.full_like(tokens, self.pad_id), tokens)[:, None]
            step_pos = step_pos + 1
            mask[:, width + t] = 1
            logits = self.compiled.step(step_ids, mask, step_pos, torch.tensor([width + t], device=device), cache)
        return out

    def _record(self, tokens: torch.Tensor, logps: torch.Tensor, out: list[Completion], done: list[bool],
                stops: Sequence[str], stop_tail: int) -> bool:
        """Append each unfinished row's sampled token and log-prob; mark EOS and stop strings.
        Returns whether every row has finished."""
        for i, (tok, logp) in enumerate(zip(tokens.tolist(), logps.tolist())):
            if done[i]:
                continue
            out[i].token_ids.append(tok)
            out[i].logprobs.append(logp)
            if tok in self.eos_ids:
                done[i], out[i].finish_reason = True, "eos"
            elif stop_tail and self._hit_stop(out[i].token_ids, stops, stop_tail):
                done[i], out[i].finish_reason = True, "stop"
        return all(done)

    def _hit_stop(self, ids: list[int], stops: Sequence[str], tail_chars: int) -> bool:
        # A stop string spans at most `tail_chars` tokens; decode only that tail.
        text = self.tokenizer.decode(ids[-tail_chars:], skip_special_tokens=False)
        return any(s in text for s in stops)


def cache_keyword(decoder) -> str:
    """The decoder's name for the KV cache: `cache` in current transformers, `past_key_values` in the
    older ones (the vLLM venv, many GPU images) and as a fallback (a deprecation warning otherwise)."""
    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"


def cast_parameters(model, dtype: torch.dtype):
    """Cast the weights only: buffers such as the rotary inverse frequencies stay fp32 (in bf16
    they are off by up to 0.4%, an angle error that grows with the position)."""
    for param in model.parameters():
        param.data = param.data.to(dtype)
    return model


def end_token_ids(model, tokenizer) -> set[int]:
    """EOS of the tokenizer plus every end token the model's generation config lists."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, (list, tuple)) else [configured])
    return {int(i) for i in ids if i is not None}


def completion_text(tokenizer, completion: Completion) -> str:
    return tokenizer.decode(completion.token_ids, skip_special_tokens=True)
