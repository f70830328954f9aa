"""Task registry: look tasks up by name, map dataset sources to tasks, generate problems.

Tasks: "countdown", "kk_logic" (both with generators), "math" (MATH, AIME, AMC, MATH500,
Minerva, OlympiadBench), "gsm8k" and "answer_match" (any question + final-answer data).
Every task scores a response with the reward convention
0.0 (no answer) / 0.1 (wrong) / 1.0 (correct); see `unift.tasks.base`.
"""

from __future__ import annotations

from unift.errors import UserError, suggest
from unift.tasks.answer_match import AnswerMatchTask
from unift.tasks.base import CORRECT_SCORE, FORMAT_SCORE, Example, Reward, Task
from unift.tasks.countdown import CountdownTask
from unift.tasks.gsm8k import GSM8KTask
from unift.tasks.kk_logic import KKLogicTask
from unift.tasks.math import MathTask

__all__ = [
    "CORRECT_SCORE",
    "FORMAT_SCORE",
    "TASKS",
    "Example",
    "Reward",
    "Task",
    "generate",
    "get_task",
    "task_for_data_source",
]

TASKS: dict[str, Task] = {
    "countdown": CountdownTask(),
    "kk_logic": KKLogicTask(),
    "math": MathTask(),
    "gsm8k": GSM8KTask(),
    "answer_match": AnswerMatchTask(),
}

_MATH_SOURCES = ("math", "aime", "amc", "minerva", "olympiad", "hendrycks", "numina", "deepscaler")
_SOURCE_ALIASES = {"logic": "kk_logic", "kk": "kk_logic", "knights_and_knaves": "kk_logic"}


def get_task(name: str) -> Task:
    """The task called `name`; UserError (with a suggestion) for unknown names."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise UserError(f"unknown task '{name}'{suggest(str(name), TASKS)}") from None


def task_for_data_source(data_source: str) -> str:
    """Task name for a `data_source` value of the official UFT data (or a close variant).

    countdown -> countdown; kk_logic -> kk_logic; openai/gsm8k, gsm8k -> gsm8k;
    DigitalLearningGmbH/MATH-lighteval, math500, aime, amc, minerva, olympiad_bench -> math.
    """
    source = str(data_source).strip().lower()
    if source in TASKS:
        return source
    if source in _SOURCE_ALIASES:
        return _SOURCE_ALIASES[source]
    if "countdown" in source:
        return "countdown"
    if "gsm8k" in source:
        return "gsm8k"
    if "kk_logic" in source or "knights" in source or source.endswith("/kk"):
        return "kk_logic"
    if any(key in source for key in _MATH_SOURCES):
        return "math"
    raise UserError(
        f"cannot tell which task scores data_source '{data_source}'; known tasks: "
        f"{', '.join(sorted(TASKS))} (pass the task explicitly)"
    )


def generate(task_name: str, n: int, seed: int, **options) -> list[Example]:
    """`n` generated problems of `task_name` (only tasks with a generator); options go to its generator."""
    task = get_task(task_name)
    make = getattr(task, "generate", None)
    if make is None:
        with_generators = sorted(name for name, t in TASKS.items() if hasattr(t, "generate"))
        raise UserError(
            f"task '{task_name}' has no problem generator (tasks with one: {', '.join(with_generators)})"
        )
    if n < 1:
        raise UserError(f"number of problems must be at least 1, got {n}")
    return make(n, seed, **options)
