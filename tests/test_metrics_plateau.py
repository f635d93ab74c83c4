"""PlateauDetector, the trigger of algo.kl.reset_on_plateau, on sequences worked by hand."""

import math

import pytest

from rlvr.metrics import PlateauDetector


def _fires(patience, values):
    detector = PlateauDetector(patience)
    return [detector.update(v) for v in values]


def test_fires_after_patience_evaluations_without_improvement_then_restarts_the_count():
    # patience 2: best 0.3 at the 2nd value; 0.3 (equal: not improved) stale 1, 0.2 stale 2 -> fire, count 0;
    # 0.25 stale 1, 0.3 stale 2 -> fire again (the best, 0.3, is kept across the firing)
    values = [0.1, 0.3, 0.3, 0.2, 0.25, 0.3]
    assert _fires(2, values) == [False, False, False, True, False, True]


def test_an_improvement_restarts_the_count():
    # patience 2: 0.5 best; 0.4 stale 1; 0.6 new best (count 0); 0.6 stale 1; 0.59 stale 2 -> fire
    assert _fires(2, [0.5, 0.4, 0.6, 0.6, 0.59]) == [False, False, False, False, True]


def test_patience_one_fires_on_every_evaluation_that_does_not_beat_the_best():
    # the first value is the best so far (nothing to beat); a flat metric then fires every time
    assert _fires(1, [0.2, 0.2, 0.2, 0.3, 0.1]) == [False, True, True, False, True]


def test_missing_evaluations_change_nothing():
    assert _fires(1, [None, math.nan, 0.2, None, math.nan, 0.2]) == [False] * 5 + [True]


def test_state_round_trip_continues_the_count():
    first = PlateauDetector(3)
    for v in (0.5, 0.4, 0.45):  # best 0.5, stale 2
        assert not first.update(v)
    second = PlateauDetector(3)
    second.load_state_dict(first.state_dict())
    assert second.state_dict() == {"best": 0.5, "stale": 2}
    assert second.update(0.5)  # stale 3 -> fires (equal to the best is no improvement)
    fresh = PlateauDetector(3)
    fresh.load_state_dict({})  # a checkpoint from before reset_on_plateau was on: start counting now
    assert fresh.state_dict() == {"best": None, "stale": 0}


def test_patience_must_be_positive():
    with pytest.raises(ValueError, match="patience"):
        PlateauDetector(0)
