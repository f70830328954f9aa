"""The synthetic horizon experiment (unift.horizon): tree, policy, pass@1, RFT, UFT, outputs, flags."""

import argparse
import json
import math

import numpy as np
import pytest

from unift.errors import UserError
from unift.experiments import horizon as hz


def _args(**overrides) -> argparse.Namespace:
    args = hz.add_arguments(argparse.ArgumentParser()).parse_args([])
    for k, v in overrides.items():
        setattr(args, k, v)
    return args


@pytest.mark.parametrize("branching,depth", [(2, 1), (2, 6), (3, 4), (5, 3)])
def test_pass_at_1_of_uniform_policy(branching, depth):
    tree = hz.make_tree(depth, branching, seed=1)
    assert hz.pass_at_1({}, tree) == pytest.approx(branching ** -depth)


def test_pass_at_1_of_optimal_policy_is_one():
    tree = hz.make_tree(7, 3, seed=2)
    policy = {}
    for level, (node, a) in enumerate(zip(tree.path_nodes, tree.path)):
        logits = np.full(3, -1e9)
        logits[a] = 0.0
        policy[(level, node)] = logits
    assert hz.pass_at_1(policy, tree) == pytest.approx(1.0)
    # ...and every episode it samples from the root is the optimal path, reward 1.0
    actions, _, _, leaves = hz.sample_episodes(policy, tree, 16, 0, np.random.default_rng(0))
    assert (actions == np.array(tree.path)).all()
    assert (hz.leaf_rewards(tree, leaves) == 1.0).all()


def test_tree_and_rewards():
    tree = hz.make_tree(5, 2, seed=3)
    assert len(tree.path) == 5 and len(tree.path_nodes) == 6
    assert tree.target_leaf == int("".join(map(str, tree.path)), 2)
    rewards = hz.leaf_rewards(tree, np.array([tree.target_leaf, (tree.target_leaf + 1) % 32]))
    assert rewards.tolist() == [1.0, 0.1]


def test_grpo_advantages():
    assert hz.grpo_advantages(np.array([0.1, 0.1, 0.1])).tolist() == [0.0, 0.0, 0.0]
    adv = hz.grpo_advantages(np.array([1.0, 0.1, 0.1, 0.1]))
    assert adv.sum() == pytest.approx(0.0, abs=1e-9)
    assert adv[0] > 0 > adv[1]


def test_full_hint_forces_the_optimal_path():
    tree = hz.make_tree(6, 2, seed=4)
    actions, nodes, probs, leaves = hz.sample_episodes({}, tree, 8, tree.depth, np.random.default_rng(0))
    assert (actions == np.array(tree.path)).all()
    assert nodes.shape == (8, 0) and (leaves == tree.target_leaf).all()


def test_partial_hint_forces_prefix_and_samples_the_rest():
    tree = hz.make_tree(10, 2, seed=5)
    actions, nodes, probs, leaves = hz.sample_episodes({}, tree, 64, 4, np.random.default_rng(1))
    assert (actions[:, :4] == np.array(tree.path[:4])).all()
    assert (nodes[:, 0] == tree.path_nodes[4]).all()
    assert nodes.shape == (64, 6) and probs.shape == (64, 6, 2)
    assert len({tuple(a) for a in actions[:, 4:]}) > 1  # the generated part is sampled


def test_hint_term_only_trains_hint_nodes():
    """With zero advantages, a UFT update moves only the hint nodes, towards the hint actions."""
    tree = hz.make_tree(5, 2, seed=6)
    policy = {}
    actions, nodes, probs, _ = hz.sample_episodes(policy, tree, 4, 2, np.random.default_rng(0))
    hz.update(policy, tree, 2, actions, nodes, probs, np.zeros(4), lr=1.0, beta=0.5)
    assert set(policy) == {(0, tree.path_nodes[0]), (1, tree.path_nodes[1])}
    for level in range(2):
        assert hz.node_probs(policy, level, tree.path_nodes[level], 2)[tree.path[level]] > 0.5


