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
    (["method=dtf"], "method: unknown value 'dtf' (allowed: sft, dft, rft, uft, r3) (did you mean 'dft'?)"),
    (["protocol=paper"], "protocol: unknown value 'paper' (allowed: official, unift)"),
    (["rl.normalizer=verl"], "rl.normalizer: unknown value 'verl' (allowed: unift, official)"),
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


@pytest.mark.parametrize("method, schedule, beta", [("rft", "none", 0.0), ("r3", "uniform", 0.0),
                                                    ("uft", "staged", 0.5), ("sft", "staged", 0.5)])
def test_method_is_resolved_into_explicit_hint_settings(method, schedule, beta):
    """rft has no hints and no hint term, r3 uniform hints and no hint term, whatever the file says;
    uft (and the offline methods, which ignore hints) keep the settings as given. The resolved
    values are what config.yaml next to every checkpoint shows."""
    import yaml

    from unift.config import to_dict

    cfg = load_config(None, ["data.train=x.jsonl", f"method={method}", "hints.schedule=staged", "hints.beta=0.5"])
    assert (cfg.hints.schedule, cfg.hints.beta) == (schedule, beta)
    saved = yaml.safe_load(yaml.safe_dump(to_dict(cfg)))
    assert load_config(None, [f"{k}={v}" for k, v in (("data.train", "x.jsonl"), ("method", method),
                                                      ("hints.schedule", saved["hints"]["schedule"]),
                                                      ("hints.beta", saved["hints"]["beta"]))]) == cfg


def test_parse_overrides_nested():
    assert parse_overrides(["a.b.c=1", "a.d=x"]) == {"a": {"b": {"c": "1"}, "d": "x"}}


def test_describe_lists_every_key():
    text = "\n".join(describe())
    for key in ("method", "train.lr", "loss.dft_min_weight", "eval.k", "checkpoint.keep_last"):
        assert f"  {key} = " in text


# ----------------------------------------------------------------------------- one test per class of error
# Each class of mistake gives one line that says what is wrong, where, and what to do.

@pytest.mark.parametrize("overrides, message", [
    # wrong type
    (["train.steps=ten"], "train.steps: expected an integer, got 'ten'"),
    # out of range
    (["train.warmup_ratio=1.5"], "train.warmup_ratio must be in [0, 1)"),
    (["train.max_bad_steps=0"], "train.max_bad_steps must be at least 1, got 0"),
    # hint schedule with p_low > p_high
    (["method=uft", "hints.p_low=0.9", "hints.p_high=0.1"], "hints: need 0 <= p_low <= p_high <= 1"),
    # GRPO group size < 2
    (["method=rft", "rl.num_generations=1"],
     "rl.num_generations must be at least 2 (GRPO compares completions of a prompt)"),
    # a rollout batch that does not split into whole groups per update
    (["method=rft", "rl.prompts_per_step=6", "rl.updates_per_step=4"],
     "rl.prompts_per_step must be divisible by rl.updates_per_step (whole groups per update)"),
    # incompatible options
    (["eval.data=x.jsonl", "eval.k=4", "eval.temperature=0"],
     "eval.k=4 samples responses for avg@k, which needs eval.temperature above 0 (or set eval.k=0)"),
    (["eval.every=10"], "eval.every needs eval.data"),
    # unknown key
    (["hints.p_hihg=0.5"], "unknown config key 'hints.p_hihg' (did you mean 'p_high'?)"),
])
def test_each_class_of_config_error(overrides, message):
    with pytest.raises(UserError) as err:
        load_config(None, ["data.train=x.jsonl", *overrides])
    assert str(err.value) == message or str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value)


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a model is loaded: every check below must come first."""
    import unift.models
    import unift.train.setup

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(unift.models, "load_model", refuse)
    monkeypatch.setattr(unift.train.setup, "load_model", refuse)  # where the training loops load it


def train_with(tmp_path, *overrides):
    from unift.train.loop import train
    from unift.train.rl_loop import train_rl

    cfg = load_config(None, [f"output_dir={tmp_path / 'out'}", "model=tiny", "log.progress=false", *overrides])
    return (train if cfg.method in ("sft", "dft") else train_rl)(cfg)


def one_line_error(tmp_path, *overrides) -> str:
    with pytest.raises(UserError) as err:
        train_with(tmp_path, *overrides)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_malformed_data_rows_name_file_and_row(tmp_path, no_model):
    import json

    good = {"prompt": "p", "completion": "c", "task": "countdown", "hint": ["a"],
            "ground_truth": {"numbers": [1, 2], "target": 3}}
    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join([json.dumps(good), json.dumps(good), '{"prompt": "p", "completion": ']) + "\n")
    assert one_line_error(tmp_path, f"data.train={rows}").startswith(f"{rows}:3: not valid JSON")
    rows.write_text("\n".join([json.dumps(good), json.dumps({**good, "completion": 7})]) + "\n")
    assert one_line_error(tmp_path, f"data.train={rows}").startswith(
        f"{rows} row 2: 'completion' must be a string")
    bad_truth = {**good, "ground_truth": {"numbers": [1, 2]}}  # no target: found before any rollout
    rows.write_text("\n".join([json.dumps(good), json.dumps(good), json.dumps(bad_truth)]) + "\n")
    assert one_line_error(tmp_path, f"data.train={rows}", "method=uft") == (
        f"{rows} row 3: malformed ground truth for task countdown (no key 'target'); fix or remove the row")
    no_pieces = {k: v for k, v in good.items() if k != "hint"}
    rows.write_text("\n".join([json.dumps(good), json.dumps(no_pieces)]) + "\n")
    assert one_line_error(tmp_path, f"data.train={rows}", "method=uft").startswith(
        f"{rows} row 2: uft needs reference solution pieces")


def test_output_dir_that_is_a_file(tmp_path, countdown_jsonl, no_model):
    a_file = tmp_path / "out"
    a_file.write_text("not a directory")
    assert one_line_error(tmp_path, f"data.train={countdown_jsonl}") == f"output_dir {a_file} exists and is not a directory"


def test_unwritable_output_dir(tmp_path, countdown_jsonl, no_model, monkeypatch):
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.access(locked, os.W_OK):  # root ignores the mode bits: report them as a user would see them
        import unift.train.setup as setup

        real = os.access
        monkeypatch.setattr(setup.os, "access",
                            lambda p, mode: False if os.path.samefile(p, locked) and mode & os.W_OK else real(p, mode))
    try:
        out = locked / "run"
        with pytest.raises(UserError) as err:
            train_with(tmp_path, f"data.train={countdown_jsonl}", f"output_dir={out}")
        assert str(err.value) == f"output_dir {out} is not writable ({locked} does not accept new files)"
        under_a_file = tmp_path / "a_file"
        under_a_file.write_text("x")
        with pytest.raises(UserError, match="is not writable"):
            train_with(tmp_path, f"data.train={countdown_jsonl}", f"output_dir={under_a_file / 'run'}")
    finally:
        locked.chmod(0o700)
