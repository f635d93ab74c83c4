"""Entropy extras, logp-advantage covariance, the entropy–performance law and the collapse warning."""

import math

import numpy as np
import pytest
import torch

from rlvr.metrics import (
    CollapseMonitor,
    EntropyLawTracker,
    collapse_reason,
    covariance_stats,
    entropy_above_threshold,
    entropy_by_outcome,
    fit_entropy_law,
)

# ---- entropy above a threshold; by outcome ------------------------------------------------------------


def test_above_threshold_hand_values():
    # 0.672 itself is not above; 0.7 and 2.0 are: 2 of 5
    h = torch.tensor([0.0, 0.5, 0.672, 0.7, 2.0])
    assert entropy_above_threshold(h, 0.672) == {"entropy/above_threshold_frac": pytest.approx(0.4)}
    assert entropy_above_threshold(torch.tensor([]), 0.672) == {}


@pytest.mark.parametrize("n", [1, 7, 1000])
def test_above_threshold_matches_brute_force(n):
    h = torch.exp(torch.randn(n, generator=torch.Generator().manual_seed(n)) * 2 - 1)
    for thr in (0.0, 0.1, 0.672, 3.0):
        brute = sum(1 for v in h.tolist() if v > thr) / n
        assert entropy_above_threshold(h, thr)["entropy/above_threshold_frac"] == pytest.approx(brute)


def test_entropy_by_outcome_hand_batch():
    # row 0 correct: tokens 1, 3 (the 50 is padding); row 1 incorrect: 2; row 2 correct: 5
    # correct mean pools tokens: (1 + 3 + 5) / 3 = 3; incorrect: 2
    h = torch.tensor([[1.0, 3.0, 50.0], [2.0, 50.0, 50.0], [5.0, 50.0, 50.0]])
    mask = torch.tensor([[True, True, False], [True, False, False], [True, False, False]])
    correct = torch.tensor([True, False, True])
    assert entropy_by_outcome(h, mask, correct) == {
        "entropy/correct_mean": pytest.approx(3.0),
        "entropy/incorrect_mean": pytest.approx(2.0),
    }
    # no incorrect response: the key is left out, not NaN
    assert entropy_by_outcome(h, mask, torch.ones(3, dtype=torch.bool)) == {
        "entropy/correct_mean": pytest.approx(11 / 4)
    }
    with pytest.raises(ValueError, match="per-sequence"):
        entropy_by_outcome(h, mask, correct[:2])


def test_entropy_by_outcome_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    h = torch.rand(16, 9, generator=g) * 3
    mask = torch.rand(16, 9, generator=g) > 0.3
    correct = torch.rand(16, generator=g) > 0.5
    want = {}
    for key, flag in (("entropy/correct_mean", True), ("entropy/incorrect_mean", False)):
        vals = [
            h[i, t].item() for i in range(16) for t in range(9) if mask[i, t] and bool(correct[i]) == flag
        ]
        want[key] = pytest.approx(sum(vals) / len(vals), rel=1e-6)
    assert entropy_by_outcome(h, mask, correct) == want


# ---- covariance ---------------------------------------------------------------------------------------


