"""Where a decode step's time goes: torch.profiler over the built-in sampler, eager and compiled.

    PYTHONPATH=src python benchmarks/profile_decode.py [BATCH] [bf16]

Embedded SmolLM2-135M in fp32 (or the sampler's bf16 copy with `bf16`), BATCH prompts (default 16),
32 new tokens with EOS ignored; each engine runs once untimed (the compiled one compiles then),
once timed, once under the profiler. Prints the time and the top operators by self CPU time.
Results: benchmarks/results/decode-profile-20261202-avx2-fp32.txt (AVX2, fp32),
benchmarks/results/decode-profile-20261206-avx512bf16-bf16.txt (AVX512-BF16, bf16).
"""

import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from unift.engine import HFEngine, SamplingParams
from unift.models import load_model
from unift.tasks.countdown import CountdownTask

batch = int(sys.argv[1]) if len(sys.argv) > 1 else 16
dtype = torch.bfloat16 if "bf16" in sys.argv[2:] else None
model, tok = load_model("smollm2-135m")
model.eval()
prompts = [tok(ex.prompt)["input_ids"] for ex in CountdownTask().generate(batch, seed=3, min_numbers=3, max_numbers=4)]
params = SamplingParams(max_new_tokens=32, temperature=1.0, stop=(), seed=0)
for name, compile_ in (("eager", False), ("compiled", True)):
    engine = HFEngine(model, tok, batch_size=batch, dtype=dtype, compile=compile_)
    engine.eos_ids = set()
    engine.generate(prompts, params)
    started = time.perf_counter()
    engine.generate(prompts, params)
    print(name, "32 tokens", round(time.perf_counter() - started, 2), "s", flush=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        engine.generate(prompts, params)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18, max_name_column_width=60))
