"""`unift demo`: the main job end to end on the embedded model, with no outside data.

1. generate Countdown problems (three numbers) with reference solutions: a training set and a
   disjoint held-out set;
2. evaluate the embedded SmolLM2-135M-Instruct on the held-out set (greedy pass@1 under the
   official protocol: generation until EOS or 128 new tokens, no stop string, the answer read
   from the last line as the official UFT scorer does; also how many responses stopped with EOS);
3. fine-tune it with UFT (default: online RL with hints that shrink to nothing, plus the hint
   log-likelihood term), or with SFT or DFT, through the regular training loops;
4. evaluate the fine-tuned model on the same held-out set and print the before/after table.

Sized to finish within 15 minutes on 2 CPU cores. The UFT settings are tuned for that budget,
not the paper's (lr 1e-6, beta 0.001, 500 steps of 256 prompts): the base model never closes a
response with `<answer>` tags, so hints carry the answer piece (hints.answer_piece: a full hint
is the whole reference followed by EOS) and the hint log-likelihood has weight 1; rollouts run
to EOS, so the model is rewarded for stopping after its answer (unift.train.rl_loop).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from unift.config import load_config
from unift.data.export import write_jsonl
from unift.errors import UserError
from unift.evaluate import evaluate_model, write_report
from unift.tasks.countdown import CountdownTask
from unift.train.loop import train
from unift.train.rl_loop import train_rl

SFT_STEPS = 40
UFT_STEPS = 20
DEFAULT_EVAL_N = 100
TRAIN_N = 2000
MAX_NEW_TOKENS = 128
MARKER = "demo.json"


def _make_data(out: Path, eval_n: int) -> tuple[Path, Path]:
    task = CountdownTask()
    train = task.generate(TRAIN_N, seed=1, min_numbers=3, max_numbers=3)
    seen = {(tuple(sorted(e.ground_truth["numbers"])), e.ground_truth["target"]) for e in train}
    held_out = [e for e in task.generate(eval_n * 2, seed=2, min_numbers=3, max_numbers=3)
                if (tuple(sorted(e.ground_truth["numbers"])), e.ground_truth["target"]) not in seen][:eval_n]
    train_path, test_path = out / "data" / "countdown_train.jsonl", out / "data" / "countdown_test.jsonl"
    write_jsonl(train, train_path)
    write_jsonl(held_out, test_path)
    return train_path, test_path


def _evaluate(model_name: str, data: Path, label: str) -> dict:
    started = time.time()
    results = evaluate_model(model_name, str(data), max_new_tokens=MAX_NEW_TOKENS, batch_size=50)
    o = results["overall"]
    print(f"[demo] {label}: pass@1 {100 * o['pass@1']:.1f}%, formatted {100 * o['formatted']:.1f}%, "
          f"stopped with EOS {100 * o['stopped']:.0f}% ({time.time() - started:.0f} s)")
    return results


def run_demo(method: str = "uft", steps: int = 0, eval_n: int = 0, model: str = "smollm2-135m",
             out: Path = Path("runs/demo")) -> dict:
    steps, eval_n = steps or (UFT_STEPS if method == "uft" else SFT_STEPS), eval_n or DEFAULT_EVAL_N
    if out.exists():
        if not (out / MARKER).exists() and any(out.iterdir()):
            raise UserError(f"{out} exists and is not a demo directory; pass --out with a new directory")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text(json.dumps({"status": "running"}))
    started = time.time()

    train_path, test_path = _make_data(out, eval_n)
    print(f"[demo] data: {train_path} (train), {test_path} (held out, {eval_n} problems)")
    before = _evaluate(model, test_path, "base model")

    common = [f"method={method}", f"model={model}", f"output_dir={out / 'train'}", f"data.train={train_path}",
              "train.micro_batch_size=8", "log.progress=true"]
    if method == "uft":
        cfg = load_config(None, common + [f"train.steps={steps}", "train.lr=1e-4", "train.schedule=constant",
                                          "train.warmup_ratio=0", "rl.prompts_per_step=16", "rl.num_generations=2",
                                          "rl.max_new_tokens=128", f"hints.t_hint={steps}",
                                          "hints.beta=1.0", "hints.answer_piece=true"])
    else:
        cfg = load_config(None, common + [f"train.steps={steps}", "train.batch_size=16", "train.lr=1e-4",
                                          "train.warmup_ratio=0.1"])
    t0 = time.time()
    final = (train_rl if method == "uft" else train)(cfg)
    train_seconds = time.time() - t0
    print(f"[demo] {method} training: {steps} steps in {train_seconds:.0f} s -> {final}")
    after = _evaluate(str(final), test_path, f"after {method}")

    write_report(before, out / "eval_before", title="base model")
    write_report(after, out / "eval_after", title=f"after {method}")
    table = ("| model | held-out Countdown pass@1 | well-formatted | stopped with EOS |\n|---|---|---|---|\n"
             + "".join(f"| {label} | {100 * r['overall']['pass@1']:.1f}% | {100 * r['overall']['formatted']:.1f}% "
                       f"| {100 * r['overall']['stopped']:.0f}% |\n"
                       for label, r in (("SmolLM2-135M-Instruct (base)", before),
                                        (f"after {method.upper()} ({steps} steps)", after)))
             + f"\nprotocol official: greedy, {MAX_NEW_TOKENS} new tokens, no stop string, answers read as the "
               f"official UFT scorer does (last line)\n")
    summary = {"status": "done", "method": method, "steps": steps, "eval_n": eval_n,
               "before": before["overall"], "after": after["overall"], "train_seconds": train_seconds,
               "total_seconds": time.time() - started}
    (out / MARKER).write_text(json.dumps(summary, indent=1))
    (out / "summary.md").write_text(table)
    print("\n" + table)
    print(f"[demo] total {summary['total_seconds']:.0f} s; outputs in {out}")
    return summary
