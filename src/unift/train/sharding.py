"""FSDP2: the model's parameters, gradients and optimizer state sharded over the ranks.

    torchrun --nproc_per_node 8 -m unift train CONFIG parallel.strategy=fsdp2

With `parallel.strategy=fsdp2` every decoder layer (the classes a model lists in
`_no_split_modules`) and then the whole model go through PyTorch's `fully_shard`: each rank
keeps 1/W of every parameter (a DTensor), a layer's full weights are all-gathered just before
its forward and backward and freed after, and gradients are reduce-scattered in backward.
Compute still runs under bf16 autocast on fp32 master weights, as in one process, so W
processes compute what one process computes on the whole batch (the tests check it).

Four things differ from data parallelism (unift.train.distributed), all handled here:
- Gradients are **summed** over ranks, not averaged: the loops divide by the global token count.
- The log-prob computation calls the decoder and the head separately, not `model.forward`, so it
  is registered as an FSDP forward method (`unift_picked_logits`) to get the all-gather hooks.
- Every forward and backward is a collective: all ranks must run the same number of them. A rank
  with fewer micro-batches runs idle passes (`catch_up`: one pad token, zero loss) for the missing ones.
- Generation, evaluation and saving need whole weights: `full_copy` gathers them into a plain
  transformers model (on every rank for the rollout engine, on rank 0 for evaluation and saving).

Checkpoints are sharded with torch.distributed.checkpoint (DCP): OUTPUT_DIR/checkpoints/step-N/
holds `sharded/` (each rank's model and optimizer shards), `hf/` (config and tokenizer) and the
usual trainer state. `unift consolidate CHECKPOINT OUT` turns one into a plain Hugging Face
directory, in one process. The final model (OUTPUT_DIR/final) is always written whole.
"""

from __future__ import annotations

import types
from pathlib import Path

import torch

SHARDED_DIR = "sharded"   # DCP files of a sharded checkpoint
HF_DIR = "hf"             # config.json and tokenizer of a sharded checkpoint (no weights)


def is_sharded(model) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def shard(model, world):
    """fully_shard every decoder layer, then the root; gradients are summed over ranks."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule, fully_shard, register_fsdp_forward_method

    device_type = next(model.parameters()).device.type
    mesh = init_device_mesh(device_type, (world.size,))
    blocks = set(getattr(model, "_no_split_modules", None) or [])
    for module in list(model.modules()):
        if type(module).__name__ in blocks:
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)           # a sum: the loss is already divided globally
            module.set_force_sum_reduction_for_comms(True)  # gloo has no pre-multiplied sum
    from unift.logprobs import picked_logits

    model.unift_picked_logits = types.MethodType(picked_logits, model)
    register_fsdp_forward_method(model, "unift_picked_logits")
    return model


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a shard (a collective: every rank calls it); other tensors unchanged."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def full_copy(model, main_only: bool = False):
    """A plain transformers model holding the sharded model's current weights (a collective).

    main_only: only rank 0 gets the copy; the others get None."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from unift.train.distributed import current_world

    device = next(model.parameters()).device
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=main_only))
    if main_only and not current_world().is_main:
        return None
    return plain_model(model.config, state, device)


def plain_model(config, state: dict[str, torch.Tensor], device: torch.device):
    """A transformers causal LM built from `config` with the weights `state` (tied ones re-tied)."""
    from transformers import AutoModelForCausalLM

    from unift.models import dtype_kwargs

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


def catch_up(model, mine: int, device, amp, backward: bool, reference=None) -> None:
    """A sharded model: run idle passes until this rank, with `mine` micro-batches, has run as many
    passes as the busiest rank. A no-op for any other model."""
    if not is_sharded(model):
        return
    from unift.train.distributed import current_world

    most = int(max(current_world().gather([mine])))
    for _ in range(mine, most):
        idle_pass(model, device, amp, backward, reference)


def idle_pass(model, device, amp, backward: bool, reference=None) -> None:
    """One forward (and backward) with nothing to learn, so this rank joins the others' collectives.

    The batch is one pad token followed by another and no position is scored: the loss is zero and
    so are the gradients it adds, but every sharded layer all-gathers and reduce-scatters as usual."""
    from unift.device import autocast
    from unift.logprobs import sequence_logprobs

    input_ids = torch.zeros((1, 2), dtype=torch.long, device=device)
    attention_mask = torch.ones_like(input_ids)
    mask = torch.zeros((1, 1), dtype=torch.bool, device=device)
    with torch.set_grad_enabled(backward), autocast(device, amp):
        logp = sequence_logprobs(model, input_ids, attention_mask, mask)
        if reference is not None:
            with torch.no_grad():
                sequence_logprobs(reference, input_ids, attention_mask, mask)
    if backward:
        (logp.sum() * 0.0).backward()


# ----------------------------------------------------------------------------- checkpoints

def save_sharded(model, optimizer, directory: Path, tokenizer, is_main: bool) -> list[dict]:
    """Every rank writes its shards of model and optimizer to directory/sharded (DCP); rank 0
    adds the config and tokenizer (directory/hf) that `consolidate` needs.

    Only tensors go into DCP (non-tensor DCP entries are pickles, see unift.train.dcp_io): the
    optimizer's param_groups are returned for the caller to store as plain state."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": {"state": optim_state["state"]}},
             checkpoint_id=str(directory / SHARDED_DIR))
    if is_main:
        model.config.save_pretrained(directory / HF_DIR)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(directory / HF_DIR)
        tokenizer.save_pretrained(directory / HF_DIR)
    return optim_state["param_groups"]


def load_sharded(model, optimizer, directory: Path, param_groups: list[dict]) -> None:
    """Every rank reads its shards of model and optimizer back (same world size as written);
    `param_groups` are the ones `save_sharded` returned (read back from the plain state file)."""
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    from unift.errors import UserError
    from unift.train.checkpoint import OPTIMIZER, check_param_groups
    from unift.train.dcp_io import DCPRefused, load_tensors

    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": {"state": optim_state["state"]}}
    try:
        load_tensors(state, directory / SHARDED_DIR)
    except DCPRefused as exc:
        raise UserError(f"sharded checkpoint {directory / SHARDED_DIR} is refused: {exc}; "
                        f"resume from another checkpoint or start afresh") from None
    groups = optim_state["param_groups"]
    check_param_groups(param_groups, groups, directory / OPTIMIZER)
    if any(g.get("params") != c["params"] for g, c in zip(param_groups, groups)):
        raise UserError(f"checkpoint {directory}: its optimizer parameter groups name other parameters than "
                        f"this model's; resume with the same model and config")
    for current, saved in zip(groups, param_groups):
        current.update({key: saved[key] for key in current})  # the keys this run's optimizer has
    set_state_dict(model, optimizer, model_state_dict=state["model"],
                   optim_state_dict={"state": state["optimizer"]["state"], "param_groups": groups})


def consolidate(checkpoint: Path, out_dir: Path) -> Path:
    """A sharded checkpoint as a plain Hugging Face directory (one process, no torchrun needed)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from unift.errors import UserError, one_line
    from unift.models import custom_code_is_user_error, dtype_kwargs, load_tokenizer, require_new_dir, save_model
    from unift.train.dcp_io import DCPRefused, load_tensors

    if not (checkpoint / SHARDED_DIR / ".metadata").is_file() or not (checkpoint / HF_DIR / "config.json").is_file():
        raise UserError(f"{checkpoint} is not a sharded checkpoint (no {SHARDED_DIR}/.metadata and {HF_DIR}/config.json); "
                        f"give a checkpoints/step-N directory of a parallel.strategy=fsdp2 run")
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
