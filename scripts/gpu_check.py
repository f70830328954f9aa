"""`make test-gpu`: unift's CUDA path checked on one device in a few minutes; one JSON of results.

    python scripts/gpu_check.py --prepare runs/gpu-assets   # on any machine: tokenizer and model shape
    python scripts/gpu_check.py                              # on the CUDA machine (`make test-gpu`)

Without a CUDA device it says so in one line and exits 0. `--device cpu --quick` runs the same
checks on the CPU with the tiny model only (tests/test_gpu_check.py does, with the packages a
bare GPU machine lacks made unimportable).

Models, built on the device from --assets (no download, no embedded-model package):
    tiny      unift's tiny random Llama (hidden 64, 2 layers) with the embedded tokenizer
    smollm2   random weights in SmolLM2-135M's shape (its config.json), the same tokenizer

Checks, each one record of results.json (name, ok, seconds, figures, or the error's last lines):
    env            device, capability, memory, torch / transformers / peft / CUDA versions
    peak           measured bf16 matmul TFLOP/s (8192^3, the figure MFU is computed against)
    train:M:MODEL  3 optimizer steps of `unift train` for M in sft, dft, rft, uft (KL and entropy
                   on), lora-uft; finite losses, 3 steps logged, a final model transformers loads
    resume         tiny SFT killed (SIGKILL) after step 3's update, resumed from step 2's
                   checkpoint: final weights against an unbroken run (max abs difference)
    eval           `unift eval` of the smollm2-shape model on 32 generated Countdown problems
    sampler:B      built-in sampler against HF `generate`, batch B in (16, 64), 128 new tokens
                   (sampling, bf16, EOS ignored): tokens/s of each and their ratio
    sft_throughput SFT steps of the smollm2-shape model: tokens/s and model-FLOPs utilisation
                   6 * parameters * tokens/s / peak
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))  # this tree's unift, installed or not (a bare GPU machine has no venv)
METHODS = {
    "sft": ["method=sft"],
    "dft": ["method=dft"],
    "rft": ["method=rft"],
    "uft": ["method=uft", "rl.kl_coef=0.05", "rl.entropy_coef=0.01", "hints.t_hint=3"],
    "lora-uft": ["method=uft", "lora.enabled=true", "train.lr=1e-4", "hints.t_hint=3"],
}
STEP_TIMEOUT_S = 240


# ----------------------------------------------------------------------------- assets

def prepare(assets: Path) -> None:
    """Write the tokenizer and SmolLM2-135M's config into `assets` (a few MB; `run` carries it)."""
    from unift.models import load_model
    from unift.models.embedded import embedded_model_dir

    _, tokenizer = load_model("tiny")
    tokenizer.save_pretrained(assets / "tokenizer")
    shape = assets / "smollm2-config"
    shape.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "generation_config.json"):
        (shape / name).write_text((embedded_model_dir() / name).read_text())
    print(f"gpu check: assets in {assets} (tokenizer, smollm2-config)")


