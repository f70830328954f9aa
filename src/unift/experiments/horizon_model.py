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

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from unift.errors import UserError

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
