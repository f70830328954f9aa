"""Synthetic horizon experiment: samples-to-solve of RFT vs UFT as the horizon H grows.

Setting (UFT paper, section "Theory"; see /work/shared/research/uft.md)
----------------------------------------------------------------------
A deterministic B-ary tree of depth H. An episode starts at a node and the policy picks one of
the B children at every level until it reaches a leaf. Reward 1.0 at the single correct leaf
(K = 1: one fixed optimal path of H actions), 0.1 at every other leaf (gap 0.9). pass@1 is the
probability that the policy, sampling from the root, reaches the correct leaf; it is computed
exactly as the product of the policy's probabilities of the optimal action along the optimal path.

Theory prediction
-----------------
- RFT (learns only from leaf rewards of episodes sampled from the root): any such method needs at
  least B^H / (4K) leaf explorations to reach 50% pass@1: exponential in H.
- UFT (episodes start from a state on the optimal path after a hint of random length, any
  full-support distribution over 0..H, plus a small hint log-likelihood term): pass@1 >= 0.5
  after O(B H^5 log^2 B / gap^2) explorations: polynomial in H.

What is measured
----------------
For each method, horizon H and seed: the number of sampled episodes (leaf explorations; every
sampled episode counts as one, fully hinted ones included) until pass@1 >= 0.5, checked after
every update. A run that does not get there within the budget reports ">cap" (`None` in
results.json); nothing is extrapolated.

Methods
-------
- rft: GRPO from the root. Each update samples a group of n episodes; advantages
  (r - mean) / (std + 1e-6) with the unbiased group std (as torch.std in verl's GRPO); no KL, no
  entropy bonus, no clipping (one on-policy step per group, so the PPO ratio is 1). A group whose
  episodes all get the same reward has zero advantage and changes nothing.
- uft: as in the paper. Each update draws one hint length l ~ Binomial(H, p(t)) shared by the whole
  group; the first l optimal actions are forced and the n episodes continue from the optimal node
  at level l. p(t) = p_low + 0.5 (p_high - p_low)(1 + cos(pi t / T_hint)) for t <= T_hint, then 0
  (pure RL), p_high 0.95, p_low 0.05, t counted in updates (groups).
- uft-uniform: the theory's version: l ~ Uniform{0, ..., H} at every update, no schedule (a fixed
  full-support distribution). Its episodes-to-solve does not depend on a schedule length, so it
  is the cleaner measurement of how UFT scales with H; `uft`'s number is largely set by T_hint
  (it solves near the end of the schedule, once hints are short), see docs/horizon.md.
For both UFT variants the RL term covers the generated (post-hint) actions only, the reward is
that of the whole path (the leaf reached), and the hint term is + beta * sum_{t < l} log pi(h_t|s_t)
(a sum over hint steps, as in the theory's objective).

Other choices
-------------
- Policy: tabular softmax, one logit per child at every node, all logits start at 0 (the uniform
  policy, pass@1 = B^-H). Only updated nodes are stored (dict (level, index) -> logits), so the
  tree is never built. Node `index` at level d is the base-B number formed by the d actions taken
  (the child of i by action a is i*B + a); indices are int64, so B^H <= 2^62.
- The optimal path is drawn uniformly at random per seed (by the symmetry of the uniform start it
  does not matter; it only rules out an accidental bias towards action 0).
- Update: plain SGD ascent with a fixed lr on J = (1/n) sum_i A_i sum_{generated t} log pi(a_t|s_t)
  (+ the hint term); for a tabular softmax d log pi(a|s) / d logits(s) = onehot(a) - pi(.|s).
  SGD rather than Adam: Adam's per-parameter normalisation and momentum behave oddly on tabular
  parameters that are touched rarely.
- lr = 4.0, n = 8: a sweep of lr in {0.5, 1, 2, 4, 8} x n in {4, 8, 16} on RFT (8 seeds, H = 6, 10,
  12) found larger lr better up to ~4, flat beyond; at lr 4 RFT's median is within a factor 2-4
  of the B^H/4 lower bound for H = 10..16, i.e. the RFT baseline is close to as good as any
  leaf-reward learner can be. UFT uses the same lr and n.
- beta = 0.001, the paper's value. The hint term is not what makes UFT fast here: beta = 0 gives
  the same picture (docs/horizon.md); beta = 0.05 (more SFT) is faster still.
- T_hint (`--t-hint`, in updates): default 0 = auto = min(100, budget / (4 n)) updates, i.e. 100
  updates (800 episodes) at the default budget, and never more than a quarter of the budget, so the
  hint always fades with at least 3/4 of the budget left for pure RL. It is deliberately *not* the
  paper's 60% of training: here training has no fixed length (a run stops when solved) and the
  budget is only a cap, so T_hint = 0.6 x budget / n would make UFT's measured number ~half the
  cap, an artefact of the cap. 100 updates suffice up to H = 40 at the defaults (not at 50-60,
  where some runs need T_hint = 200; docs/horizon.md has the sweep).
- Budget 200,000 episodes per run, 10 seeds, depths 2, 4, ..., 20 (B = 2): the run is cheap, and
  the depths go beyond 12 so that they reach where RFT cannot solve within the cap
  (B^H / 4 = 262,144 > 200,000 at H = 20) while UFT still does.
- Speed: while the policy does not change (RFT, and UFT after T_hint, until the first group with
  unequal rewards) groups are i.i.d., so they are sampled in batches of up to 512 groups and
  consumed in order up to the first informative one; the rest are discarded unseen and not counted.
  This is the same random process as one group at a time. The default experiment (10 seeds)
  takes about 40 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from unift.errors import UserError, suggest

P_HIGH = 0.95
P_LOW = 0.05
CORRECT_REWARD = 1.0
WRONG_REWARD = 0.1
ADV_EPS = 1e-6
METHODS = ("rft", "uft", "uft-uniform")

DEFAULT_DEPTHS = (2, 4, 6, 8, 10, 12, 14, 16, 18, 20)
DEFAULT_BRANCHING = 2
DEFAULT_SEEDS = 10
DEFAULT_BUDGET = 200_000
DEFAULT_GROUP = 8
DEFAULT_LR = 4.0
DEFAULT_BETA = 0.001
DEFAULT_T_HINT = 0  # auto: see auto_t_hint
AUTO_T_HINT = 100
MAX_LEAVES = 2 ** 62  # node indices are int64


# ----------------------------------------------------------------------------- tree and policy


@dataclass(frozen=True)
class Tree:
    """A B-ary tree of depth H with one correct leaf at the end of `path`."""

    branching: int
    depth: int
    path: tuple[int, ...]  # the optimal action at each level 0..H-1

    @cached_property
    def path_nodes(self) -> tuple[int, ...]:
        """Index of the optimal-path node at each level 0..H (level H is the correct leaf)."""
        nodes = [0]
        for a in self.path:
            nodes.append(nodes[-1] * self.branching + a)
        return tuple(nodes)

    @cached_property
    def target_leaf(self) -> int:
        return self.path_nodes[-1]


def make_tree(depth: int, branching: int = DEFAULT_BRANCHING, seed: int = 0) -> Tree:
    """A tree whose optimal path is drawn uniformly at random from `seed`."""
    if depth < 1 or branching < 2:
        raise UserError(f"need depth >= 1 and branching >= 2, got depth {depth}, branching {branching}")
    rng = np.random.default_rng([seed, 7919])
    return Tree(branching, depth, tuple(int(a) for a in rng.integers(0, branching, size=depth)))


def leaf_rewards(tree: Tree, leaves: np.ndarray) -> np.ndarray:
    """1.0 at the correct leaf, 0.1 at every other leaf."""
    return np.where(np.asarray(leaves) == tree.target_leaf, CORRECT_REWARD, WRONG_REWARD)


Policy = dict  # (level, index) -> float64 logits of shape (B,); missing nodes have zero logits


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def node_probs(policy: Policy, level: int, index: int, branching: int) -> np.ndarray:
    """pi(. | node): the softmax of the node's logits (uniform for a node never updated)."""
    logits = policy.get((level, int(index)))
    if logits is None:
        return np.full(branching, 1.0 / branching)
    return softmax(logits)