def test_schedule_values():
    T = 100
    assert hz.hint_fraction(0, T) == pytest.approx(0.95)
    assert hz.hint_fraction(T // 2, T) == pytest.approx(0.5)
    assert hz.hint_fraction(T, T) == pytest.approx(0.05)
    assert hz.hint_fraction(T + 1, T) == 0.0
    assert hz.hint_fraction(10 * T, T) == 0.0
    assert hz.auto_t_hint(200_000, 8) == 100
    assert hz.auto_t_hint(800, 8) == 25


def test_rft_solves_depth_2():
    r = hz.run_rft(hz.make_tree(2, 2, seed=0), budget=2_000, seed=0)
    assert r.episodes is not None and r.episodes <= 2_000 and r.final_pass_at_1 >= 0.5


def test_run_reports_cap_honestly():
    r = hz.run_rft(hz.make_tree(16, 2, seed=0), budget=64, seed=0)
    assert r.episodes is None and r.episodes_used == 64 and r.final_pass_at_1 < 0.5


@pytest.mark.parametrize("hint", ["cosine", "uniform"])
def test_uft_solves_a_depth_rft_cannot_within_a_small_budget(hint):
    budget = 4_000  # RFT would need >= 2^20 / 4 = 262,144 episodes (its hit rate is 2^-20 per episode)
    tree = hz.make_tree(20, 2, seed=0)
    assert hz.run_rft(tree, budget=budget, seed=0).episodes is None
    r = hz.run_uft(tree, budget=budget, seed=0, t_hint=50, hint=hint)
    assert r.episodes is not None and r.final_pass_at_1 >= 0.5


@pytest.mark.parametrize("flag,value,match", [
    ("depths", "0,2", "--depths must all be >= 1"),
    ("depths", "2,x", "--depths must be comma-separated integers"),
    ("depths", "", "--depths must list at least one"),
    ("depths", "2,2", "repeated"),
    ("branching", 1, "--branching must be >= 2"),
    ("branching", 2, None),  # fine on its own; with depth 70 too many leaves, below
    ("seeds", 0, "--seeds must be >= 1"),
    ("budget", 4, "--budget must be >="),
    ("group_size", 1, "--group-size must be >= 2"),
    ("lr", 0.0, "--lr must be"),
    ("lr", float("nan"), "--lr must be"),
    ("beta", -0.1, "--beta must be"),
    ("t_hint", -1, "--t-hint must be"),
    ("t_hint", 100_000, "never fade"),
    ("methods", "rft,sft", "unknown method 'sft'"),
])
def test_bad_arguments_raise_user_error(flag, value, match):
    args = _args(**{flag: value})
    if match is None:
        args.depths = "70"
        match = "2\\^62"
    with pytest.raises(UserError, match=match) as info:
        hz.main(args)
    assert "\n" not in str(info.value)


def test_outputs_written(tmp_path, capsys):
    out = tmp_path / "hz"
    args = _args(depths="2,4", seeds=2, budget=400, out=str(out))
    assert hz.main(args) == 0
    for name in ("results.json", "results.md", "horizon.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "horizon.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["t_hint"] == hz.auto_t_hint(400, 8) == 12
    assert len(results["runs"]) == 2 * 2 * len(hz.METHODS)
    assert {(s["method"], s["depth"]) for s in results["summary"]} == {(m, d) for m in hz.METHODS for d in (2, 4)}
    table = (out / "results.md").read_text()
    assert "| 2 |" in table and "| 4 |" in table and "RFT" in table and "UFT" in table
    assert "| H |" in capsys.readouterr().out


def test_summary_counts_capped_runs():
    runs = [dict(method="rft", depth=8, episodes=e) for e in (100, None, 300, None, None)]
    (s,) = hz.summarize(runs, ["rft"], [8], 2)
    assert s["capped"] == 3 and s["median"] is None and s["min"] == 100 and s["max"] is None
    text = hz.markdown_table(dict(config=dict(branching=2, seeds=5, group_size=8, lr=4.0, beta=0.0, t_hint=1,
                                              budget=1000, methods=["rft"]), summary=[s]))
    assert "| 8 | 64 | RFT | >1,000 | 100 | >1,000 | 3/5 |" in text
    assert math.isclose(s["rft_lower_bound"], 64)


def test_sampling_follows_the_policy():
    tree = hz.make_tree(1, 3, seed=0)
    policy = {(0, 0): np.log(np.array([0.2, 0.3, 0.5]))}
    actions, nodes, probs, leaves = hz.sample_episodes(policy, tree, 20_000, 0, np.random.default_rng(0))
    freq = np.bincount(actions[:, 0], minlength=3) / 20_000
    assert np.allclose(freq, [0.2, 0.3, 0.5], atol=0.015)
    assert np.allclose(probs[0, 0], [0.2, 0.3, 0.5])
