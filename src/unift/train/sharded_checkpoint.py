"""Sharded (FSDP2) checkpoints: every rank's shards through torch.distributed.checkpoint (DCP).

OUTPUT_DIR/checkpoints/step-N/ of a parallel.strategy=fsdp2 run holds `sharded/` (each rank's
model and optimizer shards, tensors only) and `hf/` (config and tokenizer, no weights) beside the
usual trainer state (unift.train.checkpoint). DCP files are read through unift.train.dcp_io,
which builds nothing but DCP's metadata and tensors. `consolidate` (`unift consolidate`) turns
such a checkpoint into a plain Hugging Face directory in one process.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from transformers import AutoConfig, AutoModelForCausalLM

from unift.errors import UserError, one_line
from unift.models import (
    custom_code_is_user_error,
    load_tokenizer,
    require_new_dir,
    save_model,
)
from unift.train.checkpoint_checks import check_param_groups
from unift.train.dcp_io import DCPRefused, load_tensors
from unift.weights import dtype_kwargs

SHARDED_DIR = "sharded"   # DCP files of a sharded checkpoint
HF_DIR = "hf"             # config.json and tokenizer of a sharded checkpoint (no weights)


def save_sharded(model, optimizer, directory: Path, tokenizer, is_main: bool) -> list[dict]:
    """Every rank writes its shards of model and optimizer to directory/sharded (DCP); rank 0
    adds the config and tokenizer (directory/hf) that `consolidate` needs.

    Only tensors go into DCP (non-tensor DCP entries are pickles, see unift.train.dcp_io): the
    optimizer's param_groups are returned for the caller to store as plain state."""
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": {"state": optim_state["state"]}},
             checkpoint_id=str(directory / SHARDED_DIR))
    if is_main:
        model.config.save_pretrained(directory / HF_DIR)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(directory / HF_DIR)
        tokenizer.save_pretrained(directory / HF_DIR)
    return optim_state["param_groups"]


def load_sharded(model, optimizer, directory: Path, param_groups: list[dict], groups_file: Path) -> None:
    """Every rank reads its shards of model and optimizer back (same world size as written);
    `param_groups` are the ones `save_sharded` returned, read back from the plain state file `groups_file`."""
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": {"state": optim_state["state"]}}
    try:
        load_tensors(state, directory / SHARDED_DIR)
    except DCPRefused as exc:
        raise UserError(f"sharded checkpoint {directory / SHARDED_DIR} is refused: {exc}; "
                        f"resume from another checkpoint or start afresh") from None
    groups = optim_state["param_groups"]
    check_param_groups(param_groups, groups, groups_file)
    if any(g.get("params") != c["params"] for g, c in zip(param_groups, groups)):
        raise UserError(f"checkpoint {directory}: its optimizer parameter groups name other parameters than "
                        f"this model's; resume with the same model and config")
    for current, saved in zip(groups, param_groups):
        current.update({key: saved[key] for key in current})  # the keys this run's optimizer has
    set_state_dict(model, optimizer, model_state_dict=state["model"],
                   optim_state_dict={"state": state["optimizer"]["state"], "param_groups": groups})


def consolidate(checkpoint: Path, out_dir: Path) -> Path:
    """A sharded checkpoint as a plain Hugging Face directory (one process, no torchrun needed)."""
    if not (checkpoint / SHARDED_DIR / ".metadata").is_file() or not (checkpoint / HF_DIR / "config.json").is_file():
        raise UserError(f"{checkpoint} is not a sharded checkpoint (no {SHARDED_DIR}/.metadata and "
                        f"{HF_DIR}/config.json); give a checkpoints/step-N directory of a parallel.strategy=fsdp2 run")
    require_new_dir(out_dir)
    try:
        with custom_code_is_user_error(checkpoint / HF_DIR):
            config = AutoConfig.from_pretrained(checkpoint / HF_DIR, trust_remote_code=False)
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=False, **dtype_kwargs(torch.float32))
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - not JSON, an unknown architecture, ...
        raise UserError(f"cannot read the model config in {checkpoint / HF_DIR}: {one_line(exc)}") from None
    state = {"model": model.state_dict()}  # DCP reads just these keys (the optimizer shards stay on disk)
    try:
        load_tensors(state, checkpoint / SHARDED_DIR, no_dist=True)
    except DCPRefused as exc:
        raise UserError(f"sharded checkpoint {checkpoint / SHARDED_DIR} is refused: {exc}; "
                        f"consolidate another checkpoint") from None
    model.load_state_dict(state["model"])
    try:
        tokenizer = load_tokenizer(checkpoint / HF_DIR)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - damaged tokenizer files
        raise UserError(f"cannot read the tokenizer in {checkpoint / HF_DIR}: {one_line(exc)}") from None
    return save_model(model.eval(), tokenizer, out_dir)
