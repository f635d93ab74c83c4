import math

import pytest

from rlvr.metrics import law_prediction


def _on_the_law(xs, a=0.2, b=0.7):
    """(H, R) with exp(H) = x on R = -a exp(H) + b."""
    return [math.log(x) for x in xs], [-a * x + b for x in xs]


def test_law_predicts_later_evaluations_from_early_ones():
    # x = exp(H) = 3, 2.5, 2 (early: R = 0.1, 0.2, 0.3), then 1.5, 1.2 (later: R = 0.4, 0.46), a = 0.2, b = 0.7.
    # early_fraction 0.6 of 5 pairs: ceil(3) = 3 early. The fit recovers a and b, so it predicts 0.4 and 0.46
    # exactly; the naive predictor carries 0.3 forward: |0.4 - 0.3| = 0.1, |0.46 - 0.3| = 0.16 -> mean 0.13.
    h, r = _on_the_law([3, 2.5, 2, 1.5, 1.2])
    got = law_prediction(h, r, early_fraction=0.6)
    assert (got.n_early, got.n_later) == (3, 2)
    assert got.fit.a == pytest.approx(0.2, abs=1e-9) and got.fit.b == pytest.approx(0.7, abs=1e-9)
    assert got.law_mae == pytest.approx(0.0, abs=1e-9)
    assert got.naive_mae == pytest.approx(0.13, abs=1e-9)
    assert got.ceiling_extrapolated == pytest.approx(0.5, abs=1e-9)  # -a + b: R at H = 0, past every point


def test_a_law_that_misses_is_scored_against_the_naive_predictor():
    # 12 pairs at the default early_fraction 0.25: ceil(3) = 3 early, on the law as above. The 9 later pairs leave
    # it: at x = 1.5 the law says 0.4 while the run stays at 0.3, so every later error is 0.1 and the naive
    # predictor (0.3 carried forward) is exact: the law predicts worse than doing nothing.
    h, r = _on_the_law([3, 2.5, 2])
    h += [math.log(1.5)] * 9
    r += [0.3] * 9
    got = law_prediction(h, r)
    assert (got.n_early, got.n_later) == (3, 9)
    assert got.law_mae == pytest.approx(0.1, abs=1e-9) and got.naive_mae == pytest.approx(0.0, abs=1e-12)


def test_law_prediction_needs_three_early_points_and_a_later_one():
    h, r = _on_the_law([3, 2.5, 2, 1.5, 1.2, 1.1])
    assert law_prediction(h, r, early_fraction=0.25) is None  # ceil(1.5) = 2 early pairs: no fit
    assert law_prediction(h[:3], r[:3], early_fraction=0.9) is None  # 3 early, none later
    assert law_prediction([0.3] * 4, [0.1, 0.2, 0.3, 0.4], early_fraction=0.75) is None  # no spread in H
    # 0.3 * 10 is 3.0000000000000004 in floats: 3 early pairs, not 4
    h10, r10 = _on_the_law([3, 2.8, 2.6, 2.4, 2.2, 2, 1.8, 1.6, 1.4, 1.2])
    assert law_prediction(h10, r10, early_fraction=0.3).n_early == 3
    with pytest.raises(ValueError, match="one length"):
        law_prediction([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="early_fraction"):
        law_prediction(h, r, early_fraction=1.0)
