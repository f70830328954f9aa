"""Typed run configuration: dataclasses with help text, loaded from YAML, overridden with key=value.

A config file has a few top-level keys (method, model, output_dir, seed, protocol, resume) and sections
(data, train, loss, log, checkpoint, eval). Every field is validated before any model is
loaded: unknown keys get a "did you mean" suggestion, values are coerced to the field's type
or rejected with a one-line `UserError`. The resolved config is saved next to every
checkpoint (`config.yaml`).

    unift train configs/countdown_sft.yaml train.lr=1e-4 method=dft
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from unift.choices import (
    AGGREGATIONS,
    HINT_LOSSES,
    HINT_SCHEDULES,
    LR_SCHEDULES,
    METHODS,
    NORMALIZERS,
    OFFLINE_METHODS,
    PRECISIONS,
    PROTOCOLS,
    ROLLOUT_BACKENDS,
    SCALES,
    STRATEGIES,
    TEMPLATES,
)
from unift.config_parse import build, merge, parse_overrides
from unift.config_parse import describe as describe_fields
from unift.errors import UserError


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with help text (shown by `unift train --help-config`)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class DataConfig:
    train: str = _f("", "training data: .parquet / .jsonl / .json file, a directory saved by "
                        "datasets, or a hub data set id (official UFT verl parquet or TRL formats)")
    task: str = _f("", "task whose reward scores the data (countdown, kk_logic, math, gsm8k, answer_match); "
                       "empty = from each row's data_source")
    template: str = _f("auto", "prompt rendering: plain (TinyZero text as is), chat (the model's "
                               "chat template), auto (plain for text prompts and verl data, chat "
                               "for conversational TRL data)", choices=TEMPLATES)
    max_prompt_tokens: int = _f(256, "longest allowed prompt; a longer one is an error")
    max_response_tokens: int = _f(1024, "reference responses are truncated to this many tokens")
    limit: int = _f(0, "use only the first N rows (0 = all)")
    shuffle: bool = _f(True, "shuffle the training order each epoch (seeded)")


@dataclass
class TrainConfig:
    steps: int = _f(0, "optimizer steps (0 = derive from epochs)")
    epochs: float = _f(1.0, "passes over the data when steps = 0")
    batch_size: int = _f(16, "examples per optimizer step (global batch)")
    micro_batch_size: int = _f(4, "examples per forward/backward; the loss is normalised by the "
                                  "token count of the whole batch, so results do not depend on it")
    lr: float = _f(5e-5, "peak learning rate (AdamW)")
    min_lr_ratio: float = _f(0.0, "cosine decays to lr * min_lr_ratio")
    warmup_ratio: float = _f(0.1, "fraction of steps with linear warm-up")
    schedule: str = _f("cosine", "learning-rate schedule after warm-up", choices=LR_SCHEDULES)
    weight_decay: float = _f(0.01, "AdamW weight decay")
    beta1: float = _f(0.9, "AdamW beta1")
    beta2: float = _f(0.95, "AdamW beta2")
    grad_clip: float = _f(1.0, "clip the global gradient norm to this (0 = off)")
    precision: str = _f("auto", "bf16 autocast with fp32 master weights, or fp32; auto = bf16 where "
                                "the processor supports it", choices=PRECISIONS)
    device: str = _f("auto", "cpu, cuda, cuda:N or auto")
    max_bad_steps: int = _f(3, "a step with a non-finite loss or gradient skips its update; after this many "
                               "in a row the run stops (the last checkpoint is kept)")
    logprob_chunk_mb: float = _f(64.0, "MB of fp32 logits per pass through the LM head (recomputed in the backward)")
    gradient_checkpointing: bool = _f(False, "recompute each decoder layer in the backward: less memory, more compute")


@dataclass
class LossConfig:
    dft_min_weight: float = _f(0.0, "DFT: floor on the detached token probability weight")
    dft_nll_mix: float = _f(0.0, "DFT: weight alpha of plain NLL mixed in "
                                 "(loss = (1-alpha) * DFT + alpha * NLL)")


@dataclass
class RLConfig:
    """Online RL (rft, uft, r3): GRPO with verifiable rewards. Names follow TRL's GRPOConfig."""

    prompts_per_step: int = _f(8, "prompts per optimizer step; each gets num_generations completions")
    num_generations: int = _f(4, "completions per prompt (the GRPO group size n)")
    max_new_tokens: int = _f(256, "longest completion (max_completion_length)")
    temperature: float = _f(1.0, "sampling temperature of the rollouts (and of the training log-probs)")
    top_p: float = _f(1.0, "nucleus sampling of the rollouts")
    stop: str = _f("", "opt-in stop string that also ends a rollout (e.g. </answer>); empty = the protocol's "
                       "rule (official: only EOS or max_new_tokens; unift: </answer>). A stop string saves "
                       "rollout time, but the model then never samples EOS after its answer and, served "
                       "without that stop string, runs on until its budget")
    generation_batch_size: int = _f(64, "sequences generated at once")
    compile_decode: bool = _f(False, "hf backend: each decode step one torch.compile graph, compiled once per "
                                     "batch/length bucket (minutes on a small CPU; time_compile_s)")
    updates_per_step: int = _f(1, "optimizer updates per rollout batch (PPO mini-batches)")
    epochs: int = _f(1, "passes over each rollout batch (PPO epochs)")
    epsilon: float = _f(0.2, "PPO clip range (lower side, and upper side unless epsilon_high is set)")
    epsilon_high: float = _f(0.0, "upper clip range (DAPO clip-higher, e.g. 0.28); 0 = epsilon")
    loss_aggregation: str = _f("token-mean", "token-mean (DAPO), seq-mean-token-mean (GRPO), dr-grpo",
                               choices=AGGREGATIONS)
    scale_rewards: str = _f("group", "advantage scaling: group std (GRPO), batch std, none (Dr. GRPO)",
                            choices=SCALES)
    kl_coef: float = _f(0.0, "weight of the k3 KL penalty to the frozen initial model (0 = no reference "
                             "model is loaded)")
    entropy_coef: float = _f(0.0, "weight of the entropy bonus (official UFT: 0.001)")
    mask_truncated: bool = _f(False, "completions cut by max_new_tokens get no policy loss")
    rollout_backend: str = _f("hf", "hf: the built-in bf16 KV-cache sampler; vllm: a vLLM engine in the "
                                    "training process (needs the vllm extra)", choices=ROLLOUT_BACKENDS)
    vllm_kv_cache_gb: float = _f(4.0, "vllm: KV cache size in GB on CPU (VLLM_CPU_KVCACHE_SPACE)")
    normalizer: str = _f("unift", "loss arithmetic: unift (policy, entropy and hint terms divided by token counts "
                                  "of the whole mini-batch: the gradient does not depend on train.micro_batch_size) "
                                  "or official (verl's actor: each term a masked mean per micro-batch divided by the "
                                  "number of micro-batches, hint logits clamped to +-100, no length sorting or "
                                  "pruning: the result depends on train.micro_batch_size)", choices=NORMALIZERS)
    tis_cap: float = _f(2.0, "truncated importance sampling: weight min(pi_old/pi_sampler, cap) per token "
                             "corrects the sampler/trainer mismatch (bf16 rollouts, vLLM); 0 = off")


