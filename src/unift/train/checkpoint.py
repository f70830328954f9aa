"""Resumable checkpoints, written atomically.

Layout: OUTPUT_DIR/checkpoints/step-000050/
    model/            Hugging Face format (safetensors), loadable by transformers and vLLM
                      (FSDP2 runs: sharded/, tensors only, and hf/ instead; see
                      unift.train.sharding and `unift consolidate`)
    model/adapter/    LoRA runs: the adapter alone (model/ is then the merged model); resume reads it
    optimizer.safetensors  optimizer and scheduler state (FSDP2: the optimizer's param_groups and
                      the scheduler; its moments are in sharded/)
    rng.safetensors   RNG states (python, numpy, torch, cuda)
    trainer_state.json  step, data position, per-prompt hint state
    config.yaml       the resolved run config
    manifest.json     size and sha256 of every file above

Nothing read back on resume can run code (what a checkpoint copied from elsewhere must not do;
the manifest detects damage, it is no signature): weights and adapters are safetensors (a `.bin` is not
looked at), optimizer / scheduler / RNG state is safetensors plus a JSON header
(unift.train.plain_state: no pickle), the rest is JSON, and a sharded checkpoint's DCP files go
through a reader that builds nothing but DCP's metadata and tensors (unift.train.dcp_io). A
file that does not load under these rules is refused with a one-line `UserError` naming it.
Checkpoints of unift 0.1 (`optimizer.pt`, `rng.pt`, `scheduler.pt`: pickles) are refused with a
line pointing at `unift convert-checkpoint` (unift.train.convert), which rewrites them.

A checkpoint is built in a temporary directory next to its final place and renamed into
place only when complete, so a crash never leaves a half-written `step-*` directory. On load
the manifest is checked; a damaged checkpoint is skipped (with a warning) in favour of the
previous one. Every file is fsynced before the rename and the rename after it, so a machine
crash (not only a process crash) leaves the previous checkpoint or the new one whole. Only the
newest `keep_last` checkpoints are kept. The temporary directory a
killed run leaves behind is removed when the next run starts.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unift import files
from unift.disk import disk_full_is_user_error, require_space, state_bytes
from unift.errors import UserError
from unift.lora import restore_weights
from unift.models import save_model
from unift.train.checkpoint_checks import (
    check_optimizer_state,
    read_state,
    read_trainer_state,
    restore,
    unfit,
)
from unift.train.distributed import current_world
from unift.train.faults import kill_point
from unift.train.plain_state import save_state
from unift.train.sharded_checkpoint import SHARDED_DIR, load_sharded, save_sharded
from unift.weights import is_sharded

MANIFEST = "manifest.json"
OPTIMIZER = "optimizer.safetensors"
RNG = "rng.safetensors"
TRAINER_STATE = "trainer_state.json"
LEGACY_FILES = ("optimizer.pt", "rng.pt", "scheduler.pt")  # unift 0.1: pickles, never loaded


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def manifest(directory: Path, skip: frozenset[str] = frozenset()) -> str:
    """manifest.json's text: size and sha256 of every file under `directory` but itself and `skip`."""
    return json.dumps(files.file_table(directory, leave_out=skip | {MANIFEST}), indent=1)


def verify(directory: Path) -> bool:
    """True when every file listed in the manifest is present with its size and checksum
    (a manifest that is not a {relative path: {size, sha256}} map inside `directory` fails)."""
    try:
        table = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError, RecursionError):  # missing, not JSON
        return False
    return files.table_holds(directory, table)


