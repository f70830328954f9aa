"""configs/paper/: the official UFT recipes (liumy2010/UFT @ ad3c8ec) as unift configs.

TABLE below is the one place the official values live in the tests: every recipe must resolve
(through `unift.config.load_config`) to exactly these values, set each of them explicitly in its
YAML file (not through a default) and name the value's source in a comment on the same line.
load_config does not open data files or resolve relative paths, so no data is read here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from unift.config import load_config, to_dict

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "configs" / "paper"
DATA = "../shared/data/uft"
MODEL = "Qwen/Qwen2.5-0.5B"

# A source comment names a file of the official code: run.py, scripts/*.sh or verl/...
SOURCE = re.compile(r"#.*\b(run\.py|scripts/\w+\.sh|verl/[\w/]+\.(py|yaml))")

# ---- pieces the table is assembled from (each value with its official source, see the YAML comments)

RL = {  # scripts/train.sh, run.py, verl/trainer/config/ppo_trainer.yaml, verl actor code
    "seed": 0, "protocol": "official",
    "data.task": "", "data.template": "plain", "data.limit": 0, "data.shuffle": True,
    "train.steps": 500, "train.lr": 1e-6, "train.schedule": "constant", "train.warmup_ratio": 0.0,
    "train.weight_decay": 0.01, "train.beta1": 0.9, "train.beta2": 0.999, "train.grad_clip": 1.0,
    "train.precision": "bf16",
    "rl.prompts_per_step": 256, "rl.num_generations": 4, "rl.max_new_tokens": 1024, "rl.temperature": 1.0,
    "rl.top_p": 1.0, "rl.stop": "", "rl.epochs": 1, "rl.epsilon": 0.2, "rl.epsilon_high": 0.0,
    "rl.loss_aggregation": "token-mean", "rl.scale_rewards": "group", "rl.kl_coef": 0.001,
    "rl.entropy_coef": 0.001, "rl.mask_truncated": False, "rl.normalizer": "official", "rl.tis_cap": 0.0,
    "eval.task": "", "eval.every": 25, "eval.limit": 0, "eval.max_new_tokens": 1024, "eval.k": 0,
    "checkpoint.every": 100,
}
HINTS = {"hints.max_chunks": 5, "hints.loss": "nll", "hints.answer_piece": False}
UFT = {"method": "uft", "hints.schedule": "cosine", "hints.p_high": 0.95, "hints.p_low": 0.05,
       "hints.t_hint": 300, "hints.beta": 0.001, **HINTS}
STAGED = {"method": "uft", "hints.schedule": "staged", "hints.t_hint": 300, "hints.beta": 0.001, **HINTS}
R3 = {"method": "r3", "hints.schedule": "uniform", "hints.beta": 0.0, **HINTS}
RFT = {"method": "rft"}
SFT = {  # scripts/sft.sh, run.py, verl/trainer/config/sft_trainer.yaml, fsdp_sft_trainer.py
    "method": "sft", "model": MODEL, "seed": 0, "protocol": "official",
    "data.template": "plain", "data.max_prompt_tokens": 1024, "data.max_response_tokens": 1024,
    "data.limit": 0, "data.shuffle": True,
    "train.epochs": 5.0, "train.batch_size": 256, "train.micro_batch_size": 16, "train.lr": 1e-5,
    "train.schedule": "cosine", "train.warmup_ratio": 0.1, "train.min_lr_ratio": 0.0,
    "train.weight_decay": 0.01, "train.beta1": 0.9, "train.beta2": 0.95, "train.grad_clip": 1.0,
    "train.precision": "bf16",
    "eval.task": "", "eval.every": 0, "eval.limit": 0, "eval.max_new_tokens": 1024, "eval.k": 0,
    "checkpoint.every": 0,
}


def data(task: str) -> dict:
    return {"data.train": f"{DATA}/{task}/train.parquet", "eval.data": f"{DATA}/{task}/test.parquet"}


# run.py: prompt budget per task; PPO mini-batch 64 prompts (4 updates of 256) and micro-batch 4 prompts
# x n = 16 sequences, except MATH on one GPU (run.py's default): 32 prompts (8 updates), 2 x 4 = 8.
COUNTDOWN = {"data.max_prompt_tokens": 256, "rl.updates_per_step": 4, "train.micro_batch_size": 16}
MATH = {"data.max_prompt_tokens": 1024, "rl.updates_per_step": 8, "train.micro_batch_size": 8}
LOGIC = {"data.max_prompt_tokens": 1024, "rl.updates_per_step": 4, "train.micro_batch_size": 16}


def from_sft(task: str) -> dict:
    return {"model": f"runs/paper/{task}-sft/final"}


BASE = {"model": MODEL}


# ---- THE table: recipe file -> dotted key -> expected resolved value
TABLE: dict[str, dict] = {
    "countdown_uft.yaml": {**RL, **COUNTDOWN, **data("countdown"), **BASE, **UFT},
    "countdown_rft.yaml": {**RL, **COUNTDOWN, **data("countdown"), **BASE, **RFT},
    "countdown_r3.yaml": {**RL, **COUNTDOWN, **data("countdown"), **BASE, **R3},
    "countdown_staged.yaml": {**RL, **COUNTDOWN, **data("countdown"), **BASE, **STAGED},
    "countdown_sft_rft.yaml": {**RL, **COUNTDOWN, **data("countdown"), **from_sft("countdown"), **RFT},
    "countdown_sft.yaml": {**SFT, **data("countdown"), "train.steps": 200},  # min(40 batches x 5 epochs, 500)
    "math_uft.yaml": {**RL, **MATH, **data("math"), **BASE, **UFT},
    "math_rft.yaml": {**RL, **MATH, **data("math"), **BASE, **RFT},
    "math_r3.yaml": {**RL, **MATH, **data("math"), **BASE, **R3},
    "math_staged.yaml": {**RL, **MATH, **data("math"), **BASE, **STAGED},
    "math_sft_rft.yaml": {**RL, **MATH, **data("math"), **from_sft("math"), **RFT},
    "math_sft.yaml": {**SFT, **data("math"), "train.steps": 0},  # row count unknown: from 5 epochs
    "kk_logic_uft.yaml": {**RL, **LOGIC, **data("kk_logic"), **BASE, **UFT},
    "kk_logic_rft.yaml": {**RL, **LOGIC, **data("kk_logic"), **BASE, **RFT},
    "kk_logic_r3.yaml": {**RL, **LOGIC, **data("kk_logic"), **BASE, **R3},
    "kk_logic_staged.yaml": {**RL, **LOGIC, **data("kk_logic"), **BASE, **STAGED},
    "kk_logic_sft_rft.yaml": {**RL, **LOGIC, **data("kk_logic"), **from_sft("kk_logic"), **RFT},
    "kk_logic_sft.yaml": {**SFT, **data("kk_logic"), "train.steps": 85},  # min(17 batches x 5 epochs, 500)
}


def _resolved(cfg_dict: dict, dotted: str):
    node = cfg_dict
    for part in dotted.split("."):
        node = node[part]
    return node


def _key_lines(path: Path) -> dict[str, int]:
    """Dotted key -> 0-based line of its key in the YAML file (scalar values only)."""
    root = yaml.compose(path.read_text())
    out: dict[str, int] = {}

    def walk(node, prefix: str) -> None:
        for key_node, value_node in node.value:
            dotted = f"{prefix}{key_node.value}"
            if isinstance(value_node, yaml.MappingNode):
                walk(value_node, dotted + ".")
            else:
                out[dotted] = key_node.start_mark.line

    walk(root, "")
    return out


def test_every_recipe_file_is_in_the_table():
    assert sorted(p.name for p in PAPER.glob("*.yaml")) == sorted(TABLE)


@pytest.mark.parametrize("name", sorted(TABLE))
def test_recipe_resolves_to_the_official_values(name):
    resolved = to_dict(load_config(PAPER / name))
    wrong = {key: (_resolved(resolved, key), want) for key, want in TABLE[name].items()
             if _resolved(resolved, key) != want or type(_resolved(resolved, key)) is not type(want)}
    assert not wrong, f"{name}: (resolved, expected) {wrong}"


@pytest.mark.parametrize("name", sorted(TABLE))
def test_recipe_sets_each_value_explicitly_with_its_source(name):
    path = PAPER / name
    lines = path.read_text().splitlines()
    where = _key_lines(path)
    missing = [key for key in TABLE[name] if key not in where]
    assert not missing, f"{name}: set only by a default, not in the file: {missing}"
    unsourced = [f"{key} (line {where[key] + 1})" for key in TABLE[name] if not SOURCE.search(lines[where[key]])]
    assert not unsourced, f"{name}: no source comment naming run.py, scripts/*.sh or verl/...: {unsourced}"


@pytest.mark.parametrize("task", ["countdown", "math", "kk_logic"])
def test_sft_rft_is_the_rft_recipe_from_the_sft_model(task):
    sft = load_config(PAPER / f"{task}_sft.yaml")
    rft = to_dict(load_config(PAPER / f"{task}_rft.yaml"))
    chained = to_dict(load_config(PAPER / f"{task}_sft_rft.yaml"))
    assert chained["model"] == f"{sft.output_dir}/final"  # where unift train writes the SFT model
    for key in ("model", "output_dir"):
        rft.pop(key), chained.pop(key)
    assert chained == rft


def test_output_dirs_are_distinct():
    dirs = [load_config(PAPER / name).output_dir for name in TABLE]
    assert len(set(dirs)) == len(dirs)


def test_data_files_exist_except_the_unshipped_math_train_split(uft_data):
    """Recipes name the data relative to the project root, as ../shared/data/uft/... (uft_data skips
    where that directory is absent)."""
    missing = set()
    for name in TABLE:
        cfg = load_config(PAPER / name)
        for rel in (cfg.data.train, cfg.eval.data):
            if not (REPO / rel).resolve().is_file():
                missing.add(rel)
    assert missing == {f"{DATA}/math/train.parquet"}
    for name in ("math_uft.yaml", "math_sft.yaml"):  # the gap is stated where it bites
        assert "math/train.parquet is not shipped" in (PAPER / name).read_text()
    assert "math/train.parquet` is not shipped" in (PAPER / "README.md").read_text()


def test_readme_names_every_recipe_and_how_to_run():
    readme = (PAPER / "README.md").read_text()
    for kind in ("uft", "rft", "r3", "staged", "sft", "sft_rft"):
        assert f"`<task>_{kind}.yaml`" in readme
    assert "unift train configs/paper/countdown_uft.yaml" in readme


@pytest.mark.parametrize("name", ["countdown_uft.yaml", "countdown_rft.yaml"])
def test_cpu_configs_load_and_no_longer_claim_to_be_official(name):
    path = REPO / "configs" / name
    cfg = load_config(path)
    text = path.read_text()
    assert "as in the official code" not in text
    assert f"configs/paper/{name}" in text  # points to the official recipe
    assert "NOT the official" in text
    assert "stop" not in (yaml.safe_load(text).get("rl") or {})  # rollouts run to EOS
    assert cfg.rl.stop == ""
