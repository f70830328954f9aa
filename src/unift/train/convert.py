"""`unift convert-checkpoint`: rewrite a unift 0.1 checkpoint in today's code-free format.

unift 0.1 wrote optimizer, scheduler and RNG state with `torch.save` (`optimizer.pt`,
`rng.pt`; FSDP2 runs: `scheduler.pt`, and the optimizer's param_groups as pickled entries of
the DCP files), and resume unpickled them in full, so a hostile checkpoint could run code.
Resume now refuses those files (unift.train.checkpoint). This command reads them once more, with
`torch.load(weights_only=True)`, PyTorch's restricted unpickler, which builds tensors and plain
containers only, plus the three numpy globals its docs allow for arrays (numpy's RNG key is one).
A file that needs anything else is refused and the checkpoint is left as it was.

It then writes `optimizer.safetensors` and `rng.safetensors` (unift.train.plain_state), a new
manifest that lists them and not the old files, and only then removes the old files: a crash at
any moment leaves a checkpoint that resumes (old files alone are refused with this command's
name; new files win when both are there).
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import BytesStorageMetadata

from unift.errors import UserError, one_line
from unift.files import fsync
from unift.train import checkpoint as ckpt
from unift.train.dcp_io import DCPRefused, read_metadata, safe_reader
from unift.train.plain_state import save_state


def convert_checkpoint(directory: Path) -> Path:
    """Rewrite the 0.1-format checkpoint `directory` in place; return it."""
    directory = Path(directory)
    if not (directory / ckpt.MANIFEST).is_file():
        raise UserError(f"{directory} is not a unift checkpoint (no {ckpt.MANIFEST}); "
                        f"give a checkpoints/step-N directory")
    legacy = [name for name in ckpt.LEGACY_FILES if (directory / name).is_file()]
    if not legacy:
        raise UserError(f"checkpoint {directory} has none of {', '.join(ckpt.LEGACY_FILES)}: nothing to convert")
    links = [str(p.relative_to(directory)) for p in _walk(directory) if p.is_symlink()]
    if links:  # writing through one would create or overwrite a file elsewhere
        raise UserError(f"checkpoint {directory} contains symbolic links ({', '.join(links[:3])}); "
                        f"unift writes only into plain files: copy the checkpoint without links, then convert it")
    if not ckpt.verify(directory):
        raise UserError(f"checkpoint {directory} is damaged (its files do not match {ckpt.MANIFEST}); "
                        f"convert another checkpoint")
    sharded = (directory / "sharded").is_dir()
    if sharded:
        scheduler = directory / "scheduler.pt"
        optimizer = {"param_groups": _legacy_param_groups(directory / "sharded"),
                     "scheduler": _field(_legacy_load(scheduler), "scheduler", scheduler)}
    else:
        state = _legacy_load(directory / "optimizer.pt")
        optimizer = {"optimizer": _field(state, "optimizer", directory / "optimizer.pt"),
                     "scheduler": _field(state, "scheduler", directory / "optimizer.pt")}
    rng = _field(_legacy_load(directory / "rng.pt"), "rng", directory / "rng.pt")

    for name, value in ((ckpt.OPTIMIZER, optimizer), (ckpt.RNG, rng)):
        tmp = directory / f".{name}.tmp"
        tmp.unlink(missing_ok=True)  # a leftover of an earlier try (never followed: links were refused)
        try:
            save_state(value, tmp)
        except TypeError as exc:  # weights-only data that is no optimizer/RNG state (a set, bytes, ...)
            tmp.unlink(missing_ok=True)
            raise UserError(f"checkpoint {directory}: its {name.split('.')[0]} state holds data no optimizer, "
                            f"scheduler or RNG state has ({exc}); it was not converted") from None
        _into_place(tmp, directory / name)
    tmp = directory / f".{ckpt.MANIFEST}.tmp"  # the new manifest, renamed into place whole
    tmp.unlink(missing_ok=True)
    tmp.write_text(ckpt.manifest(directory, skip=frozenset(legacy)))
    _into_place(tmp, directory / ckpt.MANIFEST)
    for name in legacy:
        (directory / name).unlink()
    fsync(directory)
    return directory


def _into_place(tmp: Path, final: Path) -> None:
    """On disk first, then under its name."""
    fsync(tmp)
    os.replace(tmp, final)


def _legacy_load(path: Path) -> Any:
    """A 0.1 `.pt` file through torch's weights-only unpickler (numpy arrays allowed)."""
    if not path.is_file():
        raise UserError(f"checkpoint file {path} is missing; the checkpoint cannot be converted")
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError for anything beyond plain data, garbage
        raise UserError(f"checkpoint file {path} does not load as plain data ({type(exc).__name__}: "
                        f"{one_line(exc.args[0] if exc.args else exc, 160)}); it was not converted") from None


def _numpy_globals() -> list:
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return [_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def _field(state: Any, key: str, path: Path) -> Any:
    if not isinstance(state, dict) or key not in state:
        raise UserError(f"checkpoint file {path} has no '{key}' entry; it was not converted")
    return state[key]


def _legacy_param_groups(sharded: Path) -> list[dict]:
    """The optimizer's param_groups, which 0.1 stored as pickled (bytes) DCP entries."""
    try:
        metadata = read_metadata(sharded)
    except DCPRefused as exc:
        raise UserError(f"sharded checkpoint {sharded} is refused: {exc}; it was not converted") from None
    groups: dict[int, dict[str, Any]] = {}
    planner_data = metadata.planner_data if isinstance(metadata.planner_data, dict) else {}
    for fqn, meta in metadata.state_dict_metadata.items():
        path = planner_data.get(fqn)
        if (isinstance(meta, BytesStorageMetadata) and isinstance(path, tuple) and len(path) == 4
                and path[:2] == ("optimizer", "param_groups") and isinstance(path[2], int) and 0 <= path[2] < 1000
                and isinstance(path[3], str)):
            groups.setdefault(path[2], {})[path[3]] = None
    if not groups or sorted(groups) != list(range(len(groups))):
        raise UserError(f"sharded checkpoint {sharded} holds no optimizer param_groups; it was not converted")
    request = {"optimizer": {"param_groups": [groups[i] for i in sorted(groups)]}}

    class WeightsOnlyBytes(DefaultLoadPlanner):
        def load_bytes(self, read_item, value: io.BytesIO) -> None:
            path = self.mappings[read_item.dest_index.fqn]
            self.original_state_dict["optimizer"]["param_groups"][path[2]][path[3]] = \
                torch.load(value, map_location="cpu", weights_only=True)

    try:
        with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
            warnings.simplefilter("ignore", UserWarning)
            dcp.load(request, storage_reader=safe_reader(sharded, metadata), planner=WeightsOnlyBytes(), no_dist=True)
    except BaseException as exc:  # noqa: BLE001 - DCP wraps a rank's error in a BaseException
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        causes = [err for err, _ in getattr(exc, "failures", {}).values()] or [exc]
        raise UserError(f"sharded checkpoint {sharded}: its param_groups do not load as plain data "
                        f"({type(causes[0]).__name__}); it was not converted") from None
    return request["optimizer"]["param_groups"]


def _walk(directory: Path):
    """Every path under `directory`, links included and never followed."""
    for root, dirs, files in os.walk(directory, followlinks=False):
        for name in dirs + files:
            yield Path(root) / name
