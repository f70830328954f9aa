"""What one RL step's stages hand each other: scores of the completions, and the sequences the
update trains.

    hints (unift.rl.hint_schedule.StepHints)  ->  completions (unift.engine.Completion)
      ->  Scores  ->  advantages [P * n]  ->  Sequence per completion (unift.rl.rollout)

Scoring is the reward of hint + completion (`unift.scoring.Scorer`: the built-in task under the
run's protocol, or the run's reward functions): the response a served model would give is the
hint it was shown followed by what it wrote.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from unift.data.render import GENERATED, Rendered
from unift.engine import Completion, completion_text
from unift.rl.rollout import Sequence
from unift.scoring import Scorer
from unift.tasks.base import CORRECT_SCORE, Example


@dataclass
class Scores:
    """Per completion, in the step's global order (prompt-major, n per prompt): [P * n] fp32 each."""

    rewards: torch.Tensor   # reward of hint + completion (the weighted sum of the reward functions)
    lengths: torch.Tensor   # generated tokens
    clipped: torch.Tensor   # 1.0: cut by rl.max_new_tokens
    ended: torch.Tensor     # 1.0: ended with EOS / end of turn (or a finished hint)
    own: torch.Tensor       # 1.0: the hint alone does not already earn a correct reward
    parts: torch.Tensor | None = None  # [P * n, F] each reward function's score, nan where it gave None
    names: tuple[str, ...] = ()        # the F reward functions
    threshold: float = CORRECT_SCORE   # reward.correct_threshold

    @property
    def correct(self) -> torch.Tensor:
        return (self.rewards >= self.threshold).float()

    def success_per_prompt(self, n: int) -> list[float]:
        """The fraction of each prompt's group that solved it: [P]."""
        return self.correct.view(-1, n).mean(dim=1).tolist()

    @classmethod
    def from_rows(cls, rows: list[tuple], names: tuple[str, ...] = (), threshold: float = CORRECT_SCORE) -> Scores:
        """From one tuple (reward, length, clipped, ended, own, *parts) per completion, in global order."""
        columns = [torch.tensor(column, dtype=torch.float32) for column in zip(*rows)]
        parts = torch.stack(columns[5:], dim=1) if names else None
        return cls(*columns[:5], parts=parts, names=tuple(names), threshold=threshold)


def score_completions(scorer: Scorer, examples: list[Example], hints: list[str], completions: list[Completion],
                      tokenizer, step: int = 0) -> list[tuple]:
    """One row (reward, length, clipped, ended, own, *parts) per completion (see `Scores`).

    examples, hints: per prompt position of the step; completions carry their prompt_index."""
    hint_solves = [False] * len(examples)
    with_hint = [i for i, h in enumerate(hints) if h]
    if with_hint:  # does the hint alone already earn a correct reward? (accuracy_completion)
        alone = scorer.score([examples[i] for i in with_hint], [hints[i] for i in with_hint], step=step,
                             hints=[hints[i] for i in with_hint])
        for i, total in zip(with_hint, alone.totals):
            hint_solves[i] = total >= scorer.threshold
    mine = [examples[c.prompt_index] for c in completions]
    shown = [hints[c.prompt_index] for c in completions]
    batch = scorer.score(mine, [h + completion_text(tokenizer, c) for h, c in zip(shown, completions)], step=step,
                         hints=shown, completion_ids=[list(c.token_ids) for c in completions])
    rows = []
    for j, c in enumerate(completions):
        parts = [math.nan if batch.parts[name][j] is None else batch.parts[name][j] for name in scorer.names]
        rows.append((batch.totals[j], len(c.token_ids), c.finish_reason == "length", c.finish_reason == "eos",
                     float(not hint_solves[c.prompt_index]), *parts))
    return rows


def to_sequences(prompts: list[Rendered], completions: list[Completion], advantages: torch.Tensor,
                 n: int) -> list[Sequence]:
    """The training form of each completion: prompt (+ hint) + generated tokens, with its advantage.

    prompts: per prompt position; completions: n consecutive per prompt; advantages: [P * n] global."""
    out = []
    for j, c in enumerate(completions):
        prompt = prompts[c.prompt_index]
        rendered = Rendered(prompt.input_ids + c.token_ids, prompt.roles + [GENERATED] * len(c.token_ids))
        out.append(Sequence(rendered, c.logprobs, float(advantages[c.prompt_index * n + j % n]),
                            c.finish_reason == "length"))
    return out
