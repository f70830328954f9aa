"""Evaluation: greedy pass@1 and sampled avg@k with task rewards, broken down by data_source.

Accuracy counts responses whose reward is exactly 1.0 (as in the UFT paper); "formatted"
counts responses whose answer could be parsed (reward > 0). avg@k is the mean accuracy over k
samples per prompt at the given temperature (the DFT paper's "mean_acc"), kept apart from the
greedy pass@1 ("acc"). Evaluation never uses hints.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from unift.data.render import render_prompt
from unift.engine import HFEngine, SamplingParams, cast_parameters, completion_text
from unift.errors import UserError
from unift.tasks import get_task
from unift.tasks.base import CORRECT_SCORE, Example


def evaluate(model, tokenizer, examples: list[Example], *, template: str = "auto", max_new_tokens: int = 256,
             batch_size: int = 32, k: int = 0, temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
             dtype=None, max_prompt_tokens: int = 0, keep_samples: int = 5) -> dict[str, Any]:
    """Score `model` on `examples`; returns {"overall": {...}, "by_source": {...}, "samples": [...]}."""
    for i, ex in enumerate(examples):
        if not ex.task:
            raise UserError(f"evaluation row {i} has no task (no data_source column): pass --task")
        if ex.ground_truth is None:
            raise UserError(f"evaluation row {i} has no ground truth (column ground_truth or "
                            f"reward_model.ground_truth)")
    tasks = {ex.task: get_task(ex.task) for ex in examples}

    def score(i: int, text: str):
        ex = examples[i]
        try:
            return tasks[ex.task].score(text, ex.ground_truth)
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f"evaluation row {i}: malformed ground truth for task {ex.task} "
                            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None

    for i in range(len(examples)):  # malformed ground truths fail now, not after generation
        score(i, "<answer> 0 </answer>")
    prompts = [render_prompt(ex, tokenizer, template, max_prompt_tokens=max_prompt_tokens,
                             where=f"evaluation row {i}").input_ids for i, ex in enumerate(examples)]
    engine = HFEngine(model, tokenizer, batch_size=batch_size, dtype=dtype)

    started = time.perf_counter()
    greedy = engine.generate(prompts, SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0))
    sampled = []
    if k > 0:
        sampled = engine.generate(prompts, SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature,
                                                          top_p=top_p, n=k, seed=seed))
    seconds = time.perf_counter() - started

    per_source: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    samples = []
    for i, (ex, comp) in enumerate(zip(examples, greedy)):
        text = completion_text(tokenizer, comp)
        reward = score(i, text)
        row = per_source[ex.data_source or ex.task]
        row["n"] += 1
        row["correct"] += reward.score >= CORRECT_SCORE
        row["formatted"] += reward.score > 0
        row["tokens"] += len(comp.token_ids)
        if len(samples) < keep_samples:
            samples.append({"data_source": ex.data_source, "response": text, "reward": reward.score,
                            "answer": reward.answer})
    for comp in sampled:
        ex = examples[comp.prompt_index]
        score_ = score(comp.prompt_index, completion_text(tokenizer, comp)).score
        per_source[ex.data_source or ex.task]["sampled_correct"] += score_ >= CORRECT_SCORE

    def summarise(row: dict[str, float]) -> dict[str, float]:
        n = row["n"]
        out = {"n": int(n), "pass@1": row["correct"] / n, "formatted": row["formatted"] / n,
               "mean_tokens": row["tokens"] / n}
        if k > 0:
            out[f"avg@{k}"] = row["sampled_correct"] / (n * k)
        return out

    total: dict[str, float] = defaultdict(float)
    for row in per_source.values():
        for key, value in row.items():
            total[key] += value
    return {"overall": summarise(total), "by_source": {s: summarise(r) for s, r in sorted(per_source.items())},
            "seconds": seconds, "k": k, "temperature": temperature, "max_new_tokens": max_new_tokens,
            "samples": samples}


def evaluate_model(model_name: str, data: str, *, task: str = "", limit: int = 0, k: int = 0,
                   temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 256, batch_size: int = 32,
                   template: str = "auto", precision: str = "auto", device: str = "auto", seed: int = 0,
                   max_prompt_tokens: int = 0, check_out: Path | None = None) -> dict[str, Any]:
    """Load data and model by name and evaluate; the model runs wholly in the compute dtype
    (bf16 where supported), since evaluation needs no fp32 master weights."""
    from unift.data.loading import load_examples
    from unift.device import autocast_dtype, pick_device
    from unift.models import load_model

    examples = load_examples(data, limit=limit, task=task)
    if check_out is not None:  # fail before minutes of generation, not after
        from unift.train.setup import create_dir

        create_dir(check_out, "--out")
    dev = pick_device(device)
    model, tokenizer = load_model(model_name)
    dtype = autocast_dtype(precision, dev)
    cast_parameters(model.to(dev), dtype or model.dtype)
    return evaluate(model, tokenizer, examples, template=template, max_new_tokens=max_new_tokens,
                    batch_size=batch_size, k=k, temperature=temperature, top_p=top_p, seed=seed,
                    max_prompt_tokens=max_prompt_tokens)


def markdown_table(results: dict[str, Any], title: str = "") -> str:
    k = results.get("k", 0)
    cols = ["data_source", "n", "pass@1", "formatted"] + ([f"avg@{k}"] if k else [])
    lines = ([f"### {title}", ""] if title else []) + ["| " + " | ".join(cols) + " |",
                                                       "|" + "---|" * len(cols)]
    rows = list(results["by_source"].items()) + [("**all**", results["overall"])]
    for name, r in rows:
        cells = [name, str(r["n"]), f"{100 * r['pass@1']:.1f}%", f"{100 * r['formatted']:.1f}%"]
        if k:
            cells.append(f"{100 * r[f'avg@{k}']:.1f}%")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(results: dict[str, Any], out_dir: Path, title: str = "") -> None:
    """results.json and results.md in out_dir, each written atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (("results.json", json.dumps(results, indent=1)),
                       ("results.md", markdown_table(results, title))):
        tmp = out_dir / f".{name}.tmp-{os.getpid()}"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out_dir / name)
