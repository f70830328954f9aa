"""Rollout engine: batched sampling with a KV cache, behind one small interface.

    engine.generate(prompts: list[list[int]], params) -> list[Completion]

Token ids go in; each `Completion` carries the sampled token ids, the log-prob of every
sampled token under the sampling distribution (temperature-scaled logits, before top-p
filtering, as TRL/verl compute them) and a finish reason: "stop" (a stop string such as
`</answer>` was produced), "eos" or "length". Completions are grouped by prompt:
`params.n` consecutive entries per prompt. A vLLM engine can implement the same interface.

The built-in engine left-pads a batch, runs one forward over the prompts, then one token per
step with the cache, and drops out of the loop as soon as every row has finished.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import torch


@dataclass
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 1.0   # 0 = greedy
    top_p: float = 1.0
    n: int = 1                 # samples per prompt
    stop: Sequence[str] = ("</answer>",)
    seed: int | None = None


@dataclass
class Completion:
    prompt_index: int
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str = "length"  # "stop" | "eos" | "length"


class RolloutEngine(Protocol):
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]: ...


def sample_next(logits: torch.Tensor, temperature: float, top_p: float,
                generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
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
    tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)


class HFEngine:
    """Sampler over a Hugging Face causal LM (the policy being trained), with a KV cache."""

    def __init__(self, model, tokenizer, batch_size: int = 32, autocast_dtype: torch.dtype | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.autocast_dtype = autocast_dtype
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.eos_ids = end_token_ids(model, tokenizer)

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        device = next(self.model.parameters()).device.type
        return torch.autocast(device_type=device, dtype=self.autocast_dtype)

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
                # One autocast region per batch: the bf16 copies of the weights are cast once and
                # reused by every decode step (autocast caches casts of leaf parameters).
                with self._autocast():
                    generated = self._generate_batch(batch, params, generator)
                for j, completion in zip(chunk, generated):
                    completion.prompt_index = expanded[j]
                    results[j] = completion
        finally:
            self.model.train(was_training)
        return results  # type: ignore[return-value]

    def _generate_batch(self, prompts: list[list[int]], params: SamplingParams,
                        generator: torch.Generator | None) -> list[Completion]:
        device = next(self.model.parameters()).device
        b = len(prompts)
        width = max(len(p) for p in prompts)
        input_ids = torch.full((b, width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((b, width), dtype=torch.long)
        for i, p in enumerate(prompts):  # left padding
            input_ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
            attention[i, width - len(p):] = 1
        input_ids, attention = input_ids.to(device), attention.to(device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)

        out = [Completion(prompt_index=i) for i in range(b)]
        done = [False] * b
        stop_tail = max((len(s) for s in params.stop), default=0)
        past = None
        step_ids, step_pos, step_mask = input_ids, positions, attention
        for _ in range(params.max_new_tokens):
            result = self.model(input_ids=step_ids, attention_mask=step_mask, position_ids=step_pos,
                                past_key_values=past, use_cache=True, logits_to_keep=1)
            past = result.past_key_values
            logits = result.logits[:, -1, :].float()  # [B, V]
            tokens, logps = sample_next(logits, params.temperature, params.top_p, generator)
            for i in range(b):
                if done[i]:
                    continue
                tok = int(tokens[i])
                out[i].token_ids.append(tok)
                out[i].logprobs.append(float(logps[i]))
                if tok in self.eos_ids:
                    done[i], out[i].finish_reason = True, "eos"
                elif stop_tail and self._hit_stop(out[i].token_ids, params.stop, stop_tail):
                    done[i], out[i].finish_reason = True, "stop"
            if all(done):
                break
            tokens = torch.where(torch.tensor(done, device=device), torch.full_like(tokens, self.pad_id), tokens)
            step_ids = tokens[:, None]
            step_pos = step_pos[:, -1:] + 1
            step_mask = torch.cat([step_mask, torch.ones((b, 1), dtype=step_mask.dtype, device=device)], dim=1)
        return out

    def _hit_stop(self, ids: list[int], stops: Sequence[str], tail_chars: int) -> bool:
        # A stop string spans at most `tail_chars` tokens; decode only that tail.
        text = self.tokenizer.decode(ids[-tail_chars:], skip_special_tokens=False)
        return any(s in text for s in stops)


def end_token_ids(model, tokenizer) -> set[int]:
    """EOS of the tokenizer plus every end token the model's generation config lists."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, (list, tuple)) else [configured])
    return {int(i) for i in ids if i is not None}


def completion_text(tokenizer, completion: Completion) -> str:
    return tokenizer.decode(completion.token_ids, skip_special_tokens=True)
