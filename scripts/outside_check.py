"""Check that a model trained by unift works outside unift: plain transformers (and vLLM), official scores.

    python scripts/outside_check.py MODEL_DIR DATA [--limit N] [--max-new-tokens 128]
        [--dtype fp32|bf16] [--batch-size 16] [--backend transformers|vllm|both] [--out FILE.json]

A model is only useful if it behaves the same when someone else serves it. unift generates with
its own engine, stop strings and reward code; a user will load the saved directory with
`transformers` or vLLM, generate until the model's end-of-sequence token and score with the
paper's code. So this script does exactly that, and nothing unift-specific:

- loads MODEL_DIR with `AutoTokenizer` / `AutoModelForCausalLM.from_pretrained` (no model code
  run) and generates greedily with `model.generate` (left padding, `max_new_tokens`,
  `do_sample=False`), with NO stop strings: transformers stops only on generation_config.json's
  eos_token_id (vLLM on that and the tokenizer's eos). A model that learned to end its answers
  with a token that is not listed there keeps talking, and that shows up here as a low
  "stopped" rate and an answer followed by more lines (which the official reward scores 0);
- renders the prompts exactly as unift does for generation (`unift.data.render.render_prompt`
  with template "auto"), so both see the same prompt tokens;
- decodes the generated tokens with skip_special_tokens=True and scores them with the port of
  the official UFT rewards, `unift.tasks.official.official_score` (routed by data_source).

`--backend vllm` runs the same greedy generation in vLLM (`LLM(model=MODEL_DIR, dtype, seed=0)`,
`SamplingParams(temperature=0, max_tokens=N)`, no stop, prompt token ids given directly) with
the interpreter of the project's `.venv-vllm` (or $UNIFT_VLLM_PYTHON), in a subprocess; prompts go in and token ids come
out through JSON files, and scoring happens here. `both` runs the two and reports how often they
produced the same tokens and the same reward.

Reported per data source and overall: n, pass@1 (reward == 1.0), formatted (reward > 0), stopped
(the generated tokens end with an end id: generation_config.eos_token_id, int or list, or the
tokenizer's eos, before running out of budget) and mean generated tokens. `--out` gets all of it
as JSON, with one record per example (index, data_source, response, stopped, n_tokens, answer,
reward, reason). Bad input (no such directory, no config.json, no data file) is a one-line error
and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
VLLM_PYTHON_ENV = "UNIFT_VLLM_PYTHON"
BACKENDS = ("transformers", "vllm", "both")
DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
WORKER_FLAG = "--vllm-worker"


class CheckError(Exception):
    """A mistake in the user's input: one line on stderr, exit status 2."""


