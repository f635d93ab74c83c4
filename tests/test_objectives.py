"""rlvr.objectives: each config picks its component once, and the components compute the papers' losses (hand-worked
two-token examples in float64, so float rounding is far below the tolerances)."""

import math

import pytest
import torch

from rlvr import algo
from rlvr.config import AlgoConfig, ClipConfig, CovConfig, EntropyMaskConfig
from rlvr.errors import ConfigError
from rlvr.objectives import AllTokens, ClipCov, ForkingTokens, KLCov, PPOClip, build_objective

CLIP = ClipConfig(eps_low=0.2, eps_high=0.28, dual_c=3.0)


@pytest.mark.parametrize(
    ("algo", "tokens", "loss", "prepass"),
    [
        (AlgoConfig(), AllTokens(), PPOClip(ClipConfig()), False),
        (AlgoConfig(clip=CLIP), AllTokens(), PPOClip(CLIP), False),
        (AlgoConfig(entropy_mask=EntropyMaskConfig(0.2)), ForkingTokens(0.2), PPOClip(ClipConfig()), True),
        (
            AlgoConfig(cov=CovConfig("clip_cov")),
            AllTokens(),
            ClipCov(ClipConfig(), CovConfig("clip_cov")),
            True,
        ),
        (AlgoConfig(cov=CovConfig("kl_cov")), AllTokens(), KLCov(ClipConfig(), CovConfig("kl_cov")), True),
    ],
    ids=["ppo", "clip_higher_dual", "forking_tokens", "clip_cov", "kl_cov"],
)
def test_each_config_picks_its_components(algo, tokens, loss, prepass):
    objective = build_objective(algo)
    assert objective.pg_tokens == tokens and type(objective.policy_loss) is type(loss)
    assert objective.policy_loss == loss  # with the config it was built from
    assert objective.needs_prepass is prepass


def test_an_unknown_cov_mode_names_the_key():
    with pytest.raises(ConfigError, match=r"algo\.cov\.mode: 'kl' is not one of null, clip_cov, kl_cov"):
        build_objective(AlgoConfig(cov=CovConfig("kl")))


def test_ppo_clip_two_tokens_by_hand():
    """ratios 1.5 (A = +1) and 4 (A = -1), eps 0.2 / 0.28, dual_c 3:
    token 0: -min(1.5 * 1, 1.28 * 1) = -1.28, clipped high;
    token 1: -min(4 * -1, 1.28 * -1) = 4, above the dual cap -3 * -1 = 3: loss 3, dual-clipped."""
    logp = torch.tensor([[math.log(1.5), math.log(4.0)]], dtype=torch.float64)
    old = torch.zeros_like(logp)
    adv = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    loss, info = PPOClip(CLIP).loss(logp, old, adv, None)
    assert loss[0].tolist() == pytest.approx([-1.28, 3.0], rel=1e-12)
    assert info["clipped_high"][0].tolist() == [True, False]
    assert info["dual_clipped"][0].tolist() == [False, True]
    assert PPOClip(CLIP).selected_abs_kl(info, None) == 0.0
    assert PPOClip(CLIP).metrics(selected=0.0, abs_kl=0.0, n_tokens=2) == {}


