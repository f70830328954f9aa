"""Losses against hand-computed values; invariance to micro-batching; prompt tokens never count."""

import math

import pytest
import torch

from unift.losses import dft_loss, dft_weights, masked_sum, nll_loss, token_logprobs


def test_token_logprobs_matches_log_softmax():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5)
    labels = torch.tensor([[1, 4, 0], [2, 2, 3]])
    expected = logits.log_softmax(-1).gather(-1, labels[..., None]).squeeze(-1)
    assert torch.allclose(token_logprobs(logits, labels), expected, atol=1e-6)


def test_nll_hand_computed():
    # p = 0.5 and 0.25 on two target tokens, one masked token with p = 0.1
    logp = torch.log(torch.tensor([[0.5, 0.25, 0.1]]))
    mask = torch.tensor([[True, True, False]])
    loss = nll_loss(logp, mask, normalizer=2)
    assert loss.item() == pytest.approx((math.log(2) + math.log(4)) / 2, rel=1e-6)


def test_dft_value_and_gradient_hand_computed():
    # DFT: l = -sum_t sg(p_t) log p_t / N ; dl/dlogp_t = -p_t / N (no gradient through the weight)
    p = torch.tensor([[0.5, 0.25, 0.1]])
    logp = torch.log(p).requires_grad_(True)
    mask = torch.tensor([[True, True, False]])
    loss = dft_loss(logp, mask, normalizer=2)
    expected = -(0.5 * math.log(0.5) + 0.25 * math.log(0.25)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert torch.allclose(logp.grad, torch.tensor([[-0.25, -0.125, 0.0]]), atol=1e-7)


def test_dft_floor_and_mix():
    p = torch.tensor([[0.02, 0.5]])
    logp = torch.log(p).requires_grad_(True)
    mask = torch.ones(1, 2, dtype=torch.bool)
    w = dft_weights(logp, min_weight=0.1, nll_mix=0.25)
    # (1 - 0.25) * max(p, 0.1) + 0.25
    assert torch.allclose(w, torch.tensor([[0.75 * 0.1 + 0.25, 0.75 * 0.5 + 0.25]]))
    loss = dft_loss(logp, mask, 1.0, min_weight=0.1, nll_mix=0.25)
    loss.backward()
    assert torch.allclose(logp.grad, -w)
    # mix = 1 is plain NLL
    assert dft_loss(logp, mask, 1.0, nll_mix=1.0).item() == pytest.approx(nll_loss(logp, mask, 1.0).item())


def test_dft_gradient_through_logits_matches_formula():
    # d/dz of -sg(p_y) log softmax(z)_y = -p_y (onehot_y - softmax(z))
    torch.manual_seed(1)
    z = torch.randn(1, 1, 6, requires_grad=True)
    y = torch.tensor([[3]])
    logp = token_logprobs(z, y)
    dft_loss(logp, torch.ones(1, 1, dtype=torch.bool), 1.0).backward()
    soft = z.detach().softmax(-1)
    onehot = torch.nn.functional.one_hot(y, 6).float()
    expected = -soft[0, 0, 3] * (onehot - soft)
    assert torch.allclose(z.grad, expected, atol=1e-6)


@pytest.mark.parametrize("loss_fn", [nll_loss, dft_loss])
def test_invariant_to_micro_batching(loss_fn):
    torch.manual_seed(2)
    logits = torch.randn(6, 7, 11, requires_grad=True)
    labels = torch.randint(0, 11, (6, 7))
    mask = torch.rand(6, 7) > 0.3
    n = int(mask.sum())
    full = loss_fn(token_logprobs(logits, labels), mask, n)
    (g_full,) = torch.autograd.grad(full, logits)
    total, grads = 0.0, []
    for sl in (slice(0, 1), slice(1, 4), slice(4, 6)):  # uneven split
        part = loss_fn(token_logprobs(logits[sl], labels[sl]), mask[sl], n)
        total += part.item()
        grads.append(torch.autograd.grad(part, logits)[0])
    assert total == pytest.approx(full.item(), rel=1e-5)
    assert torch.allclose(sum(grads), g_full, atol=1e-6)


@pytest.mark.parametrize("loss_fn", [nll_loss, dft_loss])
def test_masked_tokens_get_no_gradient(loss_fn):
    torch.manual_seed(3)
    logits = torch.randn(2, 5, 9, requires_grad=True)
    labels = torch.randint(0, 9, (2, 5))
    mask = torch.tensor([[0, 0, 1, 1, 1], [0, 0, 0, 1, 0]], dtype=torch.bool)
    loss_fn(token_logprobs(logits, labels), mask, int(mask.sum())).backward()
    assert torch.all(logits.grad[~mask] == 0)
    assert torch.all(logits.grad[mask].abs().sum(-1) > 0)


def test_masked_sum():
    assert masked_sum(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[1, 0, 1]])).item() == 4.0
