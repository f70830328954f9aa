"""Rendering gives every token a role; prompt tokens are never TARGET; verl and TRL rows load."""

import json

import pytest

from unift.data.loading import load_examples
from unift.data.render import HINT, PROMPT, TARGET, encode, prompt_text, render_prompt, render_sft
from unift.errors import UserError
from unift.tasks.base import Example


def test_sft_roles_plain(tiny):
    _, tok = tiny
    ex = Example(prompt="Question: 1+1?\nAssistant: <think> ", completion="2 </think> <answer> 2 </answer>")
    r = render_sft(ex, tok, "plain")
    n_prompt = len(encode(tok, ex.prompt))
    assert r.roles[:n_prompt] == [PROMPT] * n_prompt
    assert set(r.roles[n_prompt:]) == {TARGET}
    assert r.input_ids[-1] == tok.eos_token_id
    assert tok.decode(r.input_ids[n_prompt:-1]) == ex.completion


def test_chat_template_and_truncation(tiny):
    _, tok = tiny
    ex = Example(prompt=[{"role": "user", "content": "Hi"}], completion="Hello there, friend.")
    text = prompt_text(ex, tok, "auto")
    assert "<|im_start|>user" in text and text.rstrip().endswith("assistant")
    r = render_sft(ex, tok, "auto", max_response_tokens=2)
    assert r.truncated and r.roles.count(TARGET) == 2


def test_hint_tokens_have_hint_role(tiny):
    _, tok = tiny
    ex = Example(prompt="P: ", pieces=["a + b = c\n", "done"])
    r = render_prompt(ex, tok, "plain", hint="".join(ex.pieces))
    assert r.roles.count(HINT) == len(encode(tok, "a + b = c\ndone")) and r.roles[0] == PROMPT


def test_prompt_limit_is_a_user_error(tiny):
    _, tok = tiny
    with pytest.raises(UserError, match="max_prompt_tokens=3"):
        render_prompt(Example(prompt="a long prompt with many tokens"), tok, "plain", max_prompt_tokens=3,
                      where="x.jsonl row 0")


def test_official_verl_rows_load(uft_data):
    ex = load_examples(str(uft_data / "countdown" / "test.parquet"), limit=3)
    assert len(ex) == 3
    first = ex[0]
    assert isinstance(first.prompt, str) and first.prompt.endswith("<think> ")
    assert first.completion.endswith("</answer>") and first.pieces and first.task == "countdown"
    assert set(first.ground_truth) == {"numbers", "target"}
    kk = load_examples(str(uft_data / "kk_logic" / "test.parquet"), limit=1)[0]
    assert kk.task == "kk_logic" and kk.ground_truth["names"]
    others = load_examples(str(uft_data / "others" / "test.parquet"))
    assert len(others) == 4927 and all(o.pieces == [] for o in others[:50])
    assert {"gsm8k", "countdown"} <= {o.task for o in others}


def test_trl_formats(tmp_path):
    rows = [{"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "assistant", "content": "a"}]},
            {"messages": [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]},
            {"prompt": "plain", "completion": "text", "ground_truth": {"target": "3"}, "data_source": "math"}]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    a, b, c = load_examples(str(path))
    assert a.prompt == [{"role": "user", "content": "q"}] and a.completion == "a"
    assert b.prompt == [{"role": "user", "content": "q2"}] and b.completion == "a2"
    assert c.prompt == "plain" and c.task == "math" and c.ground_truth == {"target": "3"}
    pq_path = tmp_path / "d.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"prompt": "p", "completion": "c"}]), pq_path)
    assert load_examples(str(pq_path))[0].completion == "c"


def test_saved_dataset_directory(tmp_path):
    import datasets

    ds = datasets.Dataset.from_list([{"prompt": "p1", "completion": "c1"}, {"prompt": "p2", "completion": "c2"}])
    ds.save_to_disk(str(tmp_path / "saved"))
    loaded = load_examples(str(tmp_path / "saved"))
    assert [e.completion for e in loaded] == ["c1", "c2"]


def test_unreadable_and_malformed_rows(tmp_path):
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage\n")
    with pytest.raises(UserError, match="not UTF-8"):
        load_examples(str(binary))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "completion": {"x": 1}}) + "\n")
    with pytest.raises(UserError, match="row 1: 'completion' must be a string"):
        load_examples(str(bad))
    with pytest.raises(UserError, match="unsupported data file type"):
        load_examples(str(_touch(tmp_path / "x.csv")))


def _touch(path):
    path.write_text("a,b\n")
    return path