def fail(message: str, status: int = 2) -> None:
    print(f"outside_check: error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(status)


# --------------------------------------------------------------------------------------------
# arguments


def parse_args(argv: list[str]) -> argparse.Namespace:
    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> None:  # one line, status 2 (argparse prints usage too)
            fail(message)

    ap = Parser(prog="outside_check.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", metavar="MODEL_DIR", help="Hugging Face model directory (e.g. a unift checkpoint's model/)")
    ap.add_argument("data", metavar="DATA", help=".jsonl or .parquet in a format unift reads")
    ap.add_argument("--limit", type=int, default=0, help="first N rows only (0: all)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--backend", choices=BACKENDS, default="transformers")
    ap.add_argument("--out", default="", help="write the full report (with per-example records) here as JSON")
    args = ap.parse_args(argv)
    if args.limit < 0:
        fail(f"--limit must be >= 0, got {args.limit}")
    if args.max_new_tokens < 1:
        fail(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.batch_size < 1:
        fail(f"--batch-size must be >= 1, got {args.batch_size}")
    return args


def check_paths(args: argparse.Namespace) -> None:
    model = Path(args.model_dir).expanduser()
    if not model.exists():
        raise CheckError(f"model directory {model} does not exist")
    if not model.is_dir():
        raise CheckError(f"model path {model} is not a directory")
    if not (model / "config.json").is_file():
        hint = " (a unift checkpoint keeps it in model/)" if (model / "model" / "config.json").is_file() else ""
        raise CheckError(f"model directory {model} has no config.json{hint}")
    data = Path(args.data).expanduser()
    if not data.is_file():
        raise CheckError(f"data file {data} does not exist")
    if data.suffix.lower() not in (".jsonl", ".parquet"):
        raise CheckError(f"data file {data} must be .jsonl or .parquet")
    if args.out and Path(args.out).is_dir():
        raise CheckError(f"--out {args.out} is a directory; give a file name")


# --------------------------------------------------------------------------------------------
# examples, prompts, end ids


def load_rows(args: argparse.Namespace, tokenizer):
    """Examples, their prompt token ids, and each one's official scorer (checked up front)."""
    from unift.data.loading import load_examples
    from unift.data.render import render_prompt
    from unift.errors import UserError
    from unift.protocol import check_ground_truth

    try:
        examples = load_examples(str(Path(args.data).expanduser()), limit=args.limit)
        prompts = [render_prompt(ex, tokenizer, "auto").input_ids for ex in examples]
        for i, ex in enumerate(examples):  # malformed rows and unknown sources fail here, before generation
            check_ground_truth("official", ex, ex.extra.get("where", f"row {i}"))
    except UserError as exc:
        raise CheckError(str(exc)) from None
    return examples, prompts


def _ids(value) -> list[int]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value if v is not None]
    return [int(value)]


def end_ids(model_dir: Path, tokenizer) -> tuple[list[int], list[int]]:
    """(ids transformers' generate stops on, every id counted as a stop): the first is
    generation_config.eos_token_id, the second adds the tokenizer's eos."""
    from transformers import GenerationConfig

    try:
        config_ids = _ids(GenerationConfig.from_pretrained(str(model_dir)).eos_token_id)
    except OSError:  # no generation_config.json: transformers falls back to config.json
        from transformers import AutoConfig

        config_ids = _ids(getattr(AutoConfig.from_pretrained(str(model_dir)), "eos_token_id", None))
    every = list(dict.fromkeys(config_ids + _ids(tokenizer.eos_token_id)))
    return config_ids, every


def trim(tokens: list[int], stop_on: list[int]) -> list[int]:
    """Generated tokens up to and including the first id generate stops on (what follows is padding)."""
    stops = set(stop_on)
    for i, tok in enumerate(tokens):
        if tok in stops:
            return tokens[: i + 1]
    return tokens


# --------------------------------------------------------------------------------------------
# backends


def generate_transformers(args, model_dir: Path, tokenizer, prompts: list[list[int]], stop_on: list[int]):
    """Greedy `model.generate` in batches, left padded; returns the generated ids of each prompt."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = getattr(torch, DTYPES[args.dtype])
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    dtype_kw = {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}
    try:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), trust_remote_code=False, **dtype_kw)
    except Exception as exc:  # noqa: BLE001 - damaged weights, unknown architecture, ...: the user's input
        raise CheckError(f"cannot load the model in {model_dir}: {' '.join(str(exc).split())[:300]}") from None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()
    pad = tokenizer.pad_token_id  # fills masked-out positions only: any id will do
    if pad is None:
        pad = (stop_on or [0])[0]
    outputs: list[list[int]] = []
    for start in range(0, len(prompts), args.batch_size):
        batch = prompts[start : start + args.batch_size]
        width = max(len(p) for p in batch)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=device)
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.max_new_tokens,
                                 do_sample=False, num_beams=1)
        for row in out[:, width:].tolist():
            outputs.append(trim(row, stop_on))
    return outputs


def vllm_python() -> Path | None:
    """The vLLM venv's interpreter ($UNIFT_VLLM_PYTHON overrides the project's .venv-vllm), if it exists."""
    python = Path(os.environ.get(VLLM_PYTHON_ENV) or VLLM_PYTHON).expanduser()
    return python if python.is_file() else None


def generate_vllm(args, model_dir: Path, prompts: list[list[int]], python: Path):
    """The same greedy generation in vLLM, in a subprocess with the vLLM venv's interpreter."""
    with tempfile.TemporaryDirectory(prefix="outside-check-") as tmp:
        request, reply = Path(tmp) / "request.json", Path(tmp) / "reply.json"
        request.write_text(json.dumps({"model": str(model_dir.resolve()), "dtype": DTYPES[args.dtype],
                                       "max_tokens": args.max_new_tokens, "prompts": prompts}))
        proc = subprocess.run([str(python), str(Path(__file__).resolve()), WORKER_FLAG, str(request), str(reply)],
                              capture_output=True, text=True)
        if proc.returncode != 0 or not reply.is_file():
            lines = [line for line in (proc.stderr or proc.stdout or "").splitlines() if line.strip()]
            raise RuntimeError(f"vLLM run failed (exit {proc.returncode}): {lines[-1] if lines else 'no output'}")
        result = json.loads(reply.read_text())
    return [r["token_ids"] for r in result["outputs"]], [r["finish_reason"] for r in result["outputs"]]


