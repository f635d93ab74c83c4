import math

import pytest
import torch
from torch.testing import assert_close

from rlvr.algo import aggregate_loss, loss_token_weights, ppo_clip_loss, sampler_is_weights

EPS_LOW, EPS_HIGH = 0.2, 0.28  # DAPO clip-higher: ratio range [0.8, 1.28]


def one_token(ratio: float, adv: float, dual_c: float | None = None):
    """Loss, d loss / d logp and info for a single token with old_logp = -1 and logp = -1 + ln(ratio)."""
    old_logp = torch.tensor([[-1.0]])
    logp = (old_logp + math.log(ratio)).requires_grad_()
    loss, info = ppo_clip_loss(logp, old_logp, torch.tensor([adv]), EPS_LOW, EPS_HIGH, dual_c)
    loss.sum().backward()
    return loss.item(), logp.grad.item(), {k: v.item() for k, v in info.items()}


# Unclipped, loss = -ratio*A and d loss/d logp = -ratio*A (d ratio/d logp = ratio); clipped: constant, grad 0.
@pytest.mark.parametrize(
    ("ratio", "adv", "loss", "grad", "flag"),
    [
        (1.25, 1.0, -1.25, -1.25, None),  # A>0, 1.25 < 1.28: clip-higher lets it through
        (1.30, 1.0, -1.28, 0.0, "clipped_high"),  # A>0, min(1.3, 1.28) = 1.28
        (0.50, 1.0, -0.50, -0.50, None),  # A>0 and ratio low: min(0.5, 0.8) = 0.5, never clipped
        (0.85, -1.0, 0.85, 0.85, None),  # A<0, 0.85 > 0.8: -min(-0.85, -0.85) = 0.85
        (0.75, -1.0, 0.80, 0.0, "clipped_low"),  # A<0: -min(-0.75, -0.8) = 0.8
        (5.00, -1.0, 5.00, 5.00, None),  # A<0, ratio high: -min(-5, -1.28) = 5, unbounded without dual clip
    ],
)
def test_clip_higher_per_token(ratio, adv, loss, grad, flag):
    got_loss, got_grad, info = one_token(ratio, adv)
    assert_close(got_loss, loss)
    assert_close(got_grad, grad)
    assert_close(info["ratio"], ratio)
    for name in ("clipped_low", "clipped_high", "dual_clipped"):
        assert info[name] == (name == flag), name


def test_dual_clip():
    # A=-1, ratio=5: -min(5*A, 1.28*A) = -min(-5, -1.28) = 5, capped at -dual_c*A = 3 -> 3, gradient 0
    loss, grad, info = one_token(5.0, -1.0, dual_c=3.0)
    assert_close(loss, 3.0)
    assert grad == 0.0 and info["dual_clipped"] and not info["clipped_low"]
    # A=-2, ratio=2: loss 4 is below the cap 3*2 = 6 -> untouched, grad = -ratio*A = 4
    loss, grad, info = one_token(2.0, -2.0, dual_c=3.0)
    assert_close((loss, grad), (4.0, 4.0))
    assert not info["dual_clipped"]
    # A>0 is never dual-clipped: ratio 5 -> ordinary clip at 1.28 -> loss -1.28
    loss, grad, info = one_token(5.0, 1.0, dual_c=3.0)
    assert_close((loss, grad), (-1.28, 0.0))
    assert info["clipped_high"] and not info["dual_clipped"]


def test_batched_advantages_broadcast_over_tokens():
    # row 0 has A=+1, row 1 has A=-1
    ratio = torch.tensor([[1.25, 0.75], [1.0, 1.3]])
    old_logp = torch.full((2, 2), -2.0)
    logp = old_logp + ratio.log()
    # row 0: -1.25 ; -min(0.75, 0.8) = -0.75.  row 1: -min(-1, -1) = 1 ; -min(-1.3, -1.28) = 1.3
    expected = torch.tensor([[-1.25, -0.75], [1.0, 1.3]])
    loss_b, info = ppo_clip_loss(logp, old_logp, torch.tensor([1.0, -1.0]), EPS_LOW, EPS_HIGH)
    loss_bt, _ = ppo_clip_loss(logp, old_logp, torch.tensor([[1.0, 1.0], [-1.0, -1.0]]), EPS_LOW, EPS_HIGH)
    assert_close(loss_b, expected)
    assert_close(loss_bt, expected)
    assert_close(info["ratio"], ratio)
    assert info["clipped_low"].dtype == torch.bool and not info["clipped_low"].any()
    assert not info["ratio"].requires_grad


