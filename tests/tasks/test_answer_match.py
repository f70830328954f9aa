"""answer_match: final answers from tags or \\boxed{}, compared after the math normalisation; the
official protocol reads only the last line."""

import numpy as np
import pytest

from unift.protocol import score_text
from unift.tasks import get_task

TASK = get_task("answer_match")


@pytest.mark.parametrize("response, truth, reward", [
    ("so <answer> 42 </answer>", "42", 1.0),
    ("the answer is \\boxed{\\frac{1}{2}}", "1/2", 1.0),
    ("<answer>0.5</answer>", "\\frac12", 1.0),
    ("<answer> Paris </answer>", ["paris", "Paris"], 1.0),
    ("<answer> 41 </answer>", {"target": "42"}, 0.1),
    ("no tags at all", "42", 0.0),
    ("<answer> 7 </answer>", np.array(["7", "seven"]), 1.0),
    ("<answer> 3 </answer>", np.int64(3), 1.0),
])
def test_unift_reading(response, truth, reward):
    assert TASK.score(response, truth).score == reward


def test_official_reading_needs_the_last_line():
    truth = "42"
    assert score_text("official", "work\n<answer> 42 </answer>", truth, task="answer_match").score == 1.0
    assert score_text("official", "<answer> 42 </answer>\nand more", truth, task="answer_match").score == 0.0
    assert score_text("unift", "<answer> 42 </answer>\nand more", truth, task="answer_match").score == 1.0


@pytest.mark.parametrize("truth", [None, {"answer": 3}, [], [None, " "]])
def test_malformed_ground_truth(truth):
    with pytest.raises(ValueError):
        TASK.score("<answer> 1 </answer>", truth)
