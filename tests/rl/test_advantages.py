"""Group-relative advantages against hand-computed values (unbiased std, eps = 1e-4, as TRL)."""

import math

import pytest
import torch

from unift.errors import UserError
from unift.rl.advantages import group_advantages, zero_std_fraction

# two groups of 4: g1 = [1, 0, 0, 0] (mean 0.25, unbiased std 0.5), g2 = [1, 1, 0.1, 0.1] (mean 0.55,
# unbiased std sqrt(4 * 0.45^2 / 3) = sqrt(0.27))
REWARDS = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.1, 0.1], dtype=torch.float64)
DEVIATIONS = [0.75, -0.25, -0.25, -0.25, 0.45, 0.45, -0.45, -0.45]


def test_group_scale_hand_computed():
    eps = 1e-4
    s1, s2 = 0.5, math.sqrt(0.27)
    expected = [d / (s1 + eps) for d in DEVIATIONS[:4]] + [d / (s2 + eps) for d in DEVIATIONS[4:]]
    got = group_advantages(REWARDS, 4, "group")
    assert got.tolist() == pytest.approx(expected, rel=1e-12)


def test_batch_scale_hand_computed():
    # batch mean 0.4; squared deviations from it: .36 + 3 * .16 + 2 * .36 + 2 * .09 = 1.74; / 7
    s = math.sqrt(1.74 / 7)
    got = group_advantages(REWARDS, 4, "batch")
    assert got.tolist() == pytest.approx([d / (s + 1e-4) for d in DEVIATIONS], rel=1e-12)


def test_none_scale_is_centred_rewards():
    assert group_advantages(REWARDS, 4, "none").tolist() == pytest.approx(DEVIATIONS, rel=1e-12)


def test_two_groups_of_two():
    # [1, 0]: mean .5, unbiased std sqrt(.5); [0.1, 1]: mean .55, std sqrt(2 * .45^2) = .45 sqrt(2)
    r = torch.tensor([1.0, 0.0, 0.1, 1.0], dtype=torch.float64)
    got = group_advantages(r, 2, "group", eps=0.0)
    assert got.tolist() == pytest.approx([1 / math.sqrt(2), -1 / math.sqrt(2), -1 / math.sqrt(2), 1 / math.sqrt(2)])


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_constant_groups_are_exactly_zero(scale):
    # float32 0.1 * 3 does not average back to 0.1 exactly; the advantage must still be exactly 0
    r = torch.tensor([0.1, 0.1, 0.1, 1.0, 0.0, 0.1, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    adv = group_advantages(r, 3, scale)
    assert torch.equal(adv[:3], torch.zeros(3))
    assert torch.equal(adv[6:], torch.zeros(6))
    assert (adv[3:6] != 0).all()


def test_group_size_one_gives_zero():
    assert torch.equal(group_advantages(torch.tensor([1.0, 0.0, 0.1]), 1), torch.zeros(3))


def test_matches_trl_formula_on_random_rewards():
    torch.manual_seed(0)
    r = torch.rand(24)
    grouped = r.view(-1, 4)
    trl = (grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + 1e-4)
    assert torch.allclose(group_advantages(r, 4), trl.view(-1), atol=1e-6)
    trl_batch = (grouped - grouped.mean(1, keepdim=True)) / (r.std() + 1e-4)
    assert torch.allclose(group_advantages(r, 4, "batch"), trl_batch.view(-1), atol=1e-6)


def test_integer_rewards_and_no_grad():
    r = torch.tensor([1, 0, 1, 1])
    adv = group_advantages(r, 2)
    assert adv.dtype == torch.float32 and adv[2:].eq(0).all() and adv[0] > 0 > adv[1]
    x = torch.tensor([1.0, 0.0], requires_grad=True)
    assert not group_advantages(x, 2).requires_grad


def test_zero_std_fraction():
    r = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.1, 0.1, 0.1, 0.1, 0.0, 0.0, 0.0, 0.0])
    assert zero_std_fraction(r, 4) == pytest.approx(2 / 3)
    assert zero_std_fraction(r, 2) == pytest.approx(1.0)
    assert zero_std_fraction(torch.tensor([1.0, 0.0]), 2) == 0.0


def test_errors():
    with pytest.raises(UserError, match="did you mean 'group'"):
        group_advantages(REWARDS, 4, "groups")
    with pytest.raises(ValueError):
        group_advantages(REWARDS, 3)