def test_extreme_ratio_gives_finite_zero_gradient_when_clipped():
    # log ratio 200 would overflow exp; the token is clipped (A>0), so its gradient must be 0, not NaN
    old_logp = torch.tensor([[-300.0]])
    logp = torch.tensor([[-100.0]], requires_grad=True)
    loss, _ = ppo_clip_loss(logp, old_logp, torch.tensor([1.0]), EPS_LOW, EPS_HIGH)
    loss.sum().backward()
    assert_close(loss, torch.tensor([[-1.28]]))
    assert logp.grad.item() == 0.0


@pytest.mark.parametrize(
    ("shape_adv", "kwargs", "match"),
    [
        ((3,), {}, "advantages"),
        ((2, 3), {}, "advantages"),
        ((2,), {"dual_c": 1.0}, "dual_c"),
        ((2,), {"eps_low": -0.1}, "eps_low"),
        ((2,), {"eps_low": 1.01}, "eps_low"),  # 1 is allowed: no lower clip (the Clip-Cov authors' ratio 1)
    ],
)
def test_ppo_bad_arguments(shape_adv, kwargs, match):
    args = {"eps_low": 0.2, "eps_high": 0.28} | kwargs
    with pytest.raises(ValueError, match=match):
        ppo_clip_loss(torch.zeros(2, 2), torch.zeros(2, 2), torch.zeros(shape_adv), **args)
    with pytest.raises(ValueError, match="old_logp"):
        ppo_clip_loss(torch.zeros(2, 2), torch.zeros(2, 3), torch.zeros(2), 0.2, 0.28)


# Row 0 keeps 1 token with loss 1.0, row 1 keeps 3 tokens with loss 0.0; 9.0 sits on padding.
MASK = torch.tensor([[1, 0, 0], [1, 1, 1]], dtype=torch.bool)
LOSS = torch.tensor([[1.0, 9.0, 9.0], [0.0, 0.0, 0.0]])


def test_three_aggregations_differ_on_unequal_lengths():
    # token_mean: (1 + 0+0+0) / 4 tokens = 1/4
    assert_close(aggregate_loss(LOSS, MASK, "token_mean"), torch.tensor(0.25))
    # seq_mean_token_mean: (1/1 + 0/3) / 2 sequences = 1/2 -- the short sequence's token weighs 3x more
    assert_close(aggregate_loss(LOSS, MASK, "seq_mean_token_mean"), torch.tensor(0.5))
    # seq_mean_token_sum_norm: (1/4 + 0/4) / 2 = 1/8 with max_len 4 (the generation budget, not the width T = 3)
    assert_close(aggregate_loss(LOSS, MASK, "seq_mean_token_sum_norm", max_len=4), torch.tensor(0.125))
    # a bool mask and a 0/1 float mask agree
    assert_close(aggregate_loss(LOSS, MASK.float(), "token_mean"), torch.tensor(0.25))


def test_grpo_length_bias_in_the_weights():
    w = loss_token_weights(MASK, "seq_mean_token_mean")
    # 1/(len_i * n_seq): short row 1/(1*2) = 1/2 per token, long row 1/(3*2) = 1/6 per token
    assert_close(w, torch.tensor([[0.5, 0.0, 0.0], [1 / 6, 1 / 6, 1 / 6]]))
    assert w[1, 0] < w[0, 0]  # GRPO: a long response's tokens each count less (Dr. GRPO's length bias)
    # token_mean: 1/4 everywhere; Dr. GRPO: 1/(max_len * n_seq) = 1/(4*2) = 1/8 everywhere -- no length bias
    assert_close(loss_token_weights(MASK, "token_mean"), MASK.float() / 4)
    assert_close(loss_token_weights(MASK, "seq_mean_token_sum_norm", max_len=4), MASK.float() / 8)


