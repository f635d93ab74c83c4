import itertools
from math import comb

import pytest

from rlvr.metrics.passk import mean_pass_at_k, pass_at_k


def _brute_force(n: int, c: int, k: int) -> float:
    # Samples 0..c-1 are correct; fraction of k-subsets containing at least one of them.
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 6])
def test_matches_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(_brute_force(n, c, k), abs=1e-12), (n, c, k)


def test_hand_values():
    assert pass_at_k(2, 1, 1) == 0.5
    assert pass_at_k(5, 1, 2) == pytest.approx(0.4)  # 1 - C(4,2)/C(5,2) = 1 - 6/10
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is the fraction correct
    assert pass_at_k(5, 0, 5) == 0.0
    assert pass_at_k(5, 1, 5) == 1.0


def test_large_n_is_stable():
    # C(1000, 500) overflows a float; the product form does not.
    n, c, k = 1000, 3, 500
    assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k), rel=1e-12)


def test_mean_and_errors():
    assert mean_pass_at_k([0, 1, 2], n=2, ks=[1, 2]) == pytest.approx({1: 0.5, 2: (0 + 1 + 1) / 3})
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(2, 1, 3)
    with pytest.raises(ValueError, match="c <= n"):
        pass_at_k(2, 3, 1)
    with pytest.raises(ValueError, match="at least one"):
        mean_pass_at_k([], n=2, ks=[1])
