import pytest
import torch
from torch.testing import assert_close

from rlvr.algo import groups_with_signal, overlong_filter_mask, overlong_penalty


def test_groups_with_signal():
    # groups of 3: all 1 / mixed / all 0 / all 0.5 -> only the mixed group has a non-zero advantage
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5])
    assert torch.equal(groups_with_signal(rewards, 3), torch.tensor([False, True, False, False]))


def test_groups_with_signal_rejects_bad_group_size():
    with pytest.raises(ValueError, match="must divide"):
        groups_with_signal(torch.zeros(6), 4)


def test_overlong_penalty_hand_example():
    # max_len=10, cache_len=4 -> soft zone (6, 10]; value (6 - L)/4: L=7 -> -0.25, L=8 -> -0.5, L=10 -> -1
    lengths = torch.tensor([3, 6, 7, 8, 10, 11])
    assert_close(overlong_penalty(lengths, 10, 4), torch.tensor([0.0, 0.0, -0.25, -0.5, -1.0, -1.0]))
    # penalty scales the ramp and the floor
    assert_close(
        overlong_penalty(lengths, 10, 4, penalty=2.0), torch.tensor([0.0, 0.0, -0.5, -1.0, -2.0, -2.0])
    )


def test_overlong_penalty_zone_edges():
    lengths = torch.tensor([5, 10, 11])
    # cache_len=0: no soft zone, a hard step right after max_len
    assert_close(overlong_penalty(lengths, 10, 0), torch.tensor([0.0, 0.0, -1.0]))
    # cache_len=max_len: the ramp starts at 0: (0 - 5)/10 = -0.5, (0 - 10)/10 = -1
    assert_close(overlong_penalty(lengths, 10, 10), torch.tensor([-0.5, -1.0, -1.0]))


@pytest.mark.parametrize(
    ("max_len", "cache_len", "penalty", "match"),
    [
        (10, -1, 1.0, "cache_len"),
        (10, 11, 1.0, "cache_len"),
        (0, 0, 1.0, "max_len"),
        (10, 4, -1.0, "penalty"),
    ],
)
def test_overlong_penalty_bad_arguments(max_len, cache_len, penalty, match):
    with pytest.raises(ValueError, match=match):
        overlong_penalty(torch.tensor([1, 2]), max_len, cache_len, penalty)


def test_overlong_filter_mask_zeroes_truncated_rows_and_keeps_dtype():
    mask = torch.tensor([[True, True, False], [True, True, True]])
    truncated = torch.tensor([False, True])
    out = overlong_filter_mask(mask, truncated)
    assert torch.equal(out, torch.tensor([[True, True, False], [False, False, False]]))
    out_f = overlong_filter_mask(mask.float(), truncated)
    assert out_f.dtype == torch.float32
    assert torch.equal(out_f, torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))
    assert mask[1].all()  # the input is not modified


def test_overlong_filter_mask_shape_mismatch():
    with pytest.raises(ValueError, match="truncated"):
        overlong_filter_mask(torch.ones(2, 3), torch.tensor([True, False, True]))