@dataclass
class HintConfig:
    """UFT hints: a prefix of the reference solution, shrinking over training (Liu et al. 2025)."""

    schedule: str = _f("cosine", "cosine (UFT), uniform (R3), staged (official stage baseline), "
                                 "adaptive (per-prompt success near adaptive_target; new prompts start where the "
                                 "last step's moved to), none; method=rft sets none, method=r3 uniform",
                       choices=HINT_SCHEDULES)
    p_high: float = _f(0.95, "hint fraction p(t) at the start of the cosine")
    p_low: float = _f(0.05, "hint fraction p(t) at step t_hint; 0 afterwards")
    t_hint: int = _f(300, "steps over which hints fade out (official: 300 of 500)")
    max_chunks: int = _f(5, "solutions are revealed in at most this many equal chunks")
    beta: float = _f(0.001, "weight of the log-likelihood term on hint tokens (official: 0.001); "
                            "method=rft and method=r3 set 0")
    loss: str = _f("nll", "hint log-likelihood term: nll, or dft (DFT-weighted)", choices=HINT_LOSSES)
    answer_piece: bool = _f(False, "append the rest of the reference completion (the closing answer tags) as a "
                                   "last hint piece, so a full hint is the full reference (official: false)")
    adaptive_target: float = _f(0.5, "adaptive: target success rate per prompt")
    adaptive_alpha: float = _f(0.5, "adaptive: moving-average weight of the newest success rate")


