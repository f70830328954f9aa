"""GSM8K: numeric answers to grade-school word problems.

Owns `GSM8KTask` (task name "gsm8k"). The answer (from `<answer>` tags, else the last
`\\boxed{}`) is read as a number after dropping what surrounds numbers in word-problem
answers: thousands commas, currency signs, percent signs, `\\text{...}` wrappers and trailing
unit words ("18 dollars", "$1,200.50", "45%", "\\$18"). It must equal the target within a
small tolerance. Answers that are not a plain number (e.g. `\\frac{3}{4}`, `2^{3}`) fall back
to `math.is_equiv`. 0.0 without an answer, 0.1 if wrong, 1.0 if right.
"""

from __future__ import annotations

import re
from typing import Any

from unift.tasks.base import CORRECT_SCORE, FORMAT_SCORE, Reward
from unift.tasks.math import (
    MathTask,
    as_number,
    extract_math_answer,
    numbers_close,
    target_of,
)

_TEXT = re.compile(r"\\(?:text|mathrm|textbf|mbox)\{([^{}]*)\}")
_NUMBER_WITH_UNIT = re.compile(r"(?a)(-?(?:\d+(?:\.\d*)?|\.\d+))\s*(?:[A-Za-z][A-Za-z .'/-]{0,40})?\.?")


def parse_number(text: str) -> Any:
    """`text` as a `Fraction` if it is a number with optional currency/percent/unit, else None."""
    s = text.strip()
    if len(s) > 200:
        return None
    s = _TEXT.sub(r"\1", s)
    for junk in ("\\$", "$", "\\%", "%", "\\!", "€", "£", "¥", "USD"):
        s = s.replace(junk, "")
    s = re.sub(r"(?a)(?<=\d),(?=\d{3}(?!\d))", "", s).strip()
    exact = as_number(s)
    if exact is not None:
        return exact
    m = _NUMBER_WITH_UNIT.fullmatch(s)
    if m:
        return as_number(m.group(1))
    return None


class GSM8KTask(MathTask):
    """Reward for GSM8K-style numeric answers (task name "gsm8k"): numbers are compared as
    numbers first; anything else falls back to MathTask's equivalence check."""

    name = "gsm8k"

    def score(self, response: str, ground_truth: Any) -> Reward:
        answer = extract_math_answer(response)
        if answer is not None:
            value, expected = parse_number(answer), parse_number(target_of(ground_truth))
            if value is not None and expected is not None:
                if numbers_close(value, expected):
                    return Reward(CORRECT_SCORE, answer, "correct")
                return Reward(FORMAT_SCORE, answer[:200], "wrong number")
        return super().score(response, ground_truth)
