"""The study config: seeds, sweeps and budget groups are expanded and checked before any model loads."""

import pytest
import yaml

from unift.errors import UserError
from unift.study.spec import read_study


def _write(tmp_path, spec):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


def _spec(tmp_path, data, **extra):
    spec = {"output_dir": str(tmp_path / "out"), "seeds": [0, 1],
            "base": {"model": "tiny", "data": {"train": str(data)}, "train": {"steps": 3, "batch_size": 4},
                     "rl": {"prompts_per_step": 4, "num_generations": 2}},
            "eval_sets": {"heldout": {"data": str(data), "limit": 4}},
            "methods": {"base": {"method": "none"}, "sft": {"method": "sft"}, "uft": {"method": "uft"},
                        "sft-rft": {"method": "rft", "init": "sft"}}}
    spec.update(extra)
    return spec


def test_runs_per_seed_and_budgets(tmp_path, countdown_jsonl):
    study = read_study(_write(tmp_path, _spec(tmp_path, countdown_jsonl)))
    sft, chained = study.methods["sft"], study.methods["sft-rft"]
    assert sorted(sft.configs) == [(0, 0), (0, 1)] and sft.configs[(0, 1)].seed == 1
    assert sft.configs[(0, 1)].output_dir.endswith("out/sft/seed1")
    assert sft.budget.examples == 12 and study.methods["uft"].budget.examples == 12
    assert study.methods["uft"].budget.rollouts == 24
    assert chained.budget.examples == 24 and chained.group == "sft-rft (chained)" and sft.group == "main"
    assert list(study.methods) == ["base", "sft", "uft", "sft-rft"] and study.focus == "uft"
    assert study.methods["sft"].configs[(0, 0)].checkpoint.every == 5  # the study turns checkpoints on


def test_budgets_must_match_within_a_group(tmp_path, countdown_jsonl):
    spec = _spec(tmp_path, countdown_jsonl)
    spec["methods"]["uft"] = {"method": "uft", "train": {"steps": 4}}
    with pytest.raises(UserError, match="budget group 'main' mixes budgets .*sft 12.*uft 16"):
        read_study(_write(tmp_path, spec))
    spec["methods"]["uft"]["group"] = "longer"
    assert read_study(_write(tmp_path, spec)).methods["uft"].budget.examples == 16


def test_sweep_candidates_and_validation(tmp_path, countdown_jsonl):
    spec = _spec(tmp_path, countdown_jsonl)
    spec["methods"]["sft-rft"]["sweep"] = {"train.lr": [1e-6, 1e-5]}
    with pytest.raises(UserError, match="validation"):
        read_study(_write(tmp_path, spec))
    spec["validation"] = {"data": str(countdown_jsonl), "limit": 2}
    m = read_study(_write(tmp_path, spec)).methods["sft-rft"]
    assert [m.label(c) for c in range(2)] == ["sft-rft@train.lr=1e-06", "sft-rft@train.lr=1e-05"]
    assert m.configs[(1, 1)].train.lr == 1e-5


@pytest.mark.parametrize("change, message", [
    ({"eval_sets": {"heldout": {"data": "x.jsonl", "limt": 3}}}, "did you mean 'limit'"),
    ({"seeds": "0,0"}, "distinct"),
    ({"seeds": "zero"}, r"seeds\[0\]: expected an integer"),
    ({"focus": "dtf"}, "focus 'dtf' is not one of the compared methods"),
    ({"sedes": [0]}, "did you mean 'seeds'"),
])
def test_bad_study_configs(tmp_path, countdown_jsonl, change, message):
    with pytest.raises(UserError, match=message):
        read_study(_write(tmp_path, _spec(tmp_path, countdown_jsonl, **change)))


def test_seeds_from_the_command_line_form(tmp_path, countdown_jsonl):
    study = read_study(_write(tmp_path, _spec(tmp_path, countdown_jsonl, seeds="3, 4")))
    assert study.cfg.seeds == [3, 4]
    assert read_study(_write(tmp_path, _spec(tmp_path, countdown_jsonl, seeds="[5]"))).cfg.seeds == [5]


