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

import hashlib
import json
import math
import os
import random
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unift.disk import disk_full_is_user_error, require_space, state_bytes
from unift.errors import UserError, one_line
from unift.train.faults import kill_point
from unift.train.plain_state import StateFileError, load_state, save_state

MANIFEST = "manifest.json"
OPTIMIZER = "optimizer.safetensors"
RNG = "rng.safetensors"
TRAINER_STATE = "trainer_state.json"
LEGACY_FILES = ("optimizer.pt", "rng.pt", "scheduler.pt")  # unift 0.1: pickles, never loaded


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
    files = {name: {"size": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(directory.rglob("*"))
             if p.is_file() and p.name != MANIFEST and (name := str(p.relative_to(directory))) not in skip}
    return json.dumps(files, indent=1)


def verify(directory: Path) -> bool:
    """True when every file listed in the manifest is present with its size and checksum
    (a manifest that is not a {relative path: {size, sha256}} map inside `directory` fails)."""
    path = directory / MANIFEST
    if not path.is_file():
        return False
    try:
        files = json.loads(path.read_text())
        for name, meta in files.items():
            if Path(name).is_absolute() or ".." in Path(name).parts:
                return False
            path = directory / name
            if not path.is_file() or path.stat().st_size != meta["size"] or _sha256(path) != meta["sha256"]:
                return False
    except (ValueError, AttributeError, KeyError, TypeError, OSError, RecursionError):  # not JSON, not that shape
        return False
    return True


def save_checkpoint(output_dir: Path, step: int, model, tokenizer, optimizer, scheduler,
                    trainer_state: dict[str, Any], config_yaml: str, keep_last: int = 2) -> Path:
    from unift.models import save_model

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
    from unift.train.distributed import current_world
    from unift.train.sharding import save_sharded

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
    _fsync_tree(tmp)  # on disk before the name says it is complete
    final = root / f"step-{step:06d}"
    if final.exists():  # same step saved again (e.g. end of a resumed run)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync(root)  # the rename itself
    _prune(root, keep_last)
    return final


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(directory: Path) -> None:
    """Flush every file and directory under `directory` (and itself) to the disk, so a machine
    crash after the rename cannot leave a checkpoint whose name is there but whose data is not."""
    for path in sorted(directory.rglob("*"), reverse=True):  # files before their directories
        _fsync(path)
    _fsync(directory)


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
        warnings.warn(f"checkpoint {candidate} is damaged (manifest check failed); trying an older one")
    return None


def load_checkpoint(checkpoint: Path, model, optimizer, scheduler) -> dict[str, Any]:
    """Restore weights (the adapter alone under LoRA; every rank's shards under FSDP2), optimizer,
    scheduler and RNG; return the trainer state (step, data position).

    Every file is read as data only (see the module docstring); one that does not load, or does
    not fit this run, is a one-line `UserError` naming it."""
    from unift.lora import restore_weights
    from unift.train.sharding import SHARDED_DIR, is_sharded, load_sharded

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
        raise _unfit(checkpoint / OPTIMIZER, "not a map of optimizer and scheduler state")
    if written_sharded:
        load_sharded(model, optimizer, checkpoint, saved.get("param_groups"))
    else:
        restore_weights(model, checkpoint / "model")
        _check_optimizer_state(saved.get("optimizer"), optimizer, checkpoint / OPTIMIZER)
        _restore(checkpoint / OPTIMIZER, "optimizer", lambda: optimizer.load_state_dict(saved["optimizer"]))
    _restore(checkpoint / OPTIMIZER, "scheduler", lambda: scheduler.load_state_dict(saved["scheduler"]))
    rng = read_state(checkpoint / RNG)
    _restore(checkpoint / RNG, "RNG", lambda: set_rng_state(rng))
    return read_trainer_state(checkpoint / TRAINER_STATE)


def read_state(path: Path) -> Any:
    """A plain state file of a checkpoint, or a one-line `UserError` naming it."""
    try:
        return load_state(path)
    except StateFileError as exc:
        raise UserError(f"checkpoint file {path} is refused: it is not a unift state file ({exc}); "
                        f"resume from another checkpoint or start afresh") from None


def read_trainer_state(path: Path) -> dict[str, Any]:
    """trainer_state.json: a JSON object with an integer `step` and a `cursor` object."""
    try:
        state = json.loads(path.read_text())
        ok = (isinstance(state, dict) and isinstance(state.get("step"), int) and state["step"] >= 0
              and isinstance(state.get("cursor"), dict)
              and all(isinstance(v, int) for v in state["cursor"].values())
              and isinstance(state.get("bad_steps", 0), int))
    except (OSError, ValueError, RecursionError) as exc:
        raise _unfit(path, f"not readable JSON: {one_line(exc)}") from None
    if not ok:
        raise _unfit(path, "not a trainer state (step, cursor)")
    return state


def check_param_groups(saved: Any, current: list[dict], path: Path) -> None:
    """The saved optimizer groups have this run's keys, each value of the type this run uses
    (else a hostile or foreign file would load and fail later, at the first optimizer step)."""
    if not isinstance(saved, list) or len(saved) != len(current) or not all(isinstance(g, dict) for g in saved):
        raise _unfit(path, f"its optimizer has other parameter groups than this run's {len(current)}")
    for number, (mine, theirs) in enumerate(zip(current, saved)):
        for key, value in mine.items():
            if key != "params" and not _same_kind(value, theirs.get(key, _MISSING)):
                raise _unfit(path, f"its optimizer group {number} has {key}={theirs.get(key, 'nothing')!r}, "
                                   f"not a value like this run's {value!r}")


_MISSING = object()


def _same_kind(mine: Any, theirs: Any) -> bool:
    if isinstance(mine, bool) or mine is None:  # flags such as foreach and fused may be None or a bool
        return theirs is None or isinstance(theirs, bool)
    if isinstance(mine, (int, float)):
        return isinstance(theirs, (int, float)) and not isinstance(theirs, bool) and math.isfinite(theirs)
    if isinstance(mine, tuple):
        return isinstance(theirs, tuple) and len(theirs) == len(mine) and all(map(_same_kind, mine, theirs))
    if isinstance(mine, torch.Tensor):
        return isinstance(theirs, torch.Tensor) and theirs.shape == mine.shape
    return type(theirs) is type(mine)


def _check_optimizer_state(saved: Any, optimizer, path: Path) -> None:
    """An optimizer state dict whose groups fit this run's and whose moments have its parameters' shapes."""
    if not isinstance(saved, dict) or not isinstance(saved.get("state"), dict):
        raise _unfit(path, "it holds no optimizer state")
    check_param_groups(saved.get("param_groups"), optimizer.state_dict()["param_groups"], path)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for pid, moments in saved["state"].items():
        if not isinstance(pid, int) or not 0 <= pid < len(params) or not isinstance(moments, dict):
            raise _unfit(path, f"its optimizer state names parameter {pid!r}, which this run does not have")
        for name, value in moments.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != params[pid].shape:
                raise _unfit(path, f"its optimizer {name} of parameter {pid} has shape {tuple(value.shape)}, "
                                   f"not {tuple(params[pid].shape)}: another model")


def _restore(path: Path, what: str, load) -> None:
    try:
        load()
    except Exception as exc:  # noqa: BLE001 - data that parsed but does not fit this run
        raise _unfit(path, f"its {what} state does not fit this run ({type(exc).__name__}: {one_line(exc)})") from None


def _unfit(path: Path, why: str) -> UserError:
    return UserError(f"checkpoint file {path} is refused: {why}; resume with the config that wrote it, "
                     f"from another checkpoint, or start afresh")
