"""`unift sample` (rejection sampling) on the tiny model: the file it writes trains with `unift
train`, an interrupted run resumes to the same result, and what is kept follows the rules."""

import json

import pytest

from unift.cli import main
from unift.data.loading import load_examples
from unift.sample import SampleSettings, run_sample, select
from unift.tasks.base import Example


def _sample(data, out, *extra):
    return main(["sample", "--model", "tiny", "--data", str(data), "--out", str(out), "--k", "2",
                 "--max-new-tokens", "6", "--limit", "4", "--chunk", "2", "--precision", "fp32", *extra])


def test_sample_writes_trainable_rows_and_resumes(tmp_path, countdown_jsonl, capsys):
    out = tmp_path / "all.jsonl"
    assert _sample(countdown_jsonl, out, "--keep", "all", "--no-dedupe") == 0
    said = capsys.readouterr().out
    assert "4 prompts, 8 samples" in said and "kept 8" in said
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["row"], r["sample"]) for r in rows] == [(i, j) for i in range(4) for j in range(2)]
    examples = load_examples(str(out))
    assert examples[0].ground_truth == load_examples(str(countdown_jsonl))[0].ground_truth
    assert examples[0].completion == rows[0]["completion"] and examples[0].data_source == "countdown"
    summary = json.loads((tmp_path / "all.jsonl.summary.json").read_text())
    assert summary["samples"] == 8 and summary["settings"]["k"] == 2
    # SFT reads the file unchanged
    assert main(["train", "method=sft", "model=tiny", f"data.train={out}", "train.steps=1", "train.batch_size=2",
                 "train.precision=fp32", f"output_dir={tmp_path / 'sft'}", "log.progress=false"]) == 0

    # an interrupted run: only the first chunk made it to disk; the rerun samples the rest alike
    raw = tmp_path / "all.jsonl.samples.jsonl"
    lines = raw.read_text().splitlines()
    assert len(lines) == 5  # the settings header + one line per prompt
    full = out.read_text()
    raw.write_text("\n".join(lines[:3]) + "\n" + lines[3][:10])  # the last line cut by a kill
    out.unlink()
    assert _sample(countdown_jsonl, out, "--keep", "all", "--no-dedupe") == 0
    assert out.read_text() == full
    # other settings on the same file: refused
    capsys.readouterr()
    assert _sample(countdown_jsonl, out, "--temperature", "0.7") == 2
    assert "started with other settings" in capsys.readouterr().err


def test_sample_needs_ground_truth(tmp_path, capsys):
    data = tmp_path / "no_truth.jsonl"
    data.write_text(json.dumps({"prompt": "2+2?", "data_source": "countdown"}) + "\n")
    assert _sample(data, tmp_path / "o.jsonl") == 2
    err = capsys.readouterr().err
    assert "has no ground truth" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o.jsonl.samples.jsonl").exists()


def test_select_keeps_correct_stopped_unique_responses():
    ex = Example(prompt=[{"role": "user", "content": "q"}], ground_truth={"target": 1, "numbers": [1]},
                 data_source="countdown", task="countdown")
    ok = {"response": "a", "reward": 1.0, "finish_reason": "eos"}
    done = {0: [ok, dict(ok), {**ok, "response": "b"}, {**ok, "response": "c", "finish_reason": "length"},
                {**ok, "response": "d", "reward": 0.1}, {**ok, "response": "e"}]}
    rows, summary = select([ex], done, keep="correct", max_per_prompt=0, dedupe=True)
    assert [r["completion"][0]["content"] for r in rows] == ["a", "b", "e"]
    assert rows[0]["completion"][0]["role"] == "assistant"
    assert summary == {"prompts": 1, "samples": 6, "correct": 5, "kept": 3, "pass_rate": 5 / 6, "prompts_solved": 1}
    rows, _ = select([ex], done, keep="correct", max_per_prompt=2, dedupe=False)
    assert [r["completion"][0]["content"] for r in rows] == ["a", "a"]


@pytest.mark.vllm
def test_sample_with_vllm(tmp_path, countdown_jsonl):
    """--backend vllm (make test-vllm): the embedded model, scored under the official protocol."""
    out = tmp_path / "v.jsonl"
    settings = SampleSettings(model="smollm2-135m", data=str(countdown_jsonl), k=2, max_new_tokens=16, limit=2,
                              backend="vllm")
    summary = run_sample(settings, out, keep="all", dedupe=False, progress=False)
    assert summary["prompts"] == 2 and summary["samples"] == 4 and summary["kept"] == 4
    raw = [json.loads(x) for x in (tmp_path / "v.jsonl.samples.jsonl").read_text().splitlines()[1:]]
    assert all(s["finish_reason"] in ("eos", "length") and s["tokens"] <= 16 for r in raw for s in r["samples"])


def test_eval_and_sample_with_a_user_reward(tmp_path, capsys):
    """Rows without ground truth, scored by user code: unift eval and unift sample both take --reward."""
    data = tmp_path / "open.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Say something about {w}."}) + "\n" for w in ("cats", "rain")))
    (tmp_path / "r.py").write_text("def anything(completions, **kwargs):\n    return [1.0 for _ in completions]\n")
    ref = f"{tmp_path / 'r.py'}:anything"
    assert main(["eval", "--model", "tiny", "--data", str(data), "--max-new-tokens", "3", "--reward", ref,
                 "--precision", "fp32", "--out", str(tmp_path / "ev")]) == 0
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert results["overall"]["pass@1"] == 1.0 and results["samples"][0]["rewards"] == {"anything": 1.0}
    out = tmp_path / "s.jsonl"
    assert main(["sample", "--model", "tiny", "--data", str(data), "--out", str(out), "--k", "2",
                 "--max-new-tokens", "3", "--keep", "all", "--reward", ref, "--precision", "fp32"]) == 0
    assert "4 samples, 4 correct" in capsys.readouterr().out
