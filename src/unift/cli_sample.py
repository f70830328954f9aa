"""The `unift sample` and `unift token-probs` commands, and the --reward options they share with
`unift eval` (parsers and handlers; `unift.cli` dispatches to them)."""

from __future__ import annotations

import argparse
from pathlib import Path

from unift.choices import PRECISIONS, PROTOCOLS, TEMPLATES
from unift.errors import UserError


def add_sample(sub) -> None:
    """`unift sample --model M --data D --out F`"""
    s = sub.add_parser("sample", help="rejection sampling: sample k responses per prompt, keep the verified ones",
                       description="The offline-RL data pipeline: sample k responses per prompt, score them with the "
                                   "task reward under the protocol, keep the correct ones that stopped by themselves, "
                                   "and write TRL prompt-completion JSONL that `unift train` reads. Resumable: run "
                                   "the same command again after an interruption.",
                       epilog="example:\n  unift sample --model runs/sft/final --data train.jsonl --k 8 "
                              "--max-per-prompt 2 --out runs/data/verified.jsonl",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--model", default="smollm2-135m", help="HF directory, hub id, smollm2-135m or tiny")
    s.add_argument("--data", required=True, help="prompts with ground truth (.parquet/.jsonl/.json or data set id)")
    s.add_argument("--out", required=True, help="output .jsonl (OUT.samples.jsonl keeps every sample)")
    s.add_argument("--k", type=int, default=4, help="responses per prompt")
    s.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    s.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling")
    s.add_argument("--max-new-tokens", type=int, default=256, help="generation budget per response")
    s.add_argument("--keep", default="correct", choices=["correct", "all"],
                   help="correct: reward 1.0 and ended with EOS (default); all: every response")
    s.add_argument("--max-per-prompt", type=int, default=0, help="keep at most this many per prompt (0 = all)")
    s.add_argument("--no-dedupe", action="store_true", help="keep identical responses to a prompt more than once")
    s.add_argument("--protocol", default="official", choices=PROTOCOLS, help="how responses end and are scored")
    s.add_argument("--backend", default="hf", choices=["hf", "vllm"], help="built-in sampler or vLLM")
    s.add_argument("--task", default="", help="reward task for every row (default: from data_source)")
    s.add_argument("--limit", type=int, default=0, help="sample only the first N prompts")
    s.add_argument("--template", default="auto", choices=TEMPLATES, help="prompt rendering")
    s.add_argument("--batch-size", type=int, default=32, help="sequences generated at once")
    s.add_argument("--chunk", type=int, default=16, help="prompts between two saves of progress")
    s.add_argument("--precision", default="auto", choices=PRECISIONS, help="compute precision")
    s.add_argument("--seed", type=int, default=0, help="sampling seed (each prompt gets its own stream)")
    s.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    add_reward_options(s)


def add_token_probs(sub) -> None:
    """`unift token-probs --model A --model B --data D`"""
    t = sub.add_parser("token-probs", help="which reference tokens a model gives low probability (teacher-forced)",
                       description="Score reference responses teacher-forced, as SFT/DFT train on them, and list per "
                                   "model the mean token probability, the end token's probability, the token "
                                   "strings with the lowest mean probability and the lowest single positions.",
                       epilog="example:\n  unift token-probs --model runs/sft/final --model runs/dft/final "
                              "--data test.jsonl --limit 50 --out runs/token-probs",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--model", action="append", required=True, help="a model to score (give it more than once)")
    t.add_argument("--data", required=True, help="rows with reference responses")
    t.add_argument("--limit", type=int, default=50, help="score the first N rows (0 = all)")
    t.add_argument("--top", type=int, default=15, help="tokens and positions listed per model")
    t.add_argument("--template", default="auto", choices=TEMPLATES, help="prompt rendering")
    t.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    t.add_argument("--out", default="", help="directory for token_probs.json and token_probs.md")


def add_reward_options(p) -> None:
    p.add_argument("--reward", action="append", default=[], metavar="REF",
                   help="score with a reward function (file.py:function, package.module:function or a task name; "
                        "TRL's signature; give it more than once to sum several) instead of each row's task")
    p.add_argument("--correct-threshold", type=float, default=1.0, help="a reward at or above this is correct")


def scorer(args):
    from unift.scoring import Scorer

    return Scorer.from_refs(args.protocol, args.reward, args.correct_threshold) if args.reward else None


def sample(args) -> int:
    from unift.sample import SampleSettings, run_sample

    if args.max_per_prompt < 0 or args.limit < 0 or args.chunk < 1 or args.batch_size < 1:
        raise UserError("--max-per-prompt and --limit must be >= 0, --chunk and --batch-size at least 1")
    if not args.out.endswith(".jsonl"):
        raise UserError(f"--out must be a .jsonl file, got {args.out}")
    settings = SampleSettings(model=args.model, data=args.data, k=args.k, temperature=args.temperature,
                              top_p=args.top_p, max_new_tokens=args.max_new_tokens, protocol=args.protocol,
                              template=args.template, seed=args.seed, limit=args.limit, task=args.task,
                              backend=args.backend, rewards=args.reward, correct_threshold=args.correct_threshold)
    s = run_sample(settings, Path(args.out), keep=args.keep, max_per_prompt=args.max_per_prompt,
                   dedupe=not args.no_dedupe, chunk=args.chunk, batch_size=args.batch_size, precision=args.precision,
                   device=args.device)
    print(f"{s['prompts']} prompts, {s['samples']} samples, {s['correct']} correct (pass rate "
          f"{100 * s['pass_rate']:.1f}%, {s['prompts_solved']} prompts solved), kept {s['kept']} -> {args.out}")
    return 0


def token_probs(args) -> int:
    from unift.token_probs import markdown, run_token_probs

    if args.limit < 0 or args.top < 1:
        raise UserError("--limit must be >= 0 and --top at least 1")
    results = run_token_probs(args.model, args.data, limit=args.limit, top=args.top, template=args.template,
                              device=args.device, out=Path(args.out) if args.out else None)
    print(markdown(results))
    return 0
