"""UFT hints: how much of the reference solution a prompt reveals, and how that shrinks.

A reference solution is a list of pieces (the `hint` column: one piece per equation line,
solver sentence or paragraph, each carrying its own separator). Following the official UFT
code (liumy2010/UFT, `verl/utils/dataset/rl_dataset.py`), a solution of L pieces is revealed in
num = min(5, L) chunks with cut points

    cut_k = round(k / num * L),  k = 0..num,

and a hint of k chunks is "".join(pieces[:cut_k]). All rollouts of one prompt share it.

Rounding. `chunk_cuts` evaluates exactly the official float expression with Python's `round`
(round half to even) so the cut points agree bit for bit. For max_chunks = 5 (and any odd
max_chunks) no cut point is ever a tie (k * L / num = m + 1/2 would need an even number to equal
an odd one), so half-even and half-up agree; they can differ only for an even max_chunks.

How many chunks (UFT paper, arXiv 2505.16984, Algorithm 1 and Sec. 4):
- UFT: k ~ Binomial(num, p(t)) with the cosine schedule
      p(t) = p_low + 0.5 (p_high - p_low)(1 + cos(pi t / T_hint))  for t <= T_hint, else 0
  (p_high 0.95, p_low 0.05, T_hint 300);
- R3 baseline: k uniform over 0..num at every step;
- "stage" baseline: k decreases in num + 1 equal stages over T_hint steps (`official_stage_chunks`);
  `staged_hint_fraction` is a general piecewise-constant fraction for custom stage schedules.

Step convention. Every schedule here takes `step`, the 0-based count of completed optimizer
steps (what the trainer has at hand before the update). The official code numbers updates from
1, so the update after `step` completed steps uses t = step + 1: the first update already has
p(1) (a hair below p_high), the last hinted update is step = T_hint - 1 (t = T_hint, p = p_low),
and from step = T_hint on there are no hints: exactly T_hint hinted updates, as in the official
runs.

Beyond the paper, `AdaptiveHints` picks the hint length per prompt from that prompt's own
recent success rate (as SEELE, arXiv 2509.06923, keeps rollout accuracy near 50%).
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable, Sequence
from typing import Any

PromptId = Hashable  # str or int in practice (kept as given in `state_dict`)


# --- chunks --------------------------------------------------------------------------------


def chunk_cuts(num_pieces: int, max_chunks: int = 5) -> list[int]:
    """Cut points (in pieces) of 0..num chunks, num = min(max_chunks, num_pieces).

    chunk_cuts(7) == [0, 1, 3, 4, 6, 7]; a solution without pieces has the single cut [0].
    """
    if num_pieces < 0 or max_chunks < 1:
        raise ValueError(f"need num_pieces >= 0 and max_chunks >= 1, got {num_pieces}, {max_chunks}")
    num = min(max_chunks, num_pieces)
    if num == 0:
        return [0]
    cuts = [round(k / num * num_pieces) for k in range(num + 1)]
    cuts[-1] = num_pieces
    return cuts


def num_chunks(pieces: Sequence[str], max_chunks: int = 5) -> int:
    """Number of chunks a solution is revealed in: min(max_chunks, len(pieces))."""
    return min(max_chunks, len(pieces))


def revealed_pieces(num_pieces: int, chunks: int, max_chunks: int = 5) -> int:
    """Number of pieces in a hint of `chunks` chunks (the official `slice_length`)."""
    cuts = chunk_cuts(num_pieces, max_chunks)
    if not 0 <= chunks < len(cuts):
        raise ValueError(f"chunks must be in 0..{len(cuts) - 1}, got {chunks}")
    return cuts[chunks]


def hint_for(pieces: Sequence[str], chunks: int, max_chunks: int = 5) -> str:
    """The hint text of `chunks` chunks: the concatenation of the first cut_chunks pieces."""
    return "".join(pieces[:revealed_pieces(len(pieces), chunks, max_chunks)])


# --- schedules of the hint fraction ------------------------------------------------------


def cosine_hint_fraction(step: int, p_high: float = 0.95, p_low: float = 0.05, t_hint: int = 300) -> float:
    """UFT's p(t) for the update after `step` completed steps (0-based; t = step + 1, see module doc).

    p = p_low + 0.5 (p_high - p_low)(1 + cos(pi t / t_hint)) for t <= t_hint, else 0.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    t = step + 1
    if t > t_hint:
        return 0.0
    return p_low + 0.5 * (p_high - p_low) * (1.0 + math.cos(math.pi * t / t_hint))


