"""FSDP2 (parallel.strategy=fsdp2) on two CPU processes (torchrun, gloo).

Sharded runs compute what one process computes on the whole batch (weights within 1e-4, logged
loss within 1e-4 relative), including a rank with fewer micro-batches than the other (it runs
idle passes) and a sharded reference model (KL term). A sharded checkpoint resumes to exactly the
uninterrupted run and consolidates into the same weights as the final model.
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_distributed import LOSS_RTOL, WEIGHT_ATOL, _metrics, _train, _weights

from unift.cli import main
from unift.config import load_config
from unift.errors import UserError

TINY = ["model=tiny", "train.precision=fp32", "log.tensorboard=false", "log.progress=false",
        "parallel.strategy=fsdp2"]


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _same_losses(one: Path, two: Path) -> None:
    a, b = _metrics(one), _metrics(two)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=LOSS_RTOL, abs=1e-6), ra["step"]


def _moved(run: Path) -> float:
    """How far training moved the weights from the tiny model's start (seed 0)."""
    from unift.models import load_model

    start = dict(load_model("tiny", seed=0)[0].named_parameters())
    final = _weights(run)
    return max(float((final[k] - start[k].detach()).abs().max()) for k in final if k in start)


def test_fsdp2_sft_on_two_processes_matches_one(tmp_path, countdown_jsonl):
    # 5 rows: rank 0 gets 3 (2 micro-batches), rank 1 gets 2 (1 micro-batch, then an idle pass)
    common = TINY + ["method=sft", f"data.train={countdown_jsonl}", "train.steps=3", "train.batch_size=5",
                     "train.micro_batch_size=2", "train.lr=1e-3", "checkpoint.every=0"]
    _train(common + [f"output_dir={tmp_path / 'one'}"], 1, tmp_path)
    _train(common + [f"output_dir={tmp_path / 'two'}"], 2, tmp_path)
    _same_losses(tmp_path / "one", tmp_path / "two")
    assert _max_diff(_weights(tmp_path / "one"), _weights(tmp_path / "two")) < WEIGHT_ATOL
    assert _moved(tmp_path / "two") > 10 * WEIGHT_ATOL  # the comparison means something


def test_fsdp2_uft_with_kl_on_two_processes_matches_one(tmp_path, countdown_jsonl):
    """The reference model of the KL term is sharded too; rollouts come from a gathered copy. The
    sharded run scores 5 positions per pass through the LM head (recomputed in the backward,
    inside FSDP's forward hooks), the single process all at once."""
    common = TINY + ["method=uft", f"data.train={countdown_jsonl}", "train.steps=3", "train.lr=1e-3",
                     "train.micro_batch_size=2", "rl.prompts_per_step=4", "rl.num_generations=2",
                     "rl.max_new_tokens=12", "rl.stop=", "rl.kl_coef=0.05", "hints.t_hint=3", "hints.beta=1.0",
                     "hints.answer_piece=true", "checkpoint.every=0"]
    _train(common + [f"output_dir={tmp_path / 'one'}"], 1, tmp_path)
    _train(common + [f"output_dir={tmp_path / 'two'}", "train.logprob_chunk_mb=1"], 2, tmp_path)
    _same_losses(tmp_path / "one", tmp_path / "two")
    for ra, rb in zip(_metrics(tmp_path / "one"), _metrics(tmp_path / "two")):
        assert rb["reward"] == ra["reward"] and rb["kl"] == pytest.approx(ra["kl"], rel=1e-3, abs=1e-7)
    assert _max_diff(_weights(tmp_path / "one"), _weights(tmp_path / "two")) < WEIGHT_ATOL
    assert _moved(tmp_path / "two") > 10 * WEIGHT_ATOL


def test_fsdp2_checkpoint_resumes_and_consolidates(tmp_path, countdown_jsonl, monkeypatch):
    common = TINY + ["method=sft", f"data.train={countdown_jsonl}", "train.steps=4", "train.batch_size=5",
                     "train.micro_batch_size=2", "train.lr=1e-3", "checkpoint.every=1"]
    _train(common + [f"output_dir={tmp_path / 'straight'}"], 2, tmp_path)
    # killed (SIGKILL, both ranks) right after step 3's update: step-000002 is the newest checkpoint
    monkeypatch.setenv("UNIFT_TEST_KILL_AT", "update:3")
    with pytest.raises(AssertionError):
        _train(common + [f"output_dir={tmp_path / 'split'}"], 2, tmp_path)
    monkeypatch.delenv("UNIFT_TEST_KILL_AT")
    step2 = tmp_path / "split" / "checkpoints" / "step-000002"
    assert sorted(p.name for p in (step2 / "sharded").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert not (tmp_path / "split" / "final").exists()
    proc = _train(common + ["resume=true", f"output_dir={tmp_path / 'split'}"], 2, tmp_path)
    assert proc.stdout.count("resumed from") == 1  # rank 0 alone prints
    # optimizer moments, scheduler, data order and RNG came back: the same weights as without the kill
    assert _max_diff(_weights(tmp_path / "straight"), _weights(tmp_path / "split")) == 0.0
    rows = {r["step"]: r for r in _metrics(tmp_path / "split")}
    for r in _metrics(tmp_path / "straight"):
        assert rows[r["step"]]["loss"] == r["loss"]

    # one process, no torchrun: the sharded step-4 checkpoint is the final model
    out = tmp_path / "consolidated"
    assert main(["consolidate", str(tmp_path / "split" / "checkpoints" / "step-000004"), "--out", str(out)]) == 0
    assert _max_diff(load_file(str(out / "model.safetensors")), _weights(tmp_path / "split")) == 0.0
    assert (out / "tokenizer.json").is_file() and json.loads((out / "config.json").read_text())["model_type"]

    # a sharded checkpoint is not resumed by one process: a one-line error says what to do
    with pytest.raises(UserError, match="written sharded.*consolidate"):
        from unift.train.loop import train

        train(load_config(None, common + ["resume=true", "train.steps=5", f"output_dir={tmp_path / 'split'}"]))


def test_consolidate_refuses_what_is_not_a_sharded_checkpoint(tmp_path, capsys):
    assert main(["consolidate", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "is not a sharded checkpoint" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_fsdp2_refuses_lora():
    with pytest.raises(UserError, match="fsdp2 with lora.enabled is not supported"):
        load_config(None, ["method=uft", "data.train=x.jsonl", "parallel.strategy=fsdp2", "lora.enabled=true"])


def test_parallel_strategy_is_checked():
    with pytest.raises(UserError, match="parallel.strategy"):
        load_config(None, ["data.train=x.jsonl", "parallel.strategy=zero3"])