def test_the_shipped_study_configs(monkeypatch):
    from conftest import REPO

    monkeypatch.chdir(REPO)
    compare = read_study("configs/compare_countdown.yaml")
    assert {m.budget.examples for m in compare.methods.values() if m.group == "main"} == {320}
    study = read_study("configs/study_countdown.yaml")
    assert study.cfg.seeds == [0, 1, 2] and list(study.eval_sets) == ["generated", "official"]
    assert {n: m.budget.examples for n, m in study.methods.items()} == {
        "base": 0, "sft": 320, "rft": 320, "uft": 320, "sft-rft": 640}
    assert len(study.methods["sft-rft"].candidates) == 3 and study.methods["sft-rft"].group == "sft-rft (chained)"
    offline = read_study("configs/study_offline.yaml")
    assert offline.focus == "dft" and offline.methods["dft"].configs[(0, 2)].method == "dft"


def test_a_run_of_an_older_unift_or_moved_elsewhere_is_the_same_run(tmp_path, countdown_jsonl):
    from unift.config import load_config, to_dict
    from unift.study.runner import check_same_config

    cfg = load_config(None, [f"data.train={countdown_jsonl}", f"output_dir={tmp_path / 'new'}"])
    old = to_dict(cfg)
    del old["reward"]  # a section an older unift did not have
    old["output_dir"] = str(tmp_path / "old")
    old["checkpoint"]["every"] = 7  # checkpointing does not change what is trained
    saved = tmp_path / "config.yaml"
    saved.write_text(yaml.safe_dump(old))
    check_same_config(cfg, saved)
    cfg.reward.timeout_s = 5.0  # not the default: a different run
    with pytest.raises(UserError, match=r"reward.timeout_s: None there, 5.0 now"):
        check_same_config(cfg, saved)


def test_the_full_studys_configs_reuse_the_first_studys_runs_except_dft_from_base(monkeypatch):
    from conftest import REPO

    from unift.config import to_dict

    monkeypatch.chdir(REPO)
    first = read_study("configs/study_countdown.yaml")
    variants = read_study("configs/study_uft_variants.yaml")
    long = read_study("configs/study_long.yaml")
    dft = read_study("configs/study_dft_base.yaml")
    for study in (variants, long, dft):
        assert study.out != first.out and study.cfg.seeds == [0, 1, 2]
        assert vars(study.cfg.validation) == vars(first.cfg.validation)
    for study in (variants, long):
        assert study.runs == first.out
        assert {k: vars(v) for k, v in study.eval_sets.items()} == {k: vars(v) for k, v in first.eval_sets.items()}
    # DFT from the base model trains its own SFT runs (same machine as DFT's) and adds the harder set `mixed`
    assert dft.runs == dft.out and list(dft.eval_sets) == ["generated", "official", "mixed"]
    assert {k: vars(dft.eval_sets[k]) for k in first.eval_sets} == {k: vars(v) for k, v in first.eval_sets.items()}
    # a method of the same name is the same run config as the first study's
    for study, shared in ((variants, "uft"), (dft, "sft")):
        for seed in (0, 1, 2):
            a, b = to_dict(study.methods[shared].configs[(0, seed)]), to_dict(first.methods[shared].configs[(0, seed)])
            assert {**a, "output_dir": None} == {**b, "output_dir": None}
            assert (a["output_dir"] == b["output_dir"]) == (study is variants)
    assert {n: m.budget.examples for n, m in variants.methods.items() if n != "base"} == dict.fromkeys(
        ("uft", "uft-beta0.001", "uft-no-answer-piece", "uft-official-normalizer", "uft-hint-dft", "uft-adaptive",
         "r3", "staged"), 320)
    assert variants.methods["r3"].configs[(0, 0)].hints.schedule == "uniform"
    assert variants.methods["staged"].configs[(0, 0)].hints.schedule == "staged"
    assert {n: m.budget.examples for n, m in long.methods.items()} == {
        "base": 0, "sft60": 960, "rft60": 960, "uft60": 960, "sft60-rft60": 1920}
    assert long.methods["uft60"].configs[(0, 1)].hints.t_hint == 60
    assert len(dft.methods["dft-floor"].candidates) == 2 and dft.focus == "sft"
    names = {first.methods[n].label(0) for n in first.methods} & {
        s.methods[n].label(0) for s in (long,) for n in s.methods}
    assert names == {"base"}  # the 60-step runs have names of their own
