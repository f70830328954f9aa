"""train/checkpoint.py: what reaches the disk before a checkpoint's name says it is complete.
(Kills, damage and resume: test_crash_resume.py.)"""

import torch

from unift import files
from unift.train import checkpoint


def test_every_file_is_fsynced_before_the_rename_and_the_rename_after(tiny, tmp_path, monkeypatch):
    synced, real = [], files.fsync
    monkeypatch.setattr(files, "fsync", lambda path: (synced.append(path), real(path)))
    model, tokenizer = tiny
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    final = checkpoint.save_checkpoint(tmp_path, 1, model, tokenizer, optimizer, scheduler, {"step": 1}, "{}\n")

    tmp = next(p for p in synced[0].parents if p.name.startswith(".tmp-step-000001-"))
    written = {p.relative_to(final) for p in final.rglob("*")}
    assert {"model", "model/model.safetensors", "optimizer.safetensors", "rng.safetensors", "manifest.json"} <= {str(p) for p in written}
    assert {p.relative_to(tmp) for p in synced[:-2]} == written  # every file and directory, in the temp dir
    assert synced[-2:] == [tmp, tmp_path / "checkpoints"]  # then the directory itself, then the rename
    order = {p: i for i, p in enumerate(synced)}
    assert all(order[p] < order[p.parent] for p in synced if p.parent in order)  # a file before its directory