def test_clip_cov_draws_only_among_tokens_the_clip_leaves_and_zeroes_their_loss():
    """Two sequences of one token, logp -1 and -3, A = +1 and -1: means -2 and 0, so Cov = (1)(1) = 1 and
    (-1)(-1) = 1, both inside the bounds (0.5, 5). Token 0's ratio against old is 2 > 1.28 with A > 0: the clip
    already clips it, so it may not be drawn; clip_frac 0.5 of N = 2 draws 1: token 1, whatever the generator.
    Its loss (-A * 1 = 1) becomes 0; token 0 keeps -1.28."""
    cov = CovConfig("clip_cov", clip_frac=0.5, clip_bound_low=0.5, clip_bound_high=5.0)
    clip_cov = build_objective(AlgoConfig(clip=CLIP, cov=cov)).policy_loss
    current = torch.tensor([[-1.0], [-3.0]], dtype=torch.float64)
    old = torch.tensor([[-1.0 - math.log(2.0)], [-3.0]], dtype=torch.float64)
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    mask = torch.ones(2, 1, dtype=torch.bool)
    selected = clip_cov.select(lambda: current, old, adv, mask, torch.Generator().manual_seed(0))
    assert selected[:, 0].tolist() == [False, True]
    loss, _ = clip_cov.loss(current, old, adv, selected)
    assert loss[:, 0].tolist() == pytest.approx([-1.28, 0.0], rel=1e-12)
    assert clip_cov.metrics(selected=1.0, abs_kl=0.0, n_tokens=4) == {"cov/selected_frac": 0.25}


def test_kl_cov_two_tokens_by_hand():
    """Cui et al. 2025, KL-Cov: -A * ratio, plus kl_coef * |logp - old| on the selected token only, no clip.
    ratios 1.5 and 1 (A = 1), kl_coef 0.5, token 0 selected: [-1.5 + 0.5 ln 1.5, -1] = [-1.29727, -1]."""
    kl_cov = build_objective(AlgoConfig(clip=CLIP, cov=CovConfig("kl_cov", kl_coef=0.5))).policy_loss
    logp = torch.tensor([[math.log(1.5), 0.0]], dtype=torch.float64)
    old = torch.zeros_like(logp)
    selected = torch.tensor([[True, False]])
    loss, info = kl_cov.loss(logp, old, torch.tensor([1.0], dtype=torch.float64), selected)
    assert loss[0].tolist() == pytest.approx([-1.5 + 0.5 * math.log(1.5), -1.0], rel=1e-12)
    assert not info["clipped_high"].any()  # 1.5 > 1.28, but KL-Cov does not clip
    assert kl_cov.selected_abs_kl(info, selected) == pytest.approx(math.log(1.5), rel=1e-12)
    assert kl_cov.metrics(selected=1.0, abs_kl=math.log(1.5), n_tokens=2) == {
        "cov/selected_frac": 0.5,
        "cov/kl_abs_mean": math.log(1.5),
    }


def test_forking_tokens_keep_the_top_fraction_by_entropy_and_all_tokens_keep_the_response():
    """Wang et al. 2025: top_frac 0.5 of the 2 response tokens keeps ceil(1) = 1, the higher-entropy one."""
    entropy = torch.tensor([[0.0, 0.3, 0.9]])
    resp = torch.tensor([[False, True, True]])
    assert ForkingTokens(0.5).mask(entropy, resp).tolist() == [[False, False, True]]
    assert AllTokens().mask(None, resp) is resp


def test_the_bottom_ablation_keeps_every_other_response_token():
    """The 80/20 paper's bottom-80% arm: of 5 response tokens, top_frac 0.2 marks ceil(1) = 1 (entropy 0.9);
    bottom keeps the other 4 and never the prompt position."""
    entropy = torch.tensor([[0.5, 0.1, 0.9, 0.3, 0.2, 0.4]])
    resp = torch.tensor([[False, True, True, True, True, True]])
    assert ForkingTokens(0.2, bottom=True).mask(entropy, resp).tolist() == [
        [False, True, False, True, True, True]
    ]
    cfg = AlgoConfig(entropy_mask=EntropyMaskConfig(0.2, keep="bottom"))
    assert build_objective(cfg).pg_tokens == ForkingTokens(0.2, bottom=True)


# ---- the entropy regulariser ------------------------------------------------------------------------------


def test_entropy_reg_is_built_only_when_asked_for():
    from rlvr.config_algo import EntropyRegConfig
    from rlvr.objectives import build_entropy_reg

    assert build_entropy_reg(EntropyRegConfig()) is None  # the default: off, nothing changes
    fixed = build_entropy_reg(EntropyRegConfig(coef=0.01))
    assert fixed.used == 0.01
    fixed.observe(0.0)  # a fixed coefficient ignores the entropy
    assert fixed.used == 0.01
    assert build_entropy_reg(EntropyRegConfig(target=0.3)).used == 0.0  # adaptive from 0, as Skywork-OR1


