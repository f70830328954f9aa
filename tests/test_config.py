"""Config loading: YAML + overrides, type coercion, unknown keys with suggestions, ranges."""

import pytest

from unift.config import Config, describe, load_config, parse_overrides
from unift.errors import UserError


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_yaml_and_overrides(tmp_path):
    p = write(tmp_path, "method: sft\ndata:\n  train: x.jsonl\ntrain:\n  lr: 1e-4\n")
    cfg = load_config(p, ["method=dft", "train.batch_size=8", "train.micro_batch_size=2", "resume=true"])
    assert isinstance(cfg, Config)
    assert cfg.method == "dft" and cfg.train.lr == 1e-4 and cfg.train.batch_size == 8
    assert cfg.resume is True and cfg.data.train == "x.jsonl"


def test_overrides_only():
    cfg = load_config(None, ["data.train=a.jsonl", "loss.dft_min_weight=0.1"])
    assert cfg.loss.dft_min_weight == 0.1


@pytest.mark.parametrize("overrides, message", [
    (["trian.lr=1"], "unknown config key 'trian' (did you mean 'train'?)"),
    (["train.lrr=1"], "unknown config key 'train.lrr' (did you mean 'train.lr'?)".replace("'train.lr'", "'lr'")),
    (["method=dtf"], "method: unknown value 'dtf' (did you mean 'dft'?)"),
    (["train.batch_size=abc"], "train.batch_size: expected an integer, got 'abc'"),
    (["train.lr=fast"], "train.lr: expected a number, got 'fast'"),
    (["resume=maybe"], "resume: expected true or false, got 'maybe'"),
    (["train.lr=-1"], "train.lr must be positive"),
    (["data.train="], "data.train is empty"),
    (["lr"], "override 'lr' is not of the form key=value"),
])
def test_bad_values_are_one_line_errors(overrides, message):
    base = [] if any(o.startswith("data.train") for o in overrides) else ["data.train=x.jsonl"]
    with pytest.raises(UserError) as err:
        load_config(None, base + overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(UserError, match="not valid YAML at line"):
        load_config(write(tmp_path, "a: [1, 2\nb: 3\n"))
    with pytest.raises(UserError, match="must be a mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(UserError, match="train: expected a mapping"):
        load_config(write(tmp_path, "train: 3\n"))


def test_parse_overrides_nested():
    assert parse_overrides(["a.b.c=1", "a.d=x"]) == {"a": {"b": {"c": "1"}, "d": "x"}}


def test_describe_lists_every_key():
    text = "\n".join(describe())
    for key in ("method", "train.lr", "loss.dft_min_weight", "eval.k", "checkpoint.keep_last"):
        assert f"  {key} = " in text
