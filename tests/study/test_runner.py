"""`unift compare` as a study runner on the tiny model: methods x seeds, a sweep chosen on the
validation set, several evaluation sets, the report with intervals and paired differences, and
resumption (reuse, a changed config refused, a killed run continued from its checkpoint)."""

import json
import os
import shutil
import subprocess
import sys

import yaml

from unift.cli import main


def _study(tmp_path, data, **extra):
    spec = {
        "output_dir": str(tmp_path / "study"), "seeds": [0, 1], "checkpoint_every": 2,
        "base": {"model": "tiny", "data": {"train": str(data)},
                 "train": {"steps": 4, "batch_size": 2, "micro_batch_size": 4, "precision": "fp32", "lr": 1e-3},
                 "rl": {"prompts_per_step": 2, "num_generations": 2, "max_new_tokens": 4},
                 "log": {"progress": False, "tensorboard": False},
                 "eval": {"data": str(data), "limit": 2, "max_new_tokens": 4, "every": 2}},
        "eval_sets": {"generated": {"data": str(data), "limit": 3, "max_new_tokens": 4},
                      "first": {"data": str(data), "limit": 2, "max_new_tokens": 3}},
        "validation": {"data": str(data), "limit": 2, "max_new_tokens": 4},
        "methods": {"base": {"method": "none"}, "sft": {"method": "sft"}, "uft": {"method": "uft"},
                    "sft-rft": {"method": "rft", "init": "sft", "sweep": {"train.lr": [1e-5, 1e-3]}}},
    }
    spec.update(extra)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_study_tiny(tmp_path, countdown_jsonl, capsys):
    path = _study(tmp_path, countdown_jsonl)
    assert main(["compare", str(path)]) == 0
    out = tmp_path / "study"
    results = json.loads((out / "results.json").read_text())
    methods = results["methods"]
    assert list(methods) == ["base", "sft", "uft", "sft-rft"]
    chosen = methods["sft-rft"]["label"]
    assert chosen in ("sft-rft@train.lr=1e-05", "sft-rft@train.lr=0.001")
    assert [row["values"]["train.lr"] for row in methods["sft-rft"]["sweep"]] == [1e-5, 1e-3]
    for name in ("sft", "uft", "sft-rft"):
        e = methods[name]["eval"]["generated"]
        assert e["seed_list"] == [0, 1] and e["problems"] == 3 and len(e["ci_bootstrap"]) == 2
        assert set(methods[name]["runs"]) == {"0", "1"}
    assert methods["base"]["eval"]["first"]["seeds"] == 1 and methods["base"]["eval"]["first"]["problems"] == 2
    assert methods["sft"]["budget"] == {"examples": 8, "rollouts": 0, "own_examples": 8}
    assert methods["sft-rft"]["budget"]["examples"] == 16 and methods["uft"]["budget"]["rollouts"] == 16
    assert set(results["paired"]["generated"]) == {"base", "sft", "sft-rft"}
    # the chained run started from the SFT run of its own seed
    cfg = yaml.safe_load((out / chosen / "seed1" / "config.yaml").read_text())
    assert cfg["model"] == str(out / "sft" / "seed1" / "final") and cfg["seed"] == 1
    report = (out / "report.md").read_text()
    assert "## generated:" in report and "## Paired: uft minus each method" in report and "not a result" in report
    assert (out / "accuracy.png").stat().st_size > 1000 and (out / "reward.png").stat().st_size > 1000
    records = (out / "eval" / "generated" / "uft" / "seed1" / "records.jsonl").read_text().splitlines()
    assert len(records) == 3
    assert not list(out.glob("*/seed*/checkpoints")) and len(list(out.glob("*/seed*/final/config.json"))) == 7

    # again without --resume: refused, nothing touched
    capsys.readouterr()
    assert main(["compare", str(path)]) == 2
    assert "pass --resume" in capsys.readouterr().err
    # --resume: every run and evaluation is reused
    stamp = (out / "eval" / "generated" / "uft" / "seed1" / "results.json").stat().st_mtime_ns
    assert main(["compare", str(path), "--resume"]) == 0
    said = capsys.readouterr().out
    assert "reusing" in said and "training" not in said
    assert (out / "eval" / "generated" / "uft" / "seed1" / "results.json").stat().st_mtime_ns == stamp
    # --resume under another config: a one-line error before any model loads
    assert main(["compare", str(path), "train.lr=0.01", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "was made by another config (train.lr: 0.001 there, 0.01 now)" in err and len(err.splitlines()) == 1


def test_killed_study_resumes_mid_run(tmp_path, countdown_jsonl):
    path = _study(tmp_path, countdown_jsonl, seeds=[0], validation={},
                  methods={"sft": {"method": "sft"}, "uft": {"method": "uft"}})
    env = {**os.environ, "UNIFT_TEST_KILL_AT": "update:3"}
    cmd = [sys.executable, "-m", "unift", "compare", str(path)]
    killed = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert killed.returncode != 0
    run = tmp_path / "study" / "sft" / "seed0"
    assert (run / "checkpoints" / "step-000002").is_dir() and not (run / "final").exists()
    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "sft seed 0: resuming" in done.stdout and "resumed from" in done.stdout
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 4 and (run / "final" / "config.json").exists()
    # a finished run keeps its final model; its resume checkpoints are gone (a study would fill the disk)
    assert not (run / "checkpoints").exists() and (run / "metrics.jsonl").exists()


def test_study_errors(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"methods": {"a": {"method": "sft", "init": "zzz"}},
                                    "base": {"data": {"train": "x"}, "eval": {"data": "x"}}}))
    assert main(["compare", str(path)]) == 2
    assert "init 'zzz' is not one of the compared methods" in capsys.readouterr().err
    path.write_text(yaml.safe_dump({"method": {}}))
    assert main(["compare", str(path)]) == 2
    assert "did you mean 'methods'" in capsys.readouterr().err
    path.write_text(yaml.safe_dump({"methods": {"a": {"method": "sft"}}, "base": {"data": {"train": "x"}},
                                    "eval_sets": {"g": {"data": "y", "max_tokens": 3}}}))
    assert main(["compare", str(path)]) == 2
    assert "unknown config key 'eval_sets.g.max_tokens' (did you mean 'max_new_tokens'?)" in capsys.readouterr().err


