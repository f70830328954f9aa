"""The command line: --help everywhere, and one-line errors (exit 2, no traceback) for bad input,
with nothing written to the output directory."""

import json
import subprocess
import sys

import pytest

from unift.cli import main


@pytest.mark.parametrize("command", [[], ["train"], ["eval"], ["data"], ["demo"], ["horizon"]])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(command + ["--help"])
    assert exit_.value.code == 0
    assert "usage: unift" in capsys.readouterr().out


def test_help_config(capsys):
    assert main(["train", "--help-config"]) == 0
    assert "train.lr = 5e-05" in capsys.readouterr().out


def error_of(args, capsys):
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("unift: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_train_inputs(tmp_path, capsys, countdown_jsonl):
    out = tmp_path / "out"
    base = ["train", f"output_dir={out}", "model=tiny", "log.progress=false"]
    assert "does not exist" in error_of(base + [f"data.train={tmp_path / 'nope.jsonl'}"], capsys)
    bad_cols = tmp_path / "cols.jsonl"
    bad_cols.write_text(json.dumps({"question": "q", "solution": "s"}) + "\n")
    assert "no 'prompt' or 'messages' column (found: question, solution)" in error_of(
        base + [f"data.train={bad_cols}"], capsys)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": \n')
    assert f"{broken}:2: not valid JSON" in error_of(base + [f"data.train={broken}"], capsys)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert "holds no rows" in error_of(base + [f"data.train={empty}"], capsys)
    prompt_only = tmp_path / "prompt_only.jsonl"
    prompt_only.write_text(json.dumps({"prompt": "hello"}) + "\n")
    assert "no reference response" in error_of(base + [f"data.train={prompt_only}"], capsys)
    assert "did you mean 'countdown'" in error_of(base + [f"data.train={countdown_jsonl}", "data.task=countdwn"], capsys)
    assert "did you mean 'sft'" in error_of(base + [f"data.train={countdown_jsonl}", "method=sfft"], capsys)
    assert not out.exists(), "nothing may be written for bad input"


def test_prompt_too_long_and_unknown_model(tmp_path, capsys, countdown_jsonl):
    out = tmp_path / "out"
    base = ["train", f"output_dir={out}", "log.progress=false", f"data.train={countdown_jsonl}"]
    assert "data.max_prompt_tokens=8" in error_of(base + ["model=tiny", "data.max_prompt_tokens=8"], capsys)
    assert "model directory" in error_of(base + [f"model={tmp_path / 'no-model'}"], capsys)
    assert not (out / "final").exists() and not (out / "checkpoints").exists()


def test_existing_run_needs_resume(tmp_path, capsys, countdown_jsonl):
    out = tmp_path / "run"
    (out / "final").mkdir(parents=True)
    assert "already holds a run" in error_of(["train", f"output_dir={out}", "model=tiny",
                                              f"data.train={countdown_jsonl}"], capsys)


def test_data_command(tmp_path, capsys):
    out = tmp_path / "cd.jsonl"
    assert main(["data", "countdown", "--n", "5", "--seed", "3", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 5 and {"prompt", "completion", "hint", "ground_truth"} <= set(rows[0])
    assert "did you mean 'kk_logic'" in error_of(["data", "kk_logik", "--n", "5", "--out", str(out)], capsys)
    assert "--n must be at least 1" in error_of(["data", "countdown", "--n", "0", "--out", str(out)], capsys)
    assert main(["data", "countdown", "--numbers", "3", "--n", "4", "--out", str(out)]) == 0
    assert all(len(json.loads(line)["ground_truth"]["numbers"]) == 3 for line in out.read_text().splitlines())
    assert "--numbers is for countdown" in error_of(["data", "kk_logic", "--numbers", "3", "--out", str(out)], capsys)
    assert "must be 2-5" in error_of(["data", "countdown", "--numbers", "7", "--out", str(out)], capsys)


def test_no_traceback_from_the_real_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "unift", "train", f"data.train={tmp_path / 'x.jsonl'}",
                           f"output_dir={tmp_path / 'o'}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("unift: error:") and "Traceback" not in proc.stderr


def test_eval_command_and_its_errors(tmp_path, capsys, countdown_jsonl):
    out = tmp_path / "ev"
    assert main(["eval", "--model", "tiny", "--data", str(countdown_jsonl), "--limit", "2", "--max-new-tokens", "3",
                 "--out", str(out)]) == 0
    assert (out / "results.json").exists() and (out / "results.md").exists()
    assert "--top-p must be in (0, 1]" in error_of(["eval", "--data", str(countdown_jsonl), "--top-p", "0"], capsys)
    assert "--temperature must be >= 0" in error_of(["eval", "--data", str(countdown_jsonl), "--temperature", "-1"],
                                                    capsys)
    bad_gt = tmp_path / "bad_gt.jsonl"
    bad_gt.write_text(json.dumps({"prompt": "p", "ground_truth": {"numbers": [1, "x"]}, "task": "countdown"}) + "\n")
    assert "bad_gt.jsonl row 1: malformed ground truth" in error_of(
        ["eval", "--model", "tiny", "--data", str(bad_gt), "--out", str(tmp_path / "e2")], capsys)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert "is not a directory" in error_of(["eval", "--data", str(countdown_jsonl), "--out", str(a_file)], capsys)


def test_a_missing_local_data_path_is_reported_at_once(tmp_path, capsys):
    """A path with a file suffix or a path form is not tried as a hub id (no network line first)."""
    from unift.data.loading import load_examples
    from unift.errors import UserError

    for source in ("runs/nope.jsonl", "./data/x", "a/b/c", "nope.parquet"):
        try:
            load_examples(source)
        except UserError as exc:
            assert str(exc) == f"data file {source} does not exist"
        else:
            raise AssertionError(source)
    assert capsys.readouterr().err == ""