@dataclass
class LogConfig:
    every: int = _f(1, "log metrics every N optimizer steps")
    tensorboard: bool = _f(True, "write TensorBoard event files to OUTPUT_DIR/tb")
    wandb: bool = _f(False, "also log to Weights & Biases (needs the wandb package)")
    progress: bool = _f(True, "show a progress bar")
    completions_every: int = _f(1, "RL: every N steps write a few groups' completions (prompt id, hint, completion, "
                                   "each reward, advantage, finish reason) to OUTPUT_DIR/completions.jsonl, "
                                   "TensorBoard text and W&B (0 = off)")
    completions_groups: int = _f(2, "RL: prompt groups per logged step")


@dataclass
class CheckpointConfig:
    every: int = _f(0, "save a resumable checkpoint every N steps (0 = only at the end)")
    keep_last: int = _f(2, "keep this many most recent checkpoints")


@dataclass
class EvalConfig:
    data: str = _f("", "held-out data evaluated after training (empty = none)")
    task: str = _f("", "reward task for the evaluation rows (empty = from each row's data_source)")
    every: int = _f(0, "also evaluate (greedy pass@1) every N steps during training, logged as "
                       "eval_pass@1 (0 = only at the end)")
    limit: int = _f(0, "evaluate only the first N rows (0 = all)")
    max_new_tokens: int = _f(256, "generation budget per response")
    batch_size: int = _f(32, "prompts generated at once")
    k: int = _f(0, "also sample k responses per prompt for avg@k (0 = greedy pass@1 only)")
    temperature: float = _f(1.0, "sampling temperature for avg@k")
    top_p: float = _f(1.0, "nucleus sampling for avg@k")


@dataclass
class RewardConfig:
    """Reward functions from user code, called as TRL calls them (unift.user_rewards)."""

    funcs: list[str] = _f([], "reward functions: file.py:function (relative to the config file or the working "
                              "directory), package.module:function or a built-in task name; each is called as "
                              "f(prompts, completions, completion_ids, **columns) -> list[float | None], as in TRL; "
                              "empty = the built-in task of each row. User code runs unsandboxed, as you")
    weights: list[float] = _f([], "one weight per function (empty = 1.0 each); the reward is the weighted sum")
    correct_threshold: float = _f(1.0, "a reward at or above this counts as correct (accuracy metrics, adaptive hints)")
    timeout_s: float = _f(30.0, "a reward function that takes longer for one batch ends the run with a one-line "
                                "error (0 = no limit)")


LORA_TARGETS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


@dataclass
class LoRAConfig:
    """LoRA adapters through peft (unift.lora): W = W0 + B A * alpha / r, only A and B train."""

    enabled: bool = _f(False, "train LoRA adapters instead of all weights")
    r: int = _f(16, "rank of the adapters")
    alpha: float = _f(32.0, "scaling numerator: the update B A is multiplied by alpha / r")
    dropout: float = _f(0.0, "dropout on the adapters' input")
    target_modules: str = _f(LORA_TARGETS, "comma-separated names of the linear layers to adapt "
                                           "(default: attention and MLP projections of Llama-like models)")


@dataclass
class ParallelConfig:
    """How several processes (torchrun) share the work (unift.train.distributed, unift.train.sharding)."""

    strategy: str = _f("ddp", "ddp: a full replica per process, gradients all-reduced; fsdp2: parameters, "
                              "gradients and optimizer state sharded (fully_shard), sharded checkpoints",
                       choices=STRATEGIES)


@dataclass
class Config:
    method: str = _f("sft", "training method", choices=METHODS)
    model: str = _f("smollm2-135m", "a local Hugging Face directory, a hub id, smollm2-135m "
                                    "(embedded) or tiny (random, for tests)")
    output_dir: str = _f("runs/unift", "where checkpoints, logs and the final model go")
    seed: int = _f(0, "seed for data order, initialisation and sampling")
    protocol: str = _f("official", "how responses end and answers are read, in training rewards and every "
                                   "evaluation: official (generate until EOS or the budget, no stop string; "
                                   "answers read as the official UFT scorers do, e.g. Countdown and MATH only "
                                   "from the last line) or unift (stop at </answer>; unift's scorers, which "
                                   "also read \\boxed{} and check maths symbolically)", choices=PROTOCOLS)
    resume: bool = _f(False, "continue from the latest checkpoint in output_dir")
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    hints: HintConfig = field(default_factory=HintConfig)
    log: LogConfig = field(default_factory=LogConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)


