import math

import pytest
import torch

from rlvr.algo import (
    clip_cov_loss,
    clip_cov_select,
    kl_cov_loss,
    kl_cov_select,
    ppo_clip_loss,
    token_covariance,
)

# The hand-made batch: 2 sequences, 5 response tokens (row 1 has one padding position).
#   logp (valid)  row 0: -1, -3, 0      row 1: -2, -4       mean logp = -10 / 5 = -2
#   centred logp  row 0:  1, -1, 2      row 1:  0, -2
#   advantages    row 0: +1 (x3 tokens) row 1: -1 (x2)      mean A = (3 - 2) / 5 = 0.2
#   centred A     row 0: 0.8            row 1: -1.2
#   Cov           row 0: 0.8, -0.8, 1.6 row 1: 0, 2.4       mean Cov = 4 / 5 = 0.8
LOGP = torch.tensor([[-1.0, -3.0, 0.0], [-2.0, -4.0, 99.0]])  # 99 at the padding must not count
MASK = torch.tensor([[True, True, True], [True, True, False]])
ADV = torch.tensor([1.0, -1.0])
COV = torch.tensor([[0.8, -0.8, 1.6], [0.0, 2.4, 0.0]])


def test_token_covariance_hand_batch():
    cov = token_covariance(LOGP, ADV, MASK)
    torch.testing.assert_close(cov, COV)
    assert cov[MASK].mean().item() == pytest.approx(0.8)
    # per-token advantages broadcast the same way
    torch.testing.assert_close(token_covariance(LOGP, ADV[:, None].expand(2, 3), MASK), COV)


def test_token_covariance_no_grad_and_empty_mask():
    logp = LOGP.clone().requires_grad_(True)
    assert not token_covariance(logp, ADV, MASK).requires_grad
    assert token_covariance(LOGP, ADV, torch.zeros_like(MASK)).abs().sum() == 0


def test_clip_cov_selects_every_candidate_when_they_are_few():
    # Candidates: Cov in [1, 5] -> 1.6 at (0, 2) and 2.4 at (1, 1). clip_frac 0.4 of N = 5 -> floor(2.0) = 2
    # tokens: exactly both candidates.
    sel = clip_cov_select(COV, MASK, clip_frac=0.4, bound_low=1.0, bound_high=5.0)
    assert sel.tolist() == [[False, False, True], [False, True, False]]
    # 0.8 of 5 = 4 tokens wanted, only 2 candidates: still exactly the 2
    assert clip_cov_select(COV, MASK, 0.8, 1.0, 5.0).tolist() == sel.tolist()


def test_clip_cov_draws_uniformly_among_candidates():
    # clip_frac 0.2 of 5 -> 1 token; the paper's 2e-4 of 5 = 0.001 -> at least 1. Over seeds, each candidate
    # (and only a candidate) is drawn.
    seen = set()
    for seed in range(40):
        g = torch.Generator().manual_seed(seed)
        for frac in (0.2, 2e-4):
            sel = clip_cov_select(COV, MASK, frac, 1.0, 5.0, generator=g)
            assert sel.sum() == 1
            seen.add(tuple(sel.nonzero()[0].tolist()))
    assert seen == {(0, 2), (1, 1)}


def test_clip_cov_bounds_are_open_and_padding_is_never_a_candidate():
    # verl's rule, lb < cov < ub: 1.0 and 5.0 sit on the bounds and are not candidates (inclusive bounds, the old
    # rule, took them: [[True, True, False], [False, True, False]])
    cov = torch.tensor([[1.0, 5.0, 1.01], [5.01, 3.0, 3.0]])  # (1, 2) is padding with an in-bounds value
    sel = clip_cov_select(cov, MASK, 1.0, 1.0, 5.0)
    assert sel.tolist() == [[False, False, True], [False, True, False]]
    # no candidate: nothing selected
    assert not clip_cov_select(COV, MASK, 1.0, 10.0, 20.0).any()


def test_clip_cov_never_draws_a_token_the_ppo_clip_already_clips():
    # Candidates of COV in (1, 5): (0, 2) and (1, 1). Token (1, 1) has A = -1 and ratio e^-0.5 = 0.61 < 1 - 0.2:
    # PPO clips it (zero gradient already), so the draw must take (0, 2) alone, whatever the seed. N still counts
    # all 5 loss tokens: 0.4 * 5 = 2 wanted, 1 allowed candidate.
    logp = torch.tensor([[0.0, 0.0, 0.0], [0.0, -0.5, 0.0]])
    _, info = ppo_clip_loss(logp, torch.zeros(2, 3), ADV, 0.2, 0.28)
    clipped = info["clipped_low"] | info["clipped_high"]
    assert clipped.tolist() == [[False, False, False], [False, True, False]]
    for seed in range(10):
        g = torch.Generator().manual_seed(seed)
        sel = clip_cov_select(COV, MASK, 0.4, 1.0, 5.0, generator=g, exclude=clipped)
        assert sel.tolist() == [[False, False, True], [False, False, False]]


