"""MATH-style answers: extraction and equivalence with a reference answer string.

Owns `MathTask` (task name "math", also used for AIME, AMC, MATH500, Minerva and
OlympiadBench) and the `is_equiv` check that `gsm8k` falls back to.

Equivalence, cheapest first:
1. the normalised strings are equal (the Hendrycks MATH normalisation used by the official
   UFT reward: drop spaces, `\\left`/`\\right`, `\\!`, degrees, `\\$`, `\\%`, a trailing
   `\\text{ unit}`, "x = " prefixes; `\\dfrac`->`\\frac`, `\\frac12`->`\\frac{1}{2}`, `a/b` ->
   `\\frac{a}{b}`, ...);
2. both are plain numbers (commas, `\\frac{a}{b}`, decimals allowed) within a tolerance;
3. `math_verify` (symbolic), with its own signal-based timeouts switched off. Instead: inputs
   longer than `MAX_VERIFY_CHARS`, nested deeper than `MAX_VERIFY_DEPTH` or with explosive
   constructs (nested or huge powers, big factorials, sums/products/integrals, very long
   digit runs) never reach math_verify, and in the main thread a real-time timer
   (`unift.deadline`, nested in a caller's limit) bounds each check to `timeout` seconds. Outside the main thread no
   timer can be armed, so only the input guards apply.

Reward: 0.0 if no answer (no `<answer>` tags and no `\\boxed{}`), 0.1 if wrong, 1.0 if
equivalent.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from fractions import Fraction
from functools import lru_cache
from typing import Any

from unift.deadline import Deadline, time_limit
from unift.tasks.answer import extract_answer, extract_boxed
from unift.tasks.base import CORRECT_SCORE, FORMAT_SCORE, Reward

MAX_ANSWER_CHARS = 2_000
"""Longer answers are never equivalent to anything (and are not normalised)."""

MAX_VERIFY_CHARS = 250
"""Answers longer than this skip the symbolic check (the longest official target has 204)."""

MAX_VERIFY_DEPTH = 5
"""Answers with brackets nested deeper than this skip the symbolic check (the official
targets nest at most 4 deep; math_verify's regexes and LaTeX parser slow down sharply with
depth, and a regex running in C cannot be interrupted by a timer)."""

MAX_VERIFY_POWERS = 4

DEFAULT_TIMEOUT = 0.5
"""Seconds allowed for one symbolic check (main thread only)."""

NUMERIC_TOLERANCE = 1e-6


# --------------------------------------------------------------------------------------------
# Extraction


def _unwrap(answer: str) -> str:
    """Drop a `\\boxed{}` around the whole answer and surrounding `$`s."""
    answer = answer.strip()
    if answer.startswith(("\\boxed", "\\fbox")):
        inner = extract_boxed(answer)
        if inner is not None:
            answer = inner
    if len(answer) >= 2 and answer.startswith("$") and answer.endswith("$") and answer.count("$") == 2:
        answer = answer[1:-1].strip()
    return answer


def extract_math_answer(response: str) -> str | None:
    """The `<answer>` content if present, else the last `\\boxed{}` content, else None."""
    answer = extract_answer(response)
    if answer is None:
        answer = extract_boxed(response)
    if answer is None:
        return None
    return _unwrap(answer)


# --------------------------------------------------------------------------------------------
# Normalisation (Hendrycks MATH rules)


def _fix_fracs(s: str) -> str:
    """`\\frac12` -> `\\frac{1}{2}`, `\\frac1{2}` -> `\\frac{1}{2}`."""
    parts = s.split("\\frac")
    out = parts[0]
    for part in parts[1:]:
        out += "\\frac"
        if part.startswith("{") or len(part) < 2:
            out += part
            continue
        a, b, rest = part[0], part[1], part[2:]
        out += "{" + a + "}" + (b + rest if b == "{" else "{" + b + "}" + rest)
    return out


def _fix_sqrt(s: str) -> str:
    """`\\sqrt3` -> `\\sqrt{3}`."""
    parts = s.split("\\sqrt")
    out = parts[0]
    for part in parts[1:]:
        if part and part[0] != "{":
            part = "{" + part[0] + "}" + part[1:]
        out += "\\sqrt" + part
    return out


def _fix_slash(s: str) -> str:
    """`a/b` with integer a, b -> `\\frac{a}{b}`."""
    m = re.fullmatch(r"(?a)(-?\d+)/(\d+)", s)
    return f"\\frac{{{m.group(1)}}}{{{m.group(2)}}}" if m else s


_UNIT = re.compile(r"\\(?:text|mbox)\{ [^{}]*\}\s*$")


def normalize(answer: str) -> str:
    """Canonical string form of a MATH answer (see module docstring)."""
    s = answer.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "")
    s = s.replace("\\$", "").replace("$", "")
    s = _UNIT.sub("", s)  # "5\text{ cm}" -> "5": a unit on the right
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if s.startswith("."):
        s = "0" + s
    sides = s.split("=")
    if len(sides) == 2 and len(sides[0].strip()) <= 2:  # "x = 5" -> "5"
        s = sides[1]
    s = _fix_sqrt(s)
    s = s.replace(" ", "")
    s = _fix_fracs(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _fix_slash(s)


# --------------------------------------------------------------------------------------------
# Numbers

_NUMBER = re.compile(r"(?a)[-+]?(?:\d+\.?\d*|\.\d+)")
_FRAC = re.compile(r"(?a)(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}")


def as_number(text: str) -> Fraction | None:
    """`text` as an exact number if it is one ("1,234", "-3.5", "\\frac{1}{2}", "3/4")."""
    s = text.strip()
    if len(s) > 100:
        return None
    s = s.replace("\\!", "").replace("{,}", "").replace(" ", "")
    s = re.sub(r"(?a)(?<=\d),(?=\d{3}(?!\d))", "", s)
    m = _FRAC.fullmatch(s)
    if m:
        num, den = int(m.group(2)), int(m.group(3))
        if den == 0:
            return None
        value = Fraction(num, den)
        return -value if m.group(1) else value
    m = re.fullmatch(r"(?a)(-?\d+)/(\d+)", s)
    if m:
        return Fraction(int(m.group(1)), int(m.group(2))) if int(m.group(2)) else None
    if _NUMBER.fullmatch(s):
        return Fraction(s)
    return None


def numbers_close(a: Fraction, b: Fraction) -> bool:
    return abs(a - b) <= NUMERIC_TOLERANCE * max(1, abs(b))


# --------------------------------------------------------------------------------------------
# Symbolic check (math_verify) with bounded work

_EXPLOSIVE = re.compile(
    r"\^\s*\{[^{}]*[\^!]"  # nested exponent or factorial in an exponent: 9^{9^9}
    r"|\^\s*\{?\s*\d{4,}"  # huge exponent: 2^{10000}
    r"|\d{4,}\s*\)?\s*!"  # big factorial: 1000!
    r"|\*\*"  # python power
    r"|\\(?:sum|prod|int|lim|binom|choose|iint|oint)\b"
    r"|\d{40,}"  # very long integers
)


def _nesting_depth(text: str) -> int:
    depth = deepest = 0
    for ch in text:
        if ch in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]}":
            depth -= 1
    return deepest


def _symbolic_allowed(text: str) -> bool:
    """Whether `text` is small and tame enough to hand to math_verify/sympy."""
    return (
        len(text) <= MAX_VERIFY_CHARS
        and text.count("^") <= MAX_VERIFY_POWERS
        and _nesting_depth(text) <= MAX_VERIFY_DEPTH
        and not _EXPLOSIVE.search(text)
    )


_math_verify: Any = None


def _load_math_verify() -> Any:
    global _math_verify
    if _math_verify is None:
        # math-verify loads (slowly) on the first symbolic comparison only
        import math_verify

        # We pass timeout=None (we bound the work ourselves); silence its warnings about it.
        logging.getLogger("math_verify").setLevel(logging.ERROR)
        # Warm up (lazy imports inside sympy/latex2sympy) outside any time limit, so the
        # first real check is not cut short by one-off start-up costs.
        math_verify.verify(
            math_verify.parse("$1$", parsing_timeout=None),
            math_verify.parse("$\\frac{x}{2}$", parsing_timeout=None),
            timeout_seconds=None,
        )
        _math_verify = math_verify
    return _math_verify


@lru_cache(maxsize=4096)
def _parse(text: str) -> Any:
    mv = _load_math_verify()
    return mv.parse(f"${text}$", parsing_timeout=None)


def symbolic_equiv(answer: str, target: str, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """math_verify's equivalence, or False when guarded out, failing or over time."""
    answer, target = answer.strip().strip("$"), target.strip().strip("$")
    if not answer or not target or not (_symbolic_allowed(answer) and _symbolic_allowed(target)):
        return False
    _load_math_verify()
    mine = None
    try:
        with time_limit(timeout) as mine:
            gold = _parse(target)
            pred = _parse(answer)
            if not gold or not pred:
                return False
            return bool(_load_math_verify().verify(gold, pred, timeout_seconds=None))
    except Deadline as exc:
        if exc.limit is not mine:  # an outer limit (e.g. reward.timeout_s): not ours to swallow
            raise
        return False
    except Exception:  # noqa: BLE001 - a crash inside sympy means "not shown equivalent"
        return False


