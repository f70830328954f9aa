"""Two processes (torchrun, gloo on CPU) compute what one process computes on the whole batch.

Each test launches `python -m torch.distributed.run --nproc_per_node 2 -m unift train ...` and
the same command in one process, with the same seed and global batch, and compares the logged
losses and the final weights. Tolerance: 1e-4 absolute on the weights and 1e-4 relative on the
loss (fp32; the sums are split and added in another order, nothing else differs).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_crash_resume import damage  # the sibling module's corruption helper

from unift.train.distributed import World

WEIGHT_ATOL = 1e-4
LOSS_RTOL = 1e-4


def _train(args: list[str], nproc: int, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if nproc == 1:
        cmd = [sys.executable, "-m", "unift", "train", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
               "-m", "unift", "train", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "final" / "model.safetensors"))


def _compare(one: Path, two: Path, key: str = "loss") -> float:
    a, b = _metrics(one), _metrics(two)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        if key in ra:
            assert rb[key] == pytest.approx(ra[key], rel=LOSS_RTOL, abs=1e-6), (ra["step"], ra[key], rb[key])
    wa, wb = _weights(one), _weights(two)
    assert wa.keys() == wb.keys()
    worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    assert worst < WEIGHT_ATOL, worst
    base_moved = max(float((wa[k] - _initial[k]).abs().max()) for k in wa) if _initial else 1.0
    assert base_moved > 10 * WEIGHT_ATOL  # the comparison means something: training moved the weights
    return worst


_initial: dict[str, torch.Tensor] = {}


@pytest.fixture(scope="module", autouse=True)
def initial_weights(tmp_path_factory):
    """The tiny model's starting weights (seed 0), to check that the runs trained at all."""
    from unift.models import load_model, save_model

    model, tokenizer = load_model("tiny", seed=0)
    out = save_model(model, tokenizer, tmp_path_factory.mktemp("init") / "m")
    _initial.update(load_file(str(Path(out) / "model.safetensors")))
    yield
    _initial.clear()


def test_world_share_and_positions():
    from unift.train.distributed import rank_positions

    assert World(rank=1, size=2).share(list(range(7))) == [1, 3, 5]
    # 8 prompts, 2 updates of 4: each rank takes every other prompt of each update's block
    assert rank_positions(8, 2, World(rank=0, size=2)) == [0, 2, 4, 6]
    assert rank_positions(8, 2, World(rank=1, size=2)) == [1, 3, 5, 7]
    assert rank_positions(8, 1, World()) == list(range(8))


def test_sft_on_two_processes_matches_one(tmp_path, countdown_jsonl):
    common = ["method=sft", "model=tiny", f"data.train={countdown_jsonl}", "train.steps=3", "train.batch_size=6",
              "train.micro_batch_size=2", "train.lr=1e-3", "train.precision=fp32", "log.tensorboard=false",
              "log.progress=false", "checkpoint.every=0"]
    _train(common + [f"output_dir={tmp_path / 'one'}"], 1, tmp_path)
    _train(common + [f"output_dir={tmp_path / 'two'}"], 2, tmp_path)
    _compare(tmp_path / "one", tmp_path / "two")


def test_uft_on_two_processes_matches_one(tmp_path, countdown_jsonl):
    """Rollouts are seeded per prompt, so each rank samples what the single process samples."""
    common = ["method=uft", "model=tiny", f"data.train={countdown_jsonl}", "train.steps=3", "train.lr=1e-3",
              "train.precision=fp32", "train.micro_batch_size=4", "rl.prompts_per_step=4", "rl.num_generations=2",
              "rl.max_new_tokens=12", "rl.stop=", "hints.t_hint=3", "hints.beta=1.0", "hints.answer_piece=true",
              "log.tensorboard=false", "log.progress=false", "checkpoint.every=0"]
    _train(common + [f"output_dir={tmp_path / 'one'}"], 1, tmp_path)
    # the two-process run also sends its log-probs through the LM head 5 positions at a time
    _train(common + [f"output_dir={tmp_path / 'two'}", "train.logprob_chunk_mb=1"], 2, tmp_path)
    _compare(tmp_path / "one", tmp_path / "two")
    one, two = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    for ra, rb in zip(one, two):  # the same completions were sampled and scored
        for key in ("reward", "completion_length_mean", "hint_tokens_mean"):
            if key in ra:
                assert rb[key] == pytest.approx(ra[key], abs=1e-6), (key, ra["step"])


def test_two_process_run_resumes_with_the_same_world_size(tmp_path, countdown_jsonl):
    common = ["method=sft", "model=tiny", f"data.train={countdown_jsonl}", "train.batch_size=6",
              "train.micro_batch_size=3", "train.lr=1e-3", "train.precision=fp32", "log.tensorboard=false",
              "log.progress=false", "checkpoint.every=1"]
    _train(common + ["train.steps=4", f"output_dir={tmp_path / 'straight'}"], 2, tmp_path)
    _train(common + ["train.steps=2", f"output_dir={tmp_path / 'split'}"], 2, tmp_path)
    damage(tmp_path / "split" / "checkpoints" / "step-000002")
    # stopped after 2 steps, its last checkpoint damaged, continued to 4 on 2 processes: rank 0
    # checks the checksums (one warning), every rank resumes from step 1, and the data order is
    # the uninterrupted one
    proc = _train(common + ["train.steps=4", "resume=true", f"output_dir={tmp_path / 'split'}"], 2, tmp_path)
    assert proc.stderr.count("step-000002 is damaged") == 1, proc.stderr[-3000:]
    assert proc.stdout.count("resumed from") == 1 and "step-000001 at step 1" in proc.stdout, proc.stdout
    rows = _metrics(tmp_path / "split")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    straight = {r["step"]: r["example_ids"] for r in _metrics(tmp_path / "straight")}
    assert {r["step"]: r["example_ids"] for r in rows} == straight  # no replay, no skip


def test_lora_sft_on_two_processes_matches_one(tmp_path, countdown_jsonl):
    """With LoRA only the adapters require gradients: they alone are all-reduced, and they match."""
    common = ["method=sft", "model=tiny", f"data.train={countdown_jsonl}", "train.steps=3", "train.batch_size=6",
              "train.micro_batch_size=3", "train.lr=1e-2", "train.precision=fp32", "lora.enabled=true",
              "lora.r=4", "lora.alpha=8", "log.tensorboard=false", "log.progress=false", "checkpoint.every=0"]
    _train(common + [f"output_dir={tmp_path / 'one'}"], 1, tmp_path)
    _train(common + [f"output_dir={tmp_path / 'two'}"], 2, tmp_path)
    _compare(tmp_path / "one", tmp_path / "two")  # final/ is the merged model: base + adapter


def test_a_reward_failing_on_one_rank_stops_both(tmp_path, countdown_jsonl):
    """User reward code that raises on rank 1 only: both ranks end with its one-line error, none hangs."""
    (tmp_path / "r.py").write_text("import os\n\ndef picky(completions, **kwargs):\n"
                                   "    if os.environ.get('RANK') == '1':\n        raise RuntimeError('rank one')\n"
                                   "    return [0.0 for _ in completions]\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "unift",
           "train", "method=rft", "model=tiny", f"data.train={countdown_jsonl}", "train.steps=2",
           "rl.prompts_per_step=2", "rl.num_generations=2", "rl.max_new_tokens=4", "train.precision=fp32",
           "log.progress=false", f"output_dir={tmp_path / 'run'}", f"reward.funcs={tmp_path / 'r.py'}:picky"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert proc.stderr.count("unift: error: reward picky failed at step 1 on row 0: RuntimeError: rank one") == 2
