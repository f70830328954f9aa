"""Rollout bookkeeping around the engine: what is generated, and what the update computes.

Two savings that change no loss value and no gradient (tested in tests/rl/test_rollout.py):

- `rollout`: a prompt whose hint is already a finished response is not sent to the engine;
  its group gets empty completions, scored on the hint alone. With `hints.answer_piece` the
  full hint is the whole reference followed by the end of response (EOS), so it is finished;
  so is a hint that holds an opt-in stop string (`rl.stop`). Nothing is forced into a
  completion: the hint's EOS is trained by the hint log-likelihood, not by the policy term.
- `prune_for_update`: a group whose rewards are all equal has zero advantage, so its policy
  term is exactly 0 (no KL or entropy term given); only its hint log-likelihood remains, and
  that needs one copy of prompt + hint, not n copies with completions. In a group that does
  train the policy, the n copies share one hint, so only the first keeps the HINT role and
  the hint normaliser counts each group's hint once: sum_g n*S_g / sum_g n*H_g = sum_g S_g / sum_g H_g.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from unift.data.render import GENERATED, HINT, PROMPT, Rendered
from unift.engine import Completion, SamplingParams


@dataclass
class Sequence:
    """One completion in training form: prompt (+ hint) + generated tokens."""

    rendered: Rendered          # input_ids and roles (PROMPT / HINT / GENERATED)
    sampler_logp: list[float]   # the rollout engine's log-probs of the GENERATED tokens, in order
    advantage: float
    truncated: bool
    old_logp: torch.Tensor | None = None  # pi_old of the GENERATED tokens when several updates share a batch


def rollout(engine, prompts: list[list[int]], finished: list[bool], params: SamplingParams) -> list[Completion]:
    """params.n completions per prompt, grouped by prompt; finished prompts skip the engine and get
    empty completions with finish reason "eos" (their response ended inside the hint)."""
    todo = [i for i, done in enumerate(finished) if not done]
    if params.seeds is not None:
        params = replace(params, seeds=[params.seeds[i] for i in todo])
    generated = engine.generate([prompts[i] for i in todo], params) if todo else []
    out: list[Completion] = []
    it = iter(generated)
    for i, done in enumerate(finished):
        for _ in range(params.n):
            c = Completion(prompt_index=i, finish_reason="eos") if done else next(it)
            c.prompt_index = i
            out.append(c)
    return out


def prune_for_update(sequences: list[Sequence], group: int, keep_all: bool = False,
                     hint_loss: bool = True) -> list[Sequence]:
    """The sequences an update needs, see the module docstring. keep_all: KL or entropy terms are
    trained; hint_loss: the hint log-likelihood is trained (beta > 0), else hints are never kept alone."""
    if keep_all:
        return list(sequences)
    out: list[Sequence] = []
    for g in range(0, len(sequences), group):
        members = sequences[g:g + group]
        first = members[0].rendered
        if all(s.advantage == 0.0 for s in members):
            if hint_loss and HINT in first.roles:  # keep prompt + hint only, for the hint log-likelihood
                cut = first.roles.index(GENERATED) if GENERATED in first.roles else len(first.roles)
                out.append(Sequence(Rendered(first.input_ids[:cut], first.roles[:cut]), [], 0.0, False))
            continue
        out.append(members[0])
        for s in members[1:]:  # the hint is context here; it is trained once, in the first copy
            roles = [PROMPT if role == HINT else role for role in s.rendered.roles]
            out.append(replace(s, rendered=Rendered(s.rendered.input_ids, roles)))
    return out
