"""Forward and backward of one micro-batch of the memory workload (2 x 1,088 tokens, embedded
model, fp32): the decoder alone, full logits as TRL computes them, and unift's chunked log-probs.

    PYTHONPATH=src python benchmarks/logprob_cost.py

Best of two runs each. Result of 2026-12-02 in docs/performance.md (memory section).
"""

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import memory  # noqa: E402  benchmarks/memory.py, beside this file

from unift.logprobs import model_chunk, sequence_logprobs_and_entropy  # noqa: E402
from unift.models import load_model  # noqa: E402

model, _ = load_model("smollm2-135m")
model.train()
ids = torch.tensor([p + r for p, r in memory.token_rows(2)])
att = torch.ones_like(ids)
mask = torch.zeros(ids.shape[0], ids.shape[1] - 1, dtype=torch.bool)
mask[:, memory.PROMPT_TOKENS - 1:] = True  # the response's next tokens


def decoder_only():
    model.get_decoder()(input_ids=ids, attention_mask=att).last_hidden_state.square().mean().backward()


def full_logits():
    logits = model(input_ids=ids, attention_mask=att).logits[:, :-1].float()   # [2, T-1, V]
    (torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0] * mask).sum().backward()


def chunked(chunk, with_entropy):
    return lambda: sequence_logprobs_and_entropy(model, ids, att, mask, chunk=chunk,
                                                 with_entropy=with_entropy)[0].sum().backward()


chunk = model_chunk(model, 64)
for label, fn in (("decoder only", decoder_only), ("full logits (as TRL)", full_logits),
                  (f"unift, chunks of {chunk}, entropy (default)", chunked(chunk, True)),
                  (f"unift, chunks of {chunk}, no entropy", chunked(chunk, False)),
                  ("unift, one chunk, no entropy", chunked(10 ** 9, False))):
    times = []
    for _ in range(2):
        model.zero_grad(set_to_none=True)
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    print(f"{label:45s} {min(times):6.1f} s", flush=True)
