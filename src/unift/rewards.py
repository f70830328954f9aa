"""Reward functions in the form TRL's trainers call them.

Each function here is `f(prompts=None, completions=None, **columns) -> list[float]` and
scores every completion with the matching `unift.tasks` task (0.0 no answer, 0.1 wrong,
1.0 correct). A completion is a string or, for conversational data, a list of messages (the
last message's content is scored). The ground truth comes from the dataset column
`reward_model` (a dict with "ground_truth" per row, as in the official UFT/verl parquet files)
or from a `ground_truth` column.

Example with TRL::

    from datasets import load_dataset
    from trl import GRPOConfig, GRPOTrainer
    from unift import rewards

    data = load_dataset("parquet", data_files="countdown/train.parquet")["train"]
    data = data.map(lambda row: {"prompt": row["prompt"][0]["content"]})  # plain-text prompt
    trainer = GRPOTrainer(
        model="Qwen/Qwen2.5-0.5B",
        reward_funcs=rewards.countdown,   # or rewards.kk_logic, rewards.math, rewards.gsm8k, rewards.answer_match
        args=GRPOConfig(output_dir="out", num_generations=4),
        train_dataset=data,
    )
    trainer.train()
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from unift.errors import UserError
from unift.protocol import MALFORMED, malformed_ground_truth
from unift.tasks import get_task

RewardFunction = Callable[..., list[float]]


def _text(completion: Any) -> str:
    """The scored text of one completion: a string, or the last message's content."""
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        return str(completion.get("content") or "")
    if isinstance(completion, Sequence) and completion:
        last = completion[-1]
        if isinstance(last, Mapping):
            return str(last.get("content") or "")
        return str(last)
    return str(completion)


def _ground_truths(name: str, n: int, columns: dict[str, Any]) -> list[Any]:
    if columns.get("ground_truth") is not None:
        truths = list(columns["ground_truth"])
    elif columns.get("reward_model") is not None:
        truths = []
        for i, cell in enumerate(columns["reward_model"]):
            if not isinstance(cell, Mapping) or "ground_truth" not in cell:
                raise UserError(f"{name} reward: reward_model of row {i} has no 'ground_truth'")
            truths.append(cell["ground_truth"])
    else:
        given = ", ".join(sorted(columns)) or "none"
        raise UserError(
            f"{name} reward needs a 'reward_model' or 'ground_truth' dataset column (got: {given})"
        )
    if len(truths) != n:
        raise UserError(f"{name} reward: {n} completions but {len(truths)} ground truths")
    return truths


def _clean(ground_truth: Any) -> Any:
    """Drop the None fields that mixed-schema parquet files add (e.g. numbers=None for MATH)."""
    if isinstance(ground_truth, Mapping):
        return {k: v for k, v in ground_truth.items() if v is not None}
    return ground_truth


def _make(name: str) -> RewardFunction:
    def reward(prompts: Any = None, completions: Any = None, **columns: Any) -> list[float]:
        if completions is None:
            raise UserError(f"{name} reward: no completions given")
        task = get_task(name)
        texts = [_text(c) for c in completions]
        scores = []
        for i, (text, truth) in enumerate(zip(texts, _ground_truths(name, len(texts), columns))):
            try:
                scores.append(float(task.score(text, _clean(truth)).score))
            except MALFORMED as exc:
                raise malformed_ground_truth(f"{name} reward: row {i}", name, exc) from None
        return scores

    reward.__name__ = reward.__qualname__ = name
    reward.__doc__ = f"TRL reward: score completions with the '{name}' task (0.0 / 0.1 / 1.0)."
    return reward


countdown = _make("countdown")
kk_logic = _make("kk_logic")
math = _make("math")
gsm8k = _make("gsm8k")
answer_match = _make("answer_match")


def for_task(name: str) -> RewardFunction:
    """The reward function for task `name` (UserError for unknown names)."""
    get_task(name)
    return _make(name)
