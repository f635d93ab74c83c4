import math

import pytest
import torch
from torch.testing import assert_close

from rlvr.algo import group_advantages

# Two groups of 4: [1, 0, 0, 0] and [1, 1, 0, 0].
REWARDS = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0])


def test_grpo_hand_example():
    # group 1: mean=0.25, sum of squared deviations=0.75^2+3*0.25^2=0.75, std(unbiased)=sqrt(0.75/3)=0.5
    #          -> adv = (1-0.25)/0.5 = 1.5 and (0-0.25)/0.5 = -0.5
    # group 2: mean=0.5, squared deviations sum to 4*0.25=1, std=sqrt(1/3) -> adv = +-0.5*sqrt(3) = +-0.8660
    h = 0.5 * math.sqrt(3)
    expected = torch.tensor([1.5, -0.5, -0.5, -0.5, h, h, -h, -h])
    assert_close(group_advantages(REWARDS, 4, "grpo", eps=0.0), expected)
    # eps only shifts the denominator: 0.75 / (0.5 + 0.5) = 0.75
    assert_close(group_advantages(REWARDS, 4, "grpo", eps=0.5)[0], torch.tensor(0.75))


def test_drgrpo_is_mean_centred_only():
    # r - mean_group with means 0.25 and 0.5
    expected = torch.tensor([0.75, -0.25, -0.25, -0.25, 0.5, 0.5, -0.5, -0.5])
    assert_close(group_advantages(REWARDS, 4, "drgrpo"), expected)


def test_batch_std_uses_one_std_for_the_whole_batch():
    # batch mean = 3/8 = 0.375; squared deviations: 3*(0.625^2) + 5*(0.375^2) = 1.171875 + 0.703125 = 1.875
    # std(unbiased) = sqrt(1.875/7) = 0.517549; numerators are the group-centred drgrpo values above
    std = math.sqrt(1.875 / 7)
    expected = torch.tensor([0.75, -0.25, -0.25, -0.25, 0.5, 0.5, -0.5, -0.5]) / std
    assert_close(group_advantages(REWARDS, 4, "batch_std", eps=0.0), expected)


@pytest.mark.parametrize("mode", ["grpo", "drgrpo", "batch_std"])
def test_all_equal_group_gets_exactly_zero(mode):
    # 0.1 is not representable: the float mean of [0.1]*3 can differ from 0.1 by an ulp, which a std of
    # ~1e-9 plus eps=0 would blow up to +-1 or NaN. The second group has signal: [1, 0, 0] -> non-zero.
    rewards = torch.tensor([0.1, 0.1, 0.1, 1.0, 0.0, 0.0])
    adv = group_advantages(rewards, 3, mode, eps=0.0)
    assert torch.equal(adv[:3], torch.zeros(3))
    assert (adv[3:] != 0).all()


def test_group_size_one_gives_zero_not_nan():
    # a single completion has nothing to compare with: every group is "all equal"
    assert torch.equal(group_advantages(torch.tensor([1.0, 0.0]), 1), torch.zeros(2))


def test_integer_rewards_are_accepted():
    # [1, 0]: mean 0.5, std(unbiased)=sqrt(0.5)=0.7071 -> +-0.5/0.7071 = +-0.7071
    assert_close(group_advantages(torch.tensor([1, 0]), 2, eps=0.0), torch.tensor([0.7071068, -0.7071068]))


@pytest.mark.parametrize(
    ("rewards", "group_size", "mode", "match"),
    [
        (REWARDS, 4, "ppo", "unknown advantage mode"),
        (REWARDS, 3, "grpo", "must divide"),
        (REWARDS, 0, "grpo", "group_size must be >= 1"),
        (REWARDS.view(2, 4), 4, "grpo", "1-D"),
        (torch.tensor([]), 4, "grpo", "must divide"),
    ],
)
def test_bad_arguments(rewards, group_size, mode, match):
    with pytest.raises(ValueError, match=match):
        group_advantages(rewards, group_size, mode)
