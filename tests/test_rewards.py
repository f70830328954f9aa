"""TRL-style reward callables and the task registry they sit on."""

import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unift import rewards
from unift.errors import UserError
from unift.tasks import TASKS, Example, Reward, generate, get_task, task_for_data_source

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "uft"


@pytest.fixture(scope="module", autouse=True)
def warm_up():
    """Load math_verify/sympy once, so timing assertions measure scoring, not imports."""
    assert rewards.math(completions=["<answer> x^2 </answer>"], ground_truth=["x\\cdot x"]) == [1.0]

CD_GT = {"numbers": [47, 76, 55, 60], "target": 24}
KK_GT = {"names": ["Amelia", "Evelyn"], "solution": [True, False],
         "solution_text_format": "(1) Amelia is a knight\n(2) Evelyn is a knave", "statements": "()"}
MATH_GT = {"question": "q", "target": "\\frac{1}{2}"}
GSM_GT = {"question": "q", "target": "18"}

CASES = {
    "countdown": (rewards.countdown, CD_GT, "<answer> ((76 - 47) + 55) - 60 </answer>", "<answer> 76 - 47 </answer>"),
    "kk_logic": (rewards.kk_logic, KK_GT, "<answer> (1) Amelia is a knight\n(2) Evelyn is a knave </answer>",
                 "<answer> (1) Amelia is a knave\n(2) Evelyn is a knave </answer>"),
    "math": (rewards.math, MATH_GT, "<answer> 0.5 </answer>", "<answer> 0.25 </answer>"),
    "gsm8k": (rewards.gsm8k, GSM_GT, "<answer> $18 </answer>", "<answer> 17 </answer>"),
    "answer_match": (rewards.answer_match, {"target": "Paris"}, "<answer> Paris </answer>", "<answer> Rome </answer>"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_reward_model_column(name):
    func, gt, right, wrong = CASES[name]
    reward_model = [{"ground_truth": gt, "style": "rule"}] * 3
    scores = func(prompts=["p"] * 3, completions=[right, wrong, "no answer"], reward_model=reward_model)
    assert scores == [1.0, 0.1, 0.0]
    assert all(isinstance(s, float) for s in scores)


@pytest.mark.parametrize("name", sorted(CASES))
def test_ground_truth_column_and_conversational_completions(name):
    func, gt, right, wrong = CASES[name]
    completions = [[{"role": "assistant", "content": right}], [{"role": "assistant", "content": wrong}]]
    assert func(prompts=None, completions=completions, ground_truth=[gt, gt]) == [1.0, 0.1]


@pytest.mark.parametrize("name", sorted(CASES))
def test_missing_ground_truth_is_a_user_error(name):
    func = CASES[name][0]
    with pytest.raises(UserError, match="reward_model"):
        func(prompts=["p"], completions=["x"], data_source=["countdown"])


def test_mismatched_lengths_and_bad_rows_are_user_errors():
    with pytest.raises(UserError):
        rewards.countdown(completions=["a", "b"], ground_truth=[CD_GT])
    with pytest.raises(UserError):
        rewards.countdown(completions=["a"], reward_model=[{"style": "rule"}])
    with pytest.raises(UserError):
        rewards.math(completions=["<answer> 1 </answer>"], ground_truth=[{"question": "no target"}])


def test_reward_names_for_trl_logging():
    assert [f.__name__ for f in (rewards.countdown, rewards.kk_logic, rewards.math, rewards.gsm8k)] == [
        "countdown", "kk_logic", "math", "gsm8k"]
    assert rewards.for_task("math")(completions=["<answer> 1/2 </answer>"], ground_truth=["0.5"]) == [1.0]
    with pytest.raises(UserError):
        rewards.for_task("maths")


def test_extra_trl_keyword_arguments_are_ignored():
    scores = rewards.countdown(prompts=["p"], completions=["<answer> ((76 - 47) + 55) - 60 </answer>"],
                               reward_model=[{"ground_truth": CD_GT}], completion_ids=[[1, 2]], trainer_state=None)
    assert scores == [1.0]


@pytest.mark.parametrize("file, func", [("countdown/test.parquet", rewards.countdown),
                                        ("kk_logic/test.parquet", rewards.kk_logic),
                                        ("math/test.parquet", rewards.math)])
def test_official_parquet_columns(file, func):
    path = DATA / file
    if not path.is_file():
        pytest.skip(f"official UFT data not found at {path}")
    table = pq.read_table(path).slice(0, 64).to_pydict()  # columns as TRL passes them
    completions = table.pop("answer")
    prompts = table.pop("prompt")
    assert func(prompts=prompts, completions=completions, **table) == [1.0] * 64


def test_others_parquet_mixed_schema_rows():
    path = DATA / "others" / "test.parquet"
    if not path.is_file():
        pytest.skip(f"official UFT data not found at {path}")
    rows = pq.read_table(path).to_pylist()
    by_source = {}
    for r in rows:
        by_source.setdefault(r["data_source"], r)
    for source, r in by_source.items():
        func = rewards.for_task(task_for_data_source(source))
        assert func(completions=[r["answer"]], reward_model=[r["reward_model"]]) == [1.0], source


HOSTILE = ["9" * 10_000, "(" * 10_000, "x" * (1 << 20), "1 / 0", "__import__('os')", "١٢",
           "<answer>" * 1000 + "</answer>" * 1000, "<answer>" + "(" * 10_000 + "</answer>"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_completions(name):
    func, gt, _, _ = CASES[name]
    for payload in HOSTILE:
        for text in (payload, f"<answer>{payload}</answer>", [{"role": "assistant", "content": payload}], None):
            start = time.perf_counter()
            (score,) = func(completions=[text], ground_truth=[gt])
            assert time.perf_counter() - start < 5.0
            assert 0.0 <= score <= 1.0


_PIECES = st.sampled_from(["<answer>", "</answer>", "\\boxed{", "}", "47", "76", "55", "60", "+", "-", "(", ")",
                           "Amelia", "Evelyn", " is a ", "knight", "knave", "18", "1/2", "\n", " "])


@pytest.mark.parametrize("name", sorted(CASES))
@settings(max_examples=100, deadline=None)
@given(parts=st.lists(_PIECES | st.text(max_size=6), max_size=30))
def test_random_text_property(name, parts):
    func, gt, _, _ = CASES[name]
    (score,) = func(completions=["".join(parts)], ground_truth=[gt])
    assert score in (0.0, 0.1, 1.0)


# ---------------------------------------------------------------------------------------------
# Registry


def test_registry():
    assert set(TASKS) == {"countdown", "kk_logic", "math", "gsm8k", "answer_match"}
    for name, task in TASKS.items():
        assert get_task(name) is task and task.name == name
        assert isinstance(task.score("", CASES[name][1]), Reward)
    with pytest.raises(UserError, match="did you mean 'countdown'"):
        get_task("countdwn")


@pytest.mark.parametrize("source, task", [
    ("countdown", "countdown"), ("kk_logic", "kk_logic"), ("openai/gsm8k", "gsm8k"), ("gsm8k", "gsm8k"),
    ("DigitalLearningGmbH/MATH-lighteval", "math"), ("math500", "math"), ("aime", "math"), ("amc", "math"),
    ("minerva", "math"), ("olympiad_bench", "math"), ("math", "math"),
])
def test_task_for_data_source(source, task):
    assert task_for_data_source(source) == task


def test_task_for_unknown_data_source():
    with pytest.raises(UserError):
        task_for_data_source("squad")


def test_generate():
    examples = generate("countdown", 3, seed=0)
    assert len(examples) == 3 and all(isinstance(e, Example) for e in examples)
    assert [e.prompt for e in generate("kk_logic", 3, seed=0)] == [e.prompt for e in generate("kk_logic", 3, seed=0)]
    with pytest.raises(UserError, match="no problem generator"):
        generate("math", 3, seed=0)
    with pytest.raises(UserError):
        generate("nope", 3, seed=0)
    with pytest.raises(UserError):
        generate("countdown", 0, seed=0)


def test_all_official_data_sources_map_to_a_task():
    for file in ("countdown/test.parquet", "kk_logic/test.parquet", "math/test.parquet", "others/test.parquet"):
        path = DATA / file
        if not path.is_file():
            pytest.skip(f"official UFT data not found at {path}")
        sources = set(pq.read_table(path, columns=["data_source"]).column("data_source").to_pylist())
        for source in sources:
            assert task_for_data_source(source) in TASKS


def test_ground_truths_as_pandas_and_pyarrow_give_them():
    """numpy arrays and scalars, nested dicts with array values and None fields (mixed-schema parquet)."""
    import numpy as np

    gt = {"numbers": np.array([1, 2, 3]), "target": np.int64(6), "solution_text_format": None}
    assert rewards.countdown(completions=["<answer> 1+2+3 </answer>"], reward_model=[{"ground_truth": gt}]) == [1.0]
    assert rewards.math(completions=["<answer> 5 </answer>"], ground_truth=[{"target": np.str_("5"),
                                                                             "numbers": None}]) == [1.0]
    assert rewards.gsm8k(completions=["<answer> 5 </answer>"], ground_truth=np.array([5.0])) == [1.0]
    assert rewards.answer_match(completions=["<answer> b </answer>"], ground_truth=[np.array(["a", "b"])]) == [1.0]
