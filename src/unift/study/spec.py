"""The study config of `unift compare`: methods x seeds, budget groups, evaluation sets, a
validation set and learning-rate (or any key) sweeps; expanded into one `RunPlan` per run.

    output_dir: runs/study
    seeds: [0, 1, 2]
    base: {model: smollm2-135m, data: {train: ...}, train: {steps: 20, batch_size: 16}, rl: {...}}
    eval_sets:                      # reported results, one table each
      generated: {data: runs/data/countdown_test.jsonl, limit: 200, max_new_tokens: 128}
      official:  {data: ../shared/data/uft/countdown/test.parquet, numbers: 3, limit: 200}
    validation: {data: runs/data/countdown_val.jsonl, limit: 100}   # only for the study's choices
    focus: uft                      # paired comparisons: focus minus every other method
    methods:
      base:    {method: none}
      sft:     {method: sft}
      uft:     {method: uft}
      sft-rft: {method: rft, init: sft, sweep: {train.lr: [1.0e-6, 1.0e-5, 3.0e-5]}}

The budget of a run is the number of training examples it sees: reference solutions for SFT/DFT
(steps x batch_size), prompts for RL (steps x prompts_per_step, each with num_generations
rollouts). A run started from another (`init:`) counts both. Methods share the budget group
`main` unless `group:` says otherwise (a chained run gets a group of its own); within a group
the budgets must be equal. Every check here runs before any model is loaded.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from unift.config import Config, validate
from unift.config_parse import build, merge, parse_overrides
from unift.data.loading import load_examples
from unift.errors import UserError, suggest

STUDY_KEYS = ("output_dir", "runs_dir", "seeds", "checkpoint_every", "focus", "base", "methods", "eval_sets",
              "validation")
METHOD_KEYS = ("init", "group", "sweep")  # a method entry's keys that are not run config keys


def _f(default: Any, help: str) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class EvalSet:
    """One evaluation set: greedy pass@1 under the study's protocol."""

    data: str = _f("", "data file (.jsonl / .parquet / .json) or data set id")
    task: str = _f("", "reward task for every row (empty = from each row's data_source)")
    limit: int = _f(0, "evaluate the first N rows (after `numbers`; 0 = all)")
    numbers: int = _f(0, "Countdown: keep only problems with this many numbers (0 = all)")
    max_new_tokens: int = _f(256, "generation budget per response")
    batch_size: int = _f(50, "prompts generated at once")


@dataclass
class StudyConfig:
    output_dir: str = _f("runs/compare", "where study.yaml, report.md, results.json and the plots go (and the "
                                         "runs, unless runs_dir is set)")
    runs_dir: str = _f("", "where the runs and evaluations go (empty = output_dir); studies that share it reuse "
                           "each other's finished runs and evaluations when their configs are equal")
    seeds: list[int] = _f([0], "every method runs once per seed (data order, hints and sampling follow it)")
    checkpoint_every: int = _f(5, "periodic checkpoints of every run, so a killed study resumes mid-run "
                                  "(0 = only the run's own checkpoint.every)")
    focus: str = _f("", "the method compared, paired, against every other (empty = the first RL method "
                        "named uft, else none)")
    base: dict[str, Any] = _f({}, "the run config every method shares (as for unift train)")
    methods: dict[str, Any] = _f({}, "name -> run config keys that differ, plus init / group / sweep")
    eval_sets: dict[str, EvalSet] = _f({}, "name -> evaluation set; empty = base.eval.data as 'heldout'")
    validation: EvalSet = field(default_factory=EvalSet, metadata={"help": "for sweeps only; never reported"})


@dataclass(frozen=True)
class Budget:
    """Training examples seen: reference solutions (SFT/DFT) or prompts (RL, with their rollouts)."""

    examples: int = 0
    rollouts: int = 0

    def __add__(self, other: Budget) -> Budget:
        return Budget(self.examples + other.examples, self.rollouts + other.rollouts)


