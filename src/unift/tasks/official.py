"""The official UFT rewards, ported: score a response exactly as the UFT paper's code does.

Source: `verl/utils/reward_score/` in the official UFT code (liumy2010/UFT, commit ad3c8ec):
`countdown.py`, `math.py` (the lm-evaluation-harness Hendrycks MATH normalisation), `gsm8k.py`,
`kk_logic.py` and the shared extractor `utils.py`; the choice of scorer follows
`_select_rm_score_fn` in `verl/trainer/main_ppo.py`. unift's own tasks (`unift.tasks.countdown`,
`math`, `gsm8k`, `kk_logic`) are more forgiving (boxed answers, symbolic equivalence, units,
answers anywhere in the text); this module is the yardstick for "scores the same as the paper".

Scorers (`SCORERS`; 0.0 no answer / 0.1 `FORMAT_SCORE` / 1.0 `CORRECT_SCORE`, as `Reward`):

- countdown: the last `<answer>...</answer>` pair on the LAST LINE of the text; the integers
  found by `\\d+` must be the given numbers (sorted lists equal); the expression must match
  `^[\\d+\\-*/().\\s]+$`; its value within 1e-5 of `int(target)`.
- math (MATH-lighteval, math500, minerva, olympiad_bench, cais/hle): the same last-line
  extraction, then `is_equiv` / `strip_string` of the Hendrycks MATH harness, ported verbatim
  (`hendrycks_is_equiv`, `hendrycks_strip_string`): any exception inside `strip_string` (the
  asserts in `remove_right_units`, `int()` of a non-integer in `fix_a_slash_b`, an index past
  the end after a trailing `\\frac` or `\\sqrt`) makes it plain `str1 == str2`. `\\boxed{}` is
  not read (those lines are commented out in the official code).
- gsm8k (openai/gsm8k, aime, amc): the same extraction, `float(answer)` within 1e-5 of
  `float(target)`; an answer `float()` cannot read ("1,200", "\\boxed{18}") scores 0.1.
- kk_logic: the last `<answer>...</answer>` pair ANYWHERE in the text (re.DOTALL), stripped;
  an empty one scores 0.0 (official `if answer_text:`); names and roles come from the ground
  truth's `solution_text_format`; the answer must mention "knight"/"knave" (counted as
  substrings of the lower-cased answer, so "knights" counts) exactly once per person, and say
  `NAME is a knight|knave` for each (first mention counts, case-insensitive).

What is scored: the RESPONSE only (hint + generated continuation, without the prompt). The
official reward decodes prompt + response and first drops everything up to the first
"Assistant:" (else the first "<|im_start|>assistant"). Every official UFT prompt holds exactly
one "Assistant:", in its last line "Assistant: Let me solve this step by step.\\n<think> ", so
the official text is " Let me solve this step by step.\\n<think> " + response. Its last line is
the response's last line when the response has a newline, and "<think> " + the response when
it has none; "<think> " holds no answer tag and no suffix of it starts one, so the last
`<answer>` pair on that line is the response's own. Likewise the DOTALL search of kk_logic only
ever finds pairs inside the response. Scoring the response alone is therefore equivalent.
The official scorer returns None (score 0) when neither marker is in the decoded text, e.g.
under other chat templates whose assistant header is different; unift does not reproduce that.

Deliberate differences from the official code:

1. Bounded work on any input. Only the last `MAX_SCAN_CHARS` (100,000) characters are
   searched (a last line or a kk_logic answer region longer than that is cut to its tail; the
   official code would see all of it). The official `re.finditer(r'<answer>(.*?)</answer>')`
   is replaced by a linear `str.find` scan that yields the same last match (tests check this
   against the regex): the regex is quadratic on text with many unclosed `<answer>` tags. Note
   that this is NOT `unift.tasks.answer.extract_answer`: for "<answer> a <answer> b </answer>"
   the official regex (and this module) gives "a <answer> b", extract_answer gives "b".
2. Countdown never `eval`s model text. After the official checks, the expression is evaluated
   by `unift.tasks.safe_arith.evaluate` (exact fractions, bounded) and compared exactly:
   |value - int(target)| < 1/100000 (official: the float result; they can differ only within
   float rounding of that boundary). safe_arith rejects things Python's `eval` accepts, and
   those score 0.1 here where the official may give 1.0: `**` (and the official would hang on
   `9**9**9**9`), `//`, any decimal point ("1.5", "3.", ".5"), parentheses or unary signs
   nested more than 64 deep (Python accepts up to ~200 parentheses), and expressions longer
   than 1,000 characters. Cases where Python's `eval` raises SyntaxError but safe_arith would
   read a value are rejected here too, so they score 0.1 as officially: integer literals with
   a leading zero ("05", "007"; "0" and "00" are fine) and whitespace inside the expression
   other than space, tab and form feed ("\\v", no-break and other unicode spaces, which the
   regex's `\\s` lets through; "\\r" is a line break to Python, fine only inside parentheses).
   Non-ASCII digits ("٤٤") pass the official `\\d` checks, then fail in both evaluators: 0.1
   either way.
3. Ground truth. Malformed ground truth raises ValueError, KeyError or TypeError (the caller
   reports it in one line); the official code sometimes scores it instead:
   - countdown: `numbers` must be a list of numbers (official: strings silently never match,
     every answer scores <= 0.1); `target` goes through `int()` as officially ("24.0" raises).
   - math and gsm8k: `ground_truth['target']` or a plain value (`unift.tasks.math.target_of`;
     a non-string target is compared as `str(target)`, where the official `strip_string`
     would fail on it and fall back to comparing a string with a number, never equal); the
     `question` key the official code reads (and requires) is not needed.
   - kk_logic: `solution_text_format` must be a string (a plain string ground truth is taken
     as that text) naming at least one person, at most 10,000 characters (official: missing
     means '' and every answer scores <= 0.1).
4. Routing (`scorer_for`): as `_select_rm_score_fn` (exact, case-sensitive data_source names,
   then substrings), then the unift task name when the data_source is not an official one;
   anything else is a `UserError` (official: NotImplementedError). The official `multiply`
   scorer (data_source containing "multiply" or "arithmetic") is not ported: a `UserError`.
5. Scores are fixed at 0.1 / 1.0 (officially `trainer.format_score` / `correctness_score`,
   0.1 and 1.0 in the UFT configs); the random 1-in-64 debug prints are dropped.
6. The official reward decodes with special tokens kept (e.g. a final "<|im_end|>"); callers
   here usually decode with skip_special_tokens=True. That changes nothing unless special
   tokens sit inside the answer tags: a trailing end-of-turn token stays on the answer's line
   ("... </answer><|im_end|>" still matches), and "</answer>\\n" + EOS gives an empty last
   line either way (score 0.0 in both).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from fractions import Fraction
from numbers import Real
from typing import Any

from unift.errors import UserError
from unift.tasks.answer import MAX_SCAN_CHARS
from unift.tasks.answer_match import score_last_line
from unift.tasks.base import CORRECT_SCORE, FORMAT_SCORE, Reward
from unift.tasks.hendrycks_math import hendrycks_is_equiv, hendrycks_strip_string
from unift.tasks.math import target_of
from unift.tasks.safe_arith import ArithmeticParseError, evaluate

__all__ = [
    "SCORERS",
    "hendrycks_is_equiv",
    "hendrycks_strip_string",
    "last_answer",
    "last_line_answer",
    "official_score",
    "score_countdown",
    "score_gsm8k",
    "score_kk_logic",
    "score_math",
    "scorer_for",
]

_OPEN, _CLOSE = "<answer>", "</answer>"
LOG_CHARS = 200
"""`Reward.answer` keeps at most this many characters of a long answer."""

TOLERANCE = 1e-5
_EXACT_TOLERANCE = Fraction(1, 100_000)
MAX_KK_TRUTH_CHARS = 10_000


def _short(answer: str) -> str:
    return answer[:LOG_CHARS]


# --------------------------------------------------------------------------------------------
# Extraction (utils.extract_solution, kk_logic.extract_solution)


def _tail(text: str) -> str:
    if not isinstance(text, str):
        raise TypeError(f"response must be a string, got {type(text).__name__}")
    return text[-MAX_SCAN_CHARS:] if len(text) > MAX_SCAN_CHARS else text


def last_answer(text: str) -> str | None:
    """The stripped group of the last match of `re.finditer(r'<answer>(.*?)</answer>', text,
    re.DOTALL)`, in linear time; None when there is no match.

    finditer takes matches from the left, each ending at the first `</answer>` after its
    `<answer>`, and resumes after it. An `<answer>` with no `</answer>` after it ends the scan:
    no later `<answer>` can have one either. (The two tags cannot overlap each other or
    themselves, so this scan and the regex agree on every text.)
    """
    pos, found = 0, None
    while True:
        start = text.find(_OPEN, pos)
        if start < 0:
            break
        close = text.find(_CLOSE, start + len(_OPEN))
        if close < 0:
            break
        found = (start + len(_OPEN), close)
        pos = close + len(_CLOSE)
    return None if found is None else text[found[0] : found[1]].strip()


def last_line_answer(response: str) -> str | None:
    """`utils.extract_solution` on the response: the last `<answer>` pair of its last line."""
    line = _tail(response).rsplit("\n", 1)[-1]
    return last_answer(line)  # no "\n" left: DOTALL or not makes no difference


# --------------------------------------------------------------------------------------------
# Countdown (countdown.py)

_NUMBER = re.compile(r"\d+")
_ALLOWED = re.compile(r"^[\d+\-*/().\s]+$")
_ASCII_RUN = re.compile(r"[0-9]+")
_PYTHON_SPACE = frozenset(" \t\f")


def _countdown_truth(ground_truth: Any) -> tuple[int, list]:
    if not isinstance(ground_truth, Mapping):
        raise TypeError("countdown ground_truth must be a mapping with 'numbers' and 'target'")
    target = int(ground_truth["target"])
    numbers = ground_truth["numbers"]
    if isinstance(numbers, (str, bytes, Mapping)) or not hasattr(numbers, "__iter__"):
        raise TypeError("countdown ground_truth 'numbers' must be a list of numbers")
    numbers = list(numbers)
    if not all(isinstance(n, Real) for n in numbers):
        raise TypeError("countdown ground_truth 'numbers' must be a list of numbers")
    return target, numbers


def _uses_numbers(equation: str, numbers: list) -> bool:
    """countdown.validate_equation: the `\\d+` integers, sorted, equal the given numbers sorted."""
    try:
        found = [int(n) for n in _NUMBER.findall(equation)]
    except ValueError:  # a digit run longer than Python's int() accepts
        return False
    return sorted(found) == sorted(numbers)


def _evaluate(equation: str) -> tuple[Fraction | None, str]:
    """countdown.evaluate_equation without eval: (value, "") or (None, why not)."""
    if not _ALLOWED.match(equation):
        return None, "characters other than digits, + - * / ( ) . and spaces"
    if "." in equation:
        return None, "decimal point (only integers are evaluated)"
    for run in _ASCII_RUN.findall(equation):
        if len(run) > 1 and run[0] == "0" and run.strip("0"):
            return None, f"integer with a leading zero ({run[:20]}), a syntax error in Python"
    depth = 0
    for ch in equation:
        depth += (ch == "(") - (ch == ")")
        if ch.isspace() and ch not in _PYTHON_SPACE and not (ch == "\r" and depth > 0):
            return None, f"whitespace {ch!r} that Python's tokenizer rejects here"
    try:
        return evaluate(equation).value, ""
    except ArithmeticParseError as exc:
        return None, str(exc)


def score_countdown(response: str, ground_truth: Any) -> Reward:
    """countdown.compute_score (ground truth `{"numbers": [...], "target": N}`)."""
    target, numbers = _countdown_truth(ground_truth)
    equation = last_line_answer(response)
    if equation is None:
        return Reward(0.0, None, "no equation found")
    if not _uses_numbers(equation, numbers):
        return Reward(FORMAT_SCORE, _short(equation), "invalid equation: numbers differ from the given ones")
    value, why = _evaluate(equation)
    if value is None:
        return Reward(FORMAT_SCORE, _short(equation), f"could not evaluate equation: {why}")
    if abs(value - target) < _EXACT_TOLERANCE:
        return Reward(CORRECT_SCORE, _short(equation), "correct equation")
    return Reward(FORMAT_SCORE, _short(equation), "wrong result")


def score_math(response: str, ground_truth: Any) -> Reward:
    """math.compute_score (ground truth `{"target": "..."}` or the target string itself)."""
    target = target_of(ground_truth)
    answer = last_line_answer(response)
    if answer is None:
        return Reward(0.0, None, "no answer found")
    if hendrycks_is_equiv(answer, target):
        return Reward(CORRECT_SCORE, _short(answer), "correct answer")
    return Reward(FORMAT_SCORE, _short(answer), "incorrect answer")


# --------------------------------------------------------------------------------------------
# GSM8K (gsm8k.py; also AIME and AMC)


def score_gsm8k(response: str, ground_truth: Any) -> Reward:
    """gsm8k.compute_score: `float(answer)` within 1e-5 of `float(target)`."""
    target = float(target_of(ground_truth))
    answer = last_line_answer(response)
    if answer is None:
        return Reward(0.0, None, "no answer found")
    try:
        value = float(answer)  # linear in the (at most MAX_SCAN_CHARS long) answer; never eval
    except ValueError:
        return Reward(FORMAT_SCORE, _short(answer), "answer is not a number")
    if abs(value - target) < TOLERANCE:
        return Reward(CORRECT_SCORE, _short(answer), "correct answer")
    return Reward(FORMAT_SCORE, _short(answer), "wrong answer")


# --------------------------------------------------------------------------------------------
# Knights and Knaves (kk_logic.py)

_TRUTH_LINE = re.compile(r"\b([A-Za-z]+)\b.*?\b(knight|knave)\b", re.IGNORECASE)


def _kk_truth(ground_truth: Any) -> dict[str, str]:
    """kk_logic.parse_solution_text_format: {name: "knight" | "knave"} from the ground truth."""
    if isinstance(ground_truth, Mapping):
        text = ground_truth["solution_text_format"]
    elif isinstance(ground_truth, str):
        text = ground_truth
    else:
        raise TypeError("kk_logic ground_truth must be a mapping with 'solution_text_format'")
    if not isinstance(text, str):
        raise TypeError("kk_logic ground_truth 'solution_text_format' must be a string")
    if len(text) > MAX_KK_TRUTH_CHARS:
        raise ValueError(f"kk_logic ground_truth 'solution_text_format' is longer than {MAX_KK_TRUTH_CHARS} characters")
    status: dict[str, str] = {}
    for line in text.split("\n"):
        line = line.strip()
        if not line:
            continue
        match = _TRUTH_LINE.search(line)
        if match:
            name, role = match.groups()
            status[name] = role.lower()
    if not status:
        raise ValueError("kk_logic ground_truth 'solution_text_format' names nobody as a knight or knave")
    return status


def _kk_parse(answer_text: str, expected_names: list[str]) -> dict[str, str] | None:
    """kk_logic.parse_model_answer: None when the role count or any person's role is missing."""
    lowered = answer_text.lower()
    if lowered.count("knight") + lowered.count("knave") != len(expected_names):
        return None
    status: dict[str, str] = {}
    for name in expected_names:
        pattern = re.compile(rf"\b{re.escape(name)}\b\s+is\s+a\s+\b(knight|knave)\b", re.IGNORECASE)
        match = pattern.search(answer_text)
        if not match:
            return None
        status[name] = match.group(1).lower()
    return status


