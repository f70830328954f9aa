"""What one RL step's stages hand each other: scores of the completions, and the sequences the
update trains.

    hints (unift.rl.hint_schedule.StepHints)  ->  completions (unift.engine.Completion)
      ->  Scores  ->  advantages [P * n]  ->  Sequence per completion (unift.rl.rollout)

Scoring is the reward of hint + completion under the run's protocol (`unift.protocol.score`):
the response a served model would give is the hint it was shown followed by what it wrote.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unift.data.render import GENERATED, Rendered
from unift.engine import Completion, completion_text
from unift.protocol import score
from unift.rl.rollout import Sequence
from unift.tasks.base import CORRECT_SCORE, Example


@dataclass
class Scores:
    """Per completion, in the step's global order (prompt-major, n per prompt): [P * n] fp32 each."""

    rewards: torch.Tensor   # reward of hint + completion under the protocol
    lengths: torch.Tensor   # generated tokens
    clipped: torch.Tensor   # 1.0: cut by rl.max_new_tokens
    ended: torch.Tensor     # 1.0: ended with EOS / end of turn (or a finished hint)
    own: torch.Tensor       # 1.0: the hint alone does not already earn the full reward

    @property
    def correct(self) -> torch.Tensor:
        return (self.rewards >= CORRECT_SCORE).float()

    def success_per_prompt(self, n: int) -> list[float]:
        """The fraction of each prompt's group that solved it: [P]."""
        return self.correct.view(-1, n).mean(dim=1).tolist()

    @classmethod
    def from_rows(cls, rows: list[tuple]) -> Scores:
        """From one tuple (reward, length, clipped, ended, own) per completion, in global order."""
        return cls(*(torch.tensor(column, dtype=torch.float32) for column in zip(*rows)))


def score_completions(protocol: str, examples: list[Example], hints: list[str],
                      completions: list[Completion], tokenizer) -> list[tuple]:
    """One row (reward, length, clipped, ended, own) per completion (see `Scores`).

    examples, hints: per prompt position of the step; completions carry their prompt_index."""
    hint_solves = [bool(h) and score(protocol, ex, h).score >= CORRECT_SCORE for ex, h in zip(examples, hints)]
    rows = []
    for c in completions:
        response = hints[c.prompt_index] + completion_text(tokenizer, c)
        rows.append((score(protocol, examples[c.prompt_index], response).score, len(c.token_ids),
                     c.finish_reason == "length", c.finish_reason == "eos", float(not hint_solves[c.prompt_index])))
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