def build_models(assets: Path, work: Path, quick: bool) -> dict[str, Path]:
    """Hugging Face directories of the check's models, with random weights, under `work`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from unift.models import save_model
    from unift.models.tiny import build_tiny_model

    tokenizer = AutoTokenizer.from_pretrained(assets / "tokenizer")
    models = {"tiny": save_model(build_tiny_model(tokenizer, seed=0), tokenizer, work / "tiny")}
    if not quick:
        config = AutoConfig.from_pretrained(assets / "smollm2-config")
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config)
        models["smollm2"] = save_model(model, tokenizer, work / "smollm2")
    return models


# ----------------------------------------------------------------------------- one check

def check(name: str, fn, results: list[dict]) -> dict:
    """Run fn() -> figures; record ok/failed with its time. A failing check does not stop the rest."""
    started = time.perf_counter()
    try:
        record = {"name": name, "ok": True, **(fn() or {})}
    except Exception as exc:  # noqa: BLE001 - every failure is a result to report
        detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
        record = {"name": name, "ok": False, "error": detail[-2000:]}
    record["seconds"] = round(time.perf_counter() - started, 2)
    results.append(record)
    status = "ok" if record["ok"] else f"FAILED: {record['error'].splitlines()[-1][:300]}"
    print(f"gpu check: {name:<22} {record['seconds']:7.1f} s  {status}", flush=True)
    return record


def unift(*args: str, env: dict | None = None, expect_kill: bool = False) -> subprocess.CompletedProcess:
    """`python -m unift ARGS` in a fresh process (as a user runs it), its output captured."""
    path = os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])
    proc = subprocess.run([sys.executable, "-m", "unift", *args], capture_output=True, text=True,
                          timeout=STEP_TIMEOUT_S, env={**os.environ, "PYTHONPATH": path, **(env or {})}, cwd=ROOT)
    if proc.returncode != 0 and not expect_kill:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        raise RuntimeError(f"unift {args[0]} exited {proc.returncode}: {tail}")
    return proc


def metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if "loss" in r and "step" in r]


# ----------------------------------------------------------------------------- checks

def environment(device: str) -> dict:
    import peft
    import torch
    import transformers

    props = torch.cuda.get_device_properties(0) if device == "cuda" else None
    return {"device": torch.cuda.get_device_name(0) if props else platform.processor() or "cpu",
            "capability": f"{props.major}.{props.minor}" if props else None,
            "memory_gb": round(props.total_memory / 2**30, 1) if props else None,
            "torch": torch.__version__, "cuda": torch.version.cuda, "transformers": transformers.__version__,
            "peft": peft.__version__, "python": platform.python_version()}


def matmul_peak(device: str, quick: bool) -> dict:
    import torch

    n = 512 if quick else 8192  # quick: a CPU without native bf16 emulates it at ~1 GFLOP/s
    a = torch.randn(n, n, dtype=torch.bfloat16, device=device)
    b = torch.randn(n, n, dtype=torch.bfloat16, device=device)
    for _ in range(3):
        a @ b
    _sync(device)
    reps, t = (3 if quick else 50), time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return {"bf16_tflops": 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e12, "n": n}


def train_run(method: str, model: Path, data: Path, out: Path, device: str, extra: list[str] = ()) -> dict:
    args = ["train", *METHODS[method], f"model={model}", f"data.train={data}", f"output_dir={out}",
            f"train.device={device}", "train.steps=3", "train.batch_size=8", "train.micro_batch_size=4",
            "rl.prompts_per_step=4", "rl.num_generations=4", "rl.max_new_tokens=64", "log.progress=false",
            "checkpoint.every=0", *extra]
    unift(*args)
    rows = metrics(out)
    losses = [r["loss"] for r in rows]
    if len(rows) != 3 or not all(_finite(x) for x in losses):
        raise RuntimeError(f"expected 3 steps with finite losses, got {losses}")
    loaded = _load_outside(out / "final")
    return {"losses": losses, "step_s": [r.get("step_time_s") for r in rows], **loaded}


def kill_and_resume(model: Path, data: Path, work: Path, device: str) -> dict:
    common = ["train", "method=sft", f"model={model}", f"data.train={data}", f"train.device={device}",
              "train.steps=4", "train.batch_size=4", "train.micro_batch_size=2", "train.lr=1e-3",
              "train.precision=fp32", "checkpoint.every=1", "log.progress=false"]
    unift(*common, f"output_dir={work / 'unbroken'}")
    killed = unift(*common, f"output_dir={work / 'broken'}", env={"UNIFT_TEST_KILL_AT": "update:3"}, expect_kill=True)
    if killed.returncode == 0:
        raise RuntimeError("the run was not killed at update:3")
    unift(*common, f"output_dir={work / 'broken'}", "resume=true")
    diff = _max_weight_diff(work / "unbroken" / "final", work / "broken" / "final")
    if diff > 1e-4:
        raise RuntimeError(f"resumed weights differ from the unbroken run by {diff:.3g} (> 1e-4)")
    return {"killed_returncode": killed.returncode, "max_abs_weight_diff": diff}


def evaluate(model: Path, test: Path, out: Path, device: str) -> dict:
    unift("eval", "--model", str(model), "--data", str(test), "--limit", "32", "--max-new-tokens", "128",
          "--device", device, "--out", str(out))
    overall = json.loads((out / "results.json").read_text())["overall"]
    return {k: overall[k] for k in ("n", "pass@1", "stopped", "mean_tokens")}


def sampler_vs_generate(model_dir: Path, batch: int, device: str, new_tokens: int = 128, reps: int = 3) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from unift.engine import HFEngine, SamplingParams
    from unift.tasks.countdown import CountdownTask

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).to(device).eval()
    prompts = [tokenizer(ex.prompt)["input_ids"] for ex in CountdownTask().generate(batch, seed=3)]
    engine = HFEngine(model, tokenizer, batch_size=batch, dtype=torch.bfloat16)
    engine.eos_ids = []  # random weights: every row runs the whole budget, in both systems
    params = SamplingParams(max_new_tokens=new_tokens, temperature=1.0, stop=())
    ours = _timed(lambda i: engine.generate(prompts, SamplingParams(**{**params.__dict__, "seed": i})), reps, device)
    tokenizer.padding_side = "left"
    enc = tokenizer.pad({"input_ids": prompts}, return_tensors="pt").to(device)

    def hf(i):
        torch.manual_seed(i)
        with torch.no_grad():
            return model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=True,
                                  temperature=1.0, top_k=0, top_p=1.0, pad_token_id=tokenizer.pad_token_id)

    theirs = _timed(hf, reps, device)
    tokens = batch * new_tokens
    return {"batch": batch, "new_tokens": new_tokens, "unift_tokens_per_s": tokens / ours,
            "hf_generate_tokens_per_s": tokens / theirs, "ratio": theirs / ours}


def sft_throughput(model: Path, data: Path, out: Path, device: str, params: int, peak_tflops: float | None,
                   quick: bool) -> dict:
    batch = 8 if quick else 64
    unift("train", "method=sft", f"model={model}", f"data.train={data}", f"output_dir={out}",
          f"train.device={device}", f"train.steps={3 if quick else 6}", f"train.batch_size={batch}",
          f"train.micro_batch_size={batch}", "log.progress=false", "log.tensorboard=false", "checkpoint.every=0")
    rows = metrics(out)[1:]  # the first step is a warm-up
    tokens_per_s = statistics.median(r["tokens_per_s"] for r in rows)
    result = {"batch": batch, "tokens_per_step": round(statistics.median(r["tokens_per_s"] * r["step_time_s"]
                                                                         for r in rows)),
              "tokens_per_s": tokens_per_s, "parameters": params}
    if peak_tflops:
        result["mfu"] = 6 * params * tokens_per_s / (peak_tflops * 1e12)
    return result


# ----------------------------------------------------------------------------- helpers

def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _timed(fn, reps: int, device: str) -> float:
    """Median seconds of fn(i) over reps calls after one warm-up."""
    fn(0)
    times = []
    for i in range(reps):
        _sync(device)
        t = time.perf_counter()
        fn(i + 1)
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and x == x and abs(x) != float("inf")


def _load_outside(path: Path) -> dict:
    """The final model as a user loads it: plain transformers, a few greedy tokens on the CPU."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    ids = tokenizer("Using the numbers [3, 5, 7], create an equation that equals 22.", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return {"outside_load": "transformers", "outside_new_tokens": int(out.shape[1] - ids["input_ids"].shape[1])}