def validate(cfg: Config) -> Config:
    """Range and consistency checks that types alone cannot express; then `resolve_method`."""
    _require(_run_checks(cfg))
    if cfg.method not in OFFLINE_METHODS:
        _require(_rl_checks(cfg))
    _require(_lora_checks(cfg))
    if cfg.parallel.strategy == "fsdp2" and cfg.lora.enabled:
        raise UserError("parallel.strategy=fsdp2 with lora.enabled is not supported: use parallel.strategy=ddp "
                        "(only the small adapters train, so a replica per process costs little more)")
    t = cfg.train
    if not (t.device in ("auto", "cpu", "cuda") or t.device.startswith("cuda:")):
        raise UserError(f"train.device: unknown device '{t.device}' (use auto, cpu, cuda or cuda:N)")
    return resolve_method(cfg)


def _require(checks: list[tuple[bool, str]]) -> None:
    """The message of the first check that fails, as a one-line UserError."""
    for ok, message in checks:
        if not ok:
            raise UserError(message)


def _run_checks(cfg: Config) -> list[tuple[bool, str]]:
    t, d, e = cfg.train, cfg.data, cfg.eval
    return [
        (t.batch_size >= 1, "train.batch_size must be at least 1"),
        (t.micro_batch_size >= 1, "train.micro_batch_size must be at least 1"),
        (t.steps >= 0, "train.steps must be >= 0"),
        (t.steps > 0 or t.epochs > 0, "set train.steps or train.epochs above 0"),
        (t.lr > 0, "train.lr must be positive"),
        (0 <= t.warmup_ratio < 1, "train.warmup_ratio must be in [0, 1)"),
        (0 <= t.min_lr_ratio <= 1, "train.min_lr_ratio must be in [0, 1]"),
        (t.grad_clip >= 0, "train.grad_clip must be >= 0 (0 = off)"),
        (0 <= t.beta1 < 1 and 0 <= t.beta2 < 1, "train.beta1 and train.beta2 must be in [0, 1)"),
        (t.weight_decay >= 0, "train.weight_decay must be >= 0"),
        (t.max_bad_steps >= 1, f"train.max_bad_steps must be at least 1, got {t.max_bad_steps}"),
        (0 < t.logprob_chunk_mb < 1e12, f"train.logprob_chunk_mb must be a positive number, got {t.logprob_chunk_mb}"),
        (d.max_prompt_tokens > 0, "data.max_prompt_tokens must be positive"),
        (d.max_response_tokens > 0, "data.max_response_tokens must be positive"),
        (d.limit >= 0, "data.limit must be >= 0"),
        (0 <= cfg.loss.dft_min_weight <= 1, "loss.dft_min_weight must be in [0, 1]"),
        (0 <= cfg.loss.dft_nll_mix <= 1, "loss.dft_nll_mix must be in [0, 1]"),
        (cfg.log.every >= 1, "log.every must be at least 1"),
        (cfg.log.completions_every >= 0 and cfg.log.completions_groups >= 1,
         "log.completions_every must be >= 0 and log.completions_groups at least 1"),
        (cfg.checkpoint.every >= 0, "checkpoint.every must be >= 0"),
        (cfg.checkpoint.keep_last >= 1, "checkpoint.keep_last must be at least 1"),
        (e.max_new_tokens > 0, "eval.max_new_tokens must be positive"),
        (e.batch_size >= 1, "eval.batch_size must be at least 1"),
        (e.k >= 0, "eval.k must be >= 0"),
        (e.every >= 0, "eval.every must be >= 0"),
        (e.every == 0 or bool(e.data), "eval.every needs eval.data"),
        (e.k == 0 or e.temperature > 0, f"eval.k={e.k} samples responses for avg@k, which needs "
                                        f"eval.temperature above 0 (or set eval.k=0)"),
        (e.temperature >= 0, "eval.temperature must be >= 0"),
        (0 < e.top_p <= 1, "eval.top_p must be in (0, 1]"),
        (bool(cfg.output_dir), "output_dir must not be empty"),
        (cfg.reward.timeout_s >= 0, "reward.timeout_s must be >= 0 (0 = no limit)"),
        (bool(d.train), "data.train is empty: give a training data file (e.g. data.train=train.jsonl)"),
    ]


