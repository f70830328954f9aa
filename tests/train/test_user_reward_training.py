"""RFT on the tiny model with reward functions from user code: one from a file, one from a module,
both logged under TRL's metric names; rows without a ground truth train with a user reward; a
reward that raises ends the run with one line naming the function, the step and the row."""

import json

from unift.cli import main

REWARDS = '''
def length_bonus(prompts, completions, completion_ids, step, **kwargs):
    assert len(completion_ids) == len(completions) and isinstance(step, int)
    return [min(len(c), 20) / 20 for c in completions]

def explodes(completions, step, **kwargs):
    if step == 2:
        raise ValueError("bad row")
    return [0.0 for _ in completions]
'''


def _train(tmp_path, data, funcs, *extra):
    return main(["train", "method=rft", "model=tiny", f"data.train={data}", "train.steps=3", "train.batch_size=2",
                 "rl.prompts_per_step=2", "rl.num_generations=2", "rl.max_new_tokens=4", "train.precision=fp32",
                 "log.progress=false", "log.tensorboard=false", f"output_dir={tmp_path / 'run'}",
                 f"reward.funcs={funcs}", *extra])


def test_two_user_rewards_are_logged(tmp_path, countdown_jsonl):
    (tmp_path / "my_rewards.py").write_text(REWARDS)
    funcs = f"[{tmp_path / 'my_rewards.py'}:length_bonus, unift.rewards:countdown]"
    assert _train(tmp_path, countdown_jsonl, funcs, "reward.weights=[0.5, 1.0]") == 0
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for m in metrics:
        assert 0 <= m["rewards/length_bonus/mean"] <= 1 and "rewards/countdown/std" in m
        assert m["reward"] == sum(0.5 * a + b for a, b in [(m["rewards/length_bonus/mean"],
                                                            m["rewards/countdown/mean"])]) or \
            abs(m["reward"] - (0.5 * m["rewards/length_bonus/mean"] + m["rewards/countdown/mean"])) < 1e-6
        assert m["reward_unscored_rows"] == 0


def test_rows_without_ground_truth_train_with_a_user_reward(tmp_path):
    (tmp_path / "my_rewards.py").write_text(REWARDS)
    data = tmp_path / "open.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Say something about {w}."}) + "\n" for w in ("cats", "rain")))
    assert _train(tmp_path, data, f"{tmp_path / 'my_rewards.py'}:length_bonus") == 0


def test_a_failing_reward_is_one_line_and_keeps_the_checkpoint(tmp_path, countdown_jsonl, capsys):
    (tmp_path / "my_rewards.py").write_text(REWARDS)
    code = _train(tmp_path, countdown_jsonl, f"{tmp_path / 'my_rewards.py'}:explodes", "checkpoint.every=1")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1] == "unift: error: reward explodes failed at step 2 on row 0: ValueError: bad row"
    assert (tmp_path / "run" / "checkpoints" / "step-000001").is_dir()


def test_completions_are_logged_once_per_step_across_a_kill(tmp_path, countdown_jsonl):
    import os
    import subprocess
    import sys

    (tmp_path / "my_rewards.py").write_text(REWARDS)
    args = [sys.executable, "-m", "unift", "train", "method=rft", "model=tiny", f"data.train={countdown_jsonl}",
            "train.steps=3", "rl.prompts_per_step=2", "rl.num_generations=2", "rl.max_new_tokens=4",
            "train.precision=fp32", "log.progress=false", f"output_dir={tmp_path / 'run'}", "checkpoint.every=1",
            f"reward.funcs=[{tmp_path / 'my_rewards.py'}:length_bonus, countdown]", "log.completions_groups=1"]
    killed = subprocess.run(args, env={**os.environ, "UNIFT_TEST_KILL_AT": "update:3"}, capture_output=True)
    assert killed.returncode != 0
    done = subprocess.run(args + ["resume=true"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    records = [json.loads(x) for x in (tmp_path / "run" / "completions.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 1, 2, 2, 3, 3]  # one group of 2 per step, step 3 once
    r = records[0]
    assert set(r) == {"step", "prompt_id", "hint", "completion", "reward", "rewards", "advantage", "finish_reason",
                      "tokens"}
    assert set(r["rewards"]) == {"length_bonus", "countdown"} and r["finish_reason"] in ("eos", "length")
    events = list((tmp_path / "run" / "tb").glob("events.*"))
    assert events and any(b"completions" in e.read_bytes() for e in events)
