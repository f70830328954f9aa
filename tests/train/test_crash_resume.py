"""Crash-safe resume with real processes.

`python -m unift train` runs on the tiny model and is killed with SIGKILL. Most kills use the
UNIFT_TEST_KILL_AT hook (unift.train.faults), during a rollout, during an update or half-way
through a checkpoint write. One kill comes from outside, at a seeded random moment. After each
kill the run is started again with resume=true, until it finishes. The test then checks:
(a) only whole, verified checkpoints are loaded: a .tmp directory or a damaged checkpoint is
    skipped;
(b) every training example is consumed exactly as in an uninterrupted run (the per-step
    example_ids in metrics.jsonl);
(c) the logged metrics (all but timings) and the final weights equal those of the
    uninterrupted run with the same seed.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from unift.train.checkpoint import verify

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
       "PYTHONUNBUFFERED": "1"}
ENV.pop("UNIFT_TEST_KILL_AT", None)
COMMON = ["model=tiny", "train.precision=fp32", "train.warmup_ratio=0", "train.steps=8", "checkpoint.every=1",
          "checkpoint.keep_last=2", "log.progress=false", "log.tensorboard=false", "seed=3"]
SFT = ["method=sft", "train.batch_size=4", "train.micro_batch_size=4", "train.lr=3e-3", "data.max_response_tokens=16"]
# Adaptive hints keep per-prompt state, which must survive the crash (extra_state in the checkpoint).
UFT = ["method=uft", "hints.schedule=adaptive", "hints.beta=0.1", "rl.prompts_per_step=2", "rl.num_generations=3",
       "rl.max_new_tokens=6", "train.micro_batch_size=4", "train.lr=1e-3"]
TIMING = {"step_time_s", "tokens_per_s", "time_rollout_s", "time_scoring_s", "time_update_s",
          "generated_tokens_per_s"}
RESUMED = re.compile(r"resumed from (\S+) at step (\d+)")


def command(out: Path, data: Path, method: list[str], resume: bool) -> list[str]:
    return [sys.executable, "-m", "unift", "train", f"output_dir={out}", f"data.train={data}", *COMMON, *method,
            f"resume={str(resume).lower()}"]


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def checkpoints(out: Path) -> dict[str, Path]:
    root = out / "checkpoints"
    return {p.name: p for p in sorted(root.iterdir())} if root.is_dir() else {}


def damage(checkpoint: Path) -> None:
    """Flip bytes in the middle of the weights, as a torn or corrupted write would."""
    weights = checkpoint / "model" / "model.safetensors"
    with weights.open("r+b") as fh:
        fh.seek(weights.stat().st_size // 2)
        fh.write(b"\xff" * 64)


def kill_at_random(cmd: list[str], out: Path, rng: random.Random) -> tuple[subprocess.CompletedProcess, float]:
    """Start the run, wait until it has opened its metrics (training begins), then SIGKILL it after
    a seeded random delay (it may finish first: then returncode is 0)."""
    started = time.time()
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    path = out / "metrics.jsonl"
    while proc.poll() is None:  # the file is rewritten when a run (re)starts
        if path.exists() and path.stat().st_mtime >= started:
            break
        time.sleep(0.02)
    delay = rng.uniform(0.0, 1.0)
    time.sleep(delay)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr), delay


def crash_and_resume(tmp_path: Path, data: Path, method: list[str], kills: list[str], damage_after: str,
                     seed: int):
    """Run with a kill at each of `kills` (a hook point "name:step", or "random"), resuming after each,
    then to the end. Returns (output dir of the crashed run, of the uninterrupted run, log of events)."""
    ref_out, out = tmp_path / "uninterrupted", tmp_path / "crashed"
    reference = subprocess.Popen(command(ref_out, data, method, resume=False), env=ENV,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rng = random.Random(seed)
    expected_resume, events, damaged, warned = None, [], set(), False
    for kill in [*kills, None]:
        t0 = time.time()
        cmd = command(out, data, method, resume=True)
        if kill == "random":
            result, delay = kill_at_random(cmd, out, rng)
            kill = f"random after {delay:.2f}s"
        else:
            env = {**ENV, "UNIFT_TEST_KILL_AT": kill} if kill else ENV
            result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert "Traceback" not in result.stderr, result.stderr
        resumed = RESUMED.search(result.stdout)
        if expected_resume is not None:  # (a) the newest whole checkpoint, never a .tmp or damaged one
            assert resumed and Path(resumed[1]).name == expected_resume, (kill, result.stdout)
        if warned:  # the damaged checkpoint was skipped with a warning
            assert "is damaged (manifest check failed)" in result.stderr, result.stderr
            warned = False
        if kill is None or result.returncode == 0:
            assert result.returncode == 0, result.stderr
            events.append((kill, f"finished in {time.time() - t0:.1f}s"))
            break
        assert result.returncode == -signal.SIGKILL, (kill, result.returncode, result.stderr)
        found = checkpoints(out)
        whole = [name for name, p in found.items() if name.startswith("step-") and verify(p)]
        assert set(whole) | damaged >= {n for n in found if n.startswith("step-")}  # a kill damages none
        if kill.startswith("checkpoint_write:"):  # the half-written checkpoint is a .tmp directory only
            step = int(kill.split(":")[1])
            assert f"step-{step:06d}" not in found
            assert any(n.startswith(f".tmp-step-{step:06d}-") for n in found), found
        expected_resume = whole[-1] if whole else None
        if kill == damage_after and whole:
            damage(found[whole[-1]])
            damaged.add(whole[-1])
            assert not verify(found[whole[-1]])
            expected_resume, warned = (whole[-2] if len(whole) > 1 else None), True
        events.append((kill, f"killed after {time.time() - t0:.1f}s; checkpoints {whole}"))
    stdout, stderr = reference.communicate(timeout=300)
    assert reference.returncode == 0, stderr
    assert not [n for n in checkpoints(out) if n.startswith(".tmp")]  # leftovers are cleaned up
    return out, ref_out, events


def assert_same_run(out: Path, ref_out: Path, batch: int, n_examples: int) -> None:
    got, want = metrics(out), metrics(ref_out)
    # (b) each step once, on the same examples; so every example as often as in the uninterrupted run
    assert [m["step"] for m in got] == [m["step"] for m in want] == list(range(1, 9))
    assert [m["example_ids"] for m in got] == [m["example_ids"] for m in want]
    counts = Counter(i for m in got for i in m["example_ids"])
    assert sum(counts.values()) == 8 * batch and max(counts.values()) - min(counts.values()) <= 1
    assert len(counts) == min(n_examples, 8 * batch)
    state = json.loads((out / "checkpoints" / "step-000008" / "trainer_state.json").read_text())
    assert state["cursor"]["consumed"] == 8 * batch
    # (c) same metrics and the same final weights
    for g, w in zip(got, want):
        assert {k: v for k, v in g.items() if k not in TIMING} == {k: v for k, v in w.items() if k not in TIMING}
    wa, wb = load_file(str(out / "final" / "model.safetensors")), load_file(str(ref_out / "final" / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("method, kills, damage_after, seed", [
    ("sft", ["update:3", "checkpoint_write:5", "random"], "checkpoint_write:5", 1),
    ("uft", ["rollout:2", "update:3", "checkpoint_write:4", "random"], "update:3", 7),
])
def test_killed_run_resumes_to_the_same_result(tmp_path, countdown_jsonl, method, kills, damage_after, seed):
    args = SFT if method == "sft" else UFT
    out, ref_out, events = crash_and_resume(tmp_path, countdown_jsonl, args, kills, damage_after, seed)
    print(method, events)
    assert sum("killed" in e for _, e in events) >= len(kills) - 1  # the random kill may come too late
    batch = 4 if method == "sft" else 2
    assert_same_run(out, ref_out, batch, n_examples=24)