def _rl_checks(cfg: Config) -> list[tuple[bool, str]]:
    r, h = cfg.rl, cfg.hints
    return [
        (r.prompts_per_step >= 1, "rl.prompts_per_step must be at least 1"),
        (r.num_generations >= 2, "rl.num_generations must be at least 2 (GRPO compares completions of a prompt)"),
        (r.max_new_tokens >= 1, "rl.max_new_tokens must be at least 1"),
        (r.temperature > 0, "rl.temperature must be positive (RL samples its rollouts)"),
        (0 < r.top_p <= 1, "rl.top_p must be in (0, 1]"),
        (r.generation_batch_size >= 1, "rl.generation_batch_size must be at least 1"),
        (r.updates_per_step >= 1 and r.epochs >= 1, "rl.updates_per_step and rl.epochs must be at least 1"),
        (r.prompts_per_step % r.updates_per_step == 0,
         "rl.prompts_per_step must be divisible by rl.updates_per_step (whole groups per update)"),
        (r.epsilon > 0 and r.epsilon_high >= 0, "rl.epsilon must be positive and rl.epsilon_high >= 0"),
        (r.tis_cap == 0 or r.tis_cap >= 1, f"rl.tis_cap must be 0 (off) or at least 1, got {r.tis_cap}"),
        (r.kl_coef >= 0 and r.entropy_coef >= 0, "rl.kl_coef and rl.entropy_coef must be >= 0"),
        (r.normalizer == "unift" or r.loss_aggregation == "token-mean",
         f"rl.normalizer=official computes verl's token mean per micro-batch; it needs rl.loss_aggregation="
         f"token-mean, not {r.loss_aggregation}"),
        (r.vllm_kv_cache_gb >= 1, "rl.vllm_kv_cache_gb must be at least 1"),
        (0 <= h.p_low <= h.p_high <= 1, "hints: need 0 <= p_low <= p_high <= 1"),
        (h.t_hint >= 0, "hints.t_hint must be >= 0"),
        (h.max_chunks >= 1, "hints.max_chunks must be at least 1"),
        (h.beta >= 0, "hints.beta must be >= 0"),
        (0 < h.adaptive_target < 1, "hints.adaptive_target must be in (0, 1)"),
        (0 < h.adaptive_alpha <= 1, "hints.adaptive_alpha must be in (0, 1]"),
    ]


def resolve_method(cfg: Config) -> Config:
    """Turn the RL `method` into explicit hint settings, once, so no code downstream tests it and the
    config saved with every checkpoint shows what ran: rft has no hints (hints.schedule=none) and
    no hint term (hints.beta=0); r3 draws hint lengths uniformly (hints.schedule=uniform) with no
    hint term; uft keeps the hint settings as given. SFT and DFT use no hint settings."""
    if cfg.method == "rft":
        cfg.hints.schedule, cfg.hints.beta = "none", 0.0
    elif cfg.method == "r3":
        cfg.hints.schedule, cfg.hints.beta = "uniform", 0.0
    return cfg


def _lora_checks(cfg: Config) -> list[tuple[bool, str]]:
    a = cfg.lora
    return [
        (a.r >= 1, f"lora.r must be at least 1, got {a.r}"),
        (a.alpha > 0, f"lora.alpha must be positive, got {a.alpha}"),
        (0 <= a.dropout < 1, f"lora.dropout must be in [0, 1), got {a.dropout}"),
        (any(name.strip() for name in a.target_modules.split(",")),
         f"lora.target_modules is empty: give comma-separated layer names, e.g. {LORA_TARGETS}"),
    ]


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or none), apply key=value overrides, build and validate it."""
    tree: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"config file {p} does not exist")
        try:
            tree = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark else ""
            raise UserError(f"config file {p} is not valid YAML{at}") from None
        if not isinstance(tree, dict):
            raise UserError(f"config file {p} must be a mapping of keys, got {type(tree).__name__}")
    tree = merge(tree, parse_overrides(overrides or []))
    cfg = validate(build(Config, tree, ""))
    if path is not None:
        cfg.reward.funcs = [_next_to(ref, Path(path).parent) for ref in cfg.reward.funcs]
    return cfg


def _next_to(ref: str, config_dir: Path) -> str:
    """A reward file named relative to the config file, if it is there (else the working directory)."""
    where, sep, name = ref.rpartition(":")
    if sep and where.endswith(".py") and not Path(where).is_absolute() and (config_dir / where).is_file():
        return f"{config_dir / where}:{name}"
    return ref


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def describe(cls: type = Config, prefix: str = "") -> list[str]:
    """Lines 'key = default  # help' for every field, for --help-config."""
    return describe_fields(cls, prefix)
