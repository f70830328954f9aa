"""Long-run hygiene: memory and open files stay flat over 50 RL steps, and SIGINT stops a
training process cleanly (checkpoint, closed logs, one-line message) so that resume=true
continues from it."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from unift.config import load_config
from unift.train.checkpoint import verify
from unift.train.rl_loop import train_rl
from unift.train.run import Run

# Measured on the 2-core reference machine: 0-9 MB growth from step 10 to step 50 (see
# docs/reliability.md). A leak of one rollout batch, or of the optimizer state, per step would
# exceed it many times over.
RSS_GROWTH_BOUND_MB = 64
try:
    LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    LIBC.malloc_trim  # noqa: B018 (glibc only: AttributeError elsewhere)
except (OSError, AttributeError):
    LIBC = None
STEPS = 50


def rss_mb() -> float:
    """Resident set size of this process, from /proc/self/statm (Linux), after glibc has handed
    freed heap pages back (otherwise a reading swings by ~80 MB with what malloc keeps cached)."""
    gc.collect()
    if LIBC is not None:
        LIBC.malloc_trim(0)
    resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_memory_and_open_files_stay_flat_over_50_rl_steps(tmp_path, countdown_jsonl, monkeypatch):
    rss: dict[int, float] = {}
    files: dict[int, int] = {}
    end_step = Run.end_step

    def measuring_end_step(self, step, *args, **kwargs):
        end_step(self, step, *args, **kwargs)
        files[step] = open_files()
        if step % 10 == 0:  # after the checkpoint of steps 10, 20, ...
            rss[step] = rss_mb()

    monkeypatch.setattr(Run, "end_step", measuring_end_step)
    cfg = load_config(None, [f"output_dir={tmp_path / 'long'}", f"data.train={countdown_jsonl}", "model=tiny",
                             "method=uft", "hints.schedule=adaptive", "hints.beta=0.1", "train.precision=fp32",
                             f"train.steps={STEPS}", "rl.prompts_per_step=2", "rl.num_generations=3",
                             "rl.max_new_tokens=8", "train.micro_batch_size=6", "checkpoint.every=10",
                             "log.progress=false", "log.tensorboard=true"])
    train_rl(cfg)
    growth = rss[STEPS] - rss[10]
    print(f"RSS by step (MB): { {s: round(v, 1) for s, v in rss.items()} }, growth 10->{STEPS}: {growth:.1f} MB; "
          f"open files {files[10]} -> {files[STEPS]}")
    assert growth < RSS_GROWTH_BOUND_MB, rss
    # A handle left open per step or per checkpoint would add 40 or 4; the TensorBoard writer's
    # background thread may briefly hold one more.
    assert max(files[s] for s in range(10, STEPS + 1)) - files[10] <= 2, files


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_saves_closes_and_resumes(tmp_path, countdown_jsonl, sig):
    """Ctrl-C, or SIGTERM as a job scheduler sends before it kills: the same clean stop."""
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    env.pop("UNIFT_TEST_KILL_AT", None)
    base = [sys.executable, "-m", "unift", "train", f"output_dir={out}", f"data.train={countdown_jsonl}", "model=tiny",
            "train.precision=fp32", "train.batch_size=4", "train.micro_batch_size=4", "data.max_response_tokens=16",
            "log.progress=false", "log.tensorboard=true"]
    proc = subprocess.Popen([*base, "train.steps=500"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:  # let it train two steps
        if metrics.exists() and metrics.read_text().count("\n") >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)

    # A clean stop: exit status 2, one line on stderr, no traceback.
    assert proc.returncode == 2, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    match = re.fullmatch(r"unift: error: interrupted at step (\d+); checkpoint saved, continue with resume=true", last)
    assert match, stderr
    step = int(match[1])
    assert 2 <= step < 500 and f"{sig.name}: stopping after the current step" in stdout
    # The checkpoint of that step is whole, the logs are complete and closed, the summary is written.
    assert verify(out / "checkpoints" / f"step-{step:06d}")
    lines = metrics.read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == list(range(1, step + 1))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["step"] == step
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tb").iterdir())

    # resume=true continues from it (here with a shorter budget: two more steps).
    resumed = subprocess.run([*base, f"train.steps={step + 2}", "resume=true"], env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {out / 'checkpoints' / f'step-{step:06d}'} at step {step}" in resumed.stdout
    assert [json.loads(x)["step"] for x in metrics.read_text().splitlines()] == list(range(1, step + 3))
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"
    assert (out / "final" / "model.safetensors").exists()
