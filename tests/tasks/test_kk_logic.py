"""Knights and Knaves: reward on the official data, the solver narrative and the generator."""

import ast
import re
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unift.tasks.kk_logic import (
    SAYING_TEMPLATES,
    KKLogicTask,
    format_prompt,
    format_statement,
    solution_pieces,
    solve,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "uft"
TASK = KKLogicTask()
GT = {
    "names": ["Amelia", "Penelope", "Evelyn"],
    "solution": [True, True, False],
    "solution_text_format": "(1) Amelia is a knight\n(2) Penelope is a knight\n(3) Evelyn is a knave",
    "statements": "(('not', ('telling-truth', 2)), ('or', ('telling-truth', 1), ('lying', 2)), "
    "('<=>', ('telling-truth', 1), ('lying', 1)))",
}
RIGHT = "(1) Amelia is a knight\n(2) Penelope is a knight\n(3) Evelyn is a knave"


@pytest.fixture(scope="module")
def test_rows() -> list[dict]:
    path = DATA / "kk_logic" / "test.parquet"
    if not path.is_file():
        pytest.skip(f"official UFT data not found at {path}")
    return pq.read_table(path).to_pylist()


def test_official_reference_answers_score_one(test_rows):
    scores = [TASK.score(r["answer"], r["reward_model"]["ground_truth"]).score for r in test_rows]
    fraction = sum(s == 1.0 for s in scores) / len(scores)
    print(f"kk_logic/test: {fraction:.4f} of {len(scores)} reference answers score 1.0")
    assert fraction >= 0.99


def _swap_first_role(answer: str) -> str:
    think, final = answer.split("<answer>")
    swapped = re.sub(r"knight|knave", lambda m: "knave" if m.group() == "knight" else "knight", final, count=1)
    return think + "<answer>" + swapped


def test_official_corrupted_answers_score_below_one(test_rows):
    for r in test_rows:
        gt = r["reward_model"]["ground_truth"]
        assert TASK.score(_swap_first_role(r["answer"]), gt).score == 0.1


def test_official_solutions_are_unique(test_rows):
    for r in test_rows:
        gt = r["reward_model"]["ground_truth"]
        assert solve(ast.literal_eval(gt["statements"])) == [tuple(gt["solution"])]


def test_narrative_reproduces_official_hints(test_rows):
    same = sum(
        solution_pieces(r["reward_model"]["ground_truth"]["names"], ast.literal_eval(r["reward_model"]["ground_truth"]["statements"]))
        == list(r["hint"])
        for r in test_rows
    )
    print(f"kk_logic/test: {same / len(test_rows):.4f} of official hints reproduced exactly")
    assert same / len(test_rows) >= 0.99


def test_prompt_reproduces_official_prompts(test_rows):
    for r in test_rows:
        gt = r["reward_model"]["ground_truth"]
        statements = ast.literal_eval(gt["statements"])
        prompt = r["prompt"][0]["content"]
        templates = []
        for name, statement in zip(gt["names"], statements):
            content = format_statement(gt["names"], statement)
            templates.append(next(t for t in SAYING_TEMPLATES if t.format(name=name, content=content) in prompt))
        assert format_prompt(gt["names"], statements, templates) == prompt


@pytest.mark.parametrize(
    "response, score",
    [
        (f"<answer> {RIGHT} </answer>", 1.0),
        ("<answer> Amelia is a knight, Penelope is a knight, and Evelyn is a knave. </answer>", 1.0),
        ("<answer> (1) amelia is a KNIGHT\n(2) Penelope is a knight\n(3) Evelyn is a knave </answer>", 1.0),
        ("<answer> (1) Amelia is a knave\n(2) Penelope is a knight\n(3) Evelyn is a knave </answer>", 0.1),
        ("<answer> (1) Amelia is a knight\n(2) Penelope is a knight </answer>", 0.1),  # incomplete
        # hedging: a name with both roles, or extra role words
        ("<answer> Amelia is a knight\nAmelia is a knave\nPenelope is a knight\nEvelyn is a knave </answer>", 0.1),
        (f"<answer> {RIGHT}\nor maybe a knave </answer>", 0.1),
        ("<answer> Amelia is not a knave, Penelope is a knight, Evelyn is a knave </answer>", 0.1),
        ("<answer> nobody knows </answer>", 0.1),
        (RIGHT, 0.0),  # no tags
        ("", 0.0),
    ],
)
def test_scores(response, score):
    assert TASK.score(response, GT).score == score


def test_ground_truth_from_solution_text_only():
    gt = {"solution_text_format": GT["solution_text_format"]}
    assert TASK.score(f"<answer> {RIGHT} </answer>", gt).score == 1.0
    assert TASK.score(f"<answer> {RIGHT} </answer>", GT["solution_text_format"]).score == 1.0


HOSTILE = [
    "9" * 10_000,
    "(" * 10_000,
    "x" * (1 << 20),
    "Amelia is a knight " * 50_000,
    "knight" * 100_000,
    "__import__('os')",
    "١٢",
    "1 / 0",
]


@pytest.mark.parametrize("payload", HOSTILE)
@pytest.mark.parametrize("wrap", ["<answer>{}</answer>", "<answer><answer>{}</answer></answer>", "{}"])
def test_hostile_inputs(payload, wrap):
    start = time.perf_counter()
    score = TASK.score(wrap.format(payload), GT).score
    assert time.perf_counter() - start < 5.0
    assert score in (0.0, 0.1)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["<answer>", "</answer>", "Amelia", "Penelope", "Evelyn", " is a ", "knight", "knave", "\n", " "]) | st.text(max_size=6), max_size=40))
