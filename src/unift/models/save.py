"""Saving a model as a plain Hugging Face directory, atomically, readable by transformers 4.x/5.x and vLLM."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from unift.disk import disk_full_is_user_error, require_space, state_bytes
from unift.errors import UserError
from unift.files import make_temp_dir, replace_dir
from unift.weights import is_lora, plain_copy

ADAPTER_DIR = "adapter"  # a LoRA model's adapter alone, inside its saved (merged) model directory
# tokenizer_config keys transformers 5 writes that only describe how it was loaded
_TOKENIZER_CONFIG_NOISE = ("is_local", "local_files_only")


def require_new_dir(out: Path, what: str = "--out") -> None:
    """A user's output directory for a new model must not exist yet, or be empty (one-line error)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{what} {out} already exists and is not an empty directory")


def save_model(model, tokenizer, out_dir: str | os.PathLike) -> Path:
    """Save `model` and `tokenizer` as a Hugging Face directory at `out_dir`, atomically.

    Writes safetensors, config.json, generation_config.json and the tokenizer files (with the
    chat template) into a temporary directory next to `out_dir`, then renames it into place,
    replacing an existing `out_dir` only once the new one is complete. transformers'
    `from_pretrained` (4.50+ and 5.x) and vLLM load the result unchanged. Returns `out_dir`.
    A LoRA (peft) model is saved merged (W0 + B A * alpha / r), with the adapter alone in
    `out_dir/adapter/` (see `unift.lora`).
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    require_space(out.parent, state_bytes(model.state_dict()), f"the model {out}")
    tmp = make_temp_dir(out.parent, out.name)
    try:
        with disk_full_is_user_error(out.parent, f"the model {out}"):
            _write_hf_dir(model, tokenizer, tmp)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_hf_dir(model, tokenizer, directory: Path) -> None:
    model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    if is_lora(model):  # the merged plain model, and the adapter beside it
        _write_hf_dir(plain_copy(model), tokenizer, directory)
        model.save_pretrained(str(directory / ADAPTER_DIR))  # the adapter alone, as peft saves it
        return
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if getattr(config, "tie_word_embeddings", False):
        inp, out = model.get_input_embeddings(), model.get_output_embeddings()
        if out is not None and out.weight is not inp.weight and not torch.equal(out.weight, inp.weight):
            # save_pretrained would drop lm_head and the reloaded model would tie it back
            raise RuntimeError("the model's config ties its embeddings but lm_head differs from them")
    if getattr(model.config, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    # transformers writes only on rank 0 when torch.distributed is up; here the caller decides (every
    # rank writes the source of its own vLLM engine), so this rank writes
    model.should_save_on_this_rank = lambda is_main_process: is_main_process
    try:
        model.save_pretrained(str(directory))
    finally:
        del model.should_save_on_this_rank
    tokenizer.save_pretrained(str(directory))
    _portable_model_config(directory / "config.json")
    _portable_tokenizer_config(directory / "tokenizer_config.json")


def _portable_model_config(path: Path) -> None:
    """Add the transformers 4.x spelling of keys transformers 5 renamed (rope_parameters,
    dtype): 4.x (and vLLM builds pinned to it) would otherwise silently use its default
    rope_theta. transformers 5 reads the old keys as aliases of the new ones."""
    config = json.loads(path.read_text())
    rope = config.get("rope_parameters")
    changed = False
    if isinstance(rope, dict) and "rope_theta" in rope and "rope_theta" not in config:
        config["rope_theta"] = rope["rope_theta"]
        if rope.get("rope_type", "default") != "default" and config.get("rope_scaling") is None:
            config["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
        changed = True
    if "dtype" in config and "torch_dtype" not in config:
        config["torch_dtype"] = config["dtype"]
        changed = True
    if changed:
        path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _portable_tokenizer_config(path: Path) -> None:
    """transformers 5 names its tokenizer class TokenizersBackend, which 4.x (and so vLLM builds
    pinned to it) does not know; PreTrainedTokenizerFast loads the same tokenizer.json in both."""
    if not path.is_file():
        return
    config = json.loads(path.read_text())
    changed = False
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        changed = True
    for key in _TOKENIZER_CONFIG_NOISE:
        changed |= config.pop(key, None) is not None
    if changed:
        path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