def vllm_worker(request_path: str, reply_path: str) -> None:
    """Runs in the vLLM venv: no unift import needed."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")
    request = json.loads(Path(request_path).read_text())
    from vllm import LLM, SamplingParams

    llm = LLM(model=request["model"], dtype=request["dtype"], seed=0, enforce_eager=True)
    params = SamplingParams(temperature=0, max_tokens=request["max_tokens"])
    outs = llm.generate([{"prompt_token_ids": p} for p in request["prompts"]], params, use_tqdm=False)
    Path(reply_path).write_text(json.dumps({"outputs": [
        {"token_ids": list(o.outputs[0].token_ids), "finish_reason": o.outputs[0].finish_reason,
         "stop_reason": o.outputs[0].stop_reason} for o in outs]}))


# --------------------------------------------------------------------------------------------
# scoring and the report


def score(examples, generated: list[list[int]], tokenizer, every_end: list[int]) -> list[dict]:
    from unift.tasks.official import official_score

    ends = set(every_end)
    records = []
    for index, (ex, tokens) in enumerate(zip(examples, generated)):
        response = tokenizer.decode(tokens, skip_special_tokens=True)
        reward = official_score(response, ex.ground_truth, data_source=ex.data_source, task=ex.task)
        stopped = bool(tokens) and tokens[-1] in ends  # generation never goes past the budget
        records.append({"index": index, "data_source": ex.data_source, "response": response,
                        "stopped": stopped, "n_tokens": len(tokens), "answer": reward.answer,
                        "reward": reward.score, "reason": reward.reason})
    return records


def summarize(records: list[dict]) -> dict:
    def stats(rows: list[dict]) -> dict:
        n = len(rows)
        return {"n": n,
                "pass@1": sum(r["reward"] == 1.0 for r in rows) / n,
                "formatted": sum(r["reward"] > 0 for r in rows) / n,
                "stopped": sum(r["stopped"] for r in rows) / n,
                "mean_tokens": sum(r["n_tokens"] for r in rows) / n}

    sources = sorted({r["data_source"] for r in records})
    return {"overall": stats(records),
            "by_data_source": {s: stats([r for r in records if r["data_source"] == s]) for s in sources}}


def table(report: dict) -> str:
    head = f"{'backend':<13} {'data_source':<36} {'n':>5} {'pass@1':>7} {'formatted':>9} {'stopped':>8} {'tokens':>7}"
    lines = [head, "-" * len(head)]
    for backend, result in report["backends"].items():
        if "summary" not in result:
            lines.append(f"{backend:<13} {result.get('error', 'no result')}")
            continue
        rows = list(result["summary"]["by_data_source"].items()) + [("all", result["summary"]["overall"])]
        for source, s in rows:
            lines.append(f"{backend:<13} {source[:36]:<36} {s['n']:>5} {s['pass@1']:>7.3f} {s['formatted']:>9.3f} "
                         f"{s['stopped']:>8.3f} {s['mean_tokens']:>7.1f}")
    if "agreement" in report:
        a = report["agreement"]
        lines.append(f"transformers vs vllm: same tokens {a['same_tokens']:.3f}, same reward {a['same_reward']:.3f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    check_paths(args)
    try:
        import unift  # noqa: F401
    except ImportError:  # run from a checkout without `pip install -e .`
        sys.path.insert(0, str(REPO / "src"))
    backends = ["transformers", "vllm"] if args.backend == "both" else [args.backend]
    python = vllm_python()
    if "vllm" in backends and python is None:
        where = os.environ.get(VLLM_PYTHON_ENV) or VLLM_PYTHON
        if args.backend == "vllm":
            raise CheckError(f"--backend vllm needs the vLLM venv at {where} (make test-vllm builds it)")
        print(f"outside_check: no vLLM venv at {where}: running transformers only", file=sys.stderr)
        backends = ["transformers"]

    from transformers import AutoTokenizer

    model_dir = Path(args.model_dir).expanduser()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001
        raise CheckError(f"cannot load the tokenizer in {model_dir}: {' '.join(str(exc).split())[:300]}") from None
    tokenizer.padding_side = "left"
    examples, prompts = load_rows(args, tokenizer)
    stop_on, every_end = end_ids(model_dir, tokenizer)

    report: dict = {"model": str(model_dir), "data": args.data, "limit": args.limit,
                    "max_new_tokens": args.max_new_tokens, "dtype": args.dtype, "batch_size": args.batch_size,
                    "generation_config_eos_token_ids": stop_on, "end_token_ids": every_end, "backends": {}}
    status = 0
    generated_by: dict[str, list[list[int]]] = {}
    for backend in backends:
        started = time.perf_counter()
        finish = None
        try:
            if backend == "transformers":
                generated = generate_transformers(args, model_dir, tokenizer, prompts, stop_on)
            else:
                generated, finish = generate_vllm(args, model_dir, prompts, python)
        except RuntimeError as exc:
            print(f"outside_check: {backend}: {exc}", file=sys.stderr)
            report["backends"][backend] = {"error": str(exc)}
            status = 1
            continue
        generated_by[backend] = generated
        records = score(examples, generated, tokenizer, every_end)
        if finish is not None:
            for record, reason in zip(records, finish):
                record["finish_reason"] = reason
        report["backends"][backend] = {"seconds": round(time.perf_counter() - started, 2),
                                       "summary": summarize(records), "records": records}
    if len(generated_by) == 2:
        n = len(examples)
        a, b = (report["backends"][k]["records"] for k in ("transformers", "vllm"))
        report["agreement"] = {
            "same_tokens": sum(x == y for x, y in zip(generated_by["transformers"], generated_by["vllm"])) / n,
            "same_reward": sum(x["reward"] == y["reward"] for x, y in zip(a, b)) / n}
    print(table(report))
    if args.out:
        out = Path(args.out).expanduser()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {out}")
    return status


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [WORKER_FLAG]:
        vllm_worker(argv[1], argv[2])
        return 0
    args = parse_args(argv)
    try:
        return run(args)
    except CheckError as exc:
        fail(str(exc))
    return 2


if __name__ == "__main__":
    sys.exit(main())
