"""The port of the official UFT rewards: hand-derived cases per scorer, routing, real rows, hostile text.

Expected values are worked out by hand from the official code (verl/utils/reward_score in the
UFT repository), not by running it.
"""

import random
import re
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from unift.errors import UserError
from unift.tasks.official import (
    SCORERS,
    hendrycks_is_equiv,
    hendrycks_strip_string,
    last_answer,
    last_line_answer,
    official_score,
    score_countdown,
    score_gsm8k,
    score_kk_logic,
    score_math,
    scorer_for,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "uft"
THINK = "Let me think.\nSo it is done </think>\n"
KK_GT = {"solution_text_format": "(1) Amy is a knight\n(2) Bob is a knave"}


def tagged(answer: str, before: str = THINK) -> str:
    return f"{before}<answer> {answer} </answer>"


# --------------------------------------------------------------------------------------------
# Extraction


def test_last_line_rule():
    assert last_line_answer(tagged("7")) == "7"
    assert last_line_answer(tagged("7") + "\n") is None  # the last line is empty
    assert last_line_answer(tagged("7") + "\nThat is all.") is None
    assert last_line_answer("<answer> 1 </answer>\n<answer> 2") is None  # last line: no pair
    assert last_line_answer("<answer> 1 </answer> and <answer> 2 </answer>") == "2"  # last pair
    assert last_line_answer("<answer>\n7 </answer>") is None  # a pair must sit on the last line
    assert last_line_answer("no newline <answer>7</answer>") == "7"


def test_finditer_semantics_not_rfind():
    # The regex takes matches from the left, each up to the first close; nested opens stay inside.
    assert last_answer("<answer> a <answer> b </answer>") == "a <answer> b"
    assert last_answer("<answer> a </answer> </answer>") == "a"
    assert last_answer("<answer> a </answer> <answer> b") == "a"  # unterminated last open
    assert last_answer("<answer></answer>") == ""
    assert last_answer("</answer><answer>") is None


def test_linear_scan_equals_the_official_regex():
    pattern = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
    rng = random.Random(0)
    pieces = ["<answer>", "</answer>", "<answer", "answer>", "</", "<", ">", "\n", "x", " "]
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        matches = list(pattern.finditer(text))
        expected = matches[-1].group(1).strip() if matches else None
        assert last_answer(text) == expected, text
        line = text.split("\n")[-1]
        matches = list(re.finditer(r"<answer>(.*?)</answer>", line))
        assert last_line_answer(text) == (matches[-1].group(1).strip() if matches else None), text


# --------------------------------------------------------------------------------------------
# Countdown

CD = {"numbers": [44, 19, 35], "target": 98}


@pytest.mark.parametrize("answer, score", [
    ("44 + (19 + 35)", 1.0),
    ("(35 + 19) + 44", 1.0),
    ("44 + 19 + 35 + 0", 0.1),    # 0 is not a given number
    ("44 + 19", 0.1),              # 35 unused
    ("44 + 19 - 35", 0.1),         # right numbers, wrong value
    ("44 + 19 + 35 = 98", 0.1),    # 98 is an extra number
    ("044 + 19 + 35", 0.1),        # leading zero: a SyntaxError for Python's eval
    ("44 +\t19 + 35", 1.0),        # tab is Python whitespace
    ("44 +\xa019 + 35", 0.1),      # no-break space passes \s but not Python's tokenizer
    ("(44 +\r19) + 35", 1.0),      # "\r" is a line break, fine inside parentheses
    ("44 +\r19 + 35", 0.1),        # ... and a syntax error outside them
    ("44 + 19 + ٣٥", 0.1),         # Arabic-Indic 35: passes the \d checks, not an integer literal
    ("44 + (19 + 35) x", 0.1),     # characters outside the allowed set
    ("", 0.1),                      # empty equation: numbers differ
])
def test_countdown_cases(answer, score):
    assert score_countdown(tagged(answer), CD).score == score


def test_countdown_zero_literals_and_exact_division():
    assert score_countdown(tagged("00 + 6"), {"numbers": [0, 6], "target": 6}).score == 1.0
    assert score_countdown(tagged("(1 / 3) * 3"), {"numbers": [1, 3, 3], "target": 1}).score == 1.0
    assert score_countdown(tagged("5 / (2 - 2)"), {"numbers": [5, 2, 2], "target": 1}).score == 0.1


def test_countdown_tolerance_is_strict_1e5():
    # 1 + 1/100001 is 9.9999e-6 away from 1 (accepted), 1 + 1/99999 is 1.00001e-5 away (not).
    assert score_countdown(tagged("1 + 1 / 100001"), {"numbers": [1, 1, 100001], "target": 1}).score == 1.0
    assert score_countdown(tagged("1 + 1 / 99999"), {"numbers": [1, 1, 99999], "target": 1}).score == 0.1


def test_countdown_python_only_syntax_is_format_score():
    # Python's eval would accept these (and give 1.0); safe_arith does not: documented.
    assert score_countdown(tagged("1.5 * 4"), {"numbers": [1, 5, 4], "target": 6}).score == 0.1
    assert score_countdown(tagged("3 ** 2"), {"numbers": [3, 2], "target": 9}).score == 0.1
    assert score_countdown(tagged("19 // 2"), {"numbers": [19, 2], "target": 9}).score == 0.1
    deep = "(" * 100 + "44 + 19 + 35" + ")" * 100
    assert score_countdown(tagged(deep), CD).score == 0.1


def test_countdown_power_tower_is_quick():
    started = time.perf_counter()
    reward = score_countdown(tagged("9**9**9**9"), {"numbers": [9, 9, 9, 9], "target": 24})
    assert reward.score == 0.1 and reward.answer == "9**9**9**9"
    assert time.perf_counter() - started < 0.1


def test_countdown_no_answer_and_string_target():
    assert score_countdown("44 + 19 + 35", CD).score == 0.0
    assert score_countdown(tagged("44 + (19 + 35)"), {"numbers": [44, 19, 35], "target": "98"}).score == 1.0


@pytest.mark.parametrize("gt, error", [
    ({"numbers": [1, 2]}, KeyError),
    ({"target": 3}, KeyError),
    ({"numbers": "1, 2", "target": 3}, TypeError),
    ({"numbers": ["1", "2"], "target": 3}, TypeError),
    ({"numbers": [1, 2], "target": "3.0"}, ValueError),
    ({"numbers": [1, 2], "target": None}, TypeError),
    ([1, 2, 3], TypeError),
])
def test_countdown_malformed_ground_truth(gt, error):
    with pytest.raises(error):
        score_countdown(tagged("1 + 2"), gt)


# --------------------------------------------------------------------------------------------
# MATH (Hendrycks normalisation)


@pytest.mark.parametrize("answer, target, equal", [
    ("\\frac12", "\\frac{1}{2}", True),
    ("0.5", "\\frac{1}{2}", True),
    (".5", "\\frac{1}{2}", True),
    ("\\dfrac{1}{2}", "\\frac{1}{2}", True),
    ("\\tfrac{3}{4}", "\\frac34", True),
    ("1/2", "\\frac{1}{2}", True),
    ("k = 3", "3", True),
    ("x=3", "3", True),
    ("abc = 3", "3", False),            # left side longer than 2 characters stays
    ("5\\text{ cm}", "5", True),       # a unit on the right
    ("90^\\circ", "90", True),
    ("50\\%", "50", True),
    ("\\$18", "18", True),
    ("$18$", "18", False),              # plain dollars are not removed
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})", True),
    ("\\sqrt3", "\\sqrt{3}", True),
    ("\\boxed{3}", "3", False),         # boxed answers are not unwrapped
    ("3.0", "3", False),                # no numeric comparison
    ("x/2", "\\frac{x}{2}", False),     # int('x') raises: raw strings compared
    ("x/2", "x/2", True),
    ("x / 2", "x/2", False),            # the exception skips the space removal too
    ("5 \\text{ a}\\text{ b}", "5\\text{ a}\\text{ b}", False),  # two "\text{ ": assert -> raw compare
    ("5\\text{ a}\\text{ b}", "5\\text{ a}\\text{ b}", True),
    ("3\\frac", "3 \\frac", False),     # trailing \frac: IndexError -> raw compare
    ("3\\frac", "3\\frac", True),
])
def test_hendrycks_is_equiv(answer, target, equal):
    assert hendrycks_is_equiv(answer, target) is equal
    assert score_math(tagged(answer), {"question": "q", "target": target}).score == (1.0 if equal else 0.1)


