"""rl.compile_decode: the compiled decode step samples what the eager sampler samples, compiles
once per bucket, and a platform that cannot compile is a one-line error before the model loads.

One compiled engine (tiny model) is shared by the module: compiling it takes about a minute here.
"""

import pytest

from unift.compiled_decode import batch_bucket, check_compile_supported, length_bucket
from unift.config import load_config
from unift.engine import HFEngine, SamplingParams
from unift.errors import UserError

PROMPTS = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15], [16, 17, 18, 19], [20, 21, 22]]


@pytest.fixture(scope="module")
def engines(tiny):
    model, tok = tiny
    return HFEngine(model, tok, batch_size=4), HFEngine(model, tok, batch_size=4, compile=True)


def test_buckets():
    assert [length_bucket(n) for n in (1, 256, 257, 600)] == [256, 256, 512, 768]
    assert [batch_bucket(n, 64) for n in (1, 3, 4, 5, 33, 64)] == [1, 4, 4, 8, 64, 64]
    assert batch_bucket(5, 6) == 6 and batch_bucket(7, 6) == 7  # never more rows than the engine's batch


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_compiled_samples_what_eager_samples(engines, temperature):
    eager, compiled = engines
    params = SamplingParams(max_new_tokens=12, temperature=temperature, n=2, stop=(), seeds=[3, 1, 4, 1, 5])
    a, b = eager.generate(PROMPTS, params), compiled.generate(PROMPTS, params)
    assert [c.prompt_index for c in b] == [c.prompt_index for c in a]
    for x, y in zip(a, b):  # per-prompt seeds: the same draws whatever the padding rows
        assert x.token_ids == y.token_ids and x.finish_reason == y.finish_reason
        assert max(abs(u - v) for u, v in zip(x.logprobs, y.logprobs)) < 1e-4


def test_one_compile_per_bucket(engines):
    _, compiled = engines
    params = SamplingParams(max_new_tokens=8, temperature=1.0, stop=(), seed=0)
    compiled.generate(PROMPTS[:3], params)  # 3 rows -> the 4-row bucket
    buckets, seconds = set(compiled.compiled.compiled_buckets), compiled.compile_seconds
    compiled.generate(PROMPTS[1:5], params)  # 4 rows, same length bucket: nothing new to compile
    assert compiled.compiled.compiled_buckets == buckets and compiled.compile_seconds == seconds
    assert (4, 256) in buckets and seconds > 0


def test_stop_string_and_eos_end_rows_in_the_compiled_path(engines, tiny):
    eager, compiled = engines
    _, tok = tiny
    first = eager.generate(PROMPTS[:1], SamplingParams(max_new_tokens=6, temperature=0.0, stop=()))[0]
    stop = tok.decode(first.token_ids[2:4])
    params = SamplingParams(max_new_tokens=6, temperature=0.0, stop=(stop,))
    a, b = eager.generate(PROMPTS[:1], params)[0], compiled.generate(PROMPTS[:1], params)[0]
    assert b.finish_reason == a.finish_reason == "stop" and b.token_ids == a.token_ids


def test_no_compiler_is_a_one_line_error_before_the_model_loads(monkeypatch, tmp_path, countdown_jsonl):
    import unift.compiled_decode as cd
    from unift.train.rl_loop import train_rl

    monkeypatch.setattr(cd.shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="needs a C\\+\\+ compiler"):
        check_compile_supported("cpu")
    cfg = load_config(None, ["method=rft", "model=does-not-exist", f"data.train={countdown_jsonl}",
                             "rl.compile_decode=true", "train.device=cpu", f"output_dir={tmp_path / 'run'}"])
    with pytest.raises(UserError, match="compile_decode"):  # not "model does-not-exist": the check comes first
        train_rl(cfg)


def test_compile_flag_is_off_by_default():
    assert load_config(None, ["data.train=train.jsonl"]).rl.compile_decode is False
