"""Reward functions from user code (unift.user_rewards): loading, TRL's calling convention, and a
one-line error for each way user code can go wrong."""

import math
import textwrap

import pytest

from unift.errors import UserError
from unift.user_rewards import RewardFunc, call_reward, combine, load_reward_funcs

USER_FILE = '''
import time

def length_reward(prompts, completions, **kwargs):
    return [float(len(c)) for c in completions]

def needs_kwargs(prompts, completions):
    return [0.0] * len(completions)

def boom(prompts, completions, **kwargs):
    return [1.0 / (len(c) - 3) for c in completions]

def wrong_length(completions, **kwargs):
    return [1.0]

def not_numbers(completions, **kwargs):
    return ["high" for _ in completions]

def nan(completions, **kwargs):
    return [float("nan") for _ in completions]

def slow(completions, **kwargs):
    time.sleep(5)
    return [0.0 for _ in completions]

def partial(completions, **kwargs):
    return [None if c.startswith("x") else 1.0 for c in completions]

value = 3
'''


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text(USER_FILE)
    return path


def _batch(completions):
    return {"prompts": ["p"] * len(completions), "completions": completions, "completion_ids": [[1]] * len(completions)}


def test_file_module_and_builtin_references(user_file, tmp_path):
    funcs = load_reward_funcs([f"{user_file.name}:length_reward", "unift.rewards:countdown", "math"],
                              [0.5, 1.0, 2.0], config_dir=tmp_path)
    assert [(f.name, f.weight, f.builtin) for f in funcs] == [("length_reward", 0.5, False),
                                                              ("countdown", 1.0, False), ("math", 2.0, True)]
    assert call_reward(funcs[0], _batch(["ab", "abc"]), 2, step=0, timeout_s=5) == [2.0, 3.0]


def test_duplicate_names_are_refused(user_file):
    with pytest.raises(UserError, match="two functions are named 'countdown'"):
        load_reward_funcs(["unift.rewards:countdown", "countdown"], [])


@pytest.mark.parametrize("ref, message", [
    ("nope.py:f", "reward.funcs: cannot import nope.py:f: no file nope.py"),
    ("no_such_module_xyz:f", "reward.funcs: cannot import no_such_module_xyz:f (ModuleNotFoundError: "
                             "No module named 'no_such_module_xyz')"),
    ("{file}:missing", "has no attribute 'missing'"),
    ("{file}:value", "is not callable (it is a int)"),
    ("{file}:needs_kwargs", "must accept **kwargs (TRL's signature"),
    ("countdwn", "'countdwn' is neither a built-in task"),
])
def test_bad_references(user_file, ref, message):
    with pytest.raises(UserError) as caught:
        load_reward_funcs([ref.format(file=user_file)], [])
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_file_that_fails_to_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("raise RuntimeError('no GPU here')\n")
    with pytest.raises(UserError, match=r"cannot import .*bad.py:f \(RuntimeError: no GPU here\)"):
        load_reward_funcs([f"{bad}:f"], [])


def test_weights_must_match():
    with pytest.raises(UserError, match="reward.weights has 1 entries for 2 reward.funcs"):
        load_reward_funcs(["countdown", "math"], [1.0])


def _load(user_file, name):
    return load_reward_funcs([f"{user_file}:{name}"], [])[0]


@pytest.mark.parametrize("name, message", [
    ("boom", "reward boom failed at step 7 on row 1: ZeroDivisionError: float division by zero"),
    ("wrong_length", "reward wrong_length returned 1 scores for 3 completions at step 7"),
    ("not_numbers", "reward not_numbers returned 'high' for row 0 at step 7: scores must be numbers or None"),
    ("nan", "reward nan returned nan for row 0 at step 7: scores must be finite"),
])
def test_bad_results(user_file, name, message):
    with pytest.raises(UserError) as caught:
        call_reward(_load(user_file, name), _batch(["ab", "abc", "abcd"]), 3, step=7, timeout_s=10)
    assert str(caught.value) == message


def test_a_hanging_function_is_stopped(user_file):
    with pytest.raises(UserError) as caught:
        call_reward(_load(user_file, "slow"), _batch(["a"]), 1, step=2, timeout_s=0.2)
    assert str(caught.value).startswith("reward slow did not return within reward.timeout_s=0.2 s at step 2")


def test_none_rows_and_weights():
    funcs = [RewardFunc("a", None, 0.5), RewardFunc("b", None, 2.0)]
    totals, unscored = combine({"a": [1.0, None, None], "b": [1.0, 3.0, None]}, funcs, 3)
    assert totals == [2.5, 6.0, 0.0] and unscored == 1
    assert not any(math.isnan(t) for t in totals)


def test_a_trl_documentation_reward_works_unchanged(tmp_path):
    # from TRL's GRPOTrainer documentation ("Using a custom reward function"), copied as written
    (tmp_path / "trl_doc.py").write_text(textwrap.dedent('''
        import re

        def format_reward_func(completions, **kwargs):
            """Reward function that checks if the completion has a specific format."""
            pattern = r"^<think>.*?</think><answer>.*?</answer>$"
            completion_contents = [completion[0]["content"] for completion in completions]
            matches = [re.match(pattern, content) for content in completion_contents]
            return [1.0 if match else 0.0 for match in matches]
    '''))
    f = load_reward_funcs([f"{tmp_path / 'trl_doc.py'}:format_reward_func"], [])[0]
    conversational = [[{"role": "assistant", "content": "<think>x</think><answer>1</answer>"}],
                      [{"role": "assistant", "content": "no"}]]
    assert call_reward(f, _batch(conversational), 2, step=0, timeout_s=5) == [1.0, 0.0]
