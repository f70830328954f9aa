"""PPO-clipped loss and k3 KL: hand-computed values and gradients, micro-batch invariance."""

import math

import pytest
import torch

from unift.errors import UserError
from unift.rl.policy_loss import AGGREGATIONS, aggregate, clipped_policy_loss, kl_k3, truncated_is_weight

OLD = -1.0


def one_token_batch(ratios):
    """Each ratio becomes a one-token sequence: logp = old + log r (float64 leaf)."""
    old = torch.full((len(ratios), 1), OLD, dtype=torch.float64)
    logp = (old + torch.log(torch.tensor(ratios, dtype=torch.float64))[:, None]).requires_grad_(True)
    return logp, old, torch.ones(len(ratios), 1, dtype=torch.bool)


def test_clip_cases_hand_computed():
    # per token: loss -min(r A, clip(r, .8, 1.2) A); d loss / d logp = -r A when unclipped, else 0
    ratios = [1.5, 0.5, 0.5, 1.5, 1.1]
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0, 2.0], dtype=torch.float64)
    #          clipped(high) unclipped clipped(low) unclipped unclipped
    losses = [-1.2, -0.5, 0.8, 1.5, -2.2]
    grads = [0.0, -0.5, 0.0, 1.5, -2.2]
    logp, old, mask = one_token_batch(ratios)
    loss, stats = clipped_policy_loss(logp, old, adv, mask, epsilon=0.2, normalizer=5)
    assert loss.item() == pytest.approx(sum(losses) / 5)
    loss.backward()
    assert logp.grad[:, 0].tolist() == pytest.approx([g / 5 for g in grads])
    assert stats["clip_ratio_low"].item() == pytest.approx(1 / 5)
    assert stats["clip_ratio_high"].item() == pytest.approx(1 / 5)
    assert stats["clip_ratio"].item() == pytest.approx(2 / 5)
    assert stats["ratio_mean"].item() == pytest.approx(5.1 / 5)
    assert stats["num_tokens"].item() == 5
    assert not any(v.requires_grad for v in stats.values())


def test_epsilon_high_asymmetry():
    # r = 1.25, A = 1: clipped at 1.2 with symmetric eps, free under eps_high = 0.28 (DAPO);
    # r = 0.75, A = -1: the low bound stays 0.8 in both cases
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    for eps_high, loss0, grad0 in [(None, -1.2, 0.0), (0.28, -1.25, -1.25)]:
        logp, old, mask = one_token_batch([1.25, 0.75])
        loss, stats = clipped_policy_loss(logp, old, adv, mask, epsilon=0.2, epsilon_high=eps_high, normalizer=1)
        loss.backward()
        assert loss.item() == pytest.approx(loss0 + 0.8)
        assert logp.grad[:, 0].tolist() == pytest.approx([grad0, 0.0])
        assert stats["clip_ratio_low"].item() == pytest.approx(0.5)
        assert stats["clip_ratio_high"].item() == pytest.approx(0.5 if eps_high is None else 0.0)


def test_on_policy_gradient_is_reinforce():
    # old = logp (ratio 1): gradient -A / N on every masked token, whatever epsilon
    logp = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, False, True]])
    adv = torch.tensor([0.5, -2.0], dtype=torch.float64)
    loss, stats = clipped_policy_loss(logp, logp.detach(), adv, mask, normalizer=4)
    loss.backward()
    expected = (-adv[:, None] / 4).expand(2, 3) * mask
    assert torch.allclose(logp.grad, expected)
    assert stats["clip_ratio"].item() == 0 and stats["ratio_mean"].item() == pytest.approx(1.0)