def staged_hint_fraction(step: int, stages: Sequence[tuple[int, float]]) -> float:
    """Piecewise-constant hint fraction: the fraction of the last stage starting at or before `step`.

    stages: [(start_step, fraction), ...] with start steps strictly increasing, the first 0
    (0-based completed-step counts, like `step`). E.g. [(0, 1.0), (100, 0.5), (200, 0.0)].
    The fraction can serve as p of `sample_chunks_binomial` or, deterministically, as
    round(fraction * num) chunks. For the paper's "stage" baseline use `official_stage_chunks`.
    """
    if not stages or stages[0][0] != 0:
        raise ValueError("stages must be non-empty and start at step 0")
    if any(b[0] <= a[0] for a, b in zip(stages, stages[1:])):
        raise ValueError(f"stage start steps must increase strictly: {[s for s, _ in stages]}")
    fraction = stages[0][1]
    for start, value in stages:
        if start > step:
            break
        fraction = value
    return float(fraction)


def official_stage_chunks(step: int, num: int, t_hint: int = 300) -> int:
    """Chunks of the official "stage" baseline for a prompt of `num` chunks after `step` steps.

    k = clip(num - t // (t_hint // (num + 1)), 0, num) for t = step + 1 <= t_hint, else 0: the
    hint loses one chunk every t_hint // (num + 1) updates.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    t = step + 1
    if num <= 0 or t > t_hint:
        return 0
    period = max(1, t_hint // (num + 1))
    return min(num, max(0, num - t // period))


# --- sampling the number of chunks ----------------------------------------------------------


def sample_chunks_binomial(rng: random.Random, num: int, p: float) -> int:
    """k ~ Binomial(num, p): num independent draws, each revealing one more chunk with probability p."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    return sum(rng.random() < p for _ in range(num))


def sample_chunks_uniform(rng: random.Random, num: int) -> int:
    """k uniform over 0..num (the R3 baseline)."""
    return rng.randint(0, max(0, num))


# --- per-prompt adaptive hints -------------------------------------------------------------


