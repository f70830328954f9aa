"""Numerical faults on the tiny model: a step with a NaN loss skips its update and leaves the
weights exactly as they were; train.max_bad_steps such steps in a row stop the run with a
one-line error naming the step, and the last checkpoint stays whole."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from unift.cli import main
from unift.config import load_config
from unift.errors import UserError
from unift.train.checkpoint import verify
from unift.train.run import Run

COMMON = ["model=tiny", "train.precision=fp32", "train.warmup_ratio=0", "train.steps=8", "train.lr=3e-3",
          "train.max_bad_steps=2", "checkpoint.every=1", "checkpoint.keep_last=10", "log.progress=false",
          "log.tensorboard=false"]
ARGS = {"sft": ["method=sft", "train.batch_size=4", "train.micro_batch_size=4", "data.max_response_tokens=16"],
        # the entropy bonus keeps every group in the update, so every step computes a loss
        "uft": ["method=uft", "hints.beta=0.1", "rl.entropy_coef=0.01", "rl.prompts_per_step=2",
                "rl.num_generations=3", "rl.max_new_tokens=6", "train.micro_batch_size=8"]}
BAD = {2, 4, 5}  # step 2 is skipped alone; steps 4 and 5 are two in a row: the run stops at step 5


def inject_nan(monkeypatch, method: str) -> None:
    """Make the loss NaN in the steps of BAD (the step in progress is the last ended one + 1)."""
    done = {"step": 0}
    end_step = Run.end_step

    def tracking_end_step(self, step, *args, **kwargs):
        done["step"] = step
        return end_step(self, step, *args, **kwargs)

    monkeypatch.setattr(Run, "end_step", tracking_end_step)
    poisoned = lambda loss: loss * float("nan") if done["step"] + 1 in BAD else loss  # noqa: E731
    if method == "sft":
        import unift.train.loop as loop

        make = loop.loss_function
        monkeypatch.setattr(loop, "loss_function", lambda cfg: (lambda *a: poisoned(make(cfg)(*a))))
    else:
        import unift.train.rl_update as rl_update

        uft_loss = rl_update.uft_loss

        def nan_uft_loss(*args, **kwargs):
            loss, terms = uft_loss(*args, **kwargs)
            return poisoned(loss), terms

        monkeypatch.setattr(rl_update, "uft_loss", nan_uft_loss)


@pytest.mark.parametrize("method", ["sft", "uft"])
def test_nan_steps_are_skipped_then_stop_the_run(tmp_path, countdown_jsonl, monkeypatch, capsys, method):
    inject_nan(monkeypatch, method)
    out = tmp_path / method
    status = main(["train", f"output_dir={out}", f"data.train={countdown_jsonl}", *COMMON, *ARGS[method]])

    # One line on stderr, naming the step, the setting and the checkpoint kept; exit status 2.
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith("unift: error: step 5: non-finite loss or gradient in 2 steps in a row "
                          "(train.max_bad_steps=2), run stopped; the last checkpoint (step-000004) is kept"), err

    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5]
    assert [bool(m["skipped_nonfinite"]) for m in metrics] == [s in BAD for s in range(1, 6)]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["step"] == 5 and summary["checkpoint"].endswith("step-000004")

    # Nothing is saved for the step that stopped the run; every checkpoint is whole.
    ckpts = sorted((out / "checkpoints").iterdir())
    assert [p.name for p in ckpts] == [f"step-{s:06d}" for s in range(1, 5)]
    assert all(verify(p) for p in ckpts)
    w = {s: load_file(str(out / "checkpoints" / f"step-{s:06d}" / "model" / "model.safetensors")) for s in range(1, 5)}
    same = lambda a, b: all(torch.equal(w[a][k], w[b][k]) for k in w[a])  # noqa: E731
    assert same(1, 2)       # the skipped step 2 changed no weight
    assert not same(2, 3)   # step 3 trained
    assert same(3, 4)       # the skipped step 4 changed no weight
    assert not (out / "final").exists()


def test_max_bad_steps_is_validated():
    with pytest.raises(UserError, match="train.max_bad_steps must be at least 1, got 0"):
        load_config(None, ["data.train=x.jsonl", "train.max_bad_steps=0"])
    assert load_config(None, ["data.train=x.jsonl"]).train.max_bad_steps == 3
