"""One-off A/B: the built-in sampler's decode step eager vs compiled (rl.compile_decode), one process.

    python benchmarks/compiled_decode_ab.py 16 64 [--dtype bf16]

Embedded SmolLM2-135M, countdown prompts, 128 new tokens (EOS ignored, so every row runs the
whole budget), sampling at temperature 1. Each engine generates once untimed (the compiled one
compiles its bucket then: `compile_s`), then once timed. Prints one JSON line; results in
benchmarks/results/compiled-decode-*.json.
"""

import argparse
import json
import time

import torch

from unift.engine import HFEngine, SamplingParams
from unift.models import load_model
from unift.tasks.countdown import CountdownTask

p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
p.add_argument("batches", nargs="+", type=int)
p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
args = p.parse_args()
model, tok = load_model("smollm2-135m")
model.eval()
dtype = torch.bfloat16 if args.dtype == "bf16" else None
out = {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
       "torch": torch.__version__, "dtype": args.dtype}
for batch in args.batches:
    rows = CountdownTask().generate(batch, seed=3, min_numbers=3, max_numbers=4)
    prompts = [tok(ex.prompt)["input_ids"] for ex in rows]
    for name, compile_ in (("eager", False), ("compiled", True)):
        engine = HFEngine(model, tok, batch_size=batch, dtype=dtype, compile=compile_)
        engine.eos_ids = set()
        t = time.perf_counter()
        engine.generate(prompts, SamplingParams(max_new_tokens=128, temperature=1.0, stop=(), seed=0))
        first = time.perf_counter() - t
        t = time.perf_counter()
        done = engine.generate(prompts, SamplingParams(max_new_tokens=128, temperature=1.0, stop=(), seed=1))
        seconds = time.perf_counter() - t
        tokens = sum(len(c.token_ids) for c in done)
        out[f"{name}-{batch}"] = {"first_call_s": round(first, 1), "compile_s": round(engine.compile_seconds, 1),
                                  "s": round(seconds, 2), "tokens": tokens, "tokens_per_s": round(tokens / seconds, 1)}
        print(name, batch, out[f"{name}-{batch}"], flush=True)
print(json.dumps(out))
