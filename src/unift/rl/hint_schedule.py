"""Every UFT hint decision of a run, in one object: `HintSchedule.from_config(cfg)`.

- which examples need hint pieces, and the answer piece appended to them (`prepare`);
- how many of a prompt's chunks its hint reveals at a step (`choose`): k ~ Binomial(num, p(t))
  with UFT's cosine p(t), uniform over 0..num (R3), the official staged baseline, per-prompt
  adaptive (`unift.rl.hints.AdaptiveHints`), or none (RFT): `hints.schedule`, which the config
  resolves from `method` (`unift.config.resolve_method`);
- the hint text and whether it is already a finished response (`StepHints.finished`: a full
  hint that carries the answer piece ends with EOS and is not generated on; so is a hint that
  holds an opt-in stop string);
- what the adaptive schedule learns from a step's success rates (`observe`), its resumable
  state, and the hint metrics of a step (`metrics`).

The hint *term* of the loss (beta * log-likelihood of hint tokens) is `unift.rl.objective`;
the schedules themselves are the pure functions of `unift.rl.hints`.

Randomness: one generator per step, seeded by (seed, step) and consumed prompt by prompt in the
step's order, so a resumed run draws the same hints.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from unift.config import Config, HintConfig
from unift.rl.hints import (
    AdaptiveHints,
    cosine_hint_fraction,
    hint_for,
    num_chunks,
    official_stage_chunks,
    sample_chunks_binomial,
    sample_chunks_uniform,
    with_answer_piece,
)


@dataclass
class StepHints:
    """The hints of one step, per prompt position of the step."""

    chunks: list[int]      # chunks revealed (0 = no hint)
    texts: list[str]       # hint text ("" = none)
    finished: list[bool]   # the hint is a whole response: rendered with EOS, not generated on


class HintSchedule:
    def __init__(self, hints: HintConfig, seed: int, stops: tuple[str, ...] = ()):
        self.cfg, self.seed, self.stops = hints, seed, stops
        self.adaptive = AdaptiveHints(target=hints.adaptive_target, alpha=hints.adaptive_alpha) \
            if hints.schedule == "adaptive" else None

    @classmethod
    def from_config(cls, cfg: Config, stops: tuple[str, ...] = ()) -> HintSchedule:
        return cls(cfg.hints, cfg.seed, stops)

    @property
    def enabled(self) -> bool:
        return self.cfg.schedule != "none"

    def prepare(self, pieces: list[str], completion: str | None) -> list[str]:
        """The hint pieces of one example (with the answer piece when hints.answer_piece)."""
        return with_answer_piece(pieces, completion) if self.cfg.answer_piece else pieces

    def choose(self, step: int, ids: list[int], pieces: list[list[str]]) -> StepHints:
        """Hints of the prompts `ids` (with hint pieces `pieces`) for the update after `step` steps."""
        rng = random.Random(self.seed * 1_000_003 + step)
        nums = [num_chunks(p, self.cfg.max_chunks) for p in pieces]
        chunks = [self._chunks(step, num, i, rng) for i, num in zip(ids, nums)]
        texts = [hint_for(p, k, self.cfg.max_chunks) if k else "" for p, k in zip(pieces, chunks)]
        finished = [bool(h) and ((self.cfg.answer_piece and k == num) or any(x in h for x in self.stops))
                    for h, k, num in zip(texts, chunks, nums)]
        return StepHints(chunks, texts, finished)

    def _chunks(self, step: int, num: int, prompt_id: int, rng: random.Random) -> int:
        h = self.cfg
        if h.schedule == "none" or num == 0:
            return 0
        if h.schedule == "uniform":
            return sample_chunks_uniform(rng, num)
        if h.schedule == "staged":
            return official_stage_chunks(step, num, h.t_hint)
        if h.schedule == "adaptive":
            return self.adaptive.choose(prompt_id, num, limit=num if step < h.t_hint else 0)
        return sample_chunks_binomial(rng, num, cosine_hint_fraction(step, h.p_high, h.p_low, h.t_hint))

    def observe(self, ids: list[int], hints: StepHints, success: list[float]) -> None:
        """Per prompt position: the fraction of its group that solved it (adaptive hints learn from it)."""
        if self.adaptive is not None:
            self.adaptive.update_step(list(zip(ids, hints.chunks, success)))

    def metrics(self, step: int, hints: StepHints, hint_tokens: list[int]) -> dict[str, Any]:
        """Hint metrics of the update after `step` completed steps."""
        h = self.cfg
        out = {"hint_fraction": cosine_hint_fraction(step, h.p_high, h.p_low, h.t_hint)
               if h.schedule == "cosine" else None,
               "hint_chunks_mean": sum(hints.chunks) / len(hints.chunks),
               "hint_tokens_mean": sum(hint_tokens) / len(hint_tokens)}
        if self.adaptive is not None:
            out.update({f"adaptive_{k}": v for k, v in self.adaptive.summary().items()})
        return out

    def state_dict(self) -> dict[str, Any] | None:
        return self.adaptive.state_dict() if self.adaptive else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore the adaptive state; raises TypeError/ValueError/KeyError/AttributeError for a bad one."""
        if self.adaptive is not None and state:
            self.adaptive.load_state_dict(state)
