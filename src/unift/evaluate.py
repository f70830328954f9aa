"""Evaluation: greedy pass@1 and sampled avg@k under a protocol, broken down by data_source.

The protocol (`unift.protocol`, default official) says how a response ends and how its answer
is read: under official every response is generated until EOS (or the chat template's end of
turn) or `max_new_tokens`, with no stop string, and scored as the official UFT scorers do.
Accuracy counts responses whose reward is exactly 1.0 (as in the UFT paper); "formatted"
counts responses whose answer could be parsed (reward > 0); "stopped" counts responses that
ended with EOS / end of turn by themselves (a response cut at a stop string or at the budget did
not), and `finish_reasons` counts eos / stop / length. avg@k is the mean accuracy over k samples
per prompt at the given temperature (the DFT paper's "mean_acc"), kept apart from the greedy
pass@1 ("acc"). Evaluation never uses hints.

Every evaluated response (greedy and each avg@k sample) is kept as a record: row, sample,
data_source, response, finish reason, token count, extracted answer, reward, reason;
`write_report` writes them to records.jsonl beside results.json.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from unift.data.loading import load_examples, row_name
from unift.data.render import render_prompt
from unift.device import autocast_dtype, pick_device
from unift.engine import (
    Completion,
    HFEngine,
    SamplingParams,
    cast_parameters,
    completion_text,
)
from unift.errors import UserError
from unift.files import create_dir, write_atomic
from unift.models import load_model
from unift.protocol import check, check_ground_truth, score, stop_strings
from unift.scoring import Scorer
from unift.tasks.base import CORRECT_SCORE, Example

FINISH_REASONS = ("eos", "stop", "length")


def evaluate(model, tokenizer, examples: list[Example], *, protocol: str = "official", template: str = "auto",
             max_new_tokens: int = 256, batch_size: int = 32, k: int = 0, temperature: float = 1.0,
             top_p: float = 1.0, seed: int = 0, dtype=None, max_prompt_tokens: int = 0,
             keep_samples: int = 5, scorer: Scorer | None = None) -> dict[str, Any]:
    """Score `model` on `examples`; returns {"overall": {...}, "by_source": {...}, "samples": [...],
    "records": [...], ...}: `samples` the first `keep_samples` greedy records (for a quick look).
    scorer: user reward functions (unift.scoring); default the built-in task of each row."""
    scorer = scorer or Scorer(protocol)
    check_rows(protocol, examples, scorer)
    prompts = [render_prompt(ex, tokenizer, template, max_prompt_tokens=max_prompt_tokens,
                             where=f"evaluation row {i}").input_ids for i, ex in enumerate(examples)]
    engine = HFEngine(model, tokenizer, batch_size=batch_size, dtype=dtype)
    stops = stop_strings(protocol)

    started = time.perf_counter()
    greedy = engine.generate(prompts, SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, stop=stops))
    sampled = []
    if k > 0:
        sampled = engine.generate(prompts, SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature,
                                                          top_p=top_p, n=k, seed=seed, stop=stops))
    seconds = time.perf_counter() - started

    records = make_records(scorer, examples, tokenizer, greedy, None)
    records += make_records(scorer, examples, tokenizer, sampled, k)
    per_source: dict[str, list[dict]] = defaultdict(list)
    for rec in records:
        per_source[rec["data_source"]].append(rec)
    t = scorer.threshold
    return {"overall": summarise(records, k, t),
            "by_source": {s: summarise(r, k, t) for s, r in sorted(per_source.items())},
            "protocol": protocol, "stop": list(stops), "seconds": seconds, "k": k, "temperature": temperature,
            "max_new_tokens": max_new_tokens, "samples": records[:min(keep_samples, len(greedy))],
            "records": records}


def check_rows(protocol: str, examples: list[Example], scorer: Scorer | None = None) -> None:
    """Malformed rows fail now, in one line, not after minutes of generation (user reward
    functions need no task or ground truth)."""
    check(protocol)
    if scorer is not None and scorer.funcs:
        if scorer.needs_ground_truth:
            for i, ex in enumerate(examples):
                if ex.ground_truth is None:
                    raise UserError(f"{row_name(ex, f'evaluation row {i}')} has no ground truth (column "
                                    f"ground_truth or reward_model.ground_truth) for a built-in reward")
        return
    for i, ex in enumerate(examples):
        where = row_name(ex, f"evaluation row {i}")
        if not ex.task:
            raise UserError(f"{where} has no task (no data_source column): pass --task")
        if ex.ground_truth is None:
            raise UserError(f"{where} has no ground truth (column ground_truth or reward_model.ground_truth)")
        check_ground_truth(protocol, ex, where)


def make_records(scorer: Scorer, examples: list[Example], tokenizer, completions: list[Completion],
                 k: int | None) -> list[dict[str, Any]]:
    """One record per completion (sample: None for greedy, else its index among the k)."""
    texts = [completion_text(tokenizer, c) for c in completions]
    mine = [examples[c.prompt_index] for c in completions]
    if scorer.funcs:
        batch = scorer.score(mine, texts, completion_ids=[list(c.token_ids) for c in completions])
        found = [{"answer": None, "reward": total, "reason": "", "rewards": {n: batch.parts[n][j] for n in batch.parts}}
                 for j, total in enumerate(batch.totals)]
    else:
        found = [{"answer": r.answer, "reward": r.score, "reason": r.reason}
                 for r in (score(scorer.protocol, ex, text) for ex, text in zip(mine, texts))]
    return [{"row": c.prompt_index, "sample": None if k is None else j % k, "data_source": ex.data_source or ex.task,
             "response": text, "finish_reason": c.finish_reason, "tokens": len(c.token_ids), **f}
            for j, (c, ex, text, f) in enumerate(zip(completions, mine, texts, found))]


def summarise(records: list[dict], k: int, threshold: float = CORRECT_SCORE) -> dict[str, Any]:
    """pass@1, formatted, stopped, mean tokens and finish reasons of the greedy records; avg@k of
    the sampled ones."""
    greedy = [r for r in records if r["sample"] is None]
    n = len(greedy)
    reasons = Counter(r["finish_reason"] for r in greedy)
    out: dict[str, Any] = {
        "n": n,
        "pass@1": sum(r["reward"] >= threshold for r in greedy) / n,
        "formatted": sum(r["reward"] > 0 for r in greedy) / n,
        "stopped": reasons["eos"] / n,
        "mean_tokens": sum(r["tokens"] for r in greedy) / n,
        "finish_reasons": {reason: reasons[reason] for reason in FINISH_REASONS},
    }
    if k > 0:
        out[f"avg@{k}"] = sum(r["reward"] >= threshold for r in records if r["sample"] is not None) / (n * k)
    return out


def evaluate_model(model_name: str, data: str | list[Example], *, protocol: str = "official", task: str = "",
                   limit: int = 0, k: int = 0, temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 256,
                   batch_size: int = 32, template: str = "auto", precision: str = "auto", device: str = "auto",
                   seed: int = 0, max_prompt_tokens: int = 0, check_out: Path | None = None,
                   scorer: Scorer | None = None) -> dict[str, Any]:
    """Load data (a source, or examples already loaded) and model by name and evaluate; the model
    runs wholly in the compute dtype (bf16 where supported), since evaluation needs no fp32 master
    weights."""
    examples = data if isinstance(data, list) else load_examples(data, limit=limit, task=task)
    check_rows(protocol, examples, scorer)
    if check_out is not None:  # fail before minutes of generation, not after
        create_dir(check_out, "--out")
    dev = pick_device(device)
    model, tokenizer = load_model(model_name)
    dtype = autocast_dtype(precision, dev)
    cast_parameters(model.to(dev), dtype or model.dtype)
    results = evaluate(model, tokenizer, examples, protocol=protocol, template=template,
                       max_new_tokens=max_new_tokens, batch_size=batch_size, k=k, temperature=temperature,
                       top_p=top_p, seed=seed, max_prompt_tokens=max_prompt_tokens, scorer=scorer)
    results["dtype"] = str(dtype or model.dtype).removeprefix("torch.")
    return results


def markdown_table(results: dict[str, Any], title: str = "") -> str:
    k = results.get("k", 0)
    cols = ["data_source", "n", "pass@1", "formatted", "stopped"] + ([f"avg@{k}"] if k else [])
    lines = [f"### {title}", ""] if title else []
    if results.get("protocol"):
        stop = ", ".join(results.get("stop") or []) or "none"
        lines += [f"protocol: {results['protocol']} (stop strings: {stop}; budget {results.get('max_new_tokens')} "
                  f"tokens)", ""]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    rows = list(results["by_source"].items()) + [("**all**", results["overall"])]
    for name, r in rows:
        cells = [name, str(r["n"]), f"{100 * r['pass@1']:.1f}%", f"{100 * r['formatted']:.1f}%",
                 f"{100 * r['stopped']:.1f}%" if "stopped" in r else "-"]
        if k:
            cells.append(f"{100 * r[f'avg@{k}']:.1f}%")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(results: dict[str, Any], out_dir: Path, title: str = "") -> None:
    """results.json (without the records), results.md and records.jsonl (one line per evaluated
    response) in out_dir, each written atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {key: value for key, value in results.items() if key != "records"}
    records = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results.get("records", []))
    for name, text in (("results.json", json.dumps(summary, indent=1)),
                       ("results.md", markdown_table(results, title)),
                       ("records.jsonl", records)):
        write_atomic(out_dir / name, text)
