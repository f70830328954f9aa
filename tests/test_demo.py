"""`unift demo` end to end on the tiny model: data, before/after evaluation, UFT training, the
summary table, and a refusal to overwrite a directory that is not a demo's."""

import json

import pytest

from unift.demo import run_demo
from unift.errors import UserError


def test_demo_runs_uft_and_writes_the_table(tmp_path):
    out = tmp_path / "demo"
    summary = run_demo(method="uft", steps=3, eval_n=2, model="tiny", out=out)
    assert summary["status"] == "done" and summary["method"] == "uft" and summary["steps"] == 3
    assert json.loads((out / "demo.json").read_text())["status"] == "done"
    table = (out / "summary.md").read_text()
    assert "(base)" in table and "after UFT (3 steps)" in table
    metrics = [json.loads(x) for x in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["hint_tokens_mean"] > 0                   # the first UFT step shows hints
    assert (out / "eval_before" / "results.json").exists() and (out / "eval_after" / "results.json").exists()
    run_demo(method="sft", steps=1, eval_n=2, model="tiny", out=out)   # a demo directory is replaced


def test_demo_refuses_a_foreign_directory(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(UserError, match="not a demo directory"):
        run_demo(steps=1, eval_n=2, model="tiny", out=tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "keep me"