def test_random_text_scores_in_range(parts):
    assert TASK.score("".join(parts), GT).score in (0.0, 0.1, 1.0)


# ---------------------------------------------------------------------------------------------
# Generator


def test_generator_is_deterministic():
    first = TASK.generate(20, seed=7)
    second = TASK.generate(20, seed=7)
    assert [(e.prompt, e.completion, e.pieces, e.ground_truth) for e in first] == [
        (e.prompt, e.completion, e.pieces, e.ground_truth) for e in second
    ]
    assert [e.prompt for e in TASK.generate(20, seed=8)] != [e.prompt for e in first]


def test_generated_puzzles_are_unique_and_references_score_one():
    examples = TASK.generate(150, seed=0, min_people=3, max_people=6)
    assert len({e.ground_truth["statements"] + str(e.ground_truth["names"]) for e in examples}) == 150
    for ex in examples:
        gt = ex.ground_truth
        statements = ast.literal_eval(gt["statements"])
        assert 3 <= len(gt["names"]) <= 6
        assert len(set(gt["names"])) == len(gt["names"]) == len(statements) == len(gt["solution"])
        assert solve(statements) == [tuple(gt["solution"])]  # unique solution
        assert TASK.score(ex.completion, gt).score == 1.0
        assert ex.completion == "".join(ex.pieces) + f" </think>\n<answer> {gt['solution_text_format']} </answer>"
        assert ex.pieces[-len(gt["names"])].startswith("Therefore, (1) ")
        assert ex.prompt.startswith("A conversation between User and Assistant.")
        assert ex.prompt.endswith("Assistant: Let me solve this step by step.\n<think> ")
        assert f"You meet {len(gt['names'])} inhabitants: " in ex.prompt
        assert ex.data_source == "kk_logic" and ex.task == "kk_logic"


def test_generated_pieces_follow_official_sentence_forms():
    forms = re.compile(
        r"Assume \w+ is a kn(?:ight|ave)\. "
        r"|No contradiction is found in their (?:false )?claim that .+\.\n"
        r"|\w+ cannot be a kn(?:ight|ave), because this would contradict the (?:false )?claim of (?:their own|\w+) that .+\.\n"
        r"|We have exhausted all possibilities for .+, so let us go back and reconsider \w+\.\n"
        r"|(?:Therefore, )?\(\d+\) \w+ is a kn(?:ight|ave)\n?"
    )
    for ex in TASK.generate(50, seed=1):
        for piece in ex.pieces:
            assert forms.fullmatch(piece), piece


def test_generator_people_range():
    for ex in TASK.generate(10, seed=2, min_people=4, max_people=4):
        assert len(ex.ground_truth["names"]) == 4
    with pytest.raises(ValueError):
        TASK.generate(1, seed=0, min_people=5, max_people=4)
