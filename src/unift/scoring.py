"""One scorer for RL rewards: the built-in task of each row under the protocol, or the run's
`reward.funcs` (unift.user_rewards), weighted and summed.

    scorer = Scorer.from_config(cfg)                       # imports and checks user code now
    batch = scorer.score(examples, responses, step=t, ...)  # totals [n], parts {name: [n]}

A built-in name among `reward.funcs` scores every row with that task under the protocol; a user
function gets the batch as TRL gives it (`unift.user_rewards`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from unift.config import Config
from unift.protocol import MALFORMED, malformed_ground_truth, score, score_text
from unift.tasks.base import CORRECT_SCORE, Example
from unift.user_rewards import RewardFunc, call_reward, combine, load_reward_funcs


@dataclass
class ScoreBatch:
    totals: list[float]                                           # [n] the reward of each response
    parts: dict[str, list[float | None]] = field(default_factory=dict)  # per function [n] (None: not scored)


@dataclass
class Scorer:
    protocol: str
    funcs: list[RewardFunc] = field(default_factory=list)  # empty: the built-in task of each row
    threshold: float = CORRECT_SCORE
    timeout_s: float = 30.0

    @classmethod
    def from_config(cls, cfg: Config, extra: list[Any] | None = None) -> Scorer:
        """reward.funcs, then `extra` (Python callables or references, from `unift.api.train`);
        reward.weights, when given, has one weight for each of them in that order."""
        r = cfg.reward
        return cls(cfg.protocol, load_reward_funcs(list(r.funcs) + list(extra or []), r.weights),
                   r.correct_threshold, r.timeout_s)

    @classmethod
    def from_refs(cls, protocol: str, refs: list[str], threshold: float = CORRECT_SCORE,
                  timeout_s: float = 30.0) -> Scorer:
        """For `unift eval --reward` and `unift sample --reward` (equal weights)."""
        return cls(protocol, load_reward_funcs(refs, []), threshold, timeout_s)

    @property
    def needs_ground_truth(self) -> bool:
        """Built-in scoring reads each row's task and ground truth; user functions may not."""
        return not self.funcs or any(f.builtin for f in self.funcs)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.funcs]

    def score(self, examples: list[Example], responses: list[str], *, step: int = 0, hints: list[str] | None = None,
              completion_ids: list[list[int]] | None = None) -> ScoreBatch:
        """Score responses[i] (hint + generated text) of examples[i]."""
        if not self.funcs:
            return ScoreBatch([score(self.protocol, ex, text).score for ex, text in zip(examples, responses)])
        n = len(responses)
        hints = hints if hints is not None else [""] * n
        batch = trl_batch(examples, responses, hints, completion_ids or [[] for _ in responses], step)
        parts = {f.name: (self._builtin(f, examples, responses) if f.builtin
                          else call_reward(f, batch, n, step, self.timeout_s)) for f in self.funcs}
        totals, _ = combine(parts, self.funcs, n)
        return ScoreBatch(totals, parts)

    def _builtin(self, f: RewardFunc, examples: list[Example], responses: list[str]) -> list[float | None]:
        out: list[float | None] = []
        for i, (ex, text) in enumerate(zip(examples, responses)):
            try:
                out.append(score_text(self.protocol, text, ex.ground_truth, ex.data_source, f.name).score)
            except MALFORMED as exc:
                raise malformed_ground_truth(ex.extra.get("where", f"row {i}"), f.name, exc) from None
        return out


def trl_batch(examples: list[Example], responses: list[str], hints: list[str], completion_ids: list[list[int]],
              step: int) -> dict[str, Any]:
    """The keywords TRL's GRPOTrainer passes to a reward function, plus hints, generated and step."""
    conversational = [isinstance(ex.prompt, list) for ex in examples]
    batch: dict[str, Any] = {
        "prompts": [ex.prompt for ex in examples],
        "completions": [[{"role": "assistant", "content": text}] if conv else text
                        for text, conv in zip(responses, conversational)],
        "completion_ids": completion_ids,
        "hints": hints,
        "generated": [text[len(h):] for text, h in zip(responses, hints)],
        "step": step,
        "trainer_state": SimpleNamespace(global_step=step),  # what TRL passes; reward code may read global_step
    }
    columns = sorted({k for ex in examples for k in ex.extra.get("columns", {})} - set(batch))
    for key in columns:
        batch[key] = [ex.extra.get("columns", {}).get(key) for ex in examples]
    batch.setdefault("ground_truth", [ex.ground_truth for ex in examples])
    batch.setdefault("data_source", [ex.data_source for ex in examples])
    return batch