def test_a_study_with_a_user_reward_scores_its_evaluations_with_it(tmp_path, countdown_jsonl):
    (tmp_path / "r.py").write_text("def always(completions, **kwargs):\n    return [1.0 for _ in completions]\n")
    path = _study(tmp_path, countdown_jsonl, seeds=[0], validation={}, checkpoint_every=0,
                  methods={"rft": {"method": "rft", "train": {"steps": 1}}})
    spec = yaml.safe_load(path.read_text())
    spec["base"]["reward"] = {"funcs": [f"{tmp_path / 'r.py'}:always"]}
    spec["base"]["eval"]["every"] = 0
    path.write_text(yaml.safe_dump(spec))
    assert main(["compare", str(path)]) == 0
    results = json.loads((tmp_path / "study" / "results.json").read_text())
    assert results["methods"]["rft"]["eval"]["generated"]["mean"] == 1.0  # the user reward, not Countdown's


def test_auto_precision_is_saved_resolved_and_a_machine_change_is_refused(tmp_path, monkeypatch):
    import pytest

    import unift.study.runner as runner
    from unift.config import Config, to_dict
    from unift.errors import UserError

    assert runner.resolve_precision("fp32", "cpu") == "fp32" and runner.resolve_precision("bf16", "cpu") == "bf16"
    monkeypatch.setattr(runner, "autocast_dtype", lambda precision, device: None)  # a CPU without native bf16
    assert runner.resolve_precision("auto", "cpu") == "fp32"
    saved = tmp_path / "run" / "config.yaml"
    saved.parent.mkdir()
    cfg = Config()
    cfg.train.precision = "fp32"
    for was, refused in (("bf16", True), ("auto", False), ("fp32", False)):  # auto: saved by an older unift
        old = to_dict(Config())
        old["train"]["precision"] = was
        saved.write_text(yaml.safe_dump(old))
        if refused:
            with pytest.raises(UserError, match="trained with train.precision=bf16 and this machine resolves "
                                                "auto to fp32") as e:
                runner.check_same_config(cfg, saved)
            assert len(str(e.value).splitlines()) == 1
        else:
            runner.check_same_config(cfg, saved)


