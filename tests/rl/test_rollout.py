"""Rollout bookkeeping: prompts whose hint already ends the answer skip the engine, and pruning
keeps exactly the sequences an update needs."""

from unift.data.render import GENERATED, HINT, PROMPT, Rendered
from unift.engine import HFEngine, SamplingParams
from unift.rl.rollout import Sequence, prune_for_update, rollout


class CountingEngine(HFEngine):
    calls: list[int] = []

    def generate(self, prompts, params):
        self.calls.append(len(prompts))
        return super().generate(prompts, params)


def test_finished_hint_skips_the_engine(tiny):
    model, tok = tiny
    engine = CountingEngine(model, tok)
    params = SamplingParams(max_new_tokens=3, n=2, seed=0, stop=())
    out = rollout(engine, [[5, 6], [7, 8], [9, 10]], [False, True, False], params)
    assert engine.calls == [2]                                        # only prompts 0 and 2 were generated
    assert [c.prompt_index for c in out] == [0, 0, 1, 1, 2, 2]
    assert out[2].token_ids == [] and out[3].finish_reason == "eos"
    assert all(len(c.token_ids) == 3 for i, c in enumerate(out) if i not in (2, 3))


def seq(hint_len, gen_len, adv):
    roles = [PROMPT] * 3 + [HINT] * hint_len + [GENERATED] * gen_len
    return Sequence(Rendered(list(range(len(roles))), roles), [-1.0] * gen_len, adv, False)


def test_prune_keeps_what_the_loss_needs():
    seqs = [seq(2, 3, 0.0), seq(2, 4, 0.0),      # zero advantage, hinted: one prompt + hint copy
            seq(0, 3, 0.0), seq(0, 2, 0.0),      # zero advantage, no hint: nothing at all
            seq(1, 3, 1.0), seq(1, 2, -1.0)]     # trains the policy: both, hint once
    out = prune_for_update(seqs, group=2)
    assert len(out) == 3
    assert out[0].rendered.roles == [PROMPT] * 3 + [HINT] * 2 and out[0].sampler_logp == []
    assert out[1].rendered.roles.count(HINT) == 1 and out[2].rendered.roles.count(HINT) == 0
    assert out[2].rendered.roles.count(GENERATED) == 2 and out[2].advantage == -1.0
    assert len(prune_for_update(seqs, group=2, keep_all=True)) == 6


def test_prune_without_hint_loss_drops_hint_only_groups():
    seqs = [seq(2, 3, 0.0), seq(2, 4, 0.0), seq(1, 3, 1.0), seq(1, 2, -1.0)]
    assert len(prune_for_update(seqs, group=2, hint_loss=False)) == 2    # R3 / RFT: no hint term
