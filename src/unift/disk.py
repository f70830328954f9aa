"""Disk space for what a run writes (models, checkpoints): a one-line error before a write that
cannot fit, and the same error instead of a traceback when the disk fills up during one.

torch.save on a full disk fails with "PytorchStreamWriter failed writing file" or a later
"unexpected pos N vs M"; safetensors and json writes with OSError ENOSPC. Checking first turns
the common case (a run filling its disk with checkpoints) into an actionable message."""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from unift.errors import UserError

ADVICE = "free some space, lower checkpoint.keep_last, or set output_dir on a larger disk"


def state_bytes(state: Any) -> int:
    """Bytes of every tensor in a (nested) state dict; a sharded DTensor counts whole."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(state_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_bytes(v) for v in state)
    return 0


def require_space(directory: Path, needed: int, what: str) -> None:
    """UserError when the disk holding `directory` has less than `needed` bytes free."""
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise UserError(f"{what} needs about {needed / 1e9:.2f} GB but {directory} has "
                        f"{free / 1e9:.2f} GB free: {ADVICE}")


@contextmanager
def disk_full_is_user_error(directory: Path, what: str) -> Iterator[None]:
    """Re-raise a write that failed because the disk filled up as a one-line UserError."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        full = isinstance(exc, OSError) and exc.errno == errno.ENOSPC
        if isinstance(exc, RuntimeError):  # torch.save's zip writer hides the errno
            message = str(exc)
            full = ("file write failed" in message or "unexpected pos" in message) and \
                shutil.disk_usage(directory).free < (64 << 20)
        if full:
            raise UserError(f"the disk filled up while writing {what} in {directory}: {ADVICE}") from exc
        raise
