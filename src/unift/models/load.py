"""Model names and loading: the embedded model, the tiny test model, a local directory or a hub id.

See `unift.models` for the kinds of names; every failure is a one-line `UserError`, and no
model's own Python code is ever run (``trust_remote_code=False`` on every load).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from unift.errors import UserError, one_line
from unift.models.embedded import EMBEDDED, embedded_model_dir, embedded_tokenizer_dir
from unift.models.tiny import TINY, build_tiny_model
from unift.weights import dtype_kwargs

_ALIASES = {"smollm2-135m": EMBEDDED, "smollm2-135m-instruct": EMBEDDED, "default": EMBEDDED, "tiny": TINY}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def resolve_model_name(name: str) -> str:
    """``smollm2-135m`` for the embedded model, ``tiny`` for the test model, else `name` itself
    (a local Hugging Face directory or a hub id, checked by `load_model`)."""
    key = str(name).strip()
    return _ALIASES.get(key.lower(), key)


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters; tied weights (embedding and lm_head) count once."""
    return sum(p.numel() for p in model.parameters())


def load_model(name: str, *, dtype: torch.dtype = torch.float32, seed: int = 0, safetensors_only: bool = False):
    """Return ``(model, tokenizer)`` for a model name (see the module docstring).

    The model is on the CPU in `dtype`, in whatever train/eval mode `from_pretrained` leaves it.
    `seed` only matters for ``tiny`` (its random initialisation). The tokenizer always has a pad
    token and ``model.config.pad_token_id`` matches it; padding side is left to callers.
    `safetensors_only`: refuse a directory whose weights are not safetensors (unift's own
    checkpoints always are; a `.bin` there would be a pickle).

    No model's own Python code is ever run (``trust_remote_code=False`` on every load): a model
    that needs it (``auto_map`` to classes transformers lacks) is a one-line `UserError`.
    """
    resolved = resolve_model_name(name)
    if resolved == EMBEDDED:
        model, tokenizer = _load_dir(embedded_model_dir(), dtype)
    elif resolved == TINY:
        tokenizer = load_tokenizer(embedded_tokenizer_dir())
        model = build_tiny_model(tokenizer, seed=seed).to(dtype)
    else:
        model, tokenizer = _load_named(resolved, dtype, safetensors_only)
    _ensure_pad(model, tokenizer)
    return model, tokenizer


def _load_named(name: str, dtype: torch.dtype, safetensors_only: bool = False):
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file() and (path / "model" / "config.json").is_file():
            path = path / "model"  # a unift checkpoint directory
        if not (path / "config.json").is_file():
            raise UserError(f"model directory {path} has no config.json (not a Hugging Face model directory)")
        return _load_dir(path, dtype, safetensors_only)
    if path.exists():
        raise UserError(f"model path {path} is a file, not a Hugging Face model directory")
    looks_like_path = (name.startswith((".", "/", "~")) or "\\" in name or name.endswith(os.sep)
                       or name.count("/") > 1 or (os.sep != "/" and os.sep in name))
    if looks_like_path or not _HUB_ID.match(name):
        raise UserError(f"model directory {name} does not exist")
    return _load_hub(name, dtype)


def _load_dir(path: Path, dtype: torch.dtype, safetensors_only: bool = False):
    only = {}
    if safetensors_only:
        _require_safetensors(path)
        only = {"use_safetensors": True}
    try:
        with custom_code_is_user_error(path):
            model = AutoModelForCausalLM.from_pretrained(str(path), trust_remote_code=False, **only,
                                                         **dtype_kwargs(dtype))
            tokenizer = load_tokenizer(path)
    except UserError:
        raise
    except Exception as exc:  # damaged weights, a config of an unknown architecture, ...
        raise UserError(f"cannot load the model in {path}: {one_line(exc, 300)}") from None
    return model, tokenizer


