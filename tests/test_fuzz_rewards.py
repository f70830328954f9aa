"""Hostile model output: a short in-process run of scripts/fuzz_rewards.py and explicit cases
not covered by the per-task tests (look-alike characters inside otherwise correct answers,
parenthesised exponent towers, NaN/inf strings, control characters, code that would create a
file if anything ran it, odd completion shapes)."""

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest

from unift import rewards
from unift.tasks import get_task

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fuzz_rewards.py"
_spec = importlib.util.spec_from_file_location("fuzz_rewards", SCRIPT)
fuzz_rewards = importlib.util.module_from_spec(_spec)
sys.modules["fuzz_rewards"] = fuzz_rewards  # dataclasses look their module up here
_spec.loader.exec_module(fuzz_rewards)

CD_GT = {"numbers": [47, 76, 55, 60], "target": 24}
KK_GT = {"names": ["Amelia", "Evelyn"], "solution": [True, False]}
KK_RIGHT = "(1) Amelia is a knight\n(2) Evelyn is a knave"
GROUND_TRUTHS = {"countdown": CD_GT, "kk_logic": KK_GT, "math": {"target": "12"}, "gsm8k": {"target": "18"}}
SECONDS = 5.0  # per-call bound for the explicit cases (a loaded CI machine is slow)


@pytest.fixture(scope="module", autouse=True)
def warm_up():
    """Load math_verify/sympy once, so timing assertions measure scoring, not imports."""
    assert get_task("math").score("<answer> (x+1)^2 </answer>", "x^2+2x+1").score == 1.0


def _score(task: str, response: str, ground_truth=None) -> float:
    start = time.perf_counter()
    score = get_task(task).score(response, GROUND_TRUTHS[task] if ground_truth is None else ground_truth).score
    assert time.perf_counter() - start < SECONDS
    assert isinstance(score, float) and score in (0.0, 0.1, 1.0)
    return score


# ---------------------------------------------------------------------------------------------
# The fuzz core


def test_short_fuzz_run_finds_no_failures(tmp_path):
    report = fuzz_rewards.fuzz(seconds=3.0, seed=12345, canary=str(tmp_path / "canary"), max_call_seconds=SECONDS)
    assert report["failures"] == [] and report["failure_count"] == 0
    assert report["inputs"] > 0
    assert set(report["functions"]) == {f"{kind}{name}{suffix}" for name in fuzz_rewards.TASK_NAMES
                                        for kind, suffix in (("tasks.", ".score"), ("rewards.", ""))}
    assert all(f["inputs"] == report["inputs"] for f in report["functions"].values())
    assert not (tmp_path / "canary").exists()


def test_monitors_catch_execution(tmp_path):
    """The harness itself: a 'reward' that writes the canary is reported twice (audit hook, file)."""
    canary = tmp_path / "canary"
    fuzzer = fuzz_rewards.Fuzzer(0, canary=str(canary))
    item = fuzz_rewards.make_input(0, 0, str(canary))
    fuzzer._call("tasks.math.score", item, lambda: canary.write_text("x"))
    fuzzer._call("tasks.kk_logic.score", item, lambda: 1 / 0)
    assert sorted(f["kind"] for f in fuzzer.failures) == ["canary", "exception", "side effect"]
    assert not canary.exists()  # removed, so a later execution is seen again


def test_inputs_are_reproducible_and_repros_short():
    for index in range(30):
        first, again = fuzz_rewards.make_input(7, index), fuzz_rewards.make_input(7, index)
        assert first.text == again.text and first.truths == again.truths
        assert len(first.repro()) <= fuzz_rewards.REPRO_CHARS


def test_cli_replay_writes_figures(tmp_path, capsys):
    out = tmp_path / "fuzz.json"
    assert fuzz_rewards.main(["--replay", "0", "--seed", "3", "--out", str(out), "--canary", str(tmp_path / "c")]) == 0
    report = json.loads(out.read_text())
    assert report["inputs"] == 1 and report["failure_count"] == 0
    assert "input 0 of seed 3" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# Explicit hostile cases


