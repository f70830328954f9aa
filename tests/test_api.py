"""The Python API (unift.api) and the README's example, run as written on the tiny model."""

import re

import pytest
from conftest import REPO

from unift.api import resolve_config, train
from unift.errors import UserError


def test_readme_example_runs(tmp_path, countdown_jsonl, monkeypatch, capsys):
    readme = (REPO / "README.md").read_text()
    code = re.search(r"<!-- api-example -->\n```python\n(.*?)```", readme, re.S).group(1)
    # the same program, sized for the tiny model
    small = (code.replace('"smollm2-135m"', '"tiny"').replace('{"steps": 10}', '{"steps": 1, "precision": "fp32"}')
             .replace('"prompts_per_step": 8, "num_generations": 4', '"prompts_per_step": 2, "num_generations": 2, '
                      '"max_new_tokens": 4').replace("limit=50", "limit=2, max_new_tokens=4"))
    assert small.count("tiny") == 1 and "max_new_tokens" in small
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "countdown.jsonl").write_text(countdown_jsonl.read_text())
    exec(compile(small, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip().splitlines()[-1] in ("0.0", "0.5", "1.0")
    metrics = (tmp_path / "runs" / "api-rft" / "metrics.jsonl").read_text()
    assert "rewards/brevity/mean" in metrics and "rewards/countdown/mean" in metrics


def test_config_forms(countdown_jsonl):
    cfg = resolve_config({"method": "rft", "data": {"train": str(countdown_jsonl)}}, ["train.lr=3e-6"])
    assert cfg.train.lr == 3e-6 and cfg.hints.schedule == "none"
    assert resolve_config(cfg).method == "rft"
    with pytest.raises(UserError, match="not to a Config object"):
        resolve_config(cfg, ["train.lr=1"])
    with pytest.raises(UserError, match="reward_funcs score RL rollouts"):
        train({"method": "sft", "data": {"train": str(countdown_jsonl)}}, reward_funcs=[lambda **k: []])
