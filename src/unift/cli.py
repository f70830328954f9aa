"""The `unift` command: train, eval, data, sample, token-probs, compare, horizon, demo, merge-lora,
consolidate, convert-checkpoint.

A user's mistake (`UserError`) is printed as one line `unift: error: ...` with exit status 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from unift import __version__, cli_sample
from unift.choices import PRECISIONS, PROTOCOLS, TEMPLATES
from unift.errors import UserError

EPILOG_TRAIN = """examples:
  unift train configs/countdown_sft.yaml
  unift train configs/countdown_sft.yaml method=dft train.lr=1e-4 output_dir=runs/dft
  unift train configs/countdown_sft.yaml resume=true
  unift train --help-config          (every config key with its default and meaning)"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="unift", description="Post-training for causal language models: "
                                "SFT, DFT, RFT (GRPO) and UFT.")
    p.add_argument("--version", action="version", version=f"unift {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_train, _add_eval, _add_data, cli_sample.add_sample, cli_sample.add_token_probs, _add_compare,
                _add_horizon, _add_demo, _add_model_tools):
        add(sub)
    return p


def _add_train(sub) -> None:
    """`unift train CONFIG key=value ...`"""
    t = sub.add_parser("train", help="fine-tune a model from a YAML config",
                       description="Fine-tune a model as a YAML config says; key=value pairs override it.",
                       epilog=EPILOG_TRAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("config", nargs="?", help="YAML config file (see configs/)")
    t.add_argument("overrides", nargs="*", metavar="key=value", help="override a config key, e.g. train.lr=1e-4")
    t.add_argument("--help-config", action="store_true", help="list every config key and exit")


def _add_eval(sub) -> None:
    """`unift eval --model M --data D`"""
    e = sub.add_parser("eval", help="evaluate a model (greedy pass@1, sampled avg@k)",
                       description="Evaluate a model on data with task rewards under a protocol; writes "
                                   "results.json, results.md (a table by data_source: pass@1, formatted, "
                                   "stopped) and records.jsonl (every response with its reward).")
    e.add_argument("--model", default="smollm2-135m", help="HF directory, hub id, smollm2-135m or tiny")
    e.add_argument("--data", required=True, help="data file (.parquet/.jsonl/.json) or data set id")
    e.add_argument("--protocol", default="official", choices=PROTOCOLS,
                   help="official (default): generate until EOS or the budget, no stop string, answers read as "
                        "the official UFT scorers do; unift: stop at </answer>, unift's scorers")
    e.add_argument("--task", default="", help="reward task for every row (default: from data_source)")
    e.add_argument("--limit", type=int, default=0, help="evaluate only the first N rows")
    e.add_argument("--k", type=int, default=0, help="also sample k responses per prompt for avg@k")
    e.add_argument("--temperature", type=float, default=1.0, help="temperature for avg@k")
    e.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling for avg@k")
    e.add_argument("--max-new-tokens", type=int, default=256, help="generation budget per response")
    e.add_argument("--batch-size", type=int, default=32, help="prompts generated at once")
    e.add_argument("--template", default="auto", choices=TEMPLATES, help="prompt rendering")
    e.add_argument("--precision", default="auto", choices=PRECISIONS, help="compute precision")
    e.add_argument("--seed", type=int, default=0, help="sampling seed")
    e.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    e.add_argument("--out", default="runs/eval", help="directory for results.json, results.md and records.jsonl")
    cli_sample.add_reward_options(e)


def _add_data(sub) -> None:
    """`unift data TASK --out FILE`"""
    d = sub.add_parser("data", help="generate new task data with reference solutions",
                       description="Generate problems with step-by-step reference solutions split into "
                                   "pieces (for SFT targets and UFT hints), as JSONL.")
    d.add_argument("task", help="countdown or kk_logic")
    d.add_argument("--n", type=int, default=1000, help="number of problems")
    d.add_argument("--seed", type=int, default=1, help="generator seed")
    d.add_argument("--out", required=True, help="output .jsonl file")
    d.add_argument("--numbers", type=int, default=0,
                   help="countdown only: numbers per problem, 2-5 (default: a mix of 3 and 4)")


def _add_compare(sub) -> None:
    """`unift compare CONFIG [--resume]`"""
    c = sub.add_parser("compare", help="a study: several methods x seeds at equal budgets, with intervals",
                       description="Train a list of methods (e.g. base, SFT, DFT, RFT, UFT, SFT-then-RFT) once per "
                                   "seed on the same data with budgets checked equal within each budget group; "
                                   "evaluate every run on every evaluation set; write report.md (pass@1 with 95% "
                                   "intervals, per-seed numbers, paired differences), results.json and "
                                   "learning-curve plots. Sweeps choose on a validation set. See "
                                   "configs/compare_countdown.yaml and configs/study_countdown.yaml.",
                       epilog="examples:\n  unift compare configs/compare_countdown.yaml\n"
                              "  unift compare configs/study_countdown.yaml --resume     (after Ctrl-C or a kill)",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("config", help="study YAML (output_dir, runs_dir, seeds, base, methods, eval_sets, validation)")
    c.add_argument("overrides", nargs="*", metavar="key=value", help="override a key of the shared base config")
    c.add_argument("--resume", action="store_true",
                   help="continue a study (or reuse another study's runs in a shared runs_dir): finished runs and "
                        "evaluations are reused if their config matches, a half-finished run resumes from its "
                        "checkpoint")
    c.add_argument("--methods", default="", metavar="A,B",
                   help="run only these methods this time, with the runs they start from (a piece of a long "
                        "study); the report covers every method whose results are on disk")


def _add_horizon(sub) -> None:
    """`unift horizon`"""
    # start-up time: numpy and the experiment load only when the parser is built
    from unift.experiments import horizon

    h = sub.add_parser("horizon", help="the synthetic horizon experiment of the UFT theory (RFT vs UFT)",
                       description="Episodes to 50%% pass@1 on a B-ary tree of depth H, for RFT and UFT: "
                                   "a table and a log-scale plot.")
    horizon.add_arguments(h)


def _add_demo(sub) -> None:
    """`unift demo`"""
    m = sub.add_parser("demo", help="evaluate, fine-tune and re-evaluate the embedded model on Countdown",
                       description="The main job: the embedded SmolLM2-135M-Instruct is evaluated on held-out "
                                   "Countdown problems, fine-tuned on generated ones, and evaluated again.")
    m.add_argument("--method", default="uft", choices=["uft", "sft", "dft"], help="fine-tuning method")
    m.add_argument("--steps", type=int, default=0, help="optimizer steps (0 = the demo default)")
    m.add_argument("--eval-n", type=int, default=0, help="held-out problems (0 = the demo default)")
    m.add_argument("--model", default="smollm2-135m", help="model to start from")
    m.add_argument("--out", default="runs/demo", help="output directory")


def _add_model_tools(sub) -> None:
    """`unift merge-lora`, `unift consolidate`, `unift convert-checkpoint`"""
    g = sub.add_parser("merge-lora", help="merge a LoRA adapter into its base model (a plain HF directory)",
                       description="Merge a LoRA adapter (W = W0 + B A * alpha / r) into its base model and write\n"
                                   "a plain Hugging Face model directory that transformers, vLLM and `unift eval`\n"
                                   "load.",
                       epilog="example:\n  unift merge-lora runs/countdown-uft-lora/final/adapter "
                              "--base smollm2-135m --out runs/merged",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    g.add_argument("adapter", metavar="ADAPTER_DIR",
                   help="peft adapter directory (adapter_config.json), or a unift final/ or checkpoint model/ "
                        "directory holding adapter/")
    g.add_argument("--base", required=True, help="the model the adapter was trained on: HF directory, hub id, "
                                                 "smollm2-135m or tiny")
    g.add_argument("--out", required=True, help="new directory for the merged model (must not exist or be empty)")

    k = sub.add_parser("consolidate", help="turn a sharded (FSDP2) checkpoint into a plain HF model directory",
                       description="Read a checkpoint written by a parallel.strategy=fsdp2 run (every rank's shards,\n"
                                   "torch.distributed.checkpoint format) in one process and write a plain Hugging\n"
                                   "Face model directory that transformers, vLLM and `unift eval` load.",
                       epilog="example:\n  unift consolidate runs/sft-fsdp2/checkpoints/step-000100 --out runs/step100",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    k.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoints/step-N directory of an fsdp2 run")
    k.add_argument("--out", required=True, help="new directory for the model (must not exist or be empty)")

    v = sub.add_parser("convert-checkpoint", help="rewrite a unift 0.1 checkpoint (pickled .pt files) so it resumes",
                       description="unift 0.1 stored optimizer, scheduler and RNG state as pickles (optimizer.pt,\n"
                                   "rng.pt, scheduler.pt), which can carry code; resume refuses them. This reads them\n"
                                   "with PyTorch's weights-only loader (tensors and plain data, nothing else), writes\n"
                                   "optimizer.safetensors and rng.safetensors and a new manifest in place, and\n"
                                   "removes the old files. Convert only checkpoints whose origin you trust.",
                       epilog="example:\n  unift convert-checkpoint runs/sft/checkpoints/step-000100",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    v.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoints/step-N directory")


def _quiet_libraries() -> None:
    """Keep the terminal for unift's own progress: no per-file load/save bars from transformers."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging  # start-up time: only when a command runs

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command:
        _quiet_libraries()
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "eval":
            return _eval(args)
        if args.command == "data":
            return _data(args)
        if args.command == "sample":
            return cli_sample.sample(args)
        if args.command == "token-probs":
            return cli_sample.token_probs(args)
        if args.command == "compare":
            from unift.study.runner import run_study

            only = [name.strip() for name in args.methods.split(",") if name.strip()]
            results = run_study(args.config, args.overrides, resume=args.resume, only=only or None)
            print(f"report written: {Path(results['output_dir']) / 'report.md'}")
            return 0
        if args.command == "horizon":
            from unift.experiments import horizon

            return horizon.main(args)
        if args.command == "merge-lora":
            from unift.lora import merge_adapter_dir

            print(f"merged model: {merge_adapter_dir(args.adapter, args.base, args.out)}")
            return 0
        if args.command == "consolidate":
            from unift.train.sharded_checkpoint import consolidate

            print(f"model: {consolidate(Path(args.checkpoint), Path(args.out))}")
            return 0
        if args.command == "convert-checkpoint":
            from unift.train.convert import convert_checkpoint

            print(f"converted: {convert_checkpoint(Path(args.checkpoint))}")
            return 0
        if args.command == "demo":
            from unift.demo import run_demo

            run_demo(method=args.method, steps=args.steps, eval_n=args.eval_n, model=args.model,
                     out=Path(args.out))
            return 0
        _parser().print_help()
        return 2
    except UserError as exc:
        print(f"unift: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C outside a training loop (which saves and stops by itself)
        print("unift: error: interrupted", file=sys.stderr)
        return 130


def _train(args) -> int:
    from unift.config import describe, load_config

    if args.help_config:
        print("\n".join(describe()))
        return 0
    if args.config and "=" in args.config and not os.path.exists(args.config):
        args.overrides.insert(0, args.config)
        args.config = None
    cfg = load_config(args.config, args.overrides)
    from unift.config import OFFLINE_METHODS

    if cfg.method in OFFLINE_METHODS:
        from unift.train.loop import train
    else:
        from unift.train.rl_loop import train_rl as train
    from unift.device import pick_device
    from unift.train.distributed import init_world, shutdown

    world = init_world(pick_device(cfg.train.device).type)  # torchrun: join the process group
    try:
        final = train(cfg)
    finally:
        shutdown()
    if not world.is_main:
        return 0
    print(f"final model: {final}")
    if cfg.eval.data:
        from unift.evaluate import evaluate_model, write_report

        results = evaluate_model(str(final), cfg.eval.data, protocol=cfg.protocol, task=cfg.eval.task,
                                 limit=cfg.eval.limit, k=cfg.eval.k,
                                 temperature=cfg.eval.temperature, top_p=cfg.eval.top_p,
                                 max_new_tokens=cfg.eval.max_new_tokens, batch_size=cfg.eval.batch_size,
                                 template=cfg.data.template, precision=cfg.train.precision, device=cfg.train.device,
                                 seed=cfg.seed, max_prompt_tokens=cfg.data.max_prompt_tokens)
        write_report(results, Path(cfg.output_dir) / "eval", title=f"{cfg.method} {final}")
        from unift.evaluate import markdown_table

        print(markdown_table(results))
    return 0


def _eval(args) -> int:
    from unift.evaluate import evaluate_model, markdown_table, write_report
    from unift.files import create_dir

    for name, value, low in (("--limit", args.limit, 0), ("--k", args.k, 0),
                             ("--max-new-tokens", args.max_new_tokens, 1), ("--batch-size", args.batch_size, 1),
                             ("--temperature", args.temperature, 0)):
        if value < low:
            raise UserError(f"{name} must be >= {low}, got {value}")
    if not 0 < args.top_p <= 1:
        raise UserError(f"--top-p must be in (0, 1], got {args.top_p}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    results = evaluate_model(args.model, args.data, protocol=args.protocol, task=args.task, limit=args.limit, k=args.k,
                             temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                             batch_size=args.batch_size, template=args.template, precision=args.precision,
                             device=args.device, seed=args.seed, check_out=out, scorer=cli_sample.scorer(args))
    title = f"{args.model} on {args.data}"
    print(markdown_table(results, title=title))
    write_report(results, create_dir(out, "--out"), title=title)
    print(f"wrote {out}/results.json, {out}/results.md and {out}/records.jsonl")
    return 0


def _data(args) -> int:
    from unift.data.export import write_jsonl
    from unift.tasks import generate

    if args.n < 1:
        raise UserError(f"--n must be at least 1, got {args.n}")
    if not args.out.endswith(".jsonl"):
        raise UserError(f"--out must be a .jsonl file, got {args.out}")
    options = {}
    if args.numbers:
        if args.task != "countdown" or not 2 <= args.numbers <= 5:
            raise UserError(f"--numbers is for countdown and must be 2-5, got {args.numbers} for {args.task}")
        options = {"min_numbers": args.numbers, "max_numbers": args.numbers}
    examples = generate(args.task, args.n, args.seed, **options)
    write_jsonl(examples, Path(args.out))
    print(f"wrote {len(examples)} {args.task} problems to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
