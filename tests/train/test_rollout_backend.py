"""Choosing the rollout backend: a missing vLLM is a one-line error before anything is loaded."""

import pytest

from unift.config import load_config
from unift.errors import UserError


def test_vllm_backend_without_vllm_fails_before_loading(monkeypatch, tmp_path):
    import unift.vllm_engine as vllm_engine
    from unift.train import rl_loop

    monkeypatch.setattr(vllm_engine, "vllm_available", lambda: False)
    loaded = []
    monkeypatch.setattr(rl_loop, "load_policy", lambda cfg: loaded.append(cfg))
    cfg = load_config(None, ["method=uft", "model=tiny", f"output_dir={tmp_path / 'run'}",
                             f"data.train={tmp_path / 'missing.jsonl'}", "rl.rollout_backend=vllm"])
    with pytest.raises(UserError, match=r"rl.rollout_backend=vllm needs vLLM: pip install 'unift\[vllm\]'"):
        rl_loop.train_rl(cfg)
    assert loaded == [] and not (tmp_path / "run").exists()


def test_unknown_backend_is_a_config_error(tmp_path):
    with pytest.raises(UserError, match="rl.rollout_backend"):
        load_config(None, ["method=uft", f"data.train={tmp_path / 'x.jsonl'}", "rl.rollout_backend=sglang"])