def is_equiv(answer: str | None, target: str | None, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Whether `answer` is the same mathematical answer as `target` (see module docstring)."""
    if answer is None or target is None:
        return False
    answer, target = str(answer).strip(), str(target).strip()
    if not answer or len(answer) > MAX_ANSWER_CHARS:
        return False
    norm_answer, norm_target = normalize(answer), normalize(target)
    if norm_answer == norm_target:
        return True
    a, b = as_number(norm_answer), as_number(norm_target)
    if a is not None and b is not None:
        return numbers_close(a, b)
    return symbolic_equiv(answer, target, timeout)


def target_of(ground_truth: Any) -> str:
    """The reference answer string from `{"target": ...}` or a plain value."""
    if isinstance(ground_truth, Mapping):
        if "target" not in ground_truth:
            raise ValueError("math ground_truth must have a 'target'")
        ground_truth = ground_truth["target"]
    if ground_truth is None:
        raise ValueError("math ground_truth target is None")
    return str(ground_truth)


class MathTask:
    """Reward for free-form math answers (task name "math")."""

    name = "math"

    def __init__(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout

    def score(self, response: str, ground_truth: Any) -> Reward:
        target = target_of(ground_truth)
        answer = extract_math_answer(response)
        if answer is None:
            return Reward(0.0, None, "no answer")
        if is_equiv(answer, target, self.timeout):
            return Reward(CORRECT_SCORE, answer, "correct")
        return Reward(FORMAT_SCORE, answer[:200], "not equivalent")