def _max_weight_diff(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    if wa.keys() != wb.keys():
        raise RuntimeError("the two final models have different tensors")
    return max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)


def _parameters(model: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(model / "model.safetensors"), "pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


# ----------------------------------------------------------------------------- main

def run_checks(device: str, assets: Path, out: Path, quick: bool) -> list[dict]:
    from unift.data.export import write_jsonl
    from unift.tasks.countdown import CountdownTask

    results: list[dict] = []
    work = Path(tempfile.mkdtemp(prefix="unift-gpu-check-"))
    train_data, test_data = work / "train.jsonl", work / "test.jsonl"
    write_jsonl(CountdownTask().generate(256, seed=1, min_numbers=3, max_numbers=3), train_data)
    write_jsonl(CountdownTask().generate(64, seed=2, min_numbers=3, max_numbers=3), test_data)
    check("env", lambda: environment(device), results)
    peak = check("peak", lambda: matmul_peak(device, quick), results)
    models: dict[str, Path] = {}

    def build() -> dict:
        models.update(build_models(assets, work, quick))
        return {"built": sorted(models)}

    check("models", build, results)
    for model_name, model_dir in models.items():
        for method in METHODS:
            check(f"train:{method}:{model_name}",
                  lambda m=method, d=model_dir, n=model_name: train_run(m, d, train_data, work / f"{m}-{n}", device),
                  results)
    if "tiny" in models:
        check("resume", lambda: kill_and_resume(models["tiny"], train_data, work / "resume", device), results)
    big = models.get("smollm2") or models.get("tiny")
    if big:
        check("eval", lambda: evaluate(big, test_data, work / "eval", device), results)
        for batch in ((4,) if quick else (16, 64)):
            check(f"sampler:{batch}", lambda b=batch: sampler_vs_generate(big, b, device, 16 if quick else 128,
                                                                          1 if quick else 3), results)
        check("sft_throughput", lambda: sft_throughput(big, train_data, work / "throughput", device,
                                                       _parameters(big), peak.get("bf16_tflops"), quick), results)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"device": device, "quick": quick, "ok": all(r["ok"] for r in results), "checks": results}
    (out / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/gpu_check.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--prepare", metavar="DIR", help="write the tokenizer and model shape into DIR, then exit")
    p.add_argument("--assets", default="runs/gpu-assets", help="directory from --prepare (default: %(default)s)")
    p.add_argument("--out", default="runs/gpu-check", help="directory for results.json (default: %(default)s)")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cuda (default), or cpu to try the script")
    p.add_argument("--quick", action="store_true", help="tiny model only, small sizes (for the CPU)")
    args = p.parse_args(argv)
    if args.prepare:
        prepare(Path(args.prepare))
        return 0
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"gpu check: no CUDA device here (torch {torch.__version__}, CUDA {torch.version.cuda}); nothing checked")
        return 0
    if not (Path(args.assets) / "tokenizer").is_dir():
        print(f"gpu check: error: no tokenizer in {args.assets}: run `python scripts/gpu_check.py --prepare "
              f"{args.assets}` (or `make gpu-assets`) first, on a machine with unift installed", file=sys.stderr)
        return 2
    results = run_checks(args.device, Path(args.assets), Path(args.out), args.quick)
    failed = [r["name"] for r in results if not r["ok"]]
    print(f"gpu check: {len(results) - len(failed)}/{len(results)} ok"
          + (f"; failed: {', '.join(failed)}" if failed else "") + f"; results in {args.out}/results.json")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
