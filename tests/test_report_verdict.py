import math

import pytest

from rlvr.report.verdict import (
    CONTRADICTED,
    INCONCLUSIVE,
    NO_EFFECT,
    NOT_TESTED,
    REPRODUCED,
    T975,
    Contrast,
    judge,
    paired_interval,
    t_quantile_975,
)


def _two_sided_t(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer df: the finite series of Abramowitz & Stegun 26.7.3-4."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2:  # odd: (2/pi) (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...)), powers up to df - 2
        term = total = 1.0
        for k in range(1, (df - 1) // 2):
            term *= 2 * k / (2 * k + 1) * c2
            total += term
        series = math.sin(theta) * math.cos(theta) * total if df > 1 else 0.0
        return 2 / math.pi * (theta + series)
    term = total = 1.0  # even: sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...), powers up to df - 2
    for k in range(1, df // 2):
        term *= (2 * k - 1) / (2 * k) * c2
        total += term
    return math.sin(theta) * total


def test_t_quantiles_known_values():
    # published values to 6 decimals: df 1, 2, 3, 10, 30 (the table); past it, 40, 60, 120 (the expansion)
    known = {1: 12.706205, 2: 4.302653, 3: 3.182446, 10: 2.228139, 30: 2.042272, 40: 2.021075, 60: 2.000298}
    for df, want in {**known, 120: 1.979930}.items():
        assert t_quantile_975(df) == pytest.approx(want, abs=1e-5), df
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_quantile_975(0)


def test_the_table_and_the_expansion_put_95_percent_inside():
    assert len(T975) == 30
    for df in [*range(1, 31), 31, 35, 50, 100]:
        assert _two_sided_t(t_quantile_975(df), df) == pytest.approx(0.95, abs=1e-7), df
    assert _two_sided_t(1.0, 1) == pytest.approx(0.5)  # the series itself: P(|T| <= 1) = 1/2 for Cauchy


def test_paired_interval_by_hand():
    # 1, 2, 3: mean 2, s = sqrt((1 + 0 + 1) / 2) = 1, half-width 4.302653 * 1 / sqrt(3) = 2.484138
    got = paired_interval([1.0, 2.0, 3.0])
    assert got.n == 3 and got.mean == 2.0
    assert got.low == pytest.approx(2 - 2.484138, abs=1e-5) and got.high == pytest.approx(4.484138, abs=1e-5)
    one = paired_interval([0.5])
    assert one.n == 1 and one.mean == 0.5 and math.isnan(one.low) and math.isnan(one.high)
    assert paired_interval([]).n == 0


CLIP = Contrast("clip-higher", "eval/pass@1", +1, 0.5)


def test_verdicts_by_hand():
    # 2.1, 1.9, 2.0: mean 2, s 0.1, half-width 4.30265 * 0.1 / sqrt(3) = 0.2484 -> (1.752, 2.248), above 0
    row = judge(CLIP, {0: 2.1, 1: 1.9, 2: 2.0}, {0: 0.0, 1: 0.0, 2: 0.0})
    assert row.verdict == REPRODUCED and row.n == 3
    assert row.mean_diff == pytest.approx(2.0) and row.ci_low == pytest.approx(1.751586, abs=1e-5)
    lower = Contrast("clip-higher", "eval/pass@1", -1, 0.5)  # the paper expected a fall
    assert judge(lower, {0: 2.1, 1: 1.9, 2: 2.0}, {0: 0, 1: 0, 2: 0}).verdict == CONTRADICTED
    # 1, 2, 3: (-0.484, 4.484) holds 0 and reaches past 0.5 -> inconclusive
    assert judge(CLIP, {0: 1, 1: 2, 2: 3}, {0: 0, 1: 0, 2: 0}).verdict == INCONCLUSIVE
    # 0.01, -0.01, 0: mean 0, s 0.01, half-width 0.02484: inside +-0.05 -> no effect; not inside +-0.02
    flat = {0: 0.01, 1: -0.01, 2: 0.0}
    zeros = {0: 0, 1: 0, 2: 0}
    assert judge(Contrast("negative control", "eval/pass@1", 1, 0.05), flat, zeros).verdict == NO_EFFECT
    assert judge(Contrast("negative control", "eval/pass@1", 1, 0.02), flat, zeros).verdict == INCONCLUSIVE
    # one pair: no interval
    assert judge(CLIP, {0: 2.0}, {0: 0.0}).verdict == INCONCLUSIVE


def test_an_inactive_mechanism_means_not_tested_with_its_value():
    gated = Contrast("clip-higher", "eval/pass@1", 1, 0.5, "clip/high_frac", 0.01)
    # the upper clip bound bound on 0.06% of the tokens, below the 1% the check asks for: the clear effect
    # does not count, and the row keeps the interval and the measured value
    row = judge(gated, {0: 2.1, 1: 1.9, 2: 2.0}, {0: 0, 1: 0, 2: 0}, mechanism_value=0.0006)
    assert row.verdict == NOT_TESTED and row.mechanism_value == 0.0006 and row.ci_low > 0
    assert judge(gated, {0: 2.1, 1: 1.9, 2: 2.0}, {0: 0, 1: 0, 2: 0}).verdict == NOT_TESTED  # not measured
    active = judge(gated, {0: 2.1, 1: 1.9, 2: 2.0}, {0: 0, 1: 0, 2: 0}, mechanism_value=0.01)
    assert active.verdict == REPRODUCED  # at the threshold the mechanism counts as active


def test_pairs_are_the_seeds_both_arms_have():
    # seeds 0, 1, 2 pair (1, 2, 3); seed 3 has no control, seed 4 no treatment, seed 5 a NaN, seed 6 a None
    treatment = {0: 1.0, 1: 2.0, 2: 3.0, 3: 5.0, 5: math.nan, 6: None}
    control = {0: 0.0, 1: 0.0, 2: 0.0, 4: 1.0, 5: 0.0, 6: 0.0}
    row = judge(CLIP, treatment, control)
    assert row.n == 3 and row.mean_diff == 2.0 and row.ci_high == pytest.approx(4.484138, abs=1e-5)


def test_contrast_rejects_what_the_rule_cannot_read():
    with pytest.raises(ValueError, match="direction"):
        Contrast("x", "eval/pass@1", 0, 0.1)
    with pytest.raises(ValueError, match="minimal_effect"):
        Contrast("x", "eval/pass@1", 1, 0.0)
    with pytest.raises(ValueError, match="go together"):
        Contrast("x", "eval/pass@1", 1, 0.1, "clip/high_frac")