@pytest.mark.parametrize("task", sorted(GROUND_TRUTHS))
def test_code_payloads_run_nothing(task, tmp_path):
    canary = tmp_path / "canary"
    for payload in fuzz_rewards.code_payloads(str(canary)):
        for wrap in ("{}", "<answer>{}</answer>", "\\boxed{{{}}}", "<answer> \\boxed{{{}}} </answer>"):
            assert _score(task, wrap.format(payload)) in (0.0, 0.1)
            assert not canary.exists(), payload


@pytest.mark.parametrize(
    "answer",
    [
        "((７６ - 47) + 55) - 60",  # fullwidth digits
        "((76 - 47) + 55) - ٦٠",  # Arabic-Indic digits
        "((76 - 47) + 55) - 6⁰",  # superscript
        "((76 - 47) + 55) - 60\x00",  # null byte
        "((76 - 47) + 55) - 60\ud800",  # invalid surrogate
        "((76 - 47) + 55) - 60 + 0 * 1e308 * 10",
        "(76 - 47 + 55 - 60) ** 1",
        "76 ^ 47 ^ 55 ^ 60",
        "nan",
        "inf",
        "(lambda: 24)()",
        'f"{24}"',
        "`echo 24`",
    ],
)
def test_countdown_lookalikes_and_junk_in_a_correct_equation(answer):
    assert _score("countdown", f"<answer> {answer} </answer>") == 0.1


@pytest.mark.parametrize(
    "answer, score",
    [
        ("(1) \u0410melia is a knight\n(2) Evelyn is a knave", 0.1),  # Cyrillic capital A
        ("(1) Amelia is a ｋｎｉｇｈｔ\n(2) Evelyn is a knave", 0.1),  # fullwidth letters
        ("(1) Ame\u200blia is a knight\n(2) Evelyn is a knave", 0.1),  # zero-width space in the name
        ("(1) Amelia is a kni\u200bght\n(2) Evelyn is a knave", 0.1),  # ... and in the role
        (".* is a knight\n.* is a knave", 0.1),  # regex syntax is not a pattern
        ("(1) (?i)Amelia|Evelyn is a knight\n(2) Evelyn is a knave", 0.1),
        (KK_RIGHT + "." * 5_000, 0.1),  # longer than MAX_ANSWER_CHARS
        ("(1) Amelia is a knight\x00\n(2) Evelyn is a knave\ud800", 1.0),  # junk beside a right answer
    ],
)
def test_kk_logic_lookalikes(answer, score):
    assert _score("kk_logic", f"<answer> {answer} </answer>") == score


@pytest.mark.parametrize(
    "answer",
    [
        "((9^{999})^{999})^{999}",  # passes the input guards (no nested braces); the timer stops it
        "(((9^{99})^{99})^{99})^{99}",
        "9^9^9^9",  # unbraced tower, MAX_VERIFY_POWERS carets
        "(999!)!",
        "((9)!)!",
        "nan",
        "\\infty",
        "oo",
        "zoo",
        "1e308*10",
        "\\frac{0}{0}",
        "\x00",
        "\ud800\udfff",
    ],
)
def test_math_towers_and_non_numbers(answer):
    for wrap in ("<answer> {} </answer>", "\\boxed{{{}}}"):
        assert _score("math", wrap.format(answer)) == 0.1


@pytest.mark.parametrize(
    "answer",
    ["inf dollars", "nan", "Infinity", "1e309", "1e308*10", "\\$" * 1_000 + "18", "18" * 20_000,
     "\\text{" * 1_000 + "18" + "}" * 1_000, "-" * 1_000 + "18", "18/0"],
)
def test_gsm8k_non_numbers_and_padding(answer):
    assert _score("gsm8k", f"<answer> {answer} </answer>") == 0.1


@pytest.mark.parametrize("name", sorted(GROUND_TRUTHS))
def test_reward_callables_accept_odd_completion_shapes(name):
    func = getattr(rewards, name)
    shapes = [[], [{"role": "assistant"}], [{"role": "assistant", "content": None}], ["plain string message"],
              {"content": ["a", "list"]}, 12345, b"<answer> 24 </answer>",
              [{"role": "assistant", "content": "\ud800\x00"}]]
    scores = func(completions=shapes, ground_truth=[GROUND_TRUTHS[name]] * len(shapes))
    assert len(scores) == len(shapes) and all(isinstance(s, float) and s in (0.0, 0.1) for s in scores)