def _require_safetensors(path: Path) -> None:
    """`use_safetensors=True` still lets a config's `transformers_weights` key or an index's weight
    map name a pickled file: refuse both before transformers reads anything."""
    def refuse(why: str) -> UserError:
        return UserError(f"model directory {path} {why}; unift reads these weights only as safetensors")

    try:
        config = json.loads((path / "config.json").read_text())
        indexes = {index.name: json.loads(index.read_text()) for index in path.glob("*.index.json")}
    except (OSError, ValueError, RecursionError) as exc:
        raise refuse(f"has a config or index that is not readable JSON ({one_line(exc, 300)})") from None
    if not isinstance(config, dict) or "transformers_weights" in config:
        raise refuse("names its own weights file in config.json (transformers_weights)")
    for name, index in indexes.items():
        files = index.get("weight_map", {}).values() if isinstance(index, dict) and isinstance(
            index.get("weight_map", {}), dict) else [None]
        if any(not isinstance(f, str) or Path(f).name != f or not f.endswith(".safetensors") for f in files):
            raise refuse(f"has an index {name} that lists files other than safetensors beside it")


def load_tokenizer(path: Path):
    """The tokenizer in a local directory, never with code of its own."""
    with custom_code_is_user_error(path):
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)


@contextlib.contextmanager
def custom_code_is_user_error(where) -> Iterator[None]:
    """transformers' refusal to load a model or tokenizer that needs its own code (we pass
    ``trust_remote_code=False``) as a one-line `UserError` that does not suggest the flag."""
    try:
        yield
    except ValueError as exc:
        if "trust_remote_code" not in str(exc):
            raise
        raise UserError(f"model {where} needs Python code of its own (auto_map in its config): unift never runs "
                        f"code that comes with a model; use a model whose architecture transformers has built "
                        f"in") from None


def _load_hub(name: str, dtype: torch.dtype):
    """From the local Hugging Face cache, else online once; any failure is one UserError."""
    unknown = (f"model '{name}' is not a local directory, a built-in name ({EMBEDDED}, {TINY}) "
               f"or a model in the Hugging Face cache")
    kwargs = {"trust_remote_code": False, **dtype_kwargs(dtype)}
    try:
        with custom_code_is_user_error(name):
            return (AutoModelForCausalLM.from_pretrained(name, local_files_only=True, **kwargs),
                    AutoTokenizer.from_pretrained(name, local_files_only=True, trust_remote_code=False))
    except UserError:
        raise
    except Exception:  # noqa: BLE001 - not (fully) cached: try the hub below
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise UserError(f"{unknown}; HF_HUB_OFFLINE is set, so the hub was not asked")
    try:
        # A quick probe: a failed from_pretrained retries for ~20 s before giving up.
        import huggingface_hub

        huggingface_hub.model_info(name, timeout=10)
    except Exception as exc:  # noqa: BLE001 - network errors, repository not found, gated, ...
        raise UserError(f"{unknown}; the Hugging Face hub did not provide it either "
                        f"({type(exc).__name__}: {one_line(exc, 300)})") from None
    try:
        with custom_code_is_user_error(name):
            return (AutoModelForCausalLM.from_pretrained(name, **kwargs),
                    AutoTokenizer.from_pretrained(name, trust_remote_code=False))
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"cannot load model '{name}' from the Hugging Face hub: {one_line(exc, 300)}") from None


def _ensure_pad(model, tokenizer) -> None:
    """Give the tokenizer a pad token (eos, else unk) and copy its id to the model's configs."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        elif tokenizer.unk_token is not None:
            tokenizer.pad_token = tokenizer.unk_token
        else:
            raise UserError("the tokenizer has no pad, eos or unk token to pad with")
    model.config.pad_token_id = tokenizer.pad_token_id
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None and generation_config.pad_token_id is None:
        generation_config.pad_token_id = tokenizer.pad_token_id


def add_end_tokens(model, token_ids: list[int]) -> None:
    """Add `token_ids` to the model's generation_config.eos_token_id (kept first: the existing ids).

    Training calls it with the token a response was trained to end with, so the saved
    generation_config.json makes transformers' generate and vLLM stop on that token."""
    target = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft
    config = getattr(target, "generation_config", None)
    if config is None or not token_ids:
        return
    current = config.eos_token_id
    ids = list(current) if isinstance(current, (list, tuple)) else ([] if current is None else [current])
    ids += [int(i) for i in token_ids if int(i) not in ids]
    config.eos_token_id = ids[0] if len(ids) == 1 else ids
