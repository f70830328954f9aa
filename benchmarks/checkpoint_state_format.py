"""Optimizer-state write and read time: torch.save/torch.load (unift 0.1) against
unift.train.plain_state (safetensors + JSON header, today), interleaved, on AdamW state shaped
like the embedded model's (two fp32 moments per parameter). Prints one line per round and
the medians.

    .venv/bin/python benchmarks/checkpoint_state_format.py [--rounds 3] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from unift.models import load_model
from unift.train.plain_state import load_state, save_state


def adamw_state(model) -> dict:
    params = list(model.parameters())
    state = {i: {"step": torch.tensor(10.0), "exp_avg": torch.randn_like(p), "exp_avg_sq": torch.rand_like(p)}
             for i, p in enumerate(params)}
    groups = [{"lr": 1e-5, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.01, "amsgrad": False,
               "foreach": None, "maximize": False, "capturable": False, "differentiable": False, "fused": None,
               "decoupled_weight_decay": True, "initial_lr": 1e-5, "params": list(range(len(params)))}]
    return {"optimizer": {"state": state, "param_groups": groups}, "scheduler": {"last_epoch": 10}}


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where to write (default: a temporary directory)")
    args = ap.parse_args()
    model, _ = load_model("smollm2-135m")
    state = adamw_state(model)
    size = sum(t.numel() * t.element_size() for m in state["optimizer"]["state"].values() for t in m.values())
    print(f"AdamW state of {sum(p.numel() for p in model.parameters()):,} parameters: {size / 1e9:.2f} GB")
    rows = {"torch.save": [], "torch.load": [], "save_state": [], "load_state": []}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        old, new = Path(tmp) / "optimizer.pt", Path(tmp) / "optimizer.safetensors"
        for r in range(args.rounds):
            rows["torch.save"].append(timed(lambda: torch.save(state, old)))
            rows["save_state"].append(timed(lambda: save_state(state, new)))
            rows["torch.load"].append(timed(lambda: torch.load(old, map_location="cpu", weights_only=False)))
            rows["load_state"].append(timed(lambda: load_state(new)))
            print(f"round {r}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in rows.items()))
        print(f"files: {old.stat().st_size / 1e9:.3f} GB (torch.save), {new.stat().st_size / 1e9:.3f} GB (save_state)")
    print("medians: " + ", ".join(f"{k} {statistics.median(v):.2f} s" for k, v in rows.items()))


if __name__ == "__main__":
    main()