class AdaptiveHints:
    """Per-prompt hint length that keeps each prompt's success rate near `target`.

    Rule (a 1-up-1-down staircase, Levitt 1971, which settles where P(success) = target for
    target 0.5; SEELE, arXiv 2509.06923, applies the same idea to hint lengths):
    - an unseen prompt of num chunks starts at round(f * num) chunks, where f, the population
      fraction, is start_fraction (full hint by default, so a prompt the model cannot solve still
      yields rewarded rollouts) until a step is observed with `update_step`, and from then on the
      mean fraction level/num that the last step's prompts moved to. A run that sees each prompt
      once (20 steps x 16 prompts of 2,000) thus still adapts: the staircase runs over the
      population, and per prompt wherever a prompt comes back;
    - after a step, `update(prompt_id, chunks_used, success_rate)` folds the group's success rate
      (e.g. fraction of rollouts with reward 1.0) into an exponential moving average kept per
      (prompt, chunk level): ema <- (1 - alpha) * ema + alpha * success (the first observation
      sets it);
    - if that level's ema > target + tolerance the next hint is one chunk shorter, if it is
      < target - tolerance one chunk longer, otherwise unchanged (always within 0..num).
    Easy prompts thus lose their hint quickly, hard ones keep it; each prompt oscillates around
    the length at which about `target` of its rollouts succeed, where GRPO's advantages are most
    informative. `choose(..., limit=k)` caps the hint (e.g. by a global schedule so all hints
    vanish by T_hint).
    """

    def __init__(self, target: float = 0.5, alpha: float = 0.5, start_fraction: float = 1.0,
                 tolerance: float = 0.0):
        if not (0.0 <= target <= 1.0 and 0.0 < alpha <= 1.0 and 0.0 <= start_fraction <= 1.0
                and tolerance >= 0.0):
            raise ValueError("need 0 <= target, start_fraction <= 1, 0 < alpha <= 1 and tolerance >= 0")
        self.target = target
        self.alpha = alpha
        self.start_fraction = start_fraction
        self.tolerance = tolerance
        self.population_fraction = start_fraction   # where unseen prompts start (see the rule)
        # prompt id -> {"level": int, "num": int, "ema": {chunks: float}}
        self._prompts: dict[PromptId, dict[str, Any]] = {}

    def choose(self, prompt_id: PromptId, num_chunks: int, *, limit: int | None = None) -> int:
        """Chunks to reveal for this prompt now (registers unseen prompts). 0..min(num_chunks, limit)."""
        rec = self._prompts.get(prompt_id)
        if rec is None:
            rec = {"level": math.floor(self.population_fraction * num_chunks + 0.5), "num": num_chunks, "ema": {}}
            self._prompts[prompt_id] = rec
        rec["num"] = num_chunks
        rec["level"] = min(max(rec["level"], 0), num_chunks)
        return rec["level"] if limit is None else max(0, min(rec["level"], limit))

    def update(self, prompt_id: PromptId, chunks_used: int, success_rate: float) -> None:
        """Record the success rate of a group that used `chunks_used` chunks; move the level."""
        if prompt_id not in self._prompts:
            raise KeyError(f"prompt {prompt_id!r} was never passed to choose()")
        if not 0.0 <= success_rate <= 1.0:
            raise ValueError(f"success_rate must be in [0, 1], got {success_rate}")
        rec = self._prompts[prompt_id]
        ema = rec["ema"]
        old = ema.get(chunks_used)
        ema[chunks_used] = success_rate if old is None else (1 - self.alpha) * old + self.alpha * success_rate
        level = chunks_used
        if ema[chunks_used] > self.target + self.tolerance:
            level -= 1
        elif ema[chunks_used] < self.target - self.tolerance:
            level += 1
        rec["level"] = min(max(level, 0), rec["num"])

    def update_step(self, results: Sequence[tuple[PromptId, int, float]]) -> None:
        """`update` for each (prompt, chunks used, success rate) of one step; then unseen prompts
        start at the mean fraction level/num those prompts (with num > 0) moved to."""
        for prompt_id, chunks_used, success_rate in results:
            self.update(prompt_id, chunks_used, success_rate)
        moved = [self._prompts[pid] for pid, _, _ in results if self._prompts[pid]["num"] > 0]
        if moved:
            self.population_fraction = sum(r["level"] / r["num"] for r in moved) / len(moved)

    def summary(self) -> dict[str, float]:
        """Statistics over known prompts: count, mean chunk fraction level/num (prompts with
        num > 0), mean chunks, fraction of prompts at no hint, mean success ema at the current level."""
        recs = list(self._prompts.values())
        with_chunks = [r for r in recs if r["num"] > 0]
        emas = [r["ema"][r["level"]] for r in recs if r["level"] in r["ema"]]
        n = len(recs)
        return {
            "prompts": float(n),
            "mean_chunk_fraction": sum(r["level"] / r["num"] for r in with_chunks) / len(with_chunks)
            if with_chunks else 0.0,
            "mean_chunks": sum(r["level"] for r in recs) / n if n else 0.0,
            "frac_no_hint": sum(r["level"] == 0 for r in recs) / n if n else 0.0,
            "mean_success_ema": sum(emas) / len(emas) if emas else 0.0,
            "population_fraction": self.population_fraction,
        }

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state. Prompts are a list of [id, level, num, [[chunks, ema], ...]]
        so int and str ids survive a JSON round trip."""
        return {
            "version": 2,
            "population_fraction": self.population_fraction,
            "config": {"target": self.target, "alpha": self.alpha,
                       "start_fraction": self.start_fraction, "tolerance": self.tolerance},
            "prompts": [[pid, r["level"], r["num"], [[c, e] for c, e in sorted(r["ema"].items())]]
                        for pid, r in self._prompts.items()],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore per-prompt state from `state_dict()` output. The hyperparameters stay those this
        object was built with (they come from the run's config); the saved ones are informational."""
        if state.get("version") not in (1, 2):
            raise ValueError(f"unsupported AdaptiveHints state version {state.get('version')!r}")
        # version 1 (before the population start) had none: its unseen prompts started at start_fraction
        self.population_fraction = float(state.get("population_fraction", self.start_fraction))
        self._prompts = {
            pid: {"level": int(level), "num": int(num), "ema": {int(c): float(e) for c, e in ema}}
            for pid, level, num, ema in state["prompts"]
        }


def with_answer_piece(pieces: list[str], completion: str | None) -> list[str]:
    """pieces + the rest of the reference completion after them (e.g. " </think>\n<answer> X </answer>").

    The official hint pieces stop before the answer tags, so even a full hint never shows a weak
    model how a response ends; with this last piece a full hint is the whole reference. Pieces
    are returned unchanged when the completion does not start with them.
    """
    joined = "".join(pieces)
    if not pieces or not completion or not completion.startswith(joined) or len(completion) == len(joined):
        return list(pieces)
    return [*pieces, completion[len(joined):]]