def test_covariance_stats_hand_batch():
    # the batch of tests/test_algo_cov.py: Cov = 0.8, -0.8, 1.6, 0, 2.4 -> mean 0.8; top 0.2% of 5 tokens
    # is ceil(0.01) = 1 token: 2.4
    logp = torch.tensor([[-1.0, -3.0, 0.0], [-2.0, -4.0, 99.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    out = covariance_stats(logp, torch.tensor([1.0, -1.0]), mask)
    assert out == {"cov/mean": pytest.approx(0.8), "cov/top0.2pct_mean": pytest.approx(2.4)}
    assert covariance_stats(logp, torch.tensor([1.0, -1.0]), torch.zeros_like(mask)) == {}


@pytest.mark.parametrize(("n_seq", "length"), [(8, 5), (64, 40)])
def test_covariance_stats_match_numpy(n_seq, length):
    g = torch.Generator().manual_seed(n_seq)
    logp = -torch.rand(n_seq, length, generator=g) * 4
    adv = torch.randn(n_seq, generator=g)
    mask = torch.rand(n_seq, length, generator=g) > 0.25
    x = logp[mask].double().numpy()
    a = adv[:, None].expand(n_seq, length)[mask].double().numpy()
    products = (x - x.mean()) * (a - a.mean())
    k = math.ceil(0.002 * len(x))
    out = covariance_stats(logp, adv, mask)
    assert out["cov/mean"] == pytest.approx(np.cov(x, a, bias=True)[0, 1], rel=1e-4, abs=1e-6)
    assert out["cov/top0.2pct_mean"] == pytest.approx(np.sort(products)[-k:].mean(), rel=1e-5)
    # another fraction names its key by its percentage: top 10% of the tokens
    k10 = math.ceil(0.1 * len(x))
    out10 = covariance_stats(logp, adv, mask, top_frac=0.1)
    assert out10["cov/top10pct_mean"] == pytest.approx(np.sort(products)[-k10:].mean(), rel=1e-5)


# ---- the entropy–performance law ----------------------------------------------------------------------


def test_law_fit_hand_points():
    # x = exp(H) = 1, 2, 3 and R = 0.5, 0.3, 0.1 lie on R = -0.2 x + 0.7: a = 0.2, b = 0.7, ceiling 0.5, r2 1
    fit = fit_entropy_law([0.0, math.log(2), math.log(3)], [0.5, 0.3, 0.1])
    assert (fit.a, fit.b, fit.ceiling, fit.r2, fit.n) == pytest.approx((0.2, 0.7, 0.5, 1.0, 3))
    assert fit.predict(math.log(2)) == pytest.approx(0.3)
    # R = 0.5, 0.1, 0.3 on the same x: slope = sum((x-2)(R-0.3)) / sum((x-2)^2) = (-0.2 + 0 + 0) / 2 = -0.1,
    # b = 0.3 + 0.1 * 2 = 0.5; residuals 0.1, -0.2, 0.1 -> SS_res 0.06, SS_tot 0.08, r2 = 0.25
    fit = fit_entropy_law([0.0, math.log(2), math.log(3)], [0.5, 0.1, 0.3])
    assert (fit.a, fit.b, fit.r2) == pytest.approx((0.1, 0.5, 0.25))


def test_law_fit_needs_three_points_and_a_spread():
    assert fit_entropy_law([0.1, 0.2], [0.3, 0.4]) is None
    assert fit_entropy_law([0.3, 0.3, 0.3], [0.1, 0.2, 0.3]) is None
    assert math.isnan(fit_entropy_law([0.1, 0.2, 0.3], [0.4, 0.4, 0.4]).r2)  # nothing to explain
    with pytest.raises(ValueError, match="one length"):
        fit_entropy_law([0.1, 0.2, 0.3], [0.1])


@pytest.mark.seeded_statistics
@pytest.mark.parametrize("seed", range(5))
def test_law_fit_recovers_a_and_b_from_noisy_data(seed):
    # R = -0.6 exp(H) + 0.9 at 20 entropies in [0.1, 1.0], plus N(0, 0.01) noise on each accuracy
    rng = np.random.default_rng(seed)
    h = np.linspace(0.1, 1.0, 20)
    r = -0.6 * np.exp(h) + 0.9 + rng.normal(0, 0.01, size=h.shape)
    fit = fit_entropy_law(h.tolist(), r.tolist())
    assert fit.a == pytest.approx(0.6, rel=0.05)
    assert fit.b == pytest.approx(0.9, rel=0.05)
    assert fit.ceiling == pytest.approx(0.3, rel=0.05)
    assert fit.r2 > 0.99
    # the closed form is ordinary least squares: numpy's polyfit of R on exp(H) agrees
    slope, intercept = np.polyfit(np.exp(h), r, 1)
    assert (fit.a, fit.b) == pytest.approx((-slope, intercept), rel=1e-9)


def test_law_tracker_pairs_each_eval_with_the_next_steps_entropy():
    law = EntropyLawTracker()
    assert law.observe_entropy(0.9) == {}  # no evaluation yet
    law.observe_eval(0, 0.1)
    assert law.observe_entropy(0.5) == {
        "entropy_law/point_step": 0,
        "entropy_law/point_entropy": 0.5,
        "entropy_law/point_pass@1": 0.1,
    }
    assert law.observe_entropy(0.45) == {}  # nothing pending, fewer than 3 points
    law.observe_eval(2, 0.2)
    law.observe_eval(3, 0.25)  # a newer evaluation replaces one still waiting
    law.observe_entropy(math.log(2))
    law.observe_eval(4, float("nan"))  # an evaluation without pass@1 is not a point
    law.observe_eval(5, None)
    law.observe_eval(6, 0.3)
    out = law.observe_entropy(math.log(3))
    # points (H, R): (0.5, 0.1), (ln 2, 0.25), (ln 3, 0.3) -> the fit's keys appear from the third point on
    assert [p[0] for p in law.points] == [0, 3, 6]
    assert out["entropy_law/n_points"] == 3 and out["entropy_law/point_step"] == 6
    want = fit_entropy_law([0.5, math.log(2), math.log(3)], [0.1, 0.25, 0.3])
    assert out["entropy_law/a"] == pytest.approx(want.a) and out["entropy_law/b"] == pytest.approx(want.b)
    assert out["entropy_law/ceiling"] == pytest.approx(want.b - want.a)
    assert set(law.observe_entropy(0.3)) == {
        f"entropy_law/{k}" for k in ("a", "b", "ceiling", "r2", "n_points")
    }


def test_law_tracker_state_round_trip():
    law = EntropyLawTracker()
    for step, (h, r) in enumerate([(0.5, 0.1), (0.4, 0.2), (0.3, 0.3)]):
        law.observe_eval(step, r)
        law.observe_entropy(h)
    law.observe_eval(3, 0.35)  # pending at checkpoint time
    restored = EntropyLawTracker()
    restored.load_state_dict(law.state_dict())
    assert restored.points == law.points and restored.pending == (3, 0.35)
    assert restored.observe_entropy(0.25) == law.observe_entropy(0.25)
    empty = EntropyLawTracker()
    empty.load_state_dict({})  # a checkpoint from before the observatory
    assert empty.points == [] and empty.pending is None


# ---- collapse warning ---------------------------------------------------------------------------------


def test_collapse_reason_floor_and_drop():
    assert collapse_reason([0.5, 0.04], floor=0.05, drop_frac=None, window=5).startswith(
        "mean token entropy 0.04"
    )
    # peak of the 3 steps before the latest is 0.5; 0.24 < (1 - 0.5) * 0.5 = 0.25 -> fires; 0.26 does not
    assert "fell 52%" in collapse_reason([0.5, 0.4, 0.3, 0.24], None, 0.5, window=3)
    assert collapse_reason([0.5, 0.4, 0.3, 0.26], None, 0.5, window=3) is None
    # a peak older than the window does not count: only [0.4, 0.3, 0.24] before the latest 0.19 -> 0.19 < 0.2
    assert collapse_reason([0.9, 0.4, 0.3, 0.24, 0.21], None, 0.5, window=3) is None
    assert collapse_reason([0.9, 0.4, 0.3, 0.24, 0.19], None, 0.5, window=3) is not None
    assert collapse_reason([], 0.05, 0.5, 3) is None
    assert collapse_reason([0.001], None, None, 3) is None  # both off


def test_collapse_monitor_fires_once_and_restores():
    mon = CollapseMonitor(floor=0.05, drop_frac=0.5, window=2)
    fired = [mon.update(step, h) is not None for step, h in enumerate([0.5, 0.45, None, 0.2, 0.1, 0.01], 1)]
    # step 4: 0.2 < 0.5 * max(0.5, 0.45) -> fires; later drops and the floor stay silent; None is skipped
    assert fired == [False, False, False, True, False, False]
    assert mon.fired_at == 4
    again = CollapseMonitor(0.05, 0.5, 2)
    again.load_state_dict(mon.state_dict())
    assert list(again.history) == [0.2, 0.1, 0.01] and again.update(7, 0.001) is None
    fresh = CollapseMonitor(0.05, 0.5, 2)
    fresh.load_state_dict({"history": [0.5, 0.45], "fired_at": None})
    assert fresh.update(3, 0.2) is not None  # the window carries over a resume
