"""What a checkpoint's files must be before they are loaded: plain state files, a trainer state
of the right shape, optimizer groups and moments that fit this run. Every refusal is a one-line
`UserError` naming the file (see unift.train.checkpoint for the rules and the reasons)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from unift.errors import UserError, one_line
from unift.train.plain_state import StateFileError, load_state


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
        raise unfit(path, f"not readable JSON: {one_line(exc)}") from None
    if not ok:
        raise unfit(path, "not a trainer state (step, cursor)")
    return state


def check_param_groups(saved: Any, current: list[dict], path: Path) -> None:
    """The saved optimizer groups have this run's keys, each value of the type this run uses
    (else a hostile or foreign file would load and fail later, at the first optimizer step)."""
    if not isinstance(saved, list) or len(saved) != len(current) or not all(isinstance(g, dict) for g in saved):
        raise unfit(path, f"its optimizer has other parameter groups than this run's {len(current)}")
    for number, (mine, theirs) in enumerate(zip(current, saved)):
        for key, value in mine.items():
            if key != "params" and not _same_kind(value, theirs.get(key, _MISSING)):
                raise unfit(path, f"its optimizer group {number} has {key}={theirs.get(key, 'nothing')!r}, "
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


def check_optimizer_state(saved: Any, optimizer, path: Path) -> None:
    """An optimizer state dict whose groups fit this run's and whose moments have its parameters' shapes."""
    if not isinstance(saved, dict) or not isinstance(saved.get("state"), dict):
        raise unfit(path, "it holds no optimizer state")
    check_param_groups(saved.get("param_groups"), optimizer.state_dict()["param_groups"], path)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for pid, moments in saved["state"].items():
        if not isinstance(pid, int) or not 0 <= pid < len(params) or not isinstance(moments, dict):
            raise unfit(path, f"its optimizer state names parameter {pid!r}, which this run does not have")
        for name, value in moments.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != params[pid].shape:
                raise unfit(path, f"its optimizer {name} of parameter {pid} has shape {tuple(value.shape)}, "
                                   f"not {tuple(params[pid].shape)}: another model")


def restore(path: Path, what: str, load) -> None:
    try:
        load()
    except Exception as exc:  # noqa: BLE001 - data that parsed but does not fit this run
        raise unfit(path, f"its {what} state does not fit this run ({type(exc).__name__}: {one_line(exc)})") from None


def unfit(path: Path, why: str) -> UserError:
    return UserError(f"checkpoint file {path} is refused: {why}; resume with the config that wrote it, "
                     f"from another checkpoint, or start afresh")