def test_strip_string_steps():
    assert hendrycks_strip_string("\\frac1{72}") == "\\frac{1}{72}"
    assert hendrycks_strip_string("\\frac{72}1") == "\\frac{72}1"
    assert hendrycks_strip_string(" .25") == "0.25"  # " ." -> " 0.", then spaces dropped
    assert hendrycks_strip_string("x = .5") == "\\frac{1}{2}"
    assert hendrycks_strip_string("") == ""
    with pytest.raises(ValueError):
        hendrycks_strip_string("a/b")
    with pytest.raises(AssertionError):
        hendrycks_strip_string("1\\text{ a}\\text{ b}")


def test_math_extraction_and_targets():
    assert score_math("the answer is \\boxed{3}", {"target": "3"}).score == 0.0  # boxed not read
    assert score_math(tagged("3") + "\n", {"target": "3"}).score == 0.0           # last line empty
    assert score_math(tagged("3"), "3").score == 1.0                                # plain target
    assert score_math(tagged("5"), {"target": 5}).score == 1.0                      # compared as "5"
    with pytest.raises(ValueError):
        score_math(tagged("3"), {"question": "q"})
    with pytest.raises(ValueError):
        score_math(tagged("3"), None)


# --------------------------------------------------------------------------------------------
# GSM8K (also AIME, AMC)


