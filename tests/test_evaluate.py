"""Evaluation bookkeeping: pass@1 / formatted / avg@k by data_source, report files."""

import json

import pytest

from unift.errors import UserError
from unift.evaluate import evaluate, markdown_table, write_report
from unift.tasks.base import Example

COUNTDOWN = [
    Example(prompt="Using [1, 2, 3] make 6", ground_truth={"numbers": [1, 2, 3], "target": 6},
            data_source="countdown", task="countdown"),
    Example(prompt="Using [1, 2, 3] make 7", ground_truth={"numbers": [1, 2, 3], "target": 7},
            data_source="countdown", task="countdown"),
    Example(prompt="What is 2+2?", ground_truth={"target": "4"}, data_source="gsm8k", task="gsm8k"),
]


def fake_engine(monkeypatch, tok, answers: dict[int, tuple[str, str]]):
    """Every prompt i gets the response answers[i] = (text, finish reason), for greedy and samples."""
    from unift import evaluate as ev
    from unift.engine import Completion

    seen = []

    def generate(self, prompts, params):
        seen.append(tuple(params.stop))
        return [Completion(i, tok(answers[i][0], add_special_tokens=False)["input_ids"], [], answers[i][1])
                for i in range(len(prompts)) for _ in range(params.n)]

    monkeypatch.setattr(ev.HFEngine, "generate", generate)
    return seen


@pytest.mark.parametrize("protocol", ["official", "unift"])
def test_scores_and_breakdown(tiny, monkeypatch, protocol):
    model, tok = tiny
    answers = {0: ("<answer> 1 + 2 + 3 </answer>", "eos"), 1: ("<answer> 1 + 2 + 3 </answer>", "stop"),
               2: ("no answer", "length")}
    stops = fake_engine(monkeypatch, tok, answers)
    r = evaluate(model, tok, COUNTDOWN, k=2, protocol=protocol)
    assert stops == ([(), ()] if protocol == "official" else [("</answer>",), ("</answer>",)])
    assert r["by_source"]["countdown"]["pass@1"] == 0.5
    assert r["by_source"]["countdown"]["formatted"] == 1.0
    assert r["by_source"]["countdown"]["avg@2"] == 0.5
    assert r["by_source"]["countdown"]["stopped"] == 0.5  # "stop" (a stop string) is not stopping by itself
    assert r["by_source"]["gsm8k"]["pass@1"] == 0.0 and r["by_source"]["gsm8k"]["formatted"] == 0.0
    assert r["overall"]["n"] == 3 and r["overall"]["pass@1"] == pytest.approx(1 / 3)
    assert r["overall"]["finish_reasons"] == {"eos": 1, "stop": 1, "length": 1}
    assert r["protocol"] == protocol
    table = markdown_table(r)
    assert "| countdown | 2 | 50.0% | 100.0% | 50.0% | 50.0% |" in table
    assert f"protocol: {protocol}" in table


def test_every_response_is_a_record(tiny, monkeypatch, tmp_path):
    model, tok = tiny
    fake_engine(monkeypatch, tok, {0: ("x\n<answer> 1 + 2 + 3 </answer>", "eos"),
                                   1: ("<answer> 1 * 2 * 3 </answer>", "eos"), 2: ("<answer> 4 </answer>", "eos")})
    r = evaluate(model, tok, COUNTDOWN, k=3)
    assert len(r["records"]) == 3 + 3 * 3 and len(r["samples"]) == 3
    first = r["records"][0]
    assert first == {"row": 0, "sample": None, "data_source": "countdown", "response": "x\n<answer> 1 + 2 + 3 </answer>",
                     "finish_reason": "eos", "tokens": len(tok("x\n<answer> 1 + 2 + 3 </answer>",
                                                               add_special_tokens=False)["input_ids"]),
                     "answer": "1 + 2 + 3", "reward": 1.0, "reason": first["reason"]}
    assert [(rec["row"], rec["sample"]) for rec in r["records"][3:6]] == [(0, 0), (0, 1), (0, 2)]
    write_report(r, tmp_path / "ev")
    lines = (tmp_path / "ev" / "records.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == r["records"]
    assert "records" not in json.loads((tmp_path / "ev" / "results.json").read_text())


def test_official_protocol_reads_only_the_last_line(tiny, monkeypatch):
    """A response that goes on after its answer: official gives it nothing, unift credits the answer."""
    model, tok = tiny
    runs_on = "<answer> 1 + 2 + 3 </answer>\n<answer> 1 + 2 + 3 </answer>\nand so"
    fake_engine(monkeypatch, tok, {0: (runs_on, "length"), 1: (runs_on, "length"), 2: ("<answer> 4 </answer>", "eos")})
    official = evaluate(model, tok, COUNTDOWN, protocol="official")
    unift = evaluate(model, tok, COUNTDOWN, protocol="unift")
    assert official["by_source"]["countdown"]["pass@1"] == 0.0
    assert official["records"][0]["reward"] == 0.0
    assert unift["by_source"]["countdown"]["pass@1"] == 0.5
    assert official["by_source"]["gsm8k"]["pass@1"] == unift["by_source"]["gsm8k"]["pass@1"] == 1.0


def test_unknown_protocol_is_one_line(tiny):
    model, tok = tiny
    with pytest.raises(UserError, match=r"^unknown protocol 'paper' \(allowed: official, unift\)$"):
        evaluate(model, tok, COUNTDOWN, protocol="paper")


def test_real_generation_report(tiny, tmp_path):
    model, tok = tiny
    examples = [Example(prompt="Using [1, 2] make 3", ground_truth={"numbers": [1, 2], "target": 3},
                        data_source="countdown", task="countdown")] * 2
    r = evaluate(model, tok, examples, max_new_tokens=4, batch_size=2)
    assert 0.0 <= r["overall"]["pass@1"] <= 1.0 and r["overall"]["mean_tokens"] <= 4
    assert sum(r["overall"]["finish_reasons"].values()) == 2 and r["stop"] == []
    write_report(r, tmp_path / "ev")
    assert json.loads((tmp_path / "ev" / "results.json").read_text())["overall"]["n"] == 2
    assert (tmp_path / "ev" / "results.md").read_text().startswith("protocol: official")