def pass_at_1(policy: Policy, tree: Tree) -> float:
    """Exact probability that sampling from the root reaches the correct leaf."""
    p = 1.0
    for level, (node, a) in enumerate(zip(tree.path_nodes, tree.path)):
        p *= float(node_probs(policy, level, node, tree.branching)[a])
    return p


def auto_t_hint(budget: int, group_size: int) -> int:
    """The default T_hint: 100 updates, but at most a quarter of the budget's updates."""
    return max(1, min(AUTO_T_HINT, budget // (4 * group_size)))


def hint_fraction(t: int, t_hint: int, p_high: float = P_HIGH, p_low: float = P_LOW) -> float:
    """The paper's cosine schedule: p_high at t=0 down to p_low at t=T_hint, then 0."""
    if t > t_hint:
        return 0.0
    return p_low + 0.5 * (p_high - p_low) * (1.0 + math.cos(math.pi * t / t_hint))


def sample_episodes(policy: Policy, tree: Tree, n: int, hint_len: int, rng: np.random.Generator):
    """n episodes that start after the first `hint_len` optimal actions (forced).

    Returns (actions, nodes, probs, leaves): actions (n, H) are the whole paths (hint included);
    nodes (n, H - hint_len) the node index at each generated level; probs (n, H - hint_len, B)
    the sampling distributions there; leaves (n,) the leaf reached.
    """
    B, H = tree.branching, tree.depth
    actions = np.empty((n, H), dtype=np.int64)
    actions[:, :hint_len] = tree.path[:hint_len]
    gen = H - hint_len
    nodes = np.empty((n, gen), dtype=np.int64)
    probs = np.empty((n, gen, B))
    idx = np.full(n, tree.path_nodes[hint_len], dtype=np.int64)
    uniform = np.zeros(B)
    for k, level in enumerate(range(hint_len, H)):
        get = policy.get
        logits = np.stack([get((level, i), uniform) for i in idx.tolist()])
        p = softmax(logits)
        a = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
        a = np.minimum(a, B - 1)
        nodes[:, k] = idx
        probs[:, k] = p
        actions[:, level] = a
        idx = idx * B + a
    return actions, nodes, probs, idx


def grpo_advantages(rewards: np.ndarray, eps: float = ADV_EPS) -> np.ndarray:
    """(r - group mean) / (group std + eps), unbiased std; zero for a group of equal rewards."""
    r = np.asarray(rewards, dtype=np.float64)
    if len(r) < 2 or np.all(r == r[0]):
        return np.zeros_like(r)
    return (r - r.mean()) / (r.std(ddof=1) + eps)


def update(policy: Policy, tree: Tree, hint_len: int, actions: np.ndarray, nodes: np.ndarray,
           probs: np.ndarray, advantages: np.ndarray, lr: float, beta: float) -> bool:
    """One SGD ascent step on (1/n) sum_i A_i sum_gen log pi + beta sum_hint log pi.

    Returns whether any logit changed.
    """
    B = tree.branching
    n = len(advantages)
    deltas: dict[tuple[int, int], np.ndarray] = {}
    if beta > 0 and hint_len > 0:
        for level in range(hint_len):
            node, a = tree.path_nodes[level], tree.path[level]
            g = -node_probs(policy, level, node, B)
            g[a] += 1.0
            deltas[(level, node)] = lr * beta * g
    eye = np.eye(B)
    for i in np.flatnonzero(advantages):
        coef = lr * advantages[i] / n
        g_all = coef * (eye[actions[i, hint_len:]] - probs[i])  # (gen, B)
        for k, node in enumerate(nodes[i].tolist()):
            key = (hint_len + k, node)
            d = deltas.get(key)
            deltas[key] = g_all[k] if d is None else d + g_all[k]
    for key, d in deltas.items():
        old = policy.get(key)
        policy[key] = d.copy() if old is None else old + d
    return bool(deltas)


@dataclass
class RunResult:
    method: str
    depth: int
    branching: int
    seed: int
    episodes: int | None  # episodes sampled until pass@1 >= 0.5; None = not within the budget
    episodes_used: int
    updates: int
    final_pass_at_1: float
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _train(method: str, tree: Tree, hint_length: Callable[[int, np.random.Generator], int], *,
           pure_rl_from: float, group_size: int, lr: float, beta: float, budget: int,
           seed: int) -> RunResult:
    """Sample a group, update, check pass@1; until pass@1 >= 0.5 or the budget is spent.

    From update `pure_rl_from` on the hint is empty and groups are sampled in batches: while the
    policy does not change (every group so far had equal rewards) groups are i.i.d., so G groups
    are sampled at once and consumed in order up to the first one with unequal rewards; the rest
    are discarded unseen and not counted. This is the same process as one group at a time, only
    faster (G doubles while nothing is learnt, up to 512).
    """
    start = time.perf_counter()
    rng = np.random.default_rng([seed, METHODS.index(method), tree.depth])
    policy: Policy = {}
    n = group_size
    used = t = 0
    solved_at = None
    p1 = pass_at_1(policy, tree)
    batch = 1
    while used + n <= budget:
        if t < pure_rl_from:
            hint_len, groups = hint_length(t, rng), 1
        else:
            hint_len, groups = 0, max(1, min(batch, (budget - used) // n))
        actions, nodes, probs, leaves = sample_episodes(policy, tree, n * groups, hint_len, rng)
        rewards = leaf_rewards(tree, leaves).reshape(groups, n)
        varied = np.flatnonzero((rewards != rewards[:, :1]).any(axis=1))
        if len(varied) == 0 and hint_len == 0:  # nothing to learn: the policy stays as it is
            used += n * groups
            t += groups
            batch = min(2 * batch, 512)
            continue
        j = int(varied[0]) if len(varied) else 0
        used += n * (j + 1)
        t += j + 1
        batch = 1
        sl = slice(j * n, (j + 1) * n)
        adv = grpo_advantages(rewards[j])
        if update(policy, tree, hint_len, actions[sl], nodes[sl], probs[sl], adv, lr, beta):
            p1 = pass_at_1(policy, tree)
            if p1 >= 0.5:
                solved_at = used
                break
    return RunResult(method, tree.depth, tree.branching, seed, solved_at, used, t, p1,
                     time.perf_counter() - start)


def run_rft(tree: Tree, *, group_size: int = DEFAULT_GROUP, lr: float = DEFAULT_LR,
            budget: int = DEFAULT_BUDGET, seed: int = 0) -> RunResult:
    """GRPO from the root until pass@1 >= 0.5 or the episode budget is spent."""
    return _train("rft", tree, lambda t, rng: 0, pure_rl_from=0, group_size=group_size, lr=lr,
                  beta=0.0, budget=budget, seed=seed)


def run_uft(tree: Tree, *, group_size: int = DEFAULT_GROUP, lr: float = DEFAULT_LR,
            beta: float = DEFAULT_BETA, t_hint: int = AUTO_T_HINT, budget: int = DEFAULT_BUDGET,
            seed: int = 0, hint: str = "cosine", p_high: float = P_HIGH, p_low: float = P_LOW) -> RunResult:
    """UFT: a hint of l optimal actions per update (shared by the group), RL after it, beta * hint log-lik.

    hint="cosine": l ~ Binomial(H, p(t)) with the paper's cosine schedule p(t), 0 after T_hint.
    hint="uniform": l ~ Uniform{0, ..., H} at every update, no schedule (the theory's fixed
    full-support distribution; `t_hint` is ignored).
    """
    H = tree.depth
    if hint == "cosine":
        def hint_length(t: int, rng: np.random.Generator) -> int:
            p = hint_fraction(t, t_hint, p_high, p_low)
            return int(rng.binomial(H, p)) if p > 0 else 0

        return _train("uft", tree, hint_length, pure_rl_from=t_hint + 1, group_size=group_size, lr=lr,
                      beta=beta, budget=budget, seed=seed)
    if hint == "uniform":
        return _train("uft-uniform", tree, lambda t, rng: int(rng.integers(0, H + 1)), pure_rl_from=math.inf,
                      group_size=group_size, lr=lr, beta=beta, budget=budget, seed=seed)
    raise UserError(f"unknown hint distribution {hint!r} (valid: cosine, uniform)")


# ----------------------------------------------------------------------------- experiment


def run_one(method: str, depth: int, seed: int, *, branching: int = DEFAULT_BRANCHING,
            budget: int = DEFAULT_BUDGET, group_size: int = DEFAULT_GROUP, lr: float = DEFAULT_LR,
            beta: float = DEFAULT_BETA, t_hint: int = AUTO_T_HINT) -> RunResult:
    tree = make_tree(depth, branching, seed)
    if method == "rft":
        return run_rft(tree, group_size=group_size, lr=lr, budget=budget, seed=seed)
    if method in ("uft", "uft-uniform"):
        return run_uft(tree, group_size=group_size, lr=lr, beta=beta, t_hint=t_hint, budget=budget,
                       seed=seed, hint="cosine" if method == "uft" else "uniform")
    raise UserError(f"unknown method {method!r} (valid: {', '.join(METHODS)})")


def run_experiment(depths: Sequence[int] = DEFAULT_DEPTHS, branching: int = DEFAULT_BRANCHING,
                   seeds: int = DEFAULT_SEEDS, budget: int = DEFAULT_BUDGET,
                   group_size: int = DEFAULT_GROUP, lr: float = DEFAULT_LR, beta: float = DEFAULT_BETA,
                   t_hint: int = DEFAULT_T_HINT, methods: Sequence[str] = METHODS,
                   log: Callable[[str], None] | None = None) -> dict:
    """Every method x depth x seed; returns the config, every run, a summary per method and H, fits."""
    start = time.perf_counter()
    t_hint = t_hint or auto_t_hint(budget, group_size)
    runs = []
    for depth in depths:
        for method in methods:
            for seed in range(seeds):
                r = run_one(method, depth, seed, branching=branching, budget=budget, group_size=group_size,
                            lr=lr, beta=beta, t_hint=t_hint)
                runs.append(r.as_dict())
                if log:
                    got = f"{r.episodes}" if r.episodes is not None else f">{budget} (pass@1 {r.final_pass_at_1:.2g})"
                    log(f"H={depth:<3d} {method:<11s} seed={seed}: {got} episodes ({r.seconds:.1f}s)")
    config = dict(depths=list(depths), branching=branching, seeds=seeds, budget=budget,
                  group_size=group_size, lr=lr, beta=beta, t_hint=t_hint, p_high=P_HIGH, p_low=P_LOW,
                  methods=list(methods), correct_reward=CORRECT_REWARD, wrong_reward=WRONG_REWARD, K=1)
    summary = summarize(runs, methods, depths, branching)
    return dict(config=config, runs=runs, summary=summary, fits=growth_fits(summary),
                seconds=time.perf_counter() - start)


def _median(sorted_vals: list[float]) -> float:
    m = len(sorted_vals)
    return sorted_vals[m // 2] if m % 2 else 0.5 * (sorted_vals[m // 2 - 1] + sorted_vals[m // 2])


def summarize(runs: list[dict], methods: Sequence[str], depths: Sequence[int], branching: int) -> list[dict]:
    """Median / min / max episodes-to-50% per method and H.

    A capped run counts as +infinity, so a median or max that involves one is None (">cap").
    """
    out = []
    for method in methods:
        for depth in depths:
            eps = [r["episodes"] for r in runs if r["method"] == method and r["depth"] == depth]
            if not eps:
                continue
            vals = sorted(math.inf if e is None else float(e) for e in eps)
            med = _median(vals)
            out.append(dict(method=method, depth=depth, n=len(vals), capped=sum(e is None for e in eps),
                            median=None if math.isinf(med) else med,
                            min=None if math.isinf(vals[0]) else vals[0],
                            max=None if math.isinf(vals[-1]) else vals[-1],
                            rft_lower_bound=branching ** depth / 4))
    return out


def growth_fits(summary: list[dict]) -> dict[str, dict]:
    """Per method, least-squares slopes over the depths with a measured median (H >= 2):
    `per_level` = median growth factor per unit of H (exp of the slope of ln median vs H; B for
    exponential-in-H growth) and `power` = the slope of ln median vs ln H (the polynomial degree)."""
    fits = {}
    for method in dict.fromkeys(s["method"] for s in summary):
        pts = [(s["depth"], s["median"]) for s in summary
               if s["method"] == method and s["median"] is not None and s["depth"] >= 2]
        if len(pts) < 3:
            continue
        h = np.array([p[0] for p in pts], dtype=float)
        y = np.log([p[1] for p in pts])
        fits[method] = dict(depths=[int(x) for x in h], per_level=float(np.exp(np.polyfit(h, y, 1)[0])),
                            power=float(np.polyfit(np.log(h), y, 1)[0]))
    return fits


def _fmt(v: float | None, budget: int) -> str:
    return f">{budget:,}" if v is None else f"{v:,.0f}"


def markdown_table(results: dict) -> str:
    cfg = results["config"]
    budget = cfg["budget"]
    lines = [f"Episodes until pass@1 >= 0.5 (B={cfg['branching']}, K=1, {cfg['seeds']} seeds, n={cfg['group_size']}, "
             f"lr={cfg['lr']}, beta={cfg['beta']}, T_hint={cfg['t_hint']} updates; budget {budget:,} episodes "
             f"per run; >{budget:,} = not reached within the budget)", "",
             "| H | B^H/4 (RFT lower bound) | method | median | min | max | runs capped |",
             "|---|---|---|---|---|---|---|"]
    order = {m: i for i, m in enumerate(cfg["methods"])}
    for s in sorted(results["summary"], key=lambda s: (s["depth"], order.get(s["method"], 99))):
        lines.append(f"| {s['depth']} | {s['rft_lower_bound']:,.0f} | {s['method'].upper()} | "
                     f"{_fmt(s['median'], budget)} | {_fmt(s['min'], budget)} | {_fmt(s['max'], budget)} | "
                     f"{s['capped']}/{s['n']} |")
    fits = results.get("fits") or {}
    if fits:
        lines += ["", "Fits of the median over the H where it was measured (capped medians left out): "
                  "growth factor per level (B = exponential) and degree of a power law in H:", ""]
        for m, f in fits.items():
            lines.append(f"- {m.upper()}: x{f['per_level']:.2f} per level, ~H^{f['power']:.1f} "
                         f"(H = {', '.join(map(str, f['depths']))})")
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def plot_png(results: dict) -> bytes:
    """Episodes to solve vs H on a log scale: median line, min-max band, capped runs marked."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = results["config"]
    budget = cfg["budget"]
    fig, ax = plt.subplots(figsize=(7, 4.8), dpi=120)
    colors = {"rft": "tab:red", "uft": "tab:blue", "uft-uniform": "tab:green"}
    for method in cfg["methods"]:
        rows = sorted((s for s in results["summary"] if s["method"] == method), key=lambda s: s["depth"])
        if not rows:
            continue
        c = colors.get(method)
        hs = [s["depth"] for s in rows]
        # ">cap" values are drawn at the budget line: they are lower limits, not measurements;
        # a band that reaches the dashed budget line has at least one run that did not solve.
        lo = [budget if s["min"] is None else s["min"] for s in rows]
        hi = [budget if s["max"] is None else s["max"] for s in rows]
        measured = [(s["depth"], s["median"]) for s in rows if s["median"] is not None]
        if measured:
            ax.plot(*zip(*measured), "o-", color=c, label=f"{method.upper()} median")
        ax.fill_between(hs, lo, hi, color=c, alpha=0.18, label=f"{method.upper()} min-max")
        capped = [(s["depth"], budget) for s in rows if s["median"] is None]
        if capped:
            ax.plot(*zip(*capped), "^", color=c, markersize=10, markerfacecolor="none",
                    label=f"{method.upper()} median >{budget:,} (drawn at the cap)")
    hs = sorted(cfg["depths"])
    ax.plot(hs, [cfg["branching"] ** h / (4 * cfg.get("K", 1)) for h in hs], "k:", label="B^H/(4K): RFT lower bound")
    ax.axhline(budget, color="gray", lw=0.8, ls="--", label=f"budget {budget:,}")
    ax.set_yscale("log")
    ax.set_ylim(bottom=1)
    ax.set_xlabel("horizon H (tree depth)")
    ax.set_ylabel("episodes until pass@1 >= 0.5")
    ax.set_title(f"B={cfg['branching']}, K=1, {cfg['seeds']} seeds, n={cfg['group_size']}, lr={cfg['lr']}, "
                 f"beta={cfg['beta']}, T_hint={cfg['t_hint']}", fontsize=9)
    ax.set_xticks(hs)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_outputs(results: dict, out_dir: Path | str) -> dict[str, Path]:
    """results.json, results.md and horizon.png in out_dir, each written atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "results.json", "md": out_dir / "results.md", "png": out_dir / "horizon.png"}
    _write_atomic(paths["json"], (json.dumps(results, indent=1) + "\n").encode())
    _write_atomic(paths["md"], markdown_table(results).encode())
    _write_atomic(paths["png"], plot_png(results))
    return paths


# ----------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The experiment's flags (used by `unift horizon` and `python -m unift.horizon`)."""
    parser.add_argument("--depths", default=",".join(map(str, DEFAULT_DEPTHS)),
                        help="comma-separated tree depths H (default: %(default)s)")
    parser.add_argument("--branching", type=int, default=DEFAULT_BRANCHING,
                        help="children per node B (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS,
                        help="seeds 0..N-1 per method and H (default: %(default)s)")
    parser.add_argument("--budget", type=int, default=DEFAULT_BUDGET,
                        help="episode cap per run; a run that does not solve reports '>cap' (default: %(default)s)")
    parser.add_argument("--group-size", type=int, default=DEFAULT_GROUP,
                        help="GRPO group size n (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=DEFAULT_LR,
                        help="SGD learning rate on the logits (default: %(default)s)")
    parser.add_argument("--beta", type=float, default=DEFAULT_BETA,
                        help="UFT hint log-likelihood coefficient (default: %(default)s)")
    parser.add_argument("--t-hint", type=int, default=DEFAULT_T_HINT,
                        help="UFT updates over which the hint fraction decays 0.95 -> 0.05, then 0; "
                             f"0 = auto: min({AUTO_T_HINT}, budget / (4 x group size)) (default: %(default)s)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated methods among " + ", ".join(METHODS) + " (default: %(default)s)")
    parser.add_argument("--out", default="runs/horizon", help="output directory (default: %(default)s)")
    return parser


def _parse_list(flag: str, text: str) -> list[str]:
    items = [x for x in str(text).replace(" ", ",").split(",") if x]
    if not items:
        raise UserError(f"{flag} must list at least one value")
    if len(set(items)) != len(items):
        raise UserError(f"{flag} has a repeated value: {text}")
    return items


def _parse_depths(text: str) -> list[int]:
    try:
        depths = [int(x) for x in _parse_list("--depths", text)]
    except ValueError:
        raise UserError(f"--depths must be comma-separated integers, got {text!r}") from None
    bad = [d for d in depths if d < 1]
    if bad:
        raise UserError(f"--depths must all be >= 1, got {bad[0]}")
    return sorted(depths)


def validate(args: argparse.Namespace) -> dict:
    """Checked keyword arguments for run_experiment; UserError (one line) on a bad value."""
    depths = _parse_depths(args.depths)
    methods = _parse_list("--methods", args.methods)
    for m in methods:
        if m not in METHODS:
            raise UserError(f"unknown method {m!r} in --methods{suggest(m, METHODS)}")
    if args.branching < 2:
        raise UserError(f"--branching must be >= 2, got {args.branching}")
    if args.branching ** max(depths) > MAX_LEAVES:
        raise UserError(f"--branching {args.branching} with depth {max(depths)} gives more than 2^62 leaves")
    if args.seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {args.seeds}")
    if args.group_size < 2:
        raise UserError(f"--group-size must be >= 2 (group-normalised advantages), got {args.group_size}")
    if args.budget < args.group_size:
        raise UserError(f"--budget must be >= --group-size ({args.group_size}), got {args.budget}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise UserError(f"--lr must be a positive number, got {args.lr}")
    if not (math.isfinite(args.beta) and args.beta >= 0):
        raise UserError(f"--beta must be a number >= 0, got {args.beta}")
    if args.t_hint < 0:
        raise UserError(f"--t-hint must be >= 0 (0 = auto), got {args.t_hint}")
    t_hint = args.t_hint or auto_t_hint(args.budget, args.group_size)
    if "uft" in methods and t_hint * args.group_size > args.budget:
        raise UserError(f"--t-hint {t_hint} x --group-size {args.group_size} exceeds --budget {args.budget}: "
                        "the hint would never fade within the budget")
    if not str(args.out).strip():
        raise UserError("--out must not be empty")
    return dict(depths=depths, branching=args.branching, seeds=args.seeds, budget=args.budget,
                group_size=args.group_size, lr=args.lr, beta=args.beta, t_hint=t_hint, methods=methods)


def main(args: argparse.Namespace) -> int:
    """Validate the flags, run every method x H x seed, write the outputs, print the table."""
    kwargs = validate(args)
    results = run_experiment(**kwargs, log=lambda s: print(s, file=sys.stderr, flush=True))
    paths = write_outputs(results, Path(args.out))
    print(markdown_table(results))
    print(f"wall time {results['seconds']:.1f}s; wrote {paths['json']}, {paths['md']} and {paths['png']}")
    return 0


if __name__ == "__main__":
    _parser = add_arguments(argparse.ArgumentParser(
        prog="python -m unift.horizon",
        description="RFT vs UFT on a B-ary tree: episodes until 50% pass@1 as the horizon H grows."))
    try:
        raise SystemExit(main(_parser.parse_args()))
    except UserError as exc:
        print(f"unift horizon: error: {exc}", file=sys.stderr)
        raise SystemExit(2)
