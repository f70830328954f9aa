"""One decode step of the built-in sampler as a compiled graph (`rl.compile_decode`).

    step(ids [B, 1], mask [B, L], positions [B, 1], cache_position [1]) -> logits [B, V] fp32

The graph is the decoder over a static KV cache plus the LM head, compiled by `torch.compile`
(inductor: C++/OpenMP kernels on CPU, Triton and CUDA graphs on GPU with mode="reduce-overhead").
Its shapes never change inside a bucket, so it compiles once per bucket and then runs without
Python or module overhead per layer:
- cache length L: the prompt width plus max_new_tokens rounded up to a multiple of LENGTH_BUCKET;
- batch B: the next power of two (capped at the engine's batch size); the extra rows are
  padding that is never read;
- the attention mask is one [B, L] tensor updated in place (1 for the prompt and the tokens
  written so far), so its shape is static too.
One KV cache per bucket is kept and reset between batches (the graph stays valid for it).
Sampling (per-prompt generators, exact log-probs of the sampled tokens) stays outside the graph,
in `unift.engine.sample_next`, so compiled and eager sampling differ only by the float order of
the logits. Compile time is counted in `compile_seconds`, apart from the decode time.
"""

from __future__ import annotations

import shutil
import time

import torch
from torch.utils._triton import has_triton
from transformers import StaticCache

from unift.errors import UserError
from unift.logprobs import final_logit_transform

LENGTH_BUCKET = 256


def check_compile_supported(device: str) -> None:
    """A one-line error where torch.compile cannot build the decode step (before the model loads)."""
    if not torch._dynamo.is_dynamo_supported():
        raise UserError("rl.compile_decode=true: torch.compile does not support this Python/torch build; "
                        "set rl.compile_decode=false")
    on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    if on_cpu:
        cxx = torch._inductor.config.cpp.cxx[-1] or "g++"
        if shutil.which(cxx) is None and shutil.which("c++") is None:
            raise UserError(f"rl.compile_decode=true on the CPU needs a C++ compiler ({cxx} not found): install "
                            f"one or set rl.compile_decode=false")
    elif not has_triton():
        raise UserError("rl.compile_decode=true on the GPU needs Triton (not importable): install it or set "
                        "rl.compile_decode=false")


def length_bucket(tokens: int) -> int:
    return -(-tokens // LENGTH_BUCKET) * LENGTH_BUCKET


def batch_bucket(rows: int, most: int) -> int:
    return min(1 << (rows - 1).bit_length(), max(most, rows))


class CompiledDecoder:
    """The compiled step of one model and its KV cache per (batch, length) bucket."""

    def __init__(self, model, cache_keyword: str, keep: int = 2):
        self.model = model
        self.cache_keyword = cache_keyword
        self.keep = keep
        self.caches: dict[tuple[int, int], StaticCache] = {}
        self.compile_seconds = 0.0
        self.compiled_buckets: set[tuple[int, int]] = set()
        mode = "reduce-overhead" if next(model.parameters()).is_cuda else None  # CUDA graphs on GPU
        self._step = torch.compile(self.forward, dynamic=False, mode=mode)

    def cache(self, batch: int, length: int) -> StaticCache:
        """The bucket's KV cache, reset; the least recently used beyond `keep` are dropped."""
        key = (batch, length)
        cache = self.caches.pop(key, None)
        if cache is None:
            cache = StaticCache(config=self.model.config, max_cache_len=length)
        else:
            cache.reset()
        self.caches[key] = cache
        while len(self.caches) > self.keep:
            self.caches.pop(next(iter(self.caches)))
        return cache

    def step(self, ids, mask, positions, cache_position, cache) -> torch.Tensor:
        key = (ids.shape[0], mask.shape[1])
        if key in self.compiled_buckets:
            return self._step(ids, mask, positions, cache_position, cache)
        started = time.perf_counter()  # the first call of a bucket compiles: counted apart
        logits = self._step(ids, mask, positions, cache_position, cache)
        self.compile_seconds += time.perf_counter() - started
        self.compiled_buckets.add(key)
        return logits

    def forward(self, ids, mask, positions, cache_position, cache) -> torch.Tensor:
        """Eager: ids [B, T] (T = the prompt width in prefill, 1 in a decode step) -> last logits [B, V]."""
        hidden = self.model.get_decoder()(input_ids=ids, attention_mask=mask, position_ids=positions,
                                          cache_position=cache_position, use_cache=True,
                                          **{self.cache_keyword: cache}).last_hidden_state   # [B, T, H]
        head = self.model.get_output_embeddings()
        # contiguous: a strided [B, H] slice makes matmul expand the [V, H] head weight per row
        return final_logit_transform(self.model.config, head(hidden[:, -1].contiguous()).float())  # [B, V]