@pytest.mark.parametrize("answer, target, score", [
    ("18", "18", 1.0),
    ("18.000001", "18", 1.0),
    ("18.0001", "18", 0.1),
    ("1200.0", "1200", 1.0),
    ("1,200", "1200", 0.1),      # float() fails: format score
    ("1_200", "1200", 1.0),      # float() reads underscores
    ("1e3", "1000", 1.0),
    ("18 dollars", "18", 0.1),
    ("\\boxed{18}", "18", 0.1),
    ("$18", "18", 0.1),
    ("nan", "18", 0.1),
    ("142", "142.0", 1.0),       # the AMC targets are written "142.0"
    ("", "18", 0.1),
])
def test_gsm8k_cases(answer, target, score):
    assert score_gsm8k(tagged(answer), {"question": "q", "target": target}).score == score


def test_gsm8k_no_answer_and_bad_target():
    assert score_gsm8k("#### 18", {"target": "18"}).score == 0.0
    assert score_gsm8k(tagged("18"), 18).score == 1.0
    with pytest.raises(ValueError):
        score_gsm8k(tagged("18"), {"target": "1,200"})
    with pytest.raises(ValueError):
        score_gsm8k(tagged("18"), {"question": "q"})


# --------------------------------------------------------------------------------------------
# Knights and Knaves


