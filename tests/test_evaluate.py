"""Evaluation bookkeeping: pass@1 / formatted / avg@k by data_source, report files."""

import json

import pytest

from unift.evaluate import evaluate, markdown_table, write_report
from unift.tasks.base import Example



def test_scores_and_breakdown(tiny, monkeypatch):
    model, tok = tiny
    examples = [
        Example(prompt="Using [1, 2, 3] make 6", ground_truth={"numbers": [1, 2, 3], "target": 6},
                data_source="countdown", task="countdown"),
        Example(prompt="Using [1, 2, 3] make 7", ground_truth={"numbers": [1, 2, 3], "target": 7},
                data_source="countdown", task="countdown"),
        Example(prompt="What is 2+2?", ground_truth={"target": "4"}, data_source="gsm8k", task="gsm8k"),
    ]
    answers = {0: "<answer> 1 + 2 + 3 </answer>", 1: "<answer> 1 + 2 + 3 </answer>", 2: "no answer"}
    from unift import evaluate as ev

    def fake_generate(self, prompts, params):
        from unift.engine import Completion

        out = []
        for i in range(len(prompts)):
            for _ in range(params.n):
                out.append(Completion(i, tok(answers[i], add_special_tokens=False)["input_ids"], [], "stop"))
        return out

    monkeypatch.setattr(ev.HFEngine, "generate", fake_generate)
    r = evaluate(model, tok, examples, k=2)
    assert r["by_source"]["countdown"]["pass@1"] == 0.5
    assert r["by_source"]["countdown"]["formatted"] == 1.0
    assert r["by_source"]["countdown"]["avg@2"] == 0.5
    assert r["by_source"]["gsm8k"]["pass@1"] == 0.0 and r["by_source"]["gsm8k"]["formatted"] == 0.0
    assert r["overall"]["n"] == 3 and r["overall"]["pass@1"] == pytest.approx(1 / 3)
    table = markdown_table(r)
    assert "| countdown | 2 | 50.0% | 100.0% | 50.0% |" in table


def test_real_generation_report(tiny, tmp_path):
    model, tok = tiny
    examples = [Example(prompt="Using [1, 2] make 3", ground_truth={"numbers": [1, 2], "target": 3},
                        data_source="countdown", task="countdown")] * 2
    r = evaluate(model, tok, examples, max_new_tokens=4, batch_size=2)
    assert 0.0 <= r["overall"]["pass@1"] <= 1.0 and r["overall"]["mean_tokens"] <= 4
    write_report(r, tmp_path / "ev")
    assert json.loads((tmp_path / "ev" / "results.json").read_text())["overall"]["n"] == 2
    assert (tmp_path / "ev" / "results.md").read_text().startswith("| data_source")
