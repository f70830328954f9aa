"""Countdown reward on the official data and on hostile text; the problem generator."""

import re
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unift.tasks.countdown import CountdownTask, format_prompt

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "uft"
TASK = CountdownTask()
GT = {"numbers": [47, 76, 55, 60], "target": 24}


def _rows(name: str) -> list[dict]:
    path = DATA / name
    if not path.is_file():
        pytest.skip(f"official UFT data not found at {path}")
    return pq.read_table(path).to_pylist()


@pytest.fixture(scope="module")
def test_rows() -> list[dict]:
    return _rows("countdown/test.parquet")


def test_official_reference_answers_score_one(test_rows):
    scores = [TASK.score(r["answer"], r["reward_model"]["ground_truth"]).score for r in test_rows]
    fraction = sum(s == 1.0 for s in scores) / len(scores)
    print(f"countdown/test: {fraction:.4f} of {len(scores)} reference answers score 1.0")
    assert fraction >= 0.99


def test_official_prompt_format_matches(test_rows):
    for r in test_rows[:200]:
        gt = r["reward_model"]["ground_truth"]
        assert format_prompt(gt["numbers"], gt["target"]) == r["prompt"][0]["content"]


def _change_first_number(answer: str) -> str:
    return re.sub(r"\d+", lambda m: str(int(m.group()) + 1), answer, count=1)


def test_official_corrupted_answers_score_below_one(test_rows):
    for r in test_rows[:200]:
        gt = r["reward_model"]["ground_truth"]
        think, answer = r["answer"].split("<answer>")
        corrupted = think + "<answer>" + _change_first_number(answer)
        assert TASK.score(corrupted, gt).score == 0.1
        wrong_target = {"numbers": gt["numbers"], "target": gt["target"] + 1}
        assert TASK.score(r["answer"], wrong_target).score == 0.1


@pytest.mark.parametrize(
    "response, score",
    [
        ("<answer> ((76 - 47) + 55) - 60 </answer>", 1.0),
        ("<answer>(60 - 55) * 0 + 24</answer>", 0.1),  # numbers not as given
        ("<answer> 76 - 47 + 55 - 60 </answer>", 1.0),  # no parentheses needed
        ("<answer> ((76 - 47) + 55) - 60 = 24 </answer>", 0.1),  # "= 24" uses 24 as a number
        ("<answer> (76 - 47) + 55 </answer>", 0.1),  # a number missing
        ("<answer> ((76 - 47) + 55) - 60 + 60 - 60 </answer>", 0.1),  # a number used twice
        ("<answer> 76 / 47 * 55 / 60 </answer>", 0.1),  # wrong value
        ("<answer> ((76 − 47) + 55) − 60 </answer>", 1.0),  # unicode minus
        ("((76 - 47) + 55) - 60", 0.0),  # no tags
        ("", 0.0),
        ("<answer> 1 </answer> ... <answer> ((76 - 47) + 55) - 60 </answer>", 1.0),  # last wins
    ],
)
def test_scores(response, score):
    assert TASK.score(response, GT).score == score


def test_fractional_intermediates_are_exact():
    assert TASK.score("<answer> 3 / (1 - 3 / 4) </answer>", {"numbers": [3, 1, 3, 4], "target": 12}).score == 1.0


def test_string_target_is_accepted():
    assert TASK.score("<answer> 1 + 2 </answer>", {"numbers": [1, 2], "target": "3"}).score == 1.0


HOSTILE = [
    "9" * 10_000,
    "(" * 10_000,
    "(" * 10_000 + "1" + ")" * 10_000,
    "x" * (1 << 20),
    "1 / 0",
    "47 / (76 - 76) + 55 + 60",
    "__import__('os').system('echo hi')",
    "١٢ + ٣",
    "9 ** 9 ** 9 ** 9",
    "<answer> 1 </answer>",
]


@pytest.mark.parametrize("payload", HOSTILE)
@pytest.mark.parametrize("wrap", ["<answer>{}</answer>", "<answer><answer>{}</answer></answer>", "{}", "<answer>{}"])
def test_hostile_inputs(payload, wrap):
    start = time.perf_counter()
    score = TASK.score(wrap.format(payload), GT).score
    assert time.perf_counter() - start < 5.0
    assert 0.0 <= score <= 1.0 and score != 1.0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["<answer>", "</answer>", "47", "76", "55", "60", "+", "-", "*", "/", "(", ")", " "]) | st.text(max_size=6), max_size=40))
def test_random_text_scores_in_range(parts):
    score = TASK.score("".join(parts), GT).score
    assert score in (0.0, 0.1, 1.0)


# ---------------------------------------------------------------------------------------------
# Generator


def test_generator_is_deterministic():
    first = TASK.generate(20, seed=3)
    second = TASK.generate(20, seed=3)
    assert [(e.prompt, e.completion, e.pieces, e.ground_truth) for e in first] == [
        (e.prompt, e.completion, e.pieces, e.ground_truth) for e in second
    ]
    assert [e.prompt for e in TASK.generate(20, seed=4)] != [e.prompt for e in first]


def test_generated_references_score_one_and_follow_official_style():
    examples = TASK.generate(200, seed=0, min_numbers=3, max_numbers=4)
    assert len(examples) == 200
    line = re.compile(r"\d+ [-+*/] \d+ = \d+\n")
    for ex in examples:
        gt = ex.ground_truth
        assert 3 <= len(gt["numbers"]) <= 4
        assert all(1 <= n <= 99 for n in gt["numbers"])
        assert 10 <= gt["target"] <= 100
        assert TASK.score(ex.completion, gt).score == 1.0
        assert ex.prompt == format_prompt(gt["numbers"], gt["target"])
        assert ex.prompt.endswith("Assistant: Let me solve this step by step.\n<think> ")
        assert len(ex.pieces) == len(gt["numbers"])  # one line per combination + final
        assert all(line.fullmatch(p) for p in ex.pieces[:-1])
        assert ex.pieces[-1].startswith("Therefore, the final equation is ")
        expression = ex.pieces[-1][len("Therefore, the final equation is "):]
        assert ex.completion == "".join(ex.pieces) + f" </think>\n<answer> {expression} </answer>"
        for piece in ex.pieces[:-1]:  # integer, positive intermediates
            assert int(piece.split(" = ")[1]) > 0
        assert ex.data_source == "countdown" and ex.task == "countdown"


def test_generated_problems_are_distinct():
    examples = TASK.generate(100, seed=1)
    keys = {(tuple(e.ground_truth["numbers"]), e.ground_truth["target"]) for e in examples}
    assert len(keys) == 100


def test_generator_number_range_options():
    for ex in TASK.generate(10, seed=2, min_numbers=3, max_numbers=3):
        assert len(ex.ground_truth["numbers"]) == 3
    with pytest.raises(ValueError):
        TASK.generate(1, seed=0, min_numbers=4, max_numbers=3)
