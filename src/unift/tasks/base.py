"""The task interface: an `Example` to train or evaluate on and a `Reward` for a completion.

A task is a small object (see nanochat's `Task`): it knows how to score a response against a
ground truth and, for synthetic tasks, how to generate new examples with step-by-step
reference solutions split into pieces (the units UFT cuts hints from).

Reward convention (TinyZero / UFT paper): 0.0 if no answer can be parsed, 0.1 if an answer
was parsed but is wrong, 1.0 if correct. Rewards never `eval` model text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

FORMAT_SCORE = 0.1
CORRECT_SCORE = 1.0


@dataclass
class Example:
    """One training/evaluation example, independent of where it was loaded from.

    prompt:        plain text (TinyZero template, already complete) or chat messages
                   [{"role": ..., "content": ...}, ...].
    completion:    the full reference response (SFT/DFT target), or None.
    pieces:        reference solution split into pieces (UFT hints); may be empty.
    ground_truth:  task-specific object the reward is computed against.
    data_source:   name used to break evaluation results down (e.g. "countdown", "gsm8k").
    task:          name of the task whose reward scores this example.
    """

    prompt: str | list[dict[str, str]]
    completion: str | None = None
    pieces: list[str] = field(default_factory=list)
    ground_truth: Any = None
    data_source: str = ""
    task: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reward:
    """Score of one response, with the parsed answer and a short reason for logs."""

    score: float
    answer: str | None = None
    reason: str = ""


class Task(Protocol):
    name: str

    def score(self, response: str, ground_truth: Any) -> Reward:
        """Score `response` (hint + generated continuation, without the prompt)."""
        ...
