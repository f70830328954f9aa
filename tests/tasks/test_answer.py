"""Answer extraction: last complete <answer> pair, last balanced \\boxed{}, bounded work."""

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from unift.tasks.answer import MAX_SCAN_CHARS, extract_answer, extract_boxed


def test_extract_answer_basic_and_stripped():
    assert extract_answer("think </think>\n<answer> 42 </answer>") == "42"
    assert extract_answer("<answer>\n(1) A is a knight\n(2) B is a knave </answer>") == (
        "(1) A is a knight\n(2) B is a knave"
    )


def test_extract_answer_takes_last_pair():
    assert extract_answer("<answer> 1 </answer> then <answer> 2 </answer>") == "2"


def test_extract_answer_missing_or_unterminated():
    assert extract_answer("no tags here") is None
    assert extract_answer("") is None
    assert extract_answer(None) is None
    assert extract_answer("<answer> 5") is None
    assert extract_answer("5 </answer>") is None
    # A trailing unterminated tag does not hide an earlier complete pair.
    assert extract_answer("<answer> 5 </answer> and <answer> 6") == "5"


def test_extract_answer_nested_tags():
    assert extract_answer("<answer><answer> x </answer></answer>") == "x"
    assert extract_answer("<answer> a </answer> b </answer>") == "a"


def test_extract_answer_empty_content():
    assert extract_answer("<answer></answer>") == ""


def test_extract_answer_large_input_is_fast():
    text = "x" * (1 << 20) + "<answer> 7 </answer>"
    start = time.perf_counter()
    assert extract_answer(text) == "7"
    assert extract_answer("<answer>" * 200_000) is None
    assert time.perf_counter() - start < 5.0


def test_extract_answer_only_scans_the_tail():
    early = "<answer> early </answer>" + "y" * (MAX_SCAN_CHARS + 10)
    assert extract_answer(early) is None


def test_extract_boxed():
    assert extract_boxed(r"so $\boxed{\frac{1}{2}}$.") == r"\frac{1}{2}"
    assert extract_boxed(r"\boxed{1} and \boxed{ {2} }") == "{2}"
    assert extract_boxed(r"\boxed 5$ done") == "5"
    assert extract_boxed(r"\fbox{3}") == "3"
    assert extract_boxed(r"\boxed{unbalanced") is None
    assert extract_boxed("nothing") is None
    assert extract_boxed(None) is None
    assert extract_boxed(r"\boxed") is None


def test_extract_boxed_hostile_is_fast():
    start = time.perf_counter()
    assert extract_boxed("\\boxed{" + "{" * 500_000) is None
    assert extract_boxed("\\boxed{" * 100_000) is None
    assert time.perf_counter() - start < 5.0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["<answer>", "</answer>", "\\boxed{", "}", "{", " 1 ", "x"]) | st.text(max_size=8), max_size=30))
def test_extractors_never_raise(parts):
    text = "".join(parts)
    answer = extract_answer(text)
    assert answer is None or isinstance(answer, str)
    if answer is not None:
        assert "<answer>" not in answer and "</answer>" not in answer
    boxed = extract_boxed(text)
    assert boxed is None or isinstance(boxed, str)