def save_checkpoint(output_dir: Path, step: int, model, tokenizer, optimizer, scheduler,
                    trainer_state: dict[str, Any], config_yaml: str, keep_last: int = 2) -> Path:

    require_space(output_dir, _checkpoint_bytes(model, optimizer), f"checkpoint step {step}")
    root, tmp = _start(output_dir, step)
    try:
        with disk_full_is_user_error(root, f"checkpoint step {step}"):
            save_model(model, tokenizer, tmp / "model")
            kill_point("checkpoint_write", step)  # test hook (unift.train.faults); a no-op otherwise
            save_state({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / OPTIMIZER)
            return _complete(root, tmp, step, trainer_state, config_yaml, keep_last)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_sharded_checkpoint(output_dir: Path, step: int, model, tokenizer, optimizer, scheduler,
                            trainer_state: dict[str, Any], config_yaml: str, keep_last: int = 2) -> Path:
    """FSDP2: every rank calls this and writes its shards (unift.train.sharding); rank 0 writes the
    rest, the manifest, and renames the directory into place. Needs a file system every rank sees."""

    world = current_world()
    # every rank: the same total, the same verdict
    require_space(output_dir, _checkpoint_bytes(model, optimizer), f"checkpoint step {step}")
    root, tmp = _start(output_dir, step) if world.is_main else (None, None)
    tmp = Path(world.gather([str(tmp)])[0])  # rank 0's temporary directory, on every rank
    with disk_full_is_user_error(tmp.parent, f"checkpoint step {step}"):
        param_groups = save_sharded(model, optimizer, tmp, tokenizer, world.is_main)
        kill_point("checkpoint_write", step)
        world.barrier()  # every shard is written
        if world.is_main:
            save_state({"param_groups": param_groups, "scheduler": scheduler.state_dict()}, tmp / OPTIMIZER)
            _complete(root, tmp, step, trainer_state, config_yaml, keep_last)
    return output_dir / "checkpoints" / f"step-{step:06d}"


def _checkpoint_bytes(model, optimizer) -> int:
    """About what a checkpoint of `model` and `optimizer` takes on disk (all ranks together)."""
    return state_bytes(model.state_dict()) + state_bytes(optimizer.state_dict())


def _start(output_dir: Path, step: int) -> tuple[Path, Path]:
    """(checkpoints root, a fresh temporary directory for step's checkpoint)."""
    root = output_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-step-{step:06d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return root, tmp


def _complete(root: Path, tmp: Path, step: int, trainer_state: dict[str, Any], config_yaml: str,
              keep_last: int) -> Path:
    """Add RNG, trainer state, config and manifest; rename into place; prune old checkpoints."""
    save_state(rng_state(), tmp / RNG)
    (tmp / TRAINER_STATE).write_text(json.dumps(trainer_state, indent=1))
    (tmp / "config.yaml").write_text(config_yaml)
    (tmp / MANIFEST).write_text(manifest(tmp))
    files.fsync_tree(tmp)  # on disk before the name says it is complete
    final = root / f"step-{step:06d}"
    if final.exists():  # same step saved again (e.g. end of a resumed run)
        shutil.rmtree(final)
    os.replace(tmp, final)
    files.fsync(root)  # the rename itself
    _prune(root, keep_last)
    return final


def _prune(root: Path, keep_last: int) -> None:
    steps = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in steps[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    remove_leftovers(root.parent)


def remove_leftovers(output_dir: Path) -> None:
    """Delete the temporary directories of checkpoints a killed run did not finish writing."""
    for tmp in (output_dir / "checkpoints").glob(".tmp-step-*"):
        if not tmp.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(tmp, ignore_errors=True)


def latest_checkpoint(output_dir: Path) -> Path | None:
    """Newest checkpoint whose manifest verifies; damaged ones are skipped with a warning."""
    root = output_dir / "checkpoints"
    for candidate in sorted(root.glob("step-*"), reverse=True):
        if verify(candidate):
            return candidate
        warnings.warn(f"checkpoint {candidate} is damaged (manifest check failed); trying an older one",
                      stacklevel=2)
    return None


def load_checkpoint(checkpoint: Path, model, optimizer, scheduler) -> dict[str, Any]:
    """Restore weights (the adapter alone under LoRA; every rank's shards under FSDP2), optimizer,
    scheduler and RNG; return the trainer state (step, data position).

    Every file is read as data only (see the module docstring); one that does not load, or does
    not fit this run, is a one-line `UserError` naming it."""
    legacy = [name for name in LEGACY_FILES if (checkpoint / name).exists()]
    if legacy and not (checkpoint / OPTIMIZER).is_file():
        raise UserError(f"checkpoint {checkpoint} is in unift 0.1's format ({', '.join(legacy)}: pickles, which can "
                        f"carry code, so they are not loaded); if you trust where it came from, rewrite it with "
                        f"`unift convert-checkpoint {checkpoint}`, then resume")
    written_sharded = (checkpoint / SHARDED_DIR).is_dir()
    if written_sharded != is_sharded(model):
        how = "sharded (parallel.strategy=fsdp2 under torchrun)" if written_sharded else \
            "whole (one process, or parallel.strategy=ddp)"
        raise UserError(f"checkpoint {checkpoint} was written {how}: resume it the same way "
                        f"(a sharded one can be turned into a model with `unift consolidate`)")
    saved = read_state(checkpoint / OPTIMIZER)
    if not isinstance(saved, dict):
        raise unfit(checkpoint / OPTIMIZER, "not a map of optimizer and scheduler state")
    if written_sharded:
        load_sharded(model, optimizer, checkpoint, saved.get("param_groups"), checkpoint / OPTIMIZER)
    else:
        restore_weights(model, checkpoint / "model")
        check_optimizer_state(saved.get("optimizer"), optimizer, checkpoint / OPTIMIZER)
        restore(checkpoint / OPTIMIZER, "optimizer", lambda: optimizer.load_state_dict(saved["optimizer"]))
    restore(checkpoint / OPTIMIZER, "scheduler", lambda: scheduler.load_state_dict(saved["scheduler"]))
    rng = read_state(checkpoint / RNG)
    restore(checkpoint / RNG, "RNG", lambda: set_rng_state(rng))
    return read_trainer_state(checkpoint / TRAINER_STATE)
