"""Reading a torch.distributed.checkpoint (DCP) directory without running code it carries.

A sharded checkpoint's `sharded/` directory is DCP's format: `.metadata` is a pickle of DCP's
metadata classes, and each `__R_0.distcp` file holds tensors (each a small `torch.save` blob) and
"bytes" entries for non-tensor values. Stock DCP loading unpickles `.metadata` with `pickle.load`
and every bytes entry with `torch.load(weights_only=False)`: both run whatever the file names.
unift therefore
- writes only tensors into DCP (the optimizer's param_groups and the scheduler go to a plain
  state file, unift.train.plain_state), so there is no bytes entry worth reading;
- reads `.metadata` with an unpickler that can build DCP's metadata dataclasses, torch.Size,
  torch dtypes and layouts, and paths, and nothing else, and may fill in attributes only of
  DCP's own metadata objects (`_MetadataUnpickler`), and checks that every data file it names is
  a plain file name inside the directory;
- refuses any bytes entry (`_TensorsOnlyPlanner.load_bytes`);
- leaves the tensor blobs to DCP, which reads them with `torch.load(weights_only=True)`: only
  tensors and plain containers (hence torch >= 2.6 in pyproject, where that loader is hardened).
Anything that does not load under these rules is a `DCPRefused` with one line saying why.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path, PurePath
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

from unift.errors import one_line

# the classes DCP's .metadata pickle names (torch 2.6 - 2.13), by module
_METADATA_CLASSES = {
    "torch.distributed.checkpoint.metadata": {
        "Metadata", "MetadataIndex", "StorageMeta", "TensorProperties", "TensorStorageMetadata",
        "BytesStorageMetadata", "ChunkStorageMetadata", "_MEM_FORMAT_ENCODING"},
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch.serialization": {"_get_layout"},
    "pathlib": {"PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath"},
    "collections": {"OrderedDict"},
}


# the only modules whose instances a .metadata pickle may fill in (pickle's BUILD)
_BUILDABLE_MODULES = {"torch.distributed.checkpoint.metadata", "torch.distributed.checkpoint.filesystem"}


class DCPRefused(Exception):
    """A DCP directory that does not load as metadata and tensors alone."""


class _MetadataUnpickler(pickle._Unpickler):  # the pure-Python one: its BUILD can be restricted
    """Builds DCP's metadata and nothing else.

    `find_class` admits only the names above (plus torch.Size and torch dtypes). That alone is
    not enough: pickle's BUILD opcode sets attributes on whatever is on its stack, a class or a
    function included, so a hostile file could patch `pathlib.PurePosixPath` or torch for the
    whole process. BUILD is therefore allowed only on instances of DCP's metadata classes."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module: str, name: str) -> Any:
        if name in _METADATA_CLASSES.get(module, ()):
            return super().find_class(module, name)
        if module == "torch" and (name == "Size" or isinstance(getattr(torch, name, None), torch.dtype)):
            return getattr(torch, name)
        raise DCPRefused(f"its .metadata names {module}.{name}, which DCP metadata never holds")

    def load_build(self) -> None:
        target = self.stack[-2]  # the state is on top, the object it fills in below it
        if isinstance(target, type) or type(target).__module__ not in _BUILDABLE_MODULES:
            raise DCPRefused(f"its .metadata sets attributes of {type(target).__name__} "
                             f"{getattr(target, '__name__', '')}".rstrip() + ", which DCP metadata never does")
        super().load_build()

    dispatch[pickle.BUILD[0]] = load_build


def read_metadata(directory: Path):
    """DCP's Metadata of `directory`, unpickled with the allow-list above; data files checked."""
    path = directory / ".metadata"
    try:
        with path.open("rb") as fh:
            metadata = _MetadataUnpickler(fh).load()
    except DCPRefused:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated or garbage pickles raise all sorts
        raise DCPRefused(f"its .metadata does not load ({type(exc).__name__}: {one_line(exc)})") from None

    if (not isinstance(metadata, Metadata) or not isinstance(getattr(metadata, "storage_data", None), dict)
            or not isinstance(getattr(metadata, "state_dict_metadata", None), dict)
            or not isinstance(getattr(metadata, "storage_meta", None), (StorageMeta, type(None)))):
        raise DCPRefused("its .metadata is not DCP metadata")
    for info in metadata.storage_data.values():
        name = getattr(info, "relative_path", None)
        if not isinstance(name, str) or PurePath(name).name != name or name in ("", ".", ".."):
            raise DCPRefused(f"its .metadata points at {name!r}, not a file of the directory")
    return metadata


def safe_reader(directory: Path, metadata=None):
    """DCP's FileSystemReader, taking its metadata from `read_metadata` (or the one given)."""
    checked = metadata if metadata is not None else read_metadata(directory)  # refused here, not inside DCP

    class SafeReader(FileSystemReader):
        def read_metadata(self, *args, **kwargs):
            if getattr(checked, "storage_meta", None) is None:
                checked.storage_meta = StorageMeta()
            checked.storage_meta.load_id = self.load_id
            return checked

    return SafeReader(str(directory))


def _planner():
    class TensorsOnlyPlanner(DefaultLoadPlanner):
        def load_bytes(self, read_item, value) -> None:
            raise DCPRefused(f"its entry {read_item.dest_index.fqn} is not a tensor "
                             f"(non-tensor entries are pickles and are not read)")

    return TensorsOnlyPlanner()


def load_tensors(state: dict[str, Any], directory: Path, no_dist: bool = False) -> None:
    """Fill the tensors of `state` (nested dicts of tensors / DTensors) in place from `directory`."""
    try:
        with warnings.catch_warnings():  # no_dist: "assuming the intent is to load in a single process": it is
            warnings.simplefilter("ignore", UserWarning)
            dcp.load(state, storage_reader=safe_reader(directory), planner=_planner(), no_dist=no_dist)
    except DCPRefused:
        raise
    except CheckpointException as exc:  # some rank failed; DCP wraps its error with the traceback
        causes = [err for err, _ in exc.failures.values()] or [exc]
        refused = next((c for c in causes if isinstance(c, DCPRefused)), None)
        if refused is not None:
            raise refused from None
        raise _not_tensors(causes[0]) from None
    except Exception as exc:  # noqa: BLE001 - e.g. the weights-only loader's UnpicklingError
        raise _not_tensors(exc) from None


def _not_tensors(exc: BaseException) -> DCPRefused:
    if isinstance(exc, pickle.UnpicklingError):  # torch's weights-only loader met more than a tensor
        return DCPRefused("a tensor entry of its .distcp files is not a plain tensor "
                          "(PyTorch's weights-only loader refused it)")
    return DCPRefused(f"its tensors do not load ({type(exc).__name__}: {one_line(exc)})")
