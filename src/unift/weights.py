"""What kind of model is this, and give me its full weights: plain, LoRA (peft) or FSDP2-sharded.

The samplers (unift.engine, unift.vllm_engine), saving (unift.models), checkpoints and the
distributed helpers all ask these questions; this leaf module answers them and imports nothing
of unift's, so none of them has to import another.

- `is_lora`, `is_sharded`: the kind;
- `named_weights`: (name, weight) as the plain model names them, LoRA merged (W0 + B A * alpha / r),
  FSDP2 shards gathered;
- `plain_copy`: a plain transformers copy of any of them; `full_copy`, `plain_model`: the FSDP2 case;
- `disabled_adapter`: a LoRA model computing with W0 only (the KL reference of a LoRA run).
"""

from __future__ import annotations

import contextlib
import copy
import re
import sys
from collections.abc import Iterator

import torch
import torch.distributed as dist
import transformers
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor
from transformers import AutoModelForCausalLM


def is_lora(model) -> bool:
    """True for a peft model (peft cannot have made one unless it was imported)."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def is_sharded(model) -> bool:
    return isinstance(model, FSDPModule)


def disabled_adapter(model):
    """Context in which a LoRA model computes with its base weights W0 only (no-op otherwise)."""
    return model.disable_adapter() if is_lora(model) else contextlib.nullcontext()


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a shard (a collective: every rank calls it); other tensors unchanged."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def _lora_delta(module) -> torch.Tensor | None:
    """B A * alpha / r of a peft LoRA layer (summed over its active adapters), or None."""
    if getattr(module, "merged", False) or getattr(module, "disable_adapters", False):
        return None
    deltas = [module.get_delta_weight(name) for name in module.active_adapters if name in module.lora_A]
    return sum(deltas) if deltas else None


@torch.no_grad()
def named_weights(model) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, weight) in the order and names of the plain model's `named_parameters()`.

    A LoRA model yields W0 + B A * alpha / r for every adapted layer (computed, the policy is not
    changed) and its frozen weights as they are; any other model yields its own parameters.
    """
    if not is_lora(model):
        for name, param in model.named_parameters():  # FSDP2 shards are gathered (every rank calls this)
            yield name, full_tensor(param)
        return
    # peft: only a LoRA model gets here
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    layers = {name: module for name, module in base.named_modules() if isinstance(module, LoraLayer)}
    for name, param in base.named_parameters():
        if any(part.startswith("lora_") for part in name.split(".")):
            continue  # the adapter's own A and B
        owner, _, leaf = name.rpartition(".base_layer.")
        if owner and owner in layers:
            delta = _lora_delta(layers[owner]) if leaf == "weight" else None
            yield f"{owner}.{leaf}", param if delta is None else param + delta.to(param.dtype)
        else:
            yield name, param


def plain_copy(model):
    """A deep copy of the model as a plain transformers model (LoRA merged into the weights).

    A model sharded with FSDP2 is gathered whole on every rank (a collective: all ranks call it)."""
    if is_sharded(model):
        return full_copy(model)
    duplicate = copy.deepcopy(model)
    return duplicate.merge_and_unload() if is_lora(model) else duplicate


def full_copy(model, main_only: bool = False):
    """A plain transformers model holding the sharded model's current weights (a collective).

    main_only: only rank 0 gets the copy; the others get None."""
    device = next(model.parameters()).device
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=main_only))
    if main_only and dist.is_initialized() and dist.get_rank() != 0:
        return None
    return plain_model(model.config, state, device)


def plain_model(config, state: dict[str, torch.Tensor], device: torch.device):
    """A transformers causal LM built from `config` with the weights `state` (tied ones re-tied)."""
    dtype = next(iter(state.values())).dtype
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=False, **dtype_kwargs(dtype))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"weights do not fit the model: missing {sorted(missing)[:5]}, "
                           f"unexpected {sorted(unexpected)[:5]}")
    model.tie_weights()
    return model.eval()


def dtype_kwargs(dtype: torch.dtype) -> dict:
    """The dtype keyword of `from_pretrained` / `from_config`: `dtype` from transformers 4.56, `torch_dtype` before."""
    major, minor = (int(x) for x in re.findall(r"\d+", transformers.__version__)[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}