def score_kk_logic(response: str, ground_truth: Any) -> Reward:
    """kk_logic.compute_score (ground truth with `solution_text_format`)."""
    truth = _kk_truth(ground_truth)
    answer = last_answer(_tail(response))
    if not answer:
        return Reward(0.0, answer, "no answer found" if answer is None else "empty answer")
    predicted = _kk_parse(answer, list(truth))
    if not predicted:
        return Reward(FORMAT_SCORE, _short(answer), "fail to parse answer")
    if predicted == truth:
        return Reward(CORRECT_SCORE, _short(answer), "full match")
    return Reward(FORMAT_SCORE, _short(answer), "mismatch")


# --------------------------------------------------------------------------------------------
# Routing (main_ppo._select_rm_score_fn)

SCORERS: dict[str, Callable[[str, Any], Reward]] = {
    "countdown": score_countdown,
    "math": score_math,
    "gsm8k": score_gsm8k,
    "kk_logic": score_kk_logic,
    "answer_match": score_last_line,  # not an official task: unift's, with the official last-line rule
}

GSM8K_SOURCES = ("openai/gsm8k", "aime", "amc")
MATH_SOURCES = ("DigitalLearningGmbH/MATH-lighteval", "cais/hle", "math500", "minerva", "olympiad_bench")