@pytest.mark.parametrize("response, score", [
    (tagged("(1) Amy is a knight\n(2) Bob is a knave"), 1.0),
    (tagged("(1) Amy is a knight\n(2) Bob is a knave") + "\nThat is my answer.", 1.0),  # anywhere, not last line
    ("<answer> old </answer>\n" + tagged("amy IS A KNIGHT, bob is a   KNAVE"), 1.0),
    (tagged("Amy is a knight, Bob is a knight"), 0.1),          # wrong role
    (tagged("Amy is a knight, Bob is a knave. Knights tell the truth."), 0.1),  # 3 role words for 2 people
    (tagged("Amy is a knight"), 0.1),                           # count mismatch
    (tagged("Amy is a knight, Bobby is a knave"), 0.1),         # no "Bob is a ..."
    (tagged("Amy is knight, Bob is a knave"), 0.1),             # "is a" needed
    (tagged("Amy: knight, Bob: knave"), 0.1),
    ("<answer>   </answer>", 0.0),                              # empty answer
    ("<answer></answer>", 0.0),
    ("Amy is a knight, Bob is a knave", 0.0),                   # no tags
    ("<answer> Amy is a knight, Bob is a knave", 0.0),          # unterminated
])
def test_kk_cases(response, score):
    assert score_kk_logic(response, KK_GT).score == score


def test_kk_string_truth_and_duplicate_lines():
    truth = "(1) Amy is a knight\n(2) Amy is a knave"  # one person, last line wins
    assert score_kk_logic(tagged("Amy is a knave"), truth).score == 1.0
    assert score_kk_logic(tagged("Amy is a knight"), truth).score == 0.1
    assert score_kk_logic(tagged("(1) Amy is a knight\n(2) Bob is a knave"), KK_GT["solution_text_format"]).score == 1.0


@pytest.mark.parametrize("gt, error", [
    ({"names": ["Amy"], "solution": [True]}, KeyError),
    ({"solution_text_format": None}, TypeError),
    ({"solution_text_format": "nobody here"}, ValueError),
    ({"solution_text_format": "Amy is a knight\n" * 1000}, ValueError),
    (None, TypeError),
])
def test_kk_malformed_ground_truth(gt, error):
    with pytest.raises(error):
        score_kk_logic(tagged("Amy is a knight"), gt)


# --------------------------------------------------------------------------------------------
# Routing


@pytest.mark.parametrize("data_source, task, scorer", [
    ("openai/gsm8k", "", "gsm8k"),
    ("aime", "math", "gsm8k"),               # data_source wins: AIME/AMC use the float scorer
    ("amc", "", "gsm8k"),
    ("DigitalLearningGmbH/MATH-lighteval", "", "math"),
    ("cais/hle", "", "math"),
    ("math500", "gsm8k", "math"),
    ("minerva", "", "math"),
    ("olympiad_bench", "", "math"),
    ("countdown", "", "countdown"),
    ("my_countdown_v2", "math", "countdown"),
    ("kk_logic", "", "kk_logic"),
    ("kk_logic_hard", "", "kk_logic"),
    ("gsm8k", "gsm8k", "gsm8k"),             # not an official name: the task decides
    ("AIME", "math", "math"),                # names are case-sensitive, as officially
    ("", "countdown", "countdown"),
    ("", "kk_logic", "kk_logic"),
])
def test_routing(data_source, task, scorer):
    assert scorer_for(data_source, task) == scorer
    assert scorer in SCORERS


@pytest.mark.parametrize("data_source, task", [("", ""), ("hendrycks", "algebra"), ("multiply", "math"),
                                                ("arithmetic_countdown", "countdown")])
def test_routing_errors_are_one_line(data_source, task):
    with pytest.raises(UserError) as info:
        scorer_for(data_source, task)
    message = str(info.value)
    assert "\n" not in message and "countdown" in message and "kk_logic" in message


def test_official_score_routes():
    assert official_score(tagged("18"), {"target": "18"}, data_source="aime").score == 1.0
    assert official_score(tagged("18.0"), {"target": "18"}, data_source="math500").score == 0.1
    assert official_score(tagged("44 + 19 + 35"), CD, task="countdown").score == 1.0
    with pytest.raises(TypeError):
        official_score(None, CD, task="countdown")


# --------------------------------------------------------------------------------------------
# Real rows of the official data