@dataclass
class Method:
    name: str
    method: str                      # sft, dft, rft, uft, r3 or none
    init: str | None
    group: str | None                # None: method none (no training, no budget)
    candidates: list[dict[str, Any]]  # sweep: dotted key -> value per candidate; [{}] without a sweep
    configs: dict[tuple[int, int], Config]  # (candidate, seed) -> run config, validated
    own: Budget = Budget()           # this method's training alone
    budget: Budget = Budget()        # with the runs it starts from

    def label(self, candidate: int) -> str:
        """Directory name of a candidate: the method's name, or name@key=value for a sweep."""
        values = self.candidates[candidate]
        return self.name + "".join(f"@{k}={v}" for k, v in values.items())


@dataclass
class Study:
    cfg: StudyConfig
    out: Path                        # the report's directory
    runs: Path                       # the runs' and evaluations' directory (output_dir unless runs_dir)
    methods: dict[str, Method]       # in run order: each after the one it starts from
    eval_sets: dict[str, EvalSet]
    focus: str
    protocol: str


def read_study(path: str, overrides: list[str] | None = None) -> Study:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"compare config {p} does not exist")
    try:
        tree = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError:
        raise UserError(f"compare config {p} is not valid YAML") from None
    if not isinstance(tree, dict):
        raise UserError(f"compare config {p} must be a mapping of keys")
    for key in tree:
        if key not in STUDY_KEYS:
            raise UserError(f"unknown compare key '{key}'{suggest(str(key), STUDY_KEYS)}")
    cfg = build(StudyConfig, tree, "")
    cfg.base = merge(cfg.base, parse_overrides(overrides or []))
    return plan_study(cfg, p)


def plan_study(cfg: StudyConfig, where: Path) -> Study:
    if not cfg.methods:
        raise UserError(f"compare config {where} needs a non-empty 'methods' mapping")
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds):
        raise UserError(f"seeds must be a non-empty list of distinct integers, got {cfg.seeds}")
    if cfg.checkpoint_every < 0:
        raise UserError("checkpoint_every must be >= 0")
    out, runs = Path(cfg.output_dir), Path(cfg.runs_dir or cfg.output_dir)
    eval_sets = _eval_sets(cfg)
    methods = {name: _method(cfg, runs, name, raw) for name, raw in cfg.methods.items()}
    ordered = {name: methods[name] for name in _order(methods)}
    _count_budgets(ordered)
    focus = cfg.focus or ("uft" if "uft" in ordered else "")
    if focus and focus not in ordered:
        raise UserError(f"focus '{focus}' is not one of the compared methods{suggest(focus, ordered)}")
    if any(len(m.candidates) > 1 for m in ordered.values()) and not cfg.validation.data:
        raise UserError("a sweep chooses on the validation set: give validation.data (never reported)")
    protocol = str(cfg.base.get("protocol") or "official")
    return Study(cfg, out, runs, ordered, eval_sets, focus, protocol)


def _eval_sets(cfg: StudyConfig) -> dict[str, EvalSet]:
    sets = dict(cfg.eval_sets)
    if not sets:
        e = cfg.base.get("eval") or {}
        if not e.get("data"):
            raise UserError("compare needs eval_sets (or base.eval.data): the held-out data every method is scored on")
        sets = {"heldout": build(EvalSet, {k: e[k] for k in ("data", "task", "limit", "max_new_tokens", "batch_size")
                                           if k in e}, "base.eval")}
    for name, s in {**sets, "validation": cfg.validation}.items():
        if name == "validation" and not s.data:
            continue
        if not s.data:
            raise UserError(f"eval_sets.{name}.data is empty: give the evaluation data file")
        if s.limit < 0 or s.numbers < 0 or s.max_new_tokens < 1 or s.batch_size < 1:
            raise UserError(f"eval_sets.{name}: limit and numbers must be >= 0, max_new_tokens and batch_size >= 1")
    return sets