def scorer_for(data_source: str, task: str) -> str:
    """Name of the official scorer (a key of `SCORERS`) for a row.

    data_source first, as `_select_rm_score_fn`: openai/gsm8k, aime, amc -> gsm8k;
    DigitalLearningGmbH/MATH-lighteval, cais/hle, math500, minerva, olympiad_bench -> math;
    containing "countdown" -> countdown; containing "kk_logic" -> kk_logic. Otherwise the unift
    task name (countdown, gsm8k, kk_logic, math). Anything else is a one-line `UserError`.
    """
    source = "" if data_source is None else str(data_source)
    name = "" if task is None else str(task)
    if source in GSM8K_SOURCES:
        return "gsm8k"
    if source in MATH_SOURCES:
        return "math"
    if "multiply" in source or "arithmetic" in source:
        raise UserError(f"data_source '{source}' is scored by the official multiply reward, which unift "
                        f"does not port (official scorers: {', '.join(sorted(SCORERS))})")
    if "countdown" in source:
        return "countdown"
    if "kk_logic" in source:
        return "kk_logic"
    if name in SCORERS:
        return name
    raise UserError(
        f"no official UFT scorer for data_source '{source}' with task '{name}': data_source must be one of "
        f"{', '.join(GSM8K_SOURCES + MATH_SOURCES)} or contain 'countdown' or 'kk_logic', "
        f"or task one of {', '.join(sorted(SCORERS))}")


def official_score(response: str, ground_truth: Any, *, data_source: str = "", task: str = "") -> Reward:
    """Score `response` (hint + generated continuation, without the prompt) as the official UFT
    reward would. Malformed ground truth raises ValueError, KeyError or TypeError."""
    return SCORERS[scorer_for(data_source, task)](response, ground_truth)
