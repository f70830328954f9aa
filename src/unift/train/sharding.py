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
  is registered as an FSDP forward method (`unift_token_stats`) to get the all-gather hooks.
- Every forward and backward is a collective: all ranks must run the same number of them. A rank
  with fewer micro-batches runs idle passes (`catch_up`: one pad token, zero loss) for the missing ones.
- Generation, evaluation and saving need whole weights: `unift.weights.full_copy` gathers them
  into a plain transformers model (on every rank for the rollout engine, on rank 0 for
  evaluation and saving).

Checkpoints are sharded with torch.distributed.checkpoint (DCP, unift.train.sharded_checkpoint):
OUTPUT_DIR/checkpoints/step-N/ holds `sharded/` (each rank's model and optimizer shards), `hf/`
(config and tokenizer) and the usual trainer state. `unift consolidate CHECKPOINT OUT` turns one
into a plain Hugging Face directory, in one process. The final model (OUTPUT_DIR/final) is always written whole.
"""

from __future__ import annotations

import types

import torch
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard, register_fsdp_forward_method

from unift.device import autocast
from unift.logprobs import sequence_logprobs, token_stats
from unift.train.distributed import current_world
from unift.weights import is_sharded


def shard(model, world):
    """fully_shard every decoder layer, then the root; gradients are summed over ranks."""
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
    model.unift_token_stats = types.MethodType(token_stats, model)
    register_fsdp_forward_method(model, "unift_token_stats")
    return model


def catch_up(model, mine: int, device, amp, backward: bool, reference=None) -> None:
    """A sharded model: run idle passes until this rank, with `mine` micro-batches, has run as many
    passes as the busiest rank. A no-op for any other model."""
    if not is_sharded(model):
        return
    most = int(max(current_world().gather([mine])))
    for _ in range(mine, most):
        idle_pass(model, device, amp, backward, reference)


def idle_pass(model, device, amp, backward: bool, reference=None) -> None:
    """One forward (and backward) with nothing to learn, so this rank joins the others' collectives.

    The batch is one pad token followed by another and no position is scored: the loss is zero and
    so are the gradients it adds, but every sharded layer all-gathers and reduce-scatters as usual."""
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
