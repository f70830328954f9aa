"""Pinned training results: short tiny-model SFT, UFT and RFT runs in fp32 give the same update as
the pinned one, so a change to the training code that is meant to be a pure refactoring is
checked to be one.

What is pinned is a fingerprint of each weight tensor's *update* (final minus initial weights,
in float64): its projection on two fixed random directions and its largest entry. AdamW moves
almost every weight by about lr a step whatever the gradient's size, so a norm would say little;
a projection moves by a sizeable fraction of lr * sqrt(numel) as soon as a few per cent of the
gradient signs change, while float-order noise between processors (different BLAS kernels) moves
a few near-zero-gradient weights by at most about 1% of lr (measured in test_loop's micro-batch
test). The tolerance, 1% of lr * sqrt(numel), sits between the two. The loss and reward curves
are pinned too.

The tiny random model never earns a Countdown reward, which would leave the advantage-weighted
policy term out of the pin, so the official Countdown scorer is replaced here by a deterministic
function of the response text (`text_reward`): rewards then differ within groups.

Re-pin only for a change that is meant to alter float order or behaviour, and say why in the
commit: `python tests/train/test_pinned_weights.py --write` (from the project root).
"""

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from unift.config import load_config
from unift.models import load_model
from unift.tasks import official
from unift.tasks.base import Reward

PINS = Path(__file__).with_name("pinned_weights.json")
LR = 1e-3
COMMON = ["model=tiny", "seed=0", "train.precision=fp32", f"train.lr={LR}", "train.warmup_ratio=0",
          "train.steps=3", "train.micro_batch_size=4", "log.progress=false", "log.tensorboard=false"]
RL = ["rl.prompts_per_step=2", "rl.num_generations=3", "rl.max_new_tokens=8", "rl.kl_coef=0.05",
      "rl.entropy_coef=0.01"]
RUNS = {
    "sft": ["method=sft", "train.batch_size=8"],
    "uft": ["method=uft", *RL, "hints.beta=0.1", "hints.answer_piece=true", "hints.t_hint=2",
            "rl.updates_per_step=2"],
    "rft": ["method=rft", *RL],
}
CURVES = ("loss", "reward", "nll")


def text_reward(response: str, ground_truth) -> Reward:
    """1.0 or 0.0 from the response's characters: varies between samples, never random."""
    return Reward(float(sum(map(ord, response)) % 2))


def _train(cfg):
    if cfg.method in ("sft", "dft"):
        from unift.train.loop import train
    else:
        from unift.train.rl_loop import train_rl as train
    return train(cfg)


def measure(name: str, data: Path, out: Path) -> dict:
    """Run `name` and return its fingerprint: {tensor: [proj_a, proj_b, max_abs]} and the curves."""
    official.SCORERS["countdown"] = text_reward
    try:
        return _measure(name, data, out)
    finally:
        official.SCORERS["countdown"] = official.score_countdown


def _measure(name: str, data: Path, out: Path) -> dict:
    cfg = load_config(None, [f"output_dir={out}", f"data.train={data}", *COMMON, *RUNS[name]])
    final = _train(cfg)
    init, _ = load_model("tiny", seed=0)
    before = {k: v.detach().double() for k, v in init.state_dict().items()}
    after = load_file(str(final / "model.safetensors"))
    gen = torch.Generator().manual_seed(0)
    weights = {}
    for key in sorted(after):
        delta = after[key].double().flatten() - before[key].flatten()        # (numel,)
        directions = torch.randn(delta.numel(), 2, generator=gen, dtype=torch.float64)
        weights[key] = [*(delta @ directions).tolist(), delta.abs().max().item()]
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    curves = {c: [m[c] for m in metrics] for c in CURVES if c in metrics[0]}
    return {"weights": weights, "curves": curves}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_update_matches_pin(tmp_path, countdown_jsonl, name):
    pin = json.loads(PINS.read_text())[name]
    got = measure(name, countdown_jsonl, tmp_path / name)
    assert sorted(got["weights"]) == sorted(pin["weights"])
    init, _ = load_model("tiny", seed=0)
    numel = {k: v.numel() for k, v in init.state_dict().items()}
    for key, (a, b, top) in pin["weights"].items():
        tol = 0.01 * LR * math.sqrt(numel[key])
        ga, gb, gtop = got["weights"][key]
        assert abs(ga - a) <= tol and abs(gb - b) <= tol, (key, (ga, gb), (a, b), tol)
        assert abs(gtop - top) <= 0.02 * LR, (key, gtop, top)
    assert sorted(got["curves"]) == sorted(pin["curves"])
    for curve, values in pin["curves"].items():
        assert got["curves"][curve] == pytest.approx(values, rel=1e-4, abs=1e-6), curve


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    import tempfile

    from unift.data.export import write_jsonl
    from unift.tasks.countdown import CountdownTask

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "countdown.jsonl"   # the countdown_jsonl fixture of conftest.py
        write_jsonl(CountdownTask().generate(24, seed=5, min_numbers=3, max_numbers=3), data)
        pins = {name: measure(name, data, Path(tmp) / name) for name in sorted(RUNS)}
    PINS.write_text(json.dumps(pins, indent=1) + "\n")
    print(f"wrote {PINS}")