def _method(cfg: StudyConfig, out: Path, name: str, raw: Any) -> Method:
    if not isinstance(raw, dict) or "method" not in raw:
        raise UserError(f"methods.{name} needs a 'method' key (sft, dft, rft, uft, r3 or none)")
    raw = dict(raw)
    init, group, sweep = raw.pop("init", None), raw.pop("group", None), raw.pop("sweep", None) or {}
    if init is not None and init not in cfg.methods:
        raise UserError(f"method '{name}': init '{init}' is not one of the compared methods")
    candidates = _candidates(name, sweep)
    m = Method(name, str(raw["method"]), init, None, candidates, {})
    if m.method == "none":
        if sweep or group:
            raise UserError(f"method '{name}' (method none) trains nothing: it takes no sweep or group")
        return m
    m.group = str(group) if group is not None else (f"{name} (chained)" if init else "main")
    for c, values in enumerate(candidates):
        for seed in cfg.seeds:
            tree = merge(merge(cfg.base, raw), parse_overrides([f"{k}={v}" for k, v in values.items()]))
            tree["seed"] = seed
            tree["output_dir"] = str(out / m.label(c) / f"seed{seed}")
            run = validate(build(Config, tree, f"methods.{name}"))
            if cfg.checkpoint_every and not run.checkpoint.every:
                run.checkpoint.every = cfg.checkpoint_every
            m.configs[(c, seed)] = run
    return m


def _candidates(name: str, sweep: Any) -> list[dict[str, Any]]:
    """One dict of dotted keys per sweep candidate (the grid of every listed value)."""
    if not isinstance(sweep, dict) or not all(isinstance(v, list) and v for v in sweep.values()):
        raise UserError(f"methods.{name}.sweep must map config keys to non-empty lists, e.g. "
                        f"{{train.lr: [1.0e-6, 1.0e-5]}}")
    grid: list[dict[str, Any]] = [{}]
    for key, values in sweep.items():
        grid = [{**g, str(key): v} for g in grid for v in values]
    return grid


def _order(methods: dict[str, Method]) -> list[str]:
    """Methods in config order, each after the run it starts from."""
    done: list[str] = []
    while len(done) < len(methods):
        ready = [n for n, m in methods.items() if n not in done and (m.init is None or m.init in done)]
        if not ready:
            raise UserError("compare methods' init references form a cycle")
        done.append(ready[0])  # config order wherever dependencies allow
    return done


def run_budget(cfg: Config) -> Budget:
    """Examples one run trains on (its `init` not included)."""
    if cfg.method in ("sft", "dft"):
        per_step = cfg.train.batch_size
        steps = cfg.train.steps or max(1, math.ceil(cfg.train.epochs * _rows(cfg) / per_step))
        return Budget(steps * per_step, 0)
    per_step = cfg.rl.prompts_per_step
    steps = cfg.train.steps or max(1, math.ceil(cfg.train.epochs * _rows(cfg) / per_step))
    return Budget(steps * per_step, steps * per_step * cfg.rl.num_generations)


def _rows(cfg: Config) -> int:
    return _count_rows(cfg.data.train, cfg.data.limit, cfg.data.task)


@functools.lru_cache(maxsize=16)
def _count_rows(data: str, limit: int, task: str) -> int:
    return len(load_examples(data, limit=limit, task=task))


def _count_budgets(methods: dict[str, Method]) -> None:
    """Each method's budget (with its init chain); equal within every group, else a one-line error."""
    for m in methods.values():
        if m.method == "none":
            continue
        budgets = {run_budget(cfg) for cfg in m.configs.values()}
        if len(budgets) > 1:
            raise UserError(f"method '{m.name}': its sweep changes the budget ({sorted(b.examples for b in budgets)} "
                            f"examples): sweep keys other than the amount of training")
        m.own = budgets.pop()
        m.budget = m.own + (methods[m.init].budget if m.init else Budget())
    groups: dict[str, list[Method]] = {}
    for m in methods.values():
        if m.group is not None:
            groups.setdefault(m.group, []).append(m)
    for group, members in groups.items():
        if len({m.budget.examples for m in members}) > 1:
            said = ", ".join(f"{m.name} {m.budget.examples}" for m in members)
            raise UserError(f"budget group '{group}' mixes budgets ({said} training examples): give them the same "
                            f"train.steps x batch_size (SFT/DFT) or x rl.prompts_per_step (RL), or another group:")