def test_empty_rows_are_not_counted_and_all_zero_mask_gives_zero():
    mask = torch.tensor([[1, 1], [0, 0]])
    # n_seq = 1 (the empty row does not count): 1/(2*1) = 0.5 ; Dr. GRPO with max_len 2: 1/(2*1) = 0.5
    for mode in ("seq_mean_token_mean", "seq_mean_token_sum_norm"):
        assert_close(loss_token_weights(mask, mode, max_len=2), torch.tensor([[0.5, 0.5], [0.0, 0.0]]))
    for mode in ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"):
        w = loss_token_weights(torch.zeros(2, 3), mode, max_len=3)
        assert torch.equal(w, torch.zeros(2, 3)), mode


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("token_mean", 10 / 7),  # (4*1 + 0*3 + 2*2 + 2*1) / 7 tokens = 10/7
        ("seq_mean_token_mean", 2.0),  # row means 4, 0, 2, 2 -> 8/4 = 2
        ("seq_mean_token_sum_norm", 5 / 6),  # row sums 4, 0, 4, 2 over max_len 3 -> (10/3)/4 = 5/6
    ],
)
def test_micro_batches_with_full_batch_weights_match_the_full_aggregate(mode, expected):
    # rows keep 1, 3, 2, 1 tokens with constant per-token losses 4, 0, 2, 2 (100 on padding)
    mask = torch.tensor([[1, 0, 0], [1, 1, 1], [1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    loss = torch.tensor([[4.0, 100, 100], [0, 0, 0], [2, 2, 100], [2, 100, 100]])
    full = aggregate_loss(loss, mask, mode, max_len=3)
    assert_close(full, torch.tensor(expected))
    w = loss_token_weights(mask, mode, max_len=3)
    halves = (loss[:2] * w[:2]).sum() + (loss[2:] * w[2:]).sum()
    assert_close(halves, full)
    if mode == "token_mean":
        # averaging per-half means instead is wrong: (4/4 + 6/3) / 2 = 1.5 != 10/7
        naive = (aggregate_loss(loss[:2], mask[:2], mode) + aggregate_loss(loss[2:], mask[2:], mode)) / 2
        assert_close(naive, torch.tensor(1.5))


@pytest.mark.parametrize(
    ("mask", "mode", "max_len", "match"),
    [
        (MASK, "mean", None, "unknown loss aggregation"),
        (MASK[0], "token_mean", None, r"\[B, T\]"),
        (MASK, "seq_mean_token_sum_norm", 0, "max_len"),
        (MASK, "seq_mean_token_sum_norm", None, "generation budget"),
    ],
)
def test_weights_bad_arguments(mask, mode, max_len, match):
    with pytest.raises(ValueError, match=match):
        loss_token_weights(mask, mode, max_len)


def test_dr_grpo_weight_is_the_same_for_batches_of_any_width():
    # Dr. GRPO divides by a constant, the generation budget (8 here): one kept token weighs 1/(8 * n_seq) in a
    # batch padded to width 3 and in one padded to width 6 (dividing by the width gave 1/6 and 1/12)
    narrow = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    wide = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    for mask in (narrow, wide):
        w = loss_token_weights(mask, "seq_mean_token_sum_norm", max_len=8)
        assert_close(w[mask], torch.full((int(mask.sum()),), 1 / 16))


def test_aggregate_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        aggregate_loss(LOSS[:, :2], MASK, "token_mean")


# ---- importance weights for the sampler gap ------------------------------------------------------------------

OLD = torch.tensor([[-1.0, -1.0, -2.0, 0.0]])
ROLLOUT = torch.tensor([[-1.5, -1.2, -1.0, 0.0]])
RESP = torch.tensor([[True, True, True, False]])  # the last position is the prompt's / padding


def test_token_truncate_is_tis_by_hand():
    """exp(-1.0 - -1.5) = exp(0.5) = 1.6487 -> capped at 1.5; exp(0.2) = 1.2214 under the cap; exp(-1) = 0.3679
    (never raised to 1); off the response: weight 0."""
    w, acted = sampler_is_weights(OLD, ROLLOUT, RESP, "token_truncate", cap=1.5)
    assert_close(w, torch.tensor([[1.5, math.exp(0.2), math.exp(-1.0), 0.0]]))
    assert acted.tolist() == [[True, False, False, False]]  # where the cap binds
    assert_close(
        sampler_is_weights(OLD, ROLLOUT, RESP, "token_truncate", cap=2.0)[0][0, 0],
        torch.tensor(math.exp(0.5)),
    )


def test_token_mask_and_icepop_drop_what_truncation_caps():
    """token_mask at cap 1.5 zeroes the 1.6487; IcePop in [0.5, 5] zeroes exp(-1) = 0.3679 < 0.5 instead and keeps
    1.6487 and 1.2214 at their value (a mask keeps the ratio where it passes)."""
    w, acted = sampler_is_weights(OLD, ROLLOUT, RESP, "token_mask", cap=1.5)
    assert_close(w, torch.tensor([[0.0, math.exp(0.2), math.exp(-1.0), 0.0]]))
    assert acted.tolist() == [[True, False, False, False]]
    w, acted = sampler_is_weights(OLD, ROLLOUT, RESP, "icepop", low=0.5, high=5.0)
    assert_close(w, torch.tensor([[math.exp(0.5), math.exp(0.2), 0.0, 0.0]]))
    assert acted.tolist() == [[False, False, True, False]]


def test_sequence_modes_multiply_a_sequences_ratios():
    """Row 0: log-ratios 0.5 + 0.2 - 1.0 = -0.3 -> rho = 0.7408 on its 3 response tokens; row 1: 0.6 + 0.6 = 1.2
    -> rho = 3.3201 > cap 3: truncated to 3, or masked to 0, on both its tokens."""
    old = torch.cat([OLD, torch.tensor([[0.0, 0.0, -5.0, -5.0]])])
    rollout = torch.cat([ROLLOUT, torch.tensor([[-0.6, -0.6, -5.0, -5.0]])])
    resp = torch.cat([RESP, torch.tensor([[True, True, False, False]])])
    w, acted = sampler_is_weights(old, rollout, resp, "sequence_truncate", cap=3.0)
    r0 = math.exp(-0.3)
    assert_close(w, torch.tensor([[r0, r0, r0, 0.0], [3.0, 3.0, 0.0, 0.0]]))
    assert acted.tolist() == [[False] * 4, [True, True, False, False]]
    w, acted = sampler_is_weights(old, rollout, resp, "sequence_mask", cap=3.0)
    assert_close(w, torch.tensor([[r0, r0, r0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
    assert acted.tolist() == [[False] * 4, [True, True, False, False]]


def test_is_weights_are_detached_and_finite():
    old = torch.tensor([[0.0, -1.0]], requires_grad=True)
    rollout = torch.tensor([[-200.0, -1.0]], requires_grad=True)  # exp(200) overflows float32 -> capped
    resp = torch.ones(1, 2, dtype=torch.bool)
    w, _ = sampler_is_weights(old, rollout, resp, "token_truncate", cap=3.0)
    assert not w.requires_grad and w.tolist() == [[3.0, 1.0]]
    assert sampler_is_weights(old, rollout, resp, "sequence_mask")[0].tolist() == [[0.0, 0.0]]


@pytest.mark.parametrize(
    ("rollout", "mode", "match"),
    [(torch.zeros(1, 3), "token_truncate", "one shape"), (ROLLOUT, "tis", "mode")],
)
def test_is_weights_bad_arguments(rollout, mode, match):
    with pytest.raises(ValueError, match=match):
        sampler_is_weights(OLD, rollout, RESP, mode)
