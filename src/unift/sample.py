"""`unift sample`: the offline-RL data pipeline (DFT paper, section 5: rejection sampling).

Sample k responses per prompt from a model, score each with the task reward under the protocol
(official by default: generated until EOS or the budget, answers read as the official scorers
do), keep the verified ones and write a file `unift train` reads unchanged: TRL prompt-completion
JSONL (a conversational prompt gets an assistant-message completion), with ground_truth,
data_source and task kept, plus reward, row (the source row) and sample.

What is kept (`--keep correct`, the default): responses with reward 1.0 that ended by
themselves (EOS / end of turn; SFT appends EOS to every target, so a response cut by the budget
is not a complete target), at most `--max-per-prompt` per prompt (0 = all), identical responses
to a prompt once (`--no-dedupe` keeps them). `--keep all` keeps every response (for analysis).

Resumable: every finished chunk of prompts is appended to OUT.samples.jsonl (all k samples with
their rewards) under a header with the settings; a run started again with the same settings
skips the prompts already there (with the built-in sampler each prompt draws from its own seed,
so the result is the same as an uninterrupted run). OUT is written atomically at the end, with
OUT.summary.json; OUT.samples.jsonl stays as the raw record.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from unift.data.loading import load_examples
from unift.data.render import render_prompt
from unift.device import autocast_dtype, pick_device
from unift.engine import HFEngine, SamplingParams, cast_parameters, completion_text
from unift.errors import UserError
from unift.evaluate import check_rows
from unift.files import create_dir, write_atomic
from unift.models import load_model
from unift.protocol import stop_strings
from unift.scoring import Scorer
from unift.tasks.base import CORRECT_SCORE, Example

KEEP = ("correct", "all")


@dataclass
class SampleSettings:
    model: str
    data: str
    k: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    protocol: str = "official"
    template: str = "auto"
    seed: int = 0
    limit: int = 0
    task: str = ""
    backend: str = "hf"
    rewards: list[str] = field(default_factory=list)  # user reward functions (empty: each row's task)
    correct_threshold: float = CORRECT_SCORE

    def scorer(self) -> Scorer:
        if self.rewards:
            return Scorer.from_refs(self.protocol, self.rewards, self.correct_threshold)
        return Scorer(self.protocol)

    def check(self) -> None:
        if self.k < 1:
            raise UserError(f"--k must be at least 1, got {self.k}")
        if self.temperature <= 0:
            raise UserError("--temperature must be above 0 (rejection sampling samples; greedy gives one response)")
        if not 0 < self.top_p <= 1 or self.max_new_tokens < 1:
            raise UserError("--top-p must be in (0, 1] and --max-new-tokens at least 1")


def run_sample(settings: SampleSettings, out: Path, *, keep: str = "correct", max_per_prompt: int = 0,
               dedupe: bool = True, chunk: int = 16, batch_size: int = 32, precision: str = "auto",
               device: str = "auto", progress: bool = True) -> dict[str, Any]:
    settings.check()
    examples = load_examples(settings.data, limit=settings.limit, task=settings.task)
    scorer = settings.scorer()  # user reward code is imported and checked before the model loads
    check_rows(settings.protocol, examples, scorer)  # ground truth on every row, before the model loads
    create_dir(out.parent if str(out.parent) else Path("."), "--out directory")
    raw = Path(f"{out}.samples.jsonl")
    done = read_done(raw, settings)
    todo = [i for i in range(len(examples)) if i not in done]
    if todo:
        sample_rows(settings, scorer, examples, todo, raw, chunk=chunk, batch_size=batch_size, precision=precision,
                    device=device, progress=progress)
        done = read_done(raw, settings)
    rows, summary = select(examples, done, keep=keep, max_per_prompt=max_per_prompt, dedupe=dedupe,
                           threshold=scorer.threshold)
    write_atomic(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    summary.update(out=str(out), raw=str(raw), keep=keep, max_per_prompt=max_per_prompt, dedupe=dedupe,
                   settings=asdict(settings))
    write_atomic(Path(f"{out}.summary.json"), json.dumps(summary, indent=1))
    return summary


def read_done(raw: Path, settings: SampleSettings) -> dict[int, list[dict]]:
    """{row: its samples} already in OUT.samples.jsonl; other settings there are an error."""
    if not raw.exists():
        return {}
    lines = raw.read_text(encoding="utf-8").splitlines()
    try:
        header = json.loads(lines[0])["settings"] if lines else None
    except (ValueError, KeyError, TypeError):
        header = None
    if header != asdict(settings):
        raise UserError(f"{raw} was started with other settings (or is not a samples file): run with the same "
                        f"settings to resume it, or remove it to start again")
    done = {}
    for line in lines[1:]:
        try:
            entry = json.loads(line)
        except ValueError:  # a line cut by a kill: its prompt is sampled again
            continue
        done[int(entry["row"])] = entry["samples"]
    return done


def sample_rows(settings: SampleSettings, scorer: Scorer, examples: list[Example], todo: list[int], raw: Path, *,
                chunk: int,
                batch_size: int, precision: str, device: str, progress: bool) -> None:
    dev = pick_device(device)
    model, tokenizer = load_model(settings.model)
    dtype = autocast_dtype(precision, dev)
    cast_parameters(model.to(dev), dtype or model.dtype)
    prompts = {i: render_prompt(examples[i], tokenizer, settings.template, where=f"{settings.data} row {i}").input_ids
               for i in todo}
    engine = _engine(settings, model, tokenizer, batch_size, dtype)
    params = SamplingParams(max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                            top_p=settings.top_p, n=settings.k, stop=stop_strings(settings.protocol))
    if not raw.exists():
        write_atomic(raw, json.dumps({"settings": asdict(settings)}) + "\n")
    drop_cut_line(raw)
    bar = _bar(len(examples), len(examples) - len(todo), progress)
    started, tokens = time.perf_counter(), 0
    with raw.open("a", encoding="utf-8") as fh:
        for start in range(0, len(todo), chunk):
            rows = todo[start:start + chunk]
            params.seeds = [settings.seed * 1_000_003 + i for i in rows]  # per prompt: chunking does not matter
            completions = engine.generate([prompts[i] for i in rows], params)
            by_row: dict[int, list[dict]] = {i: [] for i in rows}
            texts = [completion_text(tokenizer, c) for c in completions]
            batch = scorer.score([examples[rows[c.prompt_index]] for c in completions], texts,
                                 completion_ids=[list(c.token_ids) for c in completions])
            for c, text, reward in zip(completions, texts, batch.totals):
                by_row[rows[c.prompt_index]].append({"response": text, "reward": reward,
                                                     "finish_reason": c.finish_reason, "tokens": len(c.token_ids)})
                tokens += len(c.token_ids)
            fh.write("".join(json.dumps({"row": i, "samples": s}, ensure_ascii=False) + "\n"
                             for i, s in by_row.items()))
            fh.flush()
            os.fsync(fh.fileno())
            if bar is not None:
                bar.update(len(rows))
                bar.set_postfix(tok_s=f"{tokens / (time.perf_counter() - started):.0f}")
    if bar is not None:
        bar.close()


def drop_cut_line(raw: Path) -> None:
    """A kill can leave half a line at the end: cut it, so the next chunk starts on a line of its own."""
    data = raw.read_bytes()
    if data and not data.endswith(b"\n"):
        with raw.open("r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)


def _engine(settings: SampleSettings, model, tokenizer, batch_size: int, dtype):
    if settings.backend == "vllm":
        # the optional vllm extra: loaded only with --backend vllm
        from unift.vllm_engine import VLLMEngine

        longest = min(4096, getattr(model.config, "max_position_embeddings", 4096))
        return VLLMEngine(model, tokenizer, seed=settings.seed, max_model_len=longest, kv_cache_gb=2)
    return HFEngine(model, tokenizer, batch_size=batch_size, dtype=dtype)


def _bar(total: int, initial: int, progress: bool):
    if not progress:
        return None
    # the progress bar loads only when it is shown
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="prompt", dynamic_ncols=True)


def select(examples: list[Example], done: dict[int, list[dict]], *, keep: str, max_per_prompt: int,
           dedupe: bool, threshold: float = CORRECT_SCORE) -> tuple[list[dict], dict[str, Any]]:
    """The rows to train on, and the counts of the summary line."""
    rows, samples, correct, solved = [], 0, 0, 0
    for i in sorted(done):
        ex, kept, seen = examples[i], 0, set()
        good = [s for s in done[i] if s["reward"] >= threshold]
        samples, correct, solved = samples + len(done[i]), correct + len(good), solved + bool(good)
        for j, s in enumerate(done[i]):
            if keep == "correct" and not (s["reward"] >= threshold and s["finish_reason"] == "eos"):
                continue
            if (dedupe and s["response"] in seen) or (max_per_prompt and kept >= max_per_prompt):
                continue
            seen.add(s["response"])
            kept += 1
            rows.append(_row(ex, s, i, j))
    summary = {"prompts": len(done), "samples": samples, "correct": correct, "kept": len(rows),
               "pass_rate": correct / samples if samples else 0.0, "prompts_solved": solved}
    return rows, summary


def _row(ex: Example, s: dict, row: int, sample: int) -> dict[str, Any]:
    completion: Any = s["response"]
    if isinstance(ex.prompt, list):  # TRL conversational prompt-completion
        completion = [{"role": "assistant", "content": s["response"]}]
    return {"prompt": ex.prompt, "completion": completion, "ground_truth": ex.ground_truth,
            "data_source": ex.data_source, "task": ex.task, "reward": s["reward"], "row": row, "sample": sample}