@pytest.mark.parametrize(
    ("coef", "entropy", "want"),
    [
        # below the target 0.2: up one step of 1e-4, and it applies
        (1e-4, 0.15, (2e-4, True)),
        # above it: down one step, and it does not apply
        (3e-4, 0.25, (2e-4, False)),
        # clamped at 0 from below ...
        (0.5e-4, 0.25, (0.0, False)),
        # ... and at max_coef 5e-3 from above
        (4.95e-3, 0.1, (5e-3, True)),
        # at the target exactly: not below, so down and off
        (1e-4, 0.2, (0.0, False)),
    ],
)
def test_adaptive_entropy_coef_by_hand(coef, entropy, want):
    from rlvr.objectives import adaptive_entropy_coef

    got = adaptive_entropy_coef(coef, entropy, target=0.2, step=1e-4, max_coef=5e-3)
    assert got[1] is want[1]
    assert got[0] == pytest.approx(want[0], abs=1e-12)


def test_adaptive_entropy_reg_steers_and_round_trips_its_state():
    from rlvr.config_algo import EntropyRegConfig
    from rlvr.objectives import build_entropy_reg

    reg = build_entropy_reg(EntropyRegConfig(coef=0.0, target=0.2, step=1e-3, max_coef=1.5e-3))
    used = []
    for h in (0.1, 0.1, 0.1, 0.3, 0.1):  # below, below, below (capped), above (off), below
        used.append(reg.used)
        reg.observe(h)
    # c: 0 -> 1e-3 -> 1.5e-3 (cap) -> 1.5e-3 -> 0.5e-3 (gate off) -> 1.5e-3
    assert used == pytest.approx([0.0, 1e-3, 1.5e-3, 1.5e-3, 0.0], abs=1e-12)
    assert reg.used == pytest.approx(1.5e-3, abs=1e-12)
    state = reg.state_dict()
    again = build_entropy_reg(EntropyRegConfig(coef=0.0, target=0.2, step=1e-3, max_coef=1.5e-3))
    again.load_state_dict(state)
    assert again.state_dict() == state and again.used == reg.used


def test_sharded_selections_pick_the_sort_based_sets():
    """rlvr.sharded's selections (bisection for the threshold, per-row counts for ties and the draw's order) pick
    exactly the tokens of the sort-based functions, ties (many, -0.0 among them) to the earlier (row, column)."""
    from rlvr import sharded

    g = torch.Generator().manual_seed(0)
    for trial in range(10):
        values = torch.randint(0, 4, (7, 9), generator=g).float() * 0.5 - 0.5
        values[0, 0] = -0.0
        mask = torch.rand(7, 9, generator=g) > 0.3
        for frac in (0.1, 0.5, 1.0):
            want = algo.top_entropy_mask(values, mask, frac)
            assert torch.equal(sharded.top_frac_mask(values, mask, frac, None, None), want)
        assert torch.equal(
            sharded.kl_cov_select(values, mask, 0.2, None, None), algo.kl_cov_select(values, mask, 0.2)
        )
        clipped = torch.rand(7, 9, generator=g) > 0.8
        draw = [torch.Generator().manual_seed(trial) for _ in range(2)]
        want = algo.clip_cov_select(values, mask, 0.1, -0.6, 0.8, draw[0], exclude=clipped)
        got = sharded.clip_cov_select(values, mask, 0.1, -0.6, 0.8, draw[1], clipped, None, None)
        assert torch.equal(got, want)
    x = torch.randn(1000, generator=g)
    assert (
        sharded.kth_largest(x, [1, 500, 1000]).tolist()
        == torch.sort(x, descending=True).values[[0, 499, 999]].tolist()
    )
