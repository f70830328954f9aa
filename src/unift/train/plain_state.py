"""Training state in a file that cannot carry code: safetensors for tensors, JSON for the rest.

Optimizer, scheduler and RNG state are nested Python data (dicts, lists, tuples, numbers,
strings, tensors, one numpy array). `torch.save` would pickle them, and unpickling a file runs
whatever code the file names: a checkpoint copied from a colleague or another machine could
then run commands on `resume=true`. So `save_state` writes one safetensors file: every tensor
as a safetensors tensor (raw bytes, shape and dtype) and everything else as a JSON tree in the
file's header, where a tensor is `{"$tensor": name}`. `load_state` parses that header with the
`json` module and the tensors with safetensors' reader: a hostile file can be malformed (a
one-line `StateFileError`) but there is nothing in it that can be executed.

Why not `torch.load(weights_only=True)`: its restricted unpickler is the right tool for files
that must stay pickles, but it has been bypassed before (CVE-2025-32434, torch < 2.6) and it
still walks an attacker's opcode stream; the two parsers here take nothing but data.

Round trips are exact for what unift stores (torch optimizers', LR schedulers' and RNG state):
tensors bit for bit; Python floats through `repr` (JSON keeps every digit); tuples, dicts with
non-string keys (the optimizer's integer parameter ids) and numpy arrays (numpy's RNG key) get
markers so they come back as the same types. Not kept: subclasses (a namedtuple or torch.Size
comes back a tuple, an OrderedDict a dict), numpy scalars (Python numbers), a tensor's device,
`requires_grad` and sharing between two references.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from unift.errors import one_line

FORMAT = "unift-state/1"
_NUMPY_DTYPES = {"uint32", "uint64", "int32", "int64", "float32", "float64", "bool"}


class StateFileError(ValueError):
    """The file is not a state file this module wrote (damaged, hostile or another format)."""


def save_state(obj: Any, path: Path) -> None:
    """Write `obj` (nested dict/list/tuple/str/int/float/bool/None/tensor/ndarray) to `path`."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(obj, tensors, set())
    save_file(tensors, str(path), metadata={"format": FORMAT, "tree": json.dumps(tree)})


def load_state(path: Path) -> Any:
    """The object `save_state` wrote to `path`; `StateFileError` for anything else."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
            if meta.get("format") != FORMAT or "tree" not in meta:
                raise StateFileError(f"no '{FORMAT}' header")
            tree = json.loads(meta["tree"])
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}
        return _decode(tree, tensors)
    except StateFileError:
        raise
    except (SafetensorError, OSError, ValueError, TypeError, RecursionError) as exc:  # JSONDecodeError: ValueError
        raise StateFileError(one_line(exc)) from None


def _encode(obj: Any, tensors: dict[str, torch.Tensor], storages: set[int]) -> Any:
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        pointer = t.untyped_storage().data_ptr()
        if pointer and pointer in storages:  # safetensors refuses tensors that share memory
            t = t.clone()
        storages.add(t.untyped_storage().data_ptr())
        name = f"t{len(tensors)}"
        tensors[name] = t
        return {"$tensor": name}
    if isinstance(obj, np.ndarray):
        if obj.dtype.name not in _NUMPY_DTYPES:
            raise TypeError(f"cannot store a numpy array of {obj.dtype} in a state file")
        return {"$ndarray": obj.ravel().tolist(), "dtype": obj.dtype.name, "shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, tuple):
        return {"$tuple": [_encode(v, tensors, storages) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors, storages) for v in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in obj):
            return {k: _encode(v, tensors, storages) for k, v in obj.items()}
        return {"$dict": [[_encode(k, tensors, storages), _encode(v, tensors, storages)] for k, v in obj.items()]}
    raise TypeError(f"cannot store a {type(obj).__name__} in a state file")


def _decode(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return tree
    if isinstance(tree, list):
        return [_decode(v, tensors) for v in tree]
    if not isinstance(tree, dict):
        raise StateFileError(f"unexpected {type(tree).__name__} in the header")
    marked = [k for k in tree if k.startswith("$")]
    if not marked:
        return {k: _decode(v, tensors) for k, v in tree.items()}
    kind = marked[0]
    if kind == "$tensor" and isinstance(tree[kind], str) and tree[kind] in tensors:
        return tensors[tree[kind]]
    if kind == "$tuple" and isinstance(tree[kind], list):
        return tuple(_decode(v, tensors) for v in tree[kind])
    pairs = tree[kind]
    if kind == "$dict" and isinstance(pairs, list) and all(isinstance(p, list) and len(p) == 2 for p in pairs):
        return {_hashable(_decode(k, tensors)): _decode(v, tensors) for k, v in tree[kind]}
    if kind == "$ndarray" and isinstance(tree.get("dtype"), str) and tree["dtype"] in _NUMPY_DTYPES:
        try:
            return np.asarray(tree[kind], dtype=np.dtype(tree["dtype"])).reshape(tree["shape"])
        except (TypeError, ValueError, OverflowError, KeyError) as exc:
            raise StateFileError(f"bad array in the header: {one_line(exc)}") from None
    raise StateFileError(f"bad {kind!r} entry in the header")


def _hashable(key: Any) -> Any:
    if isinstance(key, (bool, int, float, str, tuple)) or key is None:
        return key
    raise StateFileError(f"a {type(key).__name__} cannot be a dict key")
