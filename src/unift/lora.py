"""LoRA adapters through peft, for every training method (sft, dft, rft, uft, r3).

LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models": eq. 3 with the
alpha / r scaling of its section 4.1) freezes a pretrained weight W0 [d_out, d_in] and learns a
low-rank update beside it:

    W = W0 + B A * alpha / r        A: [r, d_in] (random init), B: [d_out, r] (zeros at the start)

so training starts exactly at the base model and only r * (d_in + d_out) numbers per adapted
linear layer learn. The `lora:` config section sets r, alpha, dropout and the target modules.

How unift uses it:

* `apply_lora` wraps the loaded policy in a peft model; only A and B require gradients, so the
  optimizer (which takes only parameters with requires_grad) trains only them.
* The KL reference of RL is the same model with the adapter switched off (`disabled_adapter`):
  no second copy is loaded.
* `unift.weights.named_weights` gives the merged weights W0 + B A * alpha / r under the plain
  model's names, without touching the policy: the rollout engine's bf16 copy is a plain merged
  model (`unift.weights.plain_copy`) and syncs from them after every optimizer step.
* `unift.models.save_model` writes a LoRA policy as a plain merged Hugging Face directory (what
  evaluation and vLLM load) plus `adapter/` (peft `save_pretrained`); `restore_weights` resumes a
  checkpoint from that adapter; `merge_adapter_dir` is `unift merge-lora`.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file

from unift.errors import UserError, one_line
from unift.models import ADAPTER_DIR, load_model, require_new_dir, save_model
from unift.weights import disabled_adapter, is_lora, named_weights, plain_copy  # noqa: F401 (the LoRA API)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def target_list(spec: str) -> list[str]:
    """'q_proj, v_proj' -> ['q_proj', 'v_proj']."""
    return [name.strip() for name in spec.split(",") if name.strip()]


def apply_lora(model, lora_cfg):
    """Wrap `model` in LoRA adapters as `lora_cfg` (unift.config.LoRAConfig) says; the base freezes."""
    # peft loads only for LoRA runs (lora.enabled)
    from peft import LoraConfig, get_peft_model

    targets = target_list(lora_cfg.target_modules)
    present = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
               if isinstance(module, torch.nn.Linear)}
    missing = [t for t in targets if t not in present]
    if missing:
        raise UserError(f"lora.target_modules: {','.join(missing)} is not a linear layer of this model "
                        f"(it has {','.join(sorted(present))})")
    config = LoraConfig(r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
                        target_modules=targets, bias="none", task_type="CAUSAL_LM")
    with _quiet_peft():
        return get_peft_model(model, config)


@contextlib.contextmanager
def _quiet_peft():
    """peft asks transformers 5 a deprecated question while wrapping: not the user's concern."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        yield


def save_adapter(model, directory: Path) -> None:
    """The adapter alone (adapter_config.json, adapter_model.safetensors), as peft saves it."""
    model.save_pretrained(str(directory))


def restore_weights(model, model_dir: Path) -> None:
    """Load a checkpoint's `model/` into the policy: its adapter for a LoRA policy, else the full model."""
    adapter = model_dir / ADAPTER_DIR
    if is_lora(model):
        if not (adapter / ADAPTER_WEIGHTS).is_file():
            raise UserError(f"checkpoint {model_dir.parent} has no LoRA adapter ({adapter / ADAPTER_WEIGHTS}); "
                            f"it was trained without lora.enabled=true")
        _load_adapter_weights(model, adapter)
        return
    if adapter.is_dir():
        raise UserError(f"checkpoint {model_dir.parent} was trained with LoRA; set lora.enabled=true "
                        f"(and the same lora settings) to resume it")
    resumed, _ = load_model(str(model_dir), safetensors_only=True)
    try:
        model.load_state_dict(resumed.state_dict())
    except RuntimeError as exc:  # another architecture or size than this run's model
        raise UserError(f"the weights in {model_dir} do not fit this run's model ({one_line(exc)}); "
                        f"resume with the same model") from None


def _load_adapter_weights(model, adapter: Path) -> None:
    # peft loads only for LoRA runs
    from peft import set_peft_model_state_dict

    try:
        weights = load_file(str(adapter / ADAPTER_WEIGHTS))
    except Exception as exc:  # noqa: BLE001 - safetensors' SafetensorError: not a safetensors file
        raise UserError(f"the adapter file {adapter / ADAPTER_WEIGHTS} does not load ({one_line(exc)})") from None
    try:
        result = set_peft_model_state_dict(model, weights)
    except RuntimeError as exc:  # shape mismatch: another r or another model
        raise UserError(f"the adapter in {adapter} does not fit lora.r/lora.target_modules of this run "
                        f"({one_line(exc)})") from None
    missing = [key for key in result.missing_keys if ".lora_" in key]
    if missing:
        raise UserError(f"the adapter in {adapter} lacks {len(missing)} LoRA weights of this run "
                        f"(e.g. {missing[0]}): were lora.target_modules different?")


def find_adapter(directory: Path) -> Path:
    """`directory` if it holds an adapter, else its `adapter/` (a unift final/ or checkpoint model/)."""
    if not directory.is_dir():
        raise UserError(f"adapter directory {directory} does not exist")
    for candidate in (directory, directory / ADAPTER_DIR):
        if (candidate / ADAPTER_CONFIG).is_file():
            return candidate
    raise UserError(f"{directory} holds no LoRA adapter (no {ADAPTER_CONFIG} in it or in {ADAPTER_DIR}/)")


def merge_adapter_dir(adapter_dir: str | Path, base: str, out: str | Path) -> Path:
    """Merge the adapter in `adapter_dir` into model `base`; write a plain Hugging Face model to `out`."""
    from peft import PeftModel  # peft loads only for LoRA adapters

    adapter = find_adapter(Path(adapter_dir))
    if not (adapter / ADAPTER_WEIGHTS).is_file():  # peft would fall back to a pickled adapter_model.bin
        raise UserError(f"{adapter} has no {ADAPTER_WEIGHTS}: unift reads adapter weights only as safetensors")
    out = Path(out)
    require_new_dir(out)
    model, tokenizer = load_model(base)
    try:
        with _quiet_peft():
            merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    except (ValueError, RuntimeError, KeyError) as exc:  # other architecture, other shapes
        raise UserError(f"cannot apply the adapter in {adapter} to model {base}: {one_line(exc)}") from None
    return save_model(merged, tokenizer, out)
