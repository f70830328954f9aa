"""`unift token-probs`: which reference tokens does a model give low probability?

Each reference response (prompt + completion + end token, rendered exactly as SFT/DFT train on
it) is scored teacher-forced; per model the report lists the mean token probability, the share
of tokens below 0.1 and 0.5, the mean probability of the end token (EOS / end of turn: a model
that never learned to stop gives it almost nothing), the token strings with the lowest mean
probability, and the single lowest positions with their context. DFT weights each token's loss by
its own detached probability (DFT paper, eq. 8), so a token that starts near p = 0 is hardly
trained: this command shows in a minute whether that happened.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from unift.data.loading import load_examples
from unift.data.render import TARGET, render_sft
from unift.device import pick_device
from unift.errors import UserError
from unift.files import create_dir, write_atomic
from unift.logprobs import sequence_logprobs
from unift.models import load_model
from unift.tasks.base import Example


@torch.no_grad()
def reference_probs(model, tokenizer, examples: list[Example], template: str = "auto") -> list[dict[str, Any]]:
    """Per example: the target tokens with p(token | prefix) under teacher forcing, in fp32."""
    device = next(model.parameters()).device
    out = []
    for i, ex in enumerate(examples):
        r = render_sft(ex, tokenizer, template, where=f"row {i}")
        ids = torch.tensor([r.input_ids], device=device)                   # [1, T]
        mask = torch.tensor([r.roles[1:]], device=device) == TARGET         # [1, T-1]
        logp = sequence_logprobs(model, ids, torch.ones_like(ids), mask)    # [1, T-1]
        targets = [t for t, role in zip(r.input_ids[1:], r.roles[1:]) if role == TARGET]
        probs = logp[mask].exp().tolist()
        out.append({"row": i, "tokens": targets, "probs": probs})
    return out


def summarise(scored: list[dict[str, Any]], tokenizer, top: int = 15, min_count: int = 2) -> dict[str, Any]:
    probs = [p for s in scored for p in s["probs"]]
    if not probs:
        raise UserError("no reference tokens to score")
    by_token: dict[int, list[float]] = defaultdict(list)
    positions = []
    for s in scored:
        for j, (token, p) in enumerate(zip(s["tokens"], s["probs"])):
            by_token[token].append(p)
            positions.append((p, s["row"], j, token))
    ends = [s["probs"][-1] for s in scored if s["probs"]]  # the end token closes every target
    worst_tokens = sorted(((sum(v) / len(v), t, len(v)) for t, v in by_token.items() if len(v) >= min_count))[:top]
    lowest = sorted(positions)[:top]
    by_row = {s["row"]: s["tokens"] for s in scored}
    return {
        "tokens": len(probs), "mean_prob": sum(probs) / len(probs),
        "below_0.1": sum(p < 0.1 for p in probs) / len(probs), "below_0.5": sum(p < 0.5 for p in probs) / len(probs),
        "end_token_mean_prob": sum(ends) / len(ends),
        "worst_tokens": [{"token": tokenizer.decode([t]), "id": t, "count": n, "mean_prob": m}
                         for m, t, n in worst_tokens],
        "lowest_positions": [{"row": row, "position": j, "token": tokenizer.decode([t]), "prob": p,
                              "context": tokenizer.decode(by_row[row][max(0, j - 8):j])}
                             for p, row, j, t in lowest],
    }


def run_token_probs(models: list[str], data: str, *, limit: int = 50, top: int = 15, template: str = "auto",
                    task: str = "", device: str = "auto", out: Path | None = None) -> dict[str, Any]:
    examples = load_examples(data, limit=limit, task=task)
    missing = [i for i, ex in enumerate(examples) if ex.completion is None]
    if missing:
        raise UserError(f"{data} row {missing[0]} has no reference response (completion / answer): "
                        f"token-probs scores reference responses")
    if out is not None:
        create_dir(out, "--out")
    dev = pick_device(device)
    results = {}
    for name in models:
        model, tokenizer = load_model(name)
        model.to(dev).float().eval()
        results[name] = summarise(reference_probs(model, tokenizer, examples, template), tokenizer, top)
        del model
    if out is not None:
        write_atomic(out / "token_probs.json", json.dumps(results, indent=1, ensure_ascii=False))
        write_atomic(out / "token_probs.md", markdown(results))
    return results


def markdown(results: dict[str, Any]) -> str:
    lines = []
    for name, r in results.items():
        lines += [f"## {name}", "",
                  f"{r['tokens']} reference tokens: mean p {r['mean_prob']:.3f}, p < 0.1: {100 * r['below_0.1']:.1f}%, "
                  f"p < 0.5: {100 * r['below_0.5']:.1f}%, end token mean p {r['end_token_mean_prob']:.3f}", "",
                  "| token | count | mean p |", "|---|---|---|"]
        lines += [f"| {t['token']!r} | {t['count']} | {t['mean_prob']:.3f} |" for t in r["worst_tokens"]]
        lines += ["", "| row | position | context | token | p |", "|---|---|---|---|---|"]
        lines += [f"| {p['row']} | {p['position']} | {p['context']!r} | {p['token']!r} | {p['prob']:.4f} |"
                  for p in r["lowest_positions"]]
        lines.append("")
    return "\n".join(lines).replace("\\n", "⏎")
