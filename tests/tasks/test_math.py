"""MATH reward: extraction, normalisation, symbolic equivalence, bounded work, threads."""

import signal
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unift.tasks.math import MathTask, extract_math_answer, is_equiv, normalize

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "uft"
TASK = MathTask()
MATH_SOURCES = {"DigitalLearningGmbH/MATH-lighteval", "math500", "aime", "amc", "minerva", "olympiad_bench"}


@pytest.fixture(scope="module", autouse=True)
def warm_up():
    """Load math_verify/sympy once, so timing assertions measure scoring, not imports."""
    assert is_equiv("x^2", "x\\cdot x")


def _rows(name: str) -> list[dict]:
    path = DATA / name
    if not path.is_file():
        pytest.skip(f"official UFT data not found at {path}")
    return pq.read_table(path).to_pylist()


def test_official_reference_answers_score_one():
    rows = _rows("math/test.parquet")
    # "Parseable": the reference response yields an answer at all (<answer> tags or \boxed{}).
    parseable = [r for r in rows if extract_math_answer(r["answer"]) is not None]
    scores = [TASK.score(r["answer"], r["reward_model"]["ground_truth"]).score for r in parseable]
    fraction = sum(s == 1.0 for s in scores) / len(scores)
    print(f"math/test: {len(parseable)}/{len(rows)} parseable; {fraction:.4f} score 1.0")
    assert len(parseable) >= 0.99 * len(rows)
    assert fraction >= 0.99


def test_official_solutions_without_answer_tags_score_one():
    """The human-written solution alone (no <answer> tags) is scored from its last \\boxed{}."""
    rows = _rows("math/test.parquet")
    texts = [("".join(r["hint"]), r["reward_model"]["ground_truth"]) for r in rows]
    parseable = [(t, gt) for t, gt in texts if extract_math_answer(t) is not None]
    fraction = sum(TASK.score(t, gt).score == 1.0 for t, gt in parseable) / len(parseable)
    print(f"math/test solutions via \\boxed: {len(parseable)} parseable; {fraction:.4f} score 1.0")
    assert fraction >= 0.99


def test_other_math_benchmarks_reference_answers():
    rows = [r for r in _rows("others/test.parquet") if r["data_source"] in MATH_SOURCES]
    fraction = sum(TASK.score(r["answer"], r["reward_model"]["ground_truth"]).score == 1.0 for r in rows) / len(rows)
    print(f"others/test math benchmarks: {fraction:.4f} of {len(rows)} score 1.0")
    assert fraction >= 0.99


def test_official_changed_targets_score_below_one():
    rows = _rows("math/test.parquet")[:150]
    for r in rows:
        target = r["reward_model"]["ground_truth"]["target"]
        assert TASK.score(r["answer"], {"target": f"{target} + 1"}).score == 0.1, target


@pytest.mark.parametrize(
    "answer, target",
    [
        ("0.5", "\\frac{1}{2}"),
        ("\\dfrac{1}{2}", "\\frac12"),
        ("1/2", "\\frac{1}{2}"),
        ("13800", "13,\\!800"),
        ("142", "142.0"),
        ("x = 5", "5"),
        ("120", "120^\\circ"),
        ("\\frac{7}{2}", "3.5"),
        ("2-2\\sqrt2", "2 - 2 \\sqrt{2}"),
        ("\\sqrt{3}/4", "\\frac{\\sqrt{3}}{4}"),
        ("(3, \\pi/2)", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("(x+1)^2", "x^2+2x+1"),
        ("\\frac{21\\pi}{2}", "\\frac{21}{2}\\pi"),
        ("\\text{D}", "\\text{D}"),
        ("$8000$", "8000"),
        ("\\boxed{8000}", "8000"),
        ("10\\%", "10"),
    ],
)
def test_equivalent(answer, target):
    assert is_equiv(answer, target)


@pytest.mark.parametrize(
    "answer, target",
    [("5", "6"), ("\\frac{1}{3}", "0.5"), ("x+1", "x+2"), ("(1, 2)", "(2, 1)"), ("", "1"), ("7", "")],
)
def test_not_equivalent(answer, target):
    assert not is_equiv(answer, target)


def test_normalize():
    assert normalize("\\left( 1, \\dfrac12 \\right)") == "(1,\\frac{1}{2})"
    assert normalize("5\\text{ cm}") == "5"


@pytest.mark.parametrize(
    "response, score",
    [
        ("... </think>\n<answer> 8000 </answer>", 1.0),
        ("so the sum is $\\boxed{8000}$.", 1.0),
        ("<answer> \\boxed{8000} </answer>", 1.0),
        ("<answer> 7000 </answer>", 0.1),
        ("the answer is 8000", 0.0),
        ("", 0.0),
    ],
)
def test_scores(response, score):
    assert TASK.score(response, {"target": "8000"}).score == score


def test_plain_string_ground_truth():
    assert TASK.score("<answer> 8000 </answer>", "8000").score == 1.0
    assert TASK.score("<answer> 8000 </answer>", 8000).score == 1.0


HOSTILE = [
    "9" * 10_000,
    "(" * 10_000,
    "(" * 150 + "1" + ")" * 150,
    "{" * 190 + "}" * 190,
    "x" * (1 << 20),
    "1/0",
    "\\frac{1}{0}",
    "__import__('os').system('ls')",
    "١٢",
    "9^{9^{9}}",
    "2^{99999}",
    "10^{10^{10}}",
    "e^{e^{e^{e^{10}}}}",
    "99999!",
    "\\binom{100000}{50000}",
    "\\sum_{n=1}^{10^{9}} n",
    "x_{1}^{2}" * 40,
    "\\frac{" * 100 + "1" + "}" * 100,
    "1e999999999",
]


@pytest.mark.parametrize("payload", HOSTILE)
@pytest.mark.parametrize("wrap", ["<answer>{}</answer>", "\\boxed{{{}}}", "<answer><answer>{}</answer></answer>"])
def test_hostile_inputs(payload, wrap):
    start = time.perf_counter()
    score = TASK.score(wrap.format(payload), {"target": "12"}).score
    assert time.perf_counter() - start < 5.0
    assert score in (0.0, 0.1)


def test_works_outside_the_main_thread():
    results = {}

    def run():
        results["equiv"] = is_equiv("(x+1)^2", "x^2+2x+1")
        results["score"] = TASK.score("<answer> \\frac{\\sqrt{3}}{4} </answer>", {"target": "\\sqrt{3}/4"}).score
        start = time.perf_counter()
        results["hostile"] = TASK.score("<answer>" + "(" * 150 + "1" + ")" * 150 + "</answer>", "12").score
        results["seconds"] = time.perf_counter() - start

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=60)
    assert results["equiv"] is True
    assert results["score"] == 1.0
    assert results["hostile"] == 0.1 and results["seconds"] < 5.0


def test_caller_timer_is_preserved():
    fired = []

    def handler(*_):
        fired.append(True)

    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 30.0)
        assert is_equiv("(x+1)^2", "x^2+2x+1")
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 25.0 < remaining <= 30.0
        assert signal.getsignal(signal.SIGALRM) is handler
        assert not fired
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["<answer>", "</answer>", "\\boxed{", "}", "{", "\\frac", "^", "(", ")", "1", "x", "=", " "]) | st.text(max_size=6), max_size=30))
def test_random_text_scores_in_range(parts):
    assert TASK.score("".join(parts), {"target": "\\frac{1}{2}"}).score in (0.0, 0.1, 1.0)
