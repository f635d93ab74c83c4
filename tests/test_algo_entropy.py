import math

import pytest
import torch
from torch.testing import assert_close

from rlvr.algo import entropy_from_logits, logprobs_from_logits, top_entropy_mask

LN3 = math.log(3)


def test_entropy_hand_values():
    # uniform over V=7 -> ln 7 at every position, shape [..., V] -> [...]
    assert_close(entropy_from_logits(torch.zeros(2, 3, 7)), torch.full((2, 3), math.log(7)))
    # p = [0.5, 0.5] -> ln 2 ; logits [0, ln 3] -> p = [0.25, 0.75],
    # H = -(0.25 ln 0.25 + 0.75 ln 0.75) = 0.25*1.386294 + 0.75*0.287682 = 0.346574 + 0.215762 = 0.562335
    h = entropy_from_logits(torch.tensor([[0.0, 0.0], [0.0, LN3]]))
    assert_close(h, torch.tensor([math.log(2), 0.562335]))
    # one-hot-ish: p_other = e^-100 each, H ~ 3 * 100 * e^-100 ~ 0
    assert_close(
        entropy_from_logits(torch.tensor([100.0, 0.0, 0.0, 0.0])), torch.tensor(0.0), atol=1e-6, rtol=0
    )


def test_entropy_of_bf16_logits_is_computed_in_float32():
    # bf16 logsumexp of 1000 zeros rounds ln 1000 = 6.907755 to 6.90625; float32 inside keeps it exact
    h = entropy_from_logits(torch.zeros(4, 1000, dtype=torch.bfloat16))
    assert h.dtype == torch.float32
    assert_close(h, torch.full((4,), math.log(1000)), atol=1e-5, rtol=0)


def test_logprobs_hand_values():
    # logits [0, ln 3] -> p = [0.25, 0.75]; labels pick 1 then 0 -> [ln 0.75, ln 0.25] = [-0.287682, -1.386294]
    logits = torch.tensor([[[0.0, LN3], [0.0, LN3]]])
    lp = logprobs_from_logits(logits, torch.tensor([[1, 0]]))
    assert_close(lp, torch.tensor([[math.log(0.75), math.log(0.25)]]))
    # uniform over 4 in bf16 -> -ln 4, returned as float32
    lp = logprobs_from_logits(torch.zeros(3, 4, dtype=torch.bfloat16), torch.tensor([0, 2, 3]))
    assert lp.dtype == torch.float32
    assert_close(lp, torch.full((3,), -math.log(4)))


def test_logprobs_bad_labels():
    with pytest.raises(ValueError, match="must match"):
        logprobs_from_logits(torch.zeros(2, 3, 5), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        logprobs_from_logits(torch.zeros(2, 5), torch.zeros(2))


# 5 valid tokens; padding (mask 0) carries the highest entropies and must never be kept.
ENTROPY = torch.tensor([[0.9, 0.1, 0.5, 5.0], [0.3, 0.2, 9.0, 9.0]])
MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)


def test_top_entropy_mask_hand_batch():
    # top_frac 0.2: k = ceil(0.2*5) = 1 -> only 0.9 at (0,0). Over the batch, not per sequence:
    # per-sequence selection would also have kept one token of row 1.
    expected = torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(top_entropy_mask(ENTROPY, MASK, 0.2), expected)
    # top_frac 0.5: k = ceil(2.5) = 3 -> 0.9 (0,0), 0.5 (0,2), 0.3 (1,0); padding 5.0 and 9.0 skipped
    expected = torch.tensor([[1, 0, 1, 0], [1, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(top_entropy_mask(ENTROPY, MASK, 0.5), expected)
    # top_frac 1 -> the mask itself (as bool, even from a 0/1 int mask)
    assert torch.equal(top_entropy_mask(ENTROPY, MASK.long(), 1.0), MASK)


def test_top_entropy_mask_ties_go_to_lower_flat_index():
    entropy = torch.tensor([[0.4, 0.4, 0.4], [0.4, 0.1, 0.4]])
    mask = torch.ones(2, 3, dtype=torch.bool)
    # six valid, five tied at 0.4 at flat indices 0,1,2,3,5
    # top_frac 0.5: k = 3 -> flat 0,1,2 ; top_frac 0.6: k = ceil(3.6) = 4 -> flat 0,1,2,3
    assert torch.equal(top_entropy_mask(entropy, mask, 0.5), torch.tensor([[1, 1, 1], [0, 0, 0]]).bool())
    assert torch.equal(top_entropy_mask(entropy, mask, 0.6), torch.tensor([[1, 1, 1], [1, 0, 0]]).bool())
    # large enough that an unstable sort scrambles ties: [0.4, 0.1] * 2000, k = 0.25 * 4000 = 1000
    # -> exactly the first 1000 of the 0.4s, at even flat indices 0, 2, ..., 1998
    kept = top_entropy_mask(
        torch.tensor([0.4, 0.1] * 2000).view(2, 2000), torch.ones(2, 2000, dtype=torch.bool), 0.25
    )
    assert torch.equal(kept.view(-1).nonzero().squeeze(1), torch.arange(0, 2000, 2))


def test_top_entropy_mask_k_is_not_inflated_by_float_rounding():
    # 0.28 * 25 == 7.000000000000001 in binary floating point; the intended k = 7, not 8 -> flat 18..24
    entropy = torch.arange(25.0).view(5, 5)
    kept = top_entropy_mask(entropy, torch.ones(5, 5, dtype=torch.bool), 0.28)
    assert kept.sum() == 7 and kept.view(-1)[18:].all()


def test_top_entropy_mask_with_no_valid_tokens():
    out = top_entropy_mask(ENTROPY, torch.zeros_like(MASK), 0.2)
    assert out.dtype == torch.bool and not out.any()


@pytest.mark.parametrize(
    ("mask", "top_frac", "match"),
    [(MASK, 0.0, "top_frac"), (MASK, 1.5, "top_frac"), (MASK[:, :3], 0.5, "shape")],
)
def test_top_entropy_mask_bad_arguments(mask, top_frac, match):
    with pytest.raises(ValueError, match=match):
        top_entropy_mask(ENTROPY, mask, top_frac)