def test_studies_that_share_runs_dir_reuse_each_others_runs_and_evaluations(tmp_path, countdown_jsonl, capsys):
    first = _study(tmp_path, countdown_jsonl, seeds=[0], validation={}, methods={"sft": {"method": "sft"}})
    assert main(["compare", str(first)]) == 0
    runs = tmp_path / "study"
    stamp = (runs / "eval" / "generated" / "sft" / "seed0" / "results.json").stat().st_mtime_ns
    report = (runs / "report.md").read_text()
    spec = yaml.safe_load(first.read_text())
    spec.update(output_dir=str(tmp_path / "second"), runs_dir=str(runs), focus="dft",
                methods={"sft": {"method": "sft"}, "dft": {"method": "dft"}})
    second = tmp_path / "second.yaml"
    second.write_text(yaml.safe_dump(spec))
    capsys.readouterr()
    assert main(["compare", str(second)]) == 2  # runs_dir holds runs: reusing them is asked for with --resume
    assert "pass --resume" in capsys.readouterr().err
    assert main(["compare", str(second), "--resume"]) == 0
    said = capsys.readouterr().out
    assert "sft seed 0: reusing" in said and "dft seed 0: training" in said and "sft seed 0: training" not in said
    assert (runs / "eval" / "generated" / "sft" / "seed0" / "results.json").stat().st_mtime_ns == stamp
    results = json.loads((tmp_path / "second" / "results.json").read_text())
    assert set(results["methods"]) == {"sft", "dft"} and results["runs_dir"] == str(runs)
    assert set(results["paired"]["generated"]) == {"sft"}
    assert (runs / "dft" / "seed0" / "final" / "config.json").exists() and not (tmp_path / "second" / "dft").exists()
    assert (runs / "report.md").read_text() == report  # the first study's report is its own
    # an evaluation set of the same name defined otherwise: refused before any model loads
    spec["eval_sets"]["generated"]["limit"] = 2
    second.write_text(yaml.safe_dump(spec))
    assert main(["compare", str(second), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "was evaluated on another 'generated' set (limit: 3 there, 2 now)" in err and len(err.splitlines()) == 1


def test_a_study_resumes_on_a_machine_without_its_weights(tmp_path, countdown_jsonl, capsys):
    """Committed raw results (config, metrics, done.json, evaluations) stand for finished runs; a run is
    trained again only when its weights are needed: a later run starts from it, or an evaluation is new."""
    path = _study(tmp_path, countdown_jsonl, seeds=[0], validation={},
                  methods={"sft": {"method": "sft"}, "sft-rft": {"method": "rft", "init": "sft"}})
    assert main(["compare", str(path)]) == 0
    out = tmp_path / "study"
    first = json.loads((out / "results.json").read_text())
    done = json.loads((out / "sft" / "seed0" / "done.json").read_text())
    result = json.loads((out / "eval" / "generated" / "sft" / "seed0" / "results.json").read_text())
    assert done["weights"] == result["study_key"]["weights"]
    for run in ("sft", "sft-rft"):  # the weights stay behind on the other machine
        shutil.rmtree(out / run / "seed0" / "final")
    capsys.readouterr()
    assert main(["compare", str(path), "--resume"]) == 0
    said = capsys.readouterr().out
    assert said.count("reusing its results (weights not on this machine)") == 2 and "training" not in said
    again = json.loads((out / "results.json").read_text())
    assert again["methods"]["sft"]["eval"] == first["methods"]["sft"]["eval"]
    assert set(again["methods"]["sft-rft"]["runs"]) == {"0"}
    # the chained run is gone too: it needs its start, which is trained again first
    shutil.rmtree(out / "sft-rft")
    shutil.rmtree(out / "eval" / "generated" / "sft-rft")
    assert main(["compare", str(path), "--resume"]) == 0
    said = capsys.readouterr().out
    assert "sft seed 0: its weights are needed and not on this machine: training it again" in said
    assert "sft-rft seed 0: training" in said
    assert (out / "sft" / "seed0" / "final" / "config.json").exists()
    assert (out / "sft-rft" / "seed0" / "done.json").exists()


def test_methods_runs_a_piece_of_a_study(tmp_path, countdown_jsonl, capsys):
    path = _study(tmp_path, countdown_jsonl, seeds=[0], validation={},
                  methods={"base": {"method": "none"}, "sft": {"method": "sft"}, "dft": {"method": "dft"},
                           "sft-rft": {"method": "rft", "init": "sft"}})
    assert main(["compare", str(path), "--methods", "nope"]) == 2
    err = capsys.readouterr().err
    assert "--methods: 'nope' is not a method of" in err and "(its methods: base, sft, dft, sft-rft)" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "study").exists()
    assert main(["compare", str(path), "--methods", "sft-rft"]) == 0  # and sft, which it starts from
    said = capsys.readouterr().out
    assert "sft seed 0: training" in said and "sft-rft seed 0: training" in said and "dft" not in said
    methods = json.loads((tmp_path / "study" / "results.json").read_text())["methods"]
    assert methods["dft"]["runs"] == {} and methods["dft"]["eval"] == {} and methods["base"]["eval"] == {}
    assert set(methods["sft-rft"]["runs"]) == {"0"} and "generated" in methods["sft-rft"]["eval"]
    assert main(["compare", str(path), "--resume", "--methods", "dft,base"]) == 0
    methods = json.loads((tmp_path / "study" / "results.json").read_text())["methods"]
    assert set(methods["dft"]["runs"]) == {"0"} and "generated" in methods["base"]["eval"]
    assert set(methods["sft-rft"]["runs"]) == {"0"}  # not run in this piece, reported from disk


def test_a_restored_run_is_trained_again_for_a_new_evaluation_set(tmp_path, countdown_jsonl, capsys):
    path = _study(tmp_path, countdown_jsonl, seeds=[0], validation={}, methods={"sft": {"method": "sft"}})
    assert main(["compare", str(path)]) == 0
    out = tmp_path / "study"
    shutil.rmtree(out / "sft" / "seed0" / "final")
    spec = yaml.safe_load(path.read_text())
    spec["eval_sets"]["second"] = {"data": str(countdown_jsonl), "limit": 1, "max_new_tokens": 2}
    path.write_text(yaml.safe_dump(spec))
    capsys.readouterr()
    assert main(["compare", str(path), "--resume"]) == 0
    said = capsys.readouterr().out
    assert "sft seed 0: its weights are needed and not on this machine: training it again" in said
    assert (out / "eval" / "second" / "sft" / "seed0" / "records.jsonl").exists()
    assert (out / "sft" / "seed0" / "final" / "config.json").exists()
    # a done.json beside checkpoints and no final model is stale: that run is half-trained, not finished
    from unift.study.runner import finished_elsewhere, weights_elsewhere
    shutil.rmtree(out / "sft" / "seed0" / "final")
    assert finished_elsewhere(out / "sft" / "seed0") and weights_elsewhere(str(out / "sft" / "seed0" / "final"))
    (out / "sft" / "seed0" / "checkpoints").mkdir()
    assert not finished_elsewhere(out / "sft" / "seed0")
    assert not weights_elsewhere("smollm2-135m")


def test_restore_script_brings_back_whole_folders_only_where_none_are(tmp_path):
    src, runs = tmp_path / "results", tmp_path / "runs"
    for rel, text in {"sft/seed0/config.yaml": "a", "sft/seed0/metrics.jsonl": "b", "sft/seed0/done.json": "c",
                      "sft/seed1/config.yaml": "old", "sft/seed1/done.json": "old",
                      "eval/generated/sft/seed0/results.json": "d", "eval/generated/sft/seed0/records.jsonl": "e",
                      "eval/generated/sft/seed1/results.json": "torn", "results.json": "report",
                      "outside_check/x.json": "f"}.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    (runs / "sft" / "seed1").mkdir(parents=True)
    (runs / "sft" / "seed1" / "config.yaml").write_text("here")  # a run in progress on this machine
    script = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "restore_study_results.sh")
    done = subprocess.run(["bash", script, str(src), str(runs)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "restored 2 run and evaluation folders" in done.stdout
    assert sorted(p.relative_to(runs).as_posix() for p in runs.rglob("*") if p.is_file()) == [
        "eval/generated/sft/seed0/records.jsonl", "eval/generated/sft/seed0/results.json",
        "sft/seed0/config.yaml", "sft/seed0/done.json", "sft/seed0/metrics.jsonl", "sft/seed1/config.yaml"]
    assert (runs / "sft" / "seed1" / "config.yaml").read_text() == "here"
    missing = subprocess.run(["bash", script, str(tmp_path / "nope"), str(runs)], capture_output=True, text=True)
    assert missing.returncode == 2 and "is a folder" in missing.stderr and len(missing.stderr.splitlines()) == 1


def test_a_start_model_restored_without_weights_is_a_one_line_error(tmp_path, countdown_jsonl, capsys):
    elsewhere = tmp_path / "other" / "sft" / "seed0"
    elsewhere.mkdir(parents=True)
    (elsewhere / "done.json").write_text('{"weights": "abc"}\n')
    path = _study(tmp_path, countdown_jsonl, seeds=[0], validation={}, methods={"dft": {"method": "dft"}})
    spec = yaml.safe_load(path.read_text())
    spec["base"]["model"] = str(elsewhere / "final")
    path.write_text(yaml.safe_dump(spec))
    assert main(["compare", str(path)]) == 2
    err = capsys.readouterr().err
    assert "whose weights are not on this machine" in err and f"remove {elsewhere}" in err
    assert len(err.splitlines()) == 1
