"""A general answer-matching task (`answer_match`) for any "question + final answer" data set that
has no verifier of its own.

The answer is read from `<answer>` tags, else from the last `\\boxed{}` (unift protocol: anywhere
in the response; official protocol: only from the response's last line, the official scorers'
rule, so a response that runs on after its answer scores 0). It is compared with the ground
truth after the normalisation of the math task (Hendrycks MATH rules: spaces, `\\frac`, units,
`\\left`/`\\right`, ...), and as numbers when both are numbers (within a relative 1e-6). No
symbolic algebra: "x+1" and "1+x" differ, and case matters ("Paris" is not "paris"). The ground
truth is a string or number, a list of acceptable answers, or `{"target": ...}`; a numpy array
from a parquet file is a list.

Reward: 0.0 no answer, 0.1 an answer that does not match, 1.0 a match.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from unift.tasks.base import CORRECT_SCORE, FORMAT_SCORE, Reward
from unift.tasks.math import MAX_ANSWER_CHARS, as_number, extract_math_answer, normalize, numbers_close


def targets_of(ground_truth: Any) -> list[str]:
    """The acceptable answers of a ground truth (ValueError when there is none)."""
    if isinstance(ground_truth, Mapping):
        if "target" not in ground_truth:
            raise ValueError("answer_match ground_truth must be an answer, a list of answers or {'target': ...}")
        ground_truth = ground_truth["target"]
    if hasattr(ground_truth, "tolist"):  # numpy arrays and scalars from pandas / pyarrow
        ground_truth = ground_truth.tolist()
    values = list(ground_truth) if isinstance(ground_truth, (list, tuple)) else [ground_truth]
    targets = [str(v).strip() for v in values if v is not None and str(v).strip()]
    if not targets:
        raise ValueError("answer_match ground_truth holds no answer")
    return targets


def matches(answer: str, targets: list[str]) -> bool:
    if not answer or len(answer) > MAX_ANSWER_CHARS:
        return False
    norm = normalize(answer)
    for target in targets:
        norm_target = normalize(target)
        if norm == norm_target:
            return True
        a, b = as_number(norm), as_number(norm_target)
        if a is not None and b is not None and numbers_close(a, b):
            return True
    return False


def _score(answer: str | None, ground_truth: Any) -> Reward:
    targets = targets_of(ground_truth)
    if answer is None:
        return Reward(0.0, None, "no answer")
    if matches(answer, targets):
        return Reward(CORRECT_SCORE, answer, "correct")
    return Reward(FORMAT_SCORE, answer[:200], "does not match")


def score_last_line(response: str, ground_truth: Any) -> Reward:
    """The official protocol's reading: the answer must be on the response's last line."""
    line = response.rstrip().rsplit("\n", 1)[-1]
    return _score(extract_math_answer(line), ground_truth)


class AnswerMatchTask:
    name = "answer_match"

    def score(self, response: str, ground_truth: Any) -> Reward:
        return _score(extract_math_answer(response), ground_truth)
