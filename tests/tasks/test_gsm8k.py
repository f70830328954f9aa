"""GSM8K reward: numeric comparison with currency/units stripped, MATH fallback."""

import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unift.tasks.gsm8k import GSM8KTask, parse_number
from unift.tasks.math import is_equiv

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "uft"
TASK = GSM8KTask()


@pytest.fixture(scope="module", autouse=True)
def warm_up():
    """Load math_verify/sympy once, so timing assertions measure scoring, not imports."""
    assert is_equiv("x^2", "x\\cdot x")


def test_official_reference_answers_score_one():
    path = DATA / "others" / "test.parquet"
    if not path.is_file():
        pytest.skip(f"official UFT data not found at {path}")
    rows = [r for r in pq.read_table(path).to_pylist() if r["data_source"] == "openai/gsm8k"]
    scores = [TASK.score(r["answer"], r["reward_model"]["ground_truth"]).score for r in rows]
    fraction = sum(s == 1.0 for s in scores) / len(scores)
    print(f"others/test gsm8k: {fraction:.4f} of {len(rows)} reference answers score 1.0")
    assert fraction >= 0.99
    for r in rows[:200]:  # a changed target is wrong
        target = r["reward_model"]["ground_truth"]["target"]
        wrong = {"target": str(float(target) + 1)}
        assert TASK.score(r["answer"], wrong).score == 0.1


@pytest.mark.parametrize(
    "answer",
    ["1200", "1,200", "$1,200", "\\$1,200", "1200.00", "1200 dollars", "$1200.", "\\text{1200}", "1200 USD",
     "\\boxed{1200}", "$1200$"],
)
def test_equivalent_forms(answer):
    assert TASK.score(f"<answer> {answer} </answer>", {"target": "1200"}).score == 1.0


@pytest.mark.parametrize("answer", ["1201", "120", "12,00 and 5", "-1200", "one thousand", ""])
def test_wrong_answers(answer):
    assert TASK.score(f"<answer> {answer} </answer>", {"target": "1200"}).score == 0.1


def test_percent_and_fraction_fallback():
    assert TASK.score("<answer> 45% </answer>", "45").score == 1.0
    assert TASK.score("<answer> \\frac{36}{2} </answer>", "18").score == 1.0  # exact number
    assert TASK.score("<answer> 3^2 </answer>", "9").score == 1.0  # via math equivalence
    assert TASK.score("<answer> 18 </answer>", 18.0).score == 1.0
    assert TASK.score("no answer here", "18").score == 0.0


def test_parse_number():
    assert parse_number("$1,234.50") == pytest.approx(1234.5)
    assert parse_number("7 apples") == 7
    assert parse_number("3 apples and 4 pears") is None
    assert parse_number("x" * 1000) is None


HOSTILE = ["9" * 10_000, "(" * 10_000, "x" * (1 << 20), "1/0", "__import__('os')", "١٢", "9^{9^{9}}", "1e999999999",
           "1" + "0" * 5000 + " dollars"]


@pytest.mark.parametrize("payload", HOSTILE)
@pytest.mark.parametrize("wrap", ["<answer>{}</answer>", "\\boxed{{{}}}", "<answer><answer>{}</answer></answer>"])
def test_hostile_inputs(payload, wrap):
    start = time.perf_counter()
    score = TASK.score(wrap.format(payload), {"target": "12"}).score
    assert time.perf_counter() - start < 5.0
    assert score in (0.0, 0.1)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["<answer>", "</answer>", "$", ",", "1", "2", ".", "%", " dollars", " "]) | st.text(max_size=6), max_size=30))
def test_random_text_scores_in_range(parts):
    assert TASK.score("".join(parts), {"target": "12"}).score in (0.0, 0.1, 1.0)
