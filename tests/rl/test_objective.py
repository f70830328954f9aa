"""The UFT objective: hint tokens get gradient only through the log-likelihood term, prompt tokens
never; beta = 0 without hints is GRPO."""

import pytest
import torch

from unift.rl.objective import uft_loss
from unift.rl.policy_loss import clipped_policy_loss

# one sequence: 2 prompt positions, 2 hint positions, 3 generated positions
ROLES = ["p", "p", "h", "h", "g", "g", "g"]
GEN = torch.tensor([[r == "g" for r in ROLES]])
HINT = torch.tensor([[r == "h" for r in ROLES]])


def grads(beta, kl_coef=0.0, hint_loss="nll"):
    logp = torch.log(torch.tensor([[0.9, 0.8, 0.5, 0.25, 0.6, 0.7, 0.2]])).requires_grad_(True)
    old = logp.detach().clone()
    ref = old - 0.1 if kl_coef else None
    loss, terms = uft_loss(logp, old, torch.tensor([2.0]), GEN, HINT, policy_normalizer=3, hint_normalizer=2,
                           beta=beta, hint_loss=hint_loss, ref_logp=ref, kl_coef=kl_coef)
    loss.backward()
    return logp.grad[0], terms


def test_hint_tokens_only_through_log_likelihood():
    g0, _ = grads(beta=0.0)
    assert torch.all(g0[:4] == 0)                      # prompt and hint: nothing without beta
    assert torch.allclose(g0[4:], torch.full((3,), -2.0 / 3))  # on-policy GRPO: -A / N
    g1, terms = grads(beta=0.5)
    assert torch.all(g1[:2] == 0)                      # prompt: never
    assert torch.allclose(g1[2:4], torch.full((2,), -0.5 / 2))  # hint: -beta / N_hint (NLL)
    assert torch.allclose(g1[4:], g0[4:])              # generated tokens unchanged by the hint term
    assert terms["hint_loss"].item() == pytest.approx(-(torch.log(torch.tensor(0.5)) + torch.log(torch.tensor(0.25))).item() / 2)


def test_dft_weighted_hints_and_kl_stay_off_the_hint():
    g, _ = grads(beta=1.0, hint_loss="dft")
    assert torch.allclose(g[2:4], torch.tensor([-0.5 / 2, -0.25 / 2]))  # -sg(p) / N_hint
    gk, terms = grads(beta=0.0, kl_coef=0.3)
    assert torch.all(gk[:4] == 0) and terms["kl"].item() > 0


def test_beta_zero_without_hint_is_grpo():
    torch.manual_seed(0)
    logp = torch.randn(4, 6).clamp(max=-0.01).requires_grad_(True)
    old = (logp.detach() + 0.1 * torch.randn(4, 6))
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])
    mask = torch.rand(4, 6) > 0.3
    no_hint = torch.zeros(4, 6, dtype=torch.bool)
    a, _ = uft_loss(logp, old, adv, mask, no_hint, policy_normalizer=10, hint_normalizer=1, beta=0.3)
    b, _ = clipped_policy_loss(logp, old, adv, mask, normalizer=10)
    assert a.item() == pytest.approx(b.item())