def _rows(name: str) -> list[dict]:
    path = DATA / name
    if not path.is_file():
        pytest.skip(f"official UFT data not found at {path}")
    return pq.read_table(path).to_pylist()


def _truth(row: dict):
    return {k: v for k, v in row["reward_model"]["ground_truth"].items() if v is not None}


@pytest.mark.parametrize("name, expected_misses", [
    ("countdown/test.parquet", 0),
    ("kk_logic/test.parquet", 0),
    ("math/test.parquet", 1),      # one target holds a newline: its answer is not on the last line
    ("others/test.parquet", 1),    # the same MATH row, plus GSM8K, AIME, AMC, MATH500, Minerva, ...
])
def test_reference_answers_score_one(name, expected_misses):
    rows = _rows(name)
    misses = []
    for row in rows:
        reward = official_score(row["answer"], _truth(row), data_source=row["data_source"])
        if reward.score != 1.0:
            misses.append((row["data_source"], _truth(row).get("target")))
        extra = official_score(row["answer"] + "\nDone.", _truth(row), data_source=row["data_source"])
        assert extra.score == (1.0 if row["data_source"] == "kk_logic" else 0.0)
    assert len(misses) == expected_misses, misses[:5]
    for source, target in misses:
        assert source == "DigitalLearningGmbH/MATH-lighteval" and "\n" in target


def test_real_ground_truth_shapes_through_the_loader():
    from unift.data.loading import load_examples

    path = DATA / "others" / "test.parquet"
    if not path.is_file():
        pytest.skip(f"official UFT data not found at {path}")
    seen = {}
    for ex in load_examples(str(path)):
        seen.setdefault(ex.data_source, ex)
    assert set(seen) == {"openai/gsm8k", "DigitalLearningGmbH/MATH-lighteval", "countdown", "olympiad_bench",
                         "math500", "minerva", "amc", "aime"}
    for ex in seen.values():
        assert official_score(ex.completion, ex.ground_truth, data_source=ex.data_source, task=ex.task).score == 1.0
    countdown = seen["countdown"].ground_truth
    assert set(countdown) == {"numbers", "target"} and isinstance(countdown["target"], str)
    wrong = seen["countdown"].completion.replace("<answer>", "<answer> 1 + ", 1)
    assert official_score(wrong, countdown, data_source="countdown").score == 0.1


# --------------------------------------------------------------------------------------------
# Hostile input


HOSTILE = {
    "unclosed": "<answer>" * 125_000,
    "pairs": "<answer>1</answer>" * 60_000,
    "parentheses": "<answer> " + "(" * 500_000 + "9 + 9 * 9 - 9" + ")" * 500_000 + " </answer>",
    "fracs": "<answer> " + "\\frac" * 200_000 + " </answer>",
    "digits": "<answer> " + "1" * 1_000_000 + "/2 </answer>",
    "roles": "<answer> " + "Amy is a knight " * 65_000 + "</answer>",
    "spaces": "<answer> Amy" + " " * 1_000_000 + "is a knight</answer>",
}
TRUTHS = {"countdown": {"numbers": [9, 9, 9, 9], "target": 24}, "math": {"target": "\\frac{1}{2}"},
          "gsm8k": {"target": "18"}, "kk_logic": KK_GT}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_megabyte_responses_are_quick(kind):
    text = HOSTILE[kind]
    assert len(text) >= 1_000_000
    started = time.perf_counter()
    for task, truth in TRUTHS.items():
        assert official_score(text, truth, task=task).score in (0.0, 0.1, 1.0)
    assert time.perf_counter() - started < 0.5


def test_only_the_tail_is_read():
    answer = tagged("(1) Amy is a knight\n(2) Bob is a knave")
    assert score_kk_logic(answer + " " * 99_000, KK_GT).score == 1.0
    assert score_kk_logic(answer + " " * 100_000, KK_GT).score == 0.0  # the pair starts before the tail
