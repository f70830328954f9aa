"""The Python API: what `unift train` and `unift eval` do, as functions.

    from unift.api import evaluate, train

    final = train("configs/countdown_rft.yaml", overrides=["train.steps=50"], reward_funcs=[my_reward])
    results = evaluate(final, "data/test.jsonl", limit=200)     # {"overall": {"pass@1": ...}, ...}

`config` is a YAML path, a dict of the same keys, or a `unift.config.Config`. `reward_funcs`
are TRL reward functions (callables `f(prompts, completions, **columns) -> list[float | None]`)
or references (`file.py:function`, `package.module:function`, a built-in task name), scored
after the config's `reward.funcs` and summed with `reward.weights` (unift.user_rewards). A
callable is not written into the saved config.yaml: resume such a run with the same call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unift.config import OFFLINE_METHODS, Config, load_config, validate
from unift.config_parse import build, merge, parse_overrides
from unift.errors import UserError
from unift.evaluate import evaluate_model
from unift.train.loop import train as train_offline
from unift.train.rl_loop import train_rl


def resolve_config(config: str | Path | dict | Config, overrides: list[str] | None = None) -> Config:
    if isinstance(config, Config):
        if overrides:
            raise UserError("overrides apply to a YAML path or a dict, not to a Config object: change it directly")
        return validate(config)
    if isinstance(config, dict):
        return validate(build(Config, merge(config, parse_overrides(overrides or [])), ""))
    return load_config(config, overrides)


def train(config: str | Path | dict | Config, overrides: list[str] | None = None,
          reward_funcs: list[Any] | None = None) -> Path:
    """Train as `unift train` does; returns the final model's directory."""
    cfg = resolve_config(config, overrides)
    if cfg.method in OFFLINE_METHODS:
        if reward_funcs:
            raise UserError(f"reward_funcs score RL rollouts; method={cfg.method} trains on reference solutions")
        return train_offline(cfg)
    return train_rl(cfg, reward_funcs)


def evaluate(model: str | Path, data: str, **options: Any) -> dict[str, Any]:
    """Greedy pass@1 (and avg@k) as `unift eval` computes it; options as `evaluate_model`'s
    (protocol, task, limit, k, max_new_tokens, batch_size, template, precision, device, seed)."""
    return evaluate_model(str(model), data, **options)
