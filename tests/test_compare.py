"""`unift compare` on the tiny model: every method trains with the same budget, the report,
results and both plots are written, SFT-then-RFT starts from the SFT model."""

import json

import yaml

from unift.cli import main


def test_compare_tiny(tmp_path, countdown_jsonl, capsys):
    spec = {
        "output_dir": str(tmp_path / "cmp"),
        "base": {"model": "tiny", "data": {"train": str(countdown_jsonl)},
                 "train": {"steps": 2, "batch_size": 2, "micro_batch_size": 4, "precision": "fp32", "lr": 1e-3},
                 "rl": {"prompts_per_step": 2, "num_generations": 2, "max_new_tokens": 4},
                 "log": {"progress": False, "tensorboard": False},
                 "eval": {"data": str(countdown_jsonl), "limit": 2, "max_new_tokens": 4, "every": 1}},
        "methods": {"base": {"method": "none"}, "sft": {"method": "sft"}, "uft": {"method": "uft"},
                    "sft-rft": {"method": "rft", "init": "sft"}},
    }
    path = tmp_path / "cmp.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert main(["compare", str(path)]) == 0
    out = tmp_path / "cmp"
    results = json.loads((out / "results.json").read_text())
    assert list(results) == ["base", "sft", "uft", "sft-rft"] and results["sft-rft"]["init"] == "sft"
    assert (out / "accuracy.png").stat().st_size > 1000 and (out / "reward.png").stat().st_size > 1000
    assert "| sft-rft (from sft) |" in (out / "report.md").read_text()
    curve = [json.loads(x) for x in (out / "uft" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in curve if "eval_pass@1" in m] == [0, 1, 2]
    cfg = yaml.safe_load((out / "sft-rft" / "config.yaml").read_text())
    assert cfg["model"] == str(out / "sft" / "final")
    # a second run reuses the trained models
    assert main(["compare", str(path)]) == 0
    assert "reusing" in capsys.readouterr().out


def test_compare_errors(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"methods": {"a": {"method": "sft", "init": "zzz"}}, "base": {"data": {"train": "x"}}}))
    assert main(["compare", str(path)]) == 2
    assert "init 'zzz' is not one of the compared methods" in capsys.readouterr().err
    path.write_text(yaml.safe_dump({"method": {}}))
    assert main(["compare", str(path)]) == 2
    assert "did you mean 'methods'" in capsys.readouterr().err
