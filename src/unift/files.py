"""File-system safety, in one place: checksums, file tables, atomic writes, build-then-rename.

- `sha256`, `file_table`, `table_holds`: the size and sha256 of every file of a directory, and
  the check that a directory still holds what a table lists. Checkpoints keep the table as
  manifest.json (unift.train.checkpoint); the embedded model's cache keeps it in its marker file
  (unift.models.embedded). A table detects damage; it is no signature.
- `write_atomic`: a file written beside its place and renamed over it, so a reader sees the old
  file or the new one, never half of one; `fsync` first where a machine crash must not lose it.
- `make_temp_dir`, `replace_dir`: a directory built under a temporary name and renamed into
  place only once complete (saved models, the model cache).
- `create_dir`: make a directory and prove a file can be written there (full or read-only disks).

A leaf module: it imports nothing of unift's but its errors.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
from pathlib import Path

from unift.errors import UserError


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_table(directory: Path, leave_out: frozenset[str] = frozenset()) -> dict[str, dict]:
    """{relative path: {"size", "sha256"}} of every file under `directory` but those named in `leave_out`."""
    return {name: {"size": p.stat().st_size, "sha256": sha256(p)} for p in sorted(directory.rglob("*"))
            if p.is_file() and (name := str(p.relative_to(directory))) not in leave_out}


def table_holds(directory: Path, files: object, checksums: bool = True) -> bool:
    """True when every file a `file_table` lists is inside `directory` with its size (and sha256,
    unless `checksums` is off: a cheap check of a large cache). A table that is not such a map,
    or names a path outside `directory`, fails."""
    if not isinstance(files, dict):
        return False
    try:
        for name, meta in files.items():
            if Path(name).is_absolute() or ".." in Path(name).parts:
                return False
            path = directory / name
            if not path.is_file() or path.stat().st_size != meta["size"]:
                return False
            if checksums and sha256(path) != meta["sha256"]:
                return False
    except (ValueError, AttributeError, KeyError, TypeError, OSError, RecursionError):
        return False
    return True


def fsync(path: Path) -> None:
    """Flush a file or directory to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(directory: Path) -> None:
    """Flush every file and directory under `directory` (and itself), files before their directories."""
    for path in sorted(directory.rglob("*"), reverse=True):
        fsync(path)
    fsync(directory)


def temp_name(path: Path) -> Path:
    """A hidden sibling of `path` for this process: .NAME.tmp-PID."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_atomic(path: Path, data: str | bytes, durable: bool = False) -> None:
    """Write `data` to `path` through a temporary sibling and a rename (`durable`: fsynced first).
    The temporary file is removed if the write fails."""
    tmp = temp_name(path)
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
        if durable:
            fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def make_temp_dir(parent: Path, name: str) -> Path:
    """A new empty ``parent/.name.tmp-*`` (made with os.mkdir, so the umask applies, unlike mkdtemp)."""
    while True:
        path = parent / f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def replace_dir(tmp: Path, final: Path) -> None:
    """Rename the complete directory `tmp` to `final`, moving an existing `final` out of the way."""
    old = None
    if final.exists() or final.is_symlink():
        old = final.with_name(f".{final.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.rename(final, old)
    os.rename(tmp, final)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()


def create_dir(out: Path, what: str = "output_dir") -> Path:
    """Make `out` and prove a file can be written there (catches full or read-only disks)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"0" * 4096)
        probe.unlink()
    except OSError as exc:
        raise UserError(f"{what} {out} is not writable ({exc.strerror})") from None
    return out
