"""Seconds to write one checkpoint of the embedded model with and without fsync, interleaved.

usage: .venv/bin/python benchmarks/checkpoint_fsync_cost.py [--rounds 4] [--dir /work]
Writes SmolLM2-135M's weights and AdamW state (about 1.6 GB) with unift.train.checkpoint,
alternating the real fsync and a no-op in each round; the first round warms the page cache.
docs/reliability.md (Crash-safe resume) has the figures.
"""
import argparse
import tempfile
import time
from pathlib import Path

import torch

from unift.models import load_model
from unift.train import checkpoint

p = argparse.ArgumentParser()
p.add_argument("--rounds", type=int, default=4)
p.add_argument("--dir", default=None, help="where the checkpoints go (default: the temp directory)")
args = p.parse_args()

model, tokenizer = load_model("smollm2-135m")
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
model(torch.tensor([[1, 2, 3]])).logits.sum().backward()
optimizer.step()  # the optimizer state exists, as in a real checkpoint
scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
real = checkpoint._fsync
for rnd in range(args.rounds):
    for label in ("fsync", "no-fsync"):
        checkpoint._fsync = real if label == "fsync" else (lambda path: None)
        with tempfile.TemporaryDirectory(dir=args.dir) as d:
            start = time.perf_counter()
            checkpoint.save_checkpoint(Path(d), 1, model, tokenizer, optimizer, scheduler, {"step": 1}, "{}\n")
            print(f"round {rnd} {label}: {time.perf_counter() - start:.2f} s", flush=True)