@pytest.mark.parametrize("aggregation, normalizer, value, grads", [
    # tokens: seq 1 has 2 tokens with A = 1, seq 2 has 1 token with A = 3; ratio 1 => l = -A
    ("token-mean", 3, -5 / 3, [[-1 / 3, -1 / 3, 0], [-1, 0, 0]]),
    ("seq-mean-token-mean", 2, (-1 + -3) / 2, [[-1 / 4, -1 / 4, 0], [-3 / 2, 0, 0]]),
    ("dr-grpo", 2 * 3, -5 / 6, [[-1 / 6, -1 / 6, 0], [-1 / 2, 0, 0]]),
])
def test_aggregations_hand_computed(aggregation, normalizer, value, grads):
    logp = torch.full((2, 3), -0.7, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    adv = torch.tensor([1.0, 3.0], dtype=torch.float64)
    loss, _ = clipped_policy_loss(logp, logp.detach(), adv, mask, aggregation=aggregation, normalizer=normalizer)
    loss.backward()
    assert loss.item() == pytest.approx(value)
    assert torch.allclose(logp.grad, torch.tensor(grads, dtype=torch.float64))


def global_normalizer(aggregation, mask, max_len):
    if aggregation == "token-mean":
        return mask.sum().item()
    if aggregation == "seq-mean-token-mean":
        return mask.shape[0]
    return mask.shape[0] * max_len


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize("splits", [[2, 4], [1, 3, 2], [1] * 6])
def test_micro_batch_invariance(aggregation, splits):
    g = torch.Generator().manual_seed(1)
    b, t = 6, 5
    old = -torch.rand(b, t, generator=g, dtype=torch.float64) * 3
    # ratios in [0.5, 1.5]: some tokens clipped on either side
    base = (old + torch.log(0.5 + torch.rand(b, t, generator=g, dtype=torch.float64))).detach()
    adv = torch.randn(b, generator=g, dtype=torch.float64)
    mask = torch.rand(b, t, generator=g) < 0.7
    mask[3] = False  # a sequence without generated tokens
    n = global_normalizer(aggregation, mask, t)

    whole_logp = base.clone().requires_grad_(True)
    whole, _ = clipped_policy_loss(whole_logp, old, adv, mask, epsilon=0.2, epsilon_high=0.28,
                                   aggregation=aggregation, normalizer=n)
    whole.backward()

    parts_logp = base.clone().requires_grad_(True)
    total, start = 0.0, 0
    for size in splits:
        sl = slice(start, start + size)
        part, _ = clipped_policy_loss(parts_logp[sl], old[sl], adv[sl], mask[sl], epsilon=0.2,
                                      epsilon_high=0.28, aggregation=aggregation, normalizer=n)
        part.backward()
        total += part.item()
        start += size
    assert total == pytest.approx(whole.item(), abs=1e-12)
    assert torch.allclose(parts_logp.grad, whole_logp.grad, atol=1e-12)
    assert whole_logp.grad[~mask].eq(0).all()


def test_kl_k3():
    logp = torch.log(torch.tensor([[0.5, 0.3]], dtype=torch.float64)).requires_grad_(True)
    assert torch.equal(kl_k3(logp.detach(), logp.detach()), torch.zeros(1, 2, dtype=torch.float64))
    ref = torch.log(torch.tensor([[0.25, 0.3]], dtype=torch.float64))
    kl = kl_k3(logp, ref)
    # delta = log(.25 / .5) = -log 2: 0.5 + log 2 - 1; d/dlogp = 1 - exp(delta) = 0.5
    assert kl[0, 0].item() == pytest.approx(0.5 + math.log(2) - 1)
    assert kl[0, 1].item() == 0.0
    kl.sum().backward()
    assert logp.grad[0].tolist() == pytest.approx([0.5, 0.0])
    torch.manual_seed(0)
    assert (kl_k3(torch.randn(4, 7), torch.randn(4, 7)) >= 0).all()


def test_aggregate_kl_and_errors():
    mask = torch.tensor([[True, False], [True, True]])
    values = torch.tensor([[2.0, 100.0], [1.0, 3.0]])
    assert aggregate(values, mask, "token-mean", 3).item() == pytest.approx(2.0)
    assert aggregate(values, mask, "seq-mean-token-mean", 2).item() == pytest.approx((2.0 + 2.0) / 2)
    with pytest.raises(UserError, match="did you mean 'token-mean'"):
        aggregate(values, mask, "token_mean", 3)


def test_truncated_is_weight_hand_computed():
    old = torch.tensor([[math.log(0.5), math.log(0.9), math.log(0.1)]])
    sampler = torch.tensor([[math.log(0.25), math.log(0.9), math.log(0.4)]])
    w = truncated_is_weight(old, sampler, cap=1.5)
    assert torch.allclose(w, torch.tensor([[1.5, 1.0, 0.25]]))   # 2.0 is capped at 1.5
    # the weight scales each token's loss and carries no gradient of its own
    logp = old.clone().requires_grad_(True)
    adv, mask = torch.tensor([1.0]), torch.ones(1, 3, dtype=torch.bool)
    loss, _ = clipped_policy_loss(logp, old, adv, mask, normalizer=3.0, is_weight=w)
    loss.backward()
    assert torch.allclose(logp.grad, -w / 3.0)


def test_k3_kl_is_clamped_as_verls_low_var_kl():
    """exp(20) - 20 - 1 would be 4.9e8: verl's low_var_kl (and unift) clamp it to 10, no gradient there."""
    logp = torch.tensor([[0.0, 0.0]], requires_grad=True)
    kl = kl_k3(logp, torch.tensor([[20.0, 0.5]]))
    assert kl[0, 0].item() == 10.0
    assert kl[0, 1].item() == pytest.approx(math.exp(0.5) - 0.5 - 1)
    kl.sum().backward()
    assert logp.grad[0, 0].item() == 0.0 and logp.grad[0, 1].item() != 0.0