def test_kl_cov_selects_the_largest_covariances():
    # k_frac 0.4 of 5 -> 2 tokens: 2.4 at (1, 1) and 1.6 at (0, 2)
    assert kl_cov_select(COV, MASK, 0.4).tolist() == [[False, False, True], [False, True, False]]
    # 0.2 -> 1 token; the paper's 2e-3 of 5 -> at least 1: the largest, 2.4
    for frac in (0.2, 2e-3):
        assert kl_cov_select(COV, MASK, frac).tolist() == [[False, False, False], [False, True, False]]
    # 0.6 -> 3 tokens: 2.4, 1.6, 0.8; the padding's 0 never counts, even when it would rank
    cov = COV.clone()
    cov[1, 2] = 100.0
    assert kl_cov_select(cov, MASK, 0.6).tolist() == [[True, False, True], [False, True, False]]


def test_kl_cov_count_uses_floor_without_float_noise():
    # 2e-3 * 1500 = 2.9999999999999996 in binary; the count is 3, not 2
    cov = torch.arange(1500, dtype=torch.float32).reshape(1, 1500)
    sel = kl_cov_select(cov, torch.ones_like(cov, dtype=torch.bool), 2e-3)
    assert sel.nonzero()[:, 1].tolist() == [1497, 1498, 1499]


def test_kl_cov_ties_go_to_the_lower_flat_index():
    cov = torch.tensor([[1.0, 2.0, 2.0], [2.0, 0.0, 0.0]])
    assert kl_cov_select(cov, MASK, 0.4).tolist() == [[False, True, True], [False, False, False]]


def test_clip_cov_loss_zeroes_loss_and_gradient_of_selected_tokens():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    old = logp.detach() - torch.tensor([[0.1, -0.1]])
    pg, _ = ppo_clip_loss(logp, old, torch.tensor([1.0]), 0.2, 0.2)
    sel = torch.tensor([[False, True]])
    loss = clip_cov_loss(pg, sel)
    # ratio of token 0 = e^0.1 = 1.10517, inside [0.8, 1.2]: loss -1.10517; token 1 removed
    assert loss[0].tolist() == pytest.approx([-math.exp(0.1), 0.0])
    loss.sum().backward()
    assert logp.grad[0].tolist() == pytest.approx([-math.exp(0.1), 0.0])


def test_kl_cov_loss_hand_values_and_gradient():
    # Both tokens: logp - old = ln 2 -> ratio 2, A = +1 -> -A * ratio = -2 (no clip, although 2 > 1 + eps).
    # The selected token adds kl_coef * |ln 2| = 0.5 * 0.693147 -> -1.653426.
    # d/dlogp: -A * ratio = -2 for both; the selected one adds 0.5 * sign(ln 2) = 0.5 -> -1.5.
    old = torch.tensor([[-1.0, -2.0]])
    logp = (old + math.log(2.0)).requires_grad_(True)
    sel = torch.tensor([[True, False]])
    loss, info = kl_cov_loss(logp, old, torch.tensor([1.0]), sel, kl_coef=0.5)
    assert loss[0].tolist() == pytest.approx([-2.0 + 0.5 * math.log(2.0), -2.0], rel=1e-6)
    loss.sum().backward()
    assert logp.grad[0].tolist() == pytest.approx([-1.5, -2.0], rel=1e-6)
    assert info["abs_kl"][0].tolist() == pytest.approx([math.log(2.0)] * 2, rel=1e-6)
    assert not (info["clipped_low"] | info["clipped_high"] | info["dual_clipped"]).any()


def test_kl_cov_penalty_is_zero_while_the_policy_equals_the_rollout_policy():
    # the first optimizer step on a batch: logp == old_logp, so |logp - old| = 0 and d|x|/dx at 0 is 0 in torch
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    loss, _ = kl_cov_loss(logp, logp.detach(), torch.tensor([-1.0]), torch.tensor([[True, True]]), 1.0)
    loss.sum().backward()
    assert loss.tolist() == [[1.0, 1.0]] and logp.grad.tolist() == [[1.0, 1.0]]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: token_covariance(LOGP, ADV, MASK[:, :2]), "same shape"),
        (lambda: token_covariance(LOGP, torch.ones(3), MASK), "advantages"),
        (lambda: clip_cov_select(COV, MASK, 0.0, 1.0, 5.0), "clip_frac"),
        (lambda: clip_cov_select(COV, MASK, 0.1, 5.0, 1.0), "bound_low <= bound_high"),
        (lambda: kl_cov_select(COV, MASK, 1.5), "k_frac"),
        (lambda: kl_cov_loss(LOGP, LOGP, ADV, MASK, -1.0), "kl_coef"),
        (lambda: clip_cov_loss(LOGP, MASK[:, :2]), "must match"),
    ],
)
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
