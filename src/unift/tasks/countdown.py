"""Countdown: combine the given numbers with + - * / to reach a target.

Owns the Countdown reward (TinyZero rule: every given number used exactly once, value equal
to the target within 1e-5; 0.0 without an `<answer>`, 0.1 for a wrong or invalid one) and a
generator of new problems in exactly the format of the official UFT data: the TinyZero prompt,
one hint piece per equation line ("a + b = c\\n"), a closing "Therefore, the final equation
is EXPR" piece, and the completion `"".join(pieces) + " </think>\\n<answer> EXPR </answer>"`.
Equations are evaluated by `safe_arith`, never `eval`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

from unift.tasks.answer import extract_answer
from unift.tasks.base import CORRECT_SCORE, FORMAT_SCORE, Example, Reward
from unift.tasks.safe_arith import ArithmeticParseError, evaluate

TOLERANCE = Fraction(1, 100_000)

PROMPT_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant "
    "solves it. The assistant first thinks about the reasoning process in the mind and then "
    "provides the user with the answer.\nUser: Using the numbers {numbers}, create an equation "
    "that equals {target}. You can use basic arithmetic operations (+, -, *, /) and each number "
    "can only be used once. Show your work in <think> </think> tags. And return the final "
    "answer in <answer> </answer> tags, for example <answer> (1 + 2) / 3 </answer>.\n"
    "Assistant: Let me solve this step by step.\n<think> "
)
FINAL_PREFIX = "Therefore, the final equation is "

MIN_NUMBER, MAX_NUMBER = 1, 99
MIN_TARGET, MAX_TARGET = 10, 100


def format_prompt(numbers: Sequence[int], target: int) -> str:
    """The official TinyZero Countdown prompt for these numbers and target."""
    return PROMPT_TEMPLATE.format(numbers=[int(n) for n in numbers], target=int(target))


def _parse_ground_truth(ground_truth: Any) -> tuple[list[int], Fraction]:
    if not isinstance(ground_truth, Mapping):
        raise ValueError("countdown ground_truth must be a mapping with 'numbers' and 'target'")
    numbers = [int(n) for n in ground_truth["numbers"]]
    target = Fraction(str(ground_truth["target"]).strip())
    return numbers, target


class CountdownTask:
    """Countdown reward and problem generator (task name "countdown")."""

    name = "countdown"

    def score(self, response: str, ground_truth: Any) -> Reward:
        """0.0 without an answer, 0.1 if it is invalid or wrong, 1.0 if it reaches the target."""
        numbers, target = _parse_ground_truth(ground_truth)
        answer = extract_answer(response)
        if answer is None:
            return Reward(0.0, None, "no answer")
        try:
            result = evaluate(answer)
        except ArithmeticParseError as exc:
            return Reward(FORMAT_SCORE, answer[:200], f"invalid equation: {exc}")
        if sorted(result.literals) != sorted(numbers):
            return Reward(FORMAT_SCORE, answer[:200], "numbers not used exactly once")
        if abs(result.value - target) < TOLERANCE:
            return Reward(CORRECT_SCORE, answer, "correct")
        return Reward(FORMAT_SCORE, answer, f"value {float(result.value):g} != target")

    def generate(
        self, n: int, seed: int, min_numbers: int = 3, max_numbers: int = 4
    ) -> list[Example]:
        """`n` new problems with reference solutions; the same seed gives the same problems.

        Targets are uniform in 10..100 and numbers uniform in 1..99, like the official data.
        Reference solutions only use positive integer intermediates (subtraction is larger
        minus smaller, division is exact), as the official references do.
        """
        if not 2 <= min_numbers <= max_numbers <= 5:
            raise ValueError("need 2 <= min_numbers <= max_numbers <= 5")
        rng = random.Random(seed)
        examples: list[Example] = []
        seen: set[tuple[tuple[int, ...], int]] = set()
        while len(examples) < n:
            target = rng.randint(MIN_TARGET, MAX_TARGET)
            count = rng.randint(min_numbers, max_numbers)
            for _ in range(1000):
                numbers = [rng.randint(MIN_NUMBER, MAX_NUMBER) for _ in range(count)]
                key = (tuple(numbers), target)
                if key in seen:
                    continue
                solution = _find_solution(numbers, target, rng)
                if solution is not None:
                    seen.add(key)
                    examples.append(_make_example(numbers, target, solution))
                    break
        return examples


# --------------------------------------------------------------------------------------------
# Generation: exhaustive search over pairwise combinations with integer intermediates.

_Item = tuple[int, str, bool]  # (value, expression text, is compound)
_Solution = tuple[list[str], str]  # (equation lines, final expression)


def _combinations(a: _Item, b: _Item) -> list[tuple[int, str, _Item, _Item]]:
    """Allowed (value, op, left, right) results of combining two items."""
    (x, _, _), (y, _, _) = a, b
    out: list[tuple[int, str, _Item, _Item]] = [(x + y, "+", a, b), (x * y, "*", a, b)]
    if x > y:
        out.append((x - y, "-", a, b))
    elif y > x:
        out.append((y - x, "-", b, a))
    if y and x % y == 0:
        out.append((x // y, "/", a, b))
    if x and y % x == 0 and x != y:
        out.append((y // x, "/", b, a))
    return out


def _operand(item: _Item) -> str:
    _, text, compound = item
    return f"({text})" if compound else text


def _search(
    pool: list[_Item], lines: list[str], target: int, found: list[_Solution]
) -> None:
    if len(pool) == 1:
        if pool[0][0] == target:
            found.append((list(lines), pool[0][1]))
        return
    for i in range(len(pool)):
        for j in range(i + 1, len(pool)):
            rest = [pool[k] for k in range(len(pool)) if k not in (i, j)]
            for value, op, left, right in _combinations(pool[i], pool[j]):
                if value <= 0:
                    continue
                text = f"{_operand(left)} {op} {_operand(right)}"
                lines.append(f"{left[0]} {op} {right[0]} = {value}\n")
                _search(rest + [(value, text, True)], lines, target, found)
                lines.pop()


def _find_solution(numbers: list[int], target: int, rng: random.Random) -> _Solution | None:
    found: list[_Solution] = []
    _search([(v, str(v), False) for v in numbers], [], target, found)
    # Prefer solutions without "x * 1" / "x / 1" steps when there are any.
    tidy = [s for s in found if not any(_is_trivial(line) for line in s[0])]
    candidates = tidy or found
    return rng.choice(candidates) if candidates else None


def _is_trivial(line: str) -> bool:
    left, op, right = line.split()[:3]
    return (op in "*/" and right == "1") or (op == "*" and left == "1")


def _make_example(numbers: list[int], target: int, solution: _Solution) -> Example:
    lines, expression = solution
    pieces = [*lines, FINAL_PREFIX + expression]
    completion = "".join(pieces) + f" </think>\n<answer> {expression} </answer>"
    return Example(
        prompt=format_prompt(numbers, target),
        completion=completion,
        pieces=pieces,
        ground_truth={"numbers": list(numbers), "target": target},
        data_source="countdown",
        task="countdown",
    )
