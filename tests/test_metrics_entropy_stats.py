import math

import numpy as np
import pytest
import torch

from rlvr.metrics.entropy_stats import (
    ENTROPY_EDGES_FILENAME,
    ENTROPY_HIST_EDGES,
    entropy_edges,
    entropy_stats,
    write_entropy_edges,
)


def _entropies(n: int, seed: int = 0) -> torch.Tensor:
    # Log-uniform over 1e-6 .. 20 nats: exercises every bin, the first bin and above-range values.
    g = torch.Generator().manual_seed(seed)
    return torch.exp(torch.empty(n).uniform_(math.log(1e-6), math.log(20.0), generator=g))


def _numpy_hist(values: np.ndarray) -> np.ndarray:
    # numpy.histogram drops values outside [e_0, e_last]; our convention folds values above the
    # last edge into the last bin and values below 0 into the first, so clip them in first.
    edges = np.asarray(ENTROPY_HIST_EDGES)
    clipped = np.clip(values.astype(np.float64), edges[0], edges[-1])
    return np.histogram(clipped, bins=edges)[0]


def test_edges_documented_shape():
    edges = entropy_edges()
    assert edges == list(ENTROPY_HIST_EDGES)
    assert len(edges) == 26 and edges[0] == 0.0 and edges[1] == 1e-4 and edges[-1] == 16.0
    assert all(a < b for a, b in zip(edges, edges[1:]))
    ratios = np.diff(np.log(edges[1:]))
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-4)  # log-spaced (up to 6-digit rounding)


@pytest.mark.parametrize("n", [1, 2, 7, 1000])
def test_matches_numpy(n):
    x = _entropies(n, seed=n)
    stats = entropy_stats(x)
    v = x.numpy().astype(np.float64)
    assert stats["entropy/mean"] == pytest.approx(v.mean(), rel=1e-5)
    for key, q in [("entropy/p10", 0.1), ("entropy/p50", 0.5), ("entropy/p90", 0.9), ("entropy/p99", 0.99)]:
        assert stats[key] == pytest.approx(np.quantile(v, q), rel=1e-5, abs=1e-9), key
    assert stats["entropy/hist"] == _numpy_hist(v).tolist()
    assert sum(stats["entropy/hist"]) == n
    k = math.ceil(0.2 * n)
    assert stats["entropy/top20_mean"] == pytest.approx(np.sort(v)[::-1][:k].mean(), rel=1e-5)


def test_histogram_bin_boundaries():
    edges = ENTROPY_HIST_EDGES
    # 0 and 16 are the only edges a float32 holds exactly (float32(1e-4) < 1e-4 is in bin 0).
    x = torch.tensor([-1e-6, 0.0, 5e-5, 1.5e-4, 0.05, 0.9, 15.99, 16.0, 17.0, 1e6])
    hist = entropy_stats(x)["entropy/hist"]
    expected = [0] * (len(edges) - 1)
    expected[0] += 3  # -1e-6 (folded into the first bin), 0 (left edge, included) and 5e-5: [0, 1e-4)
    expected[1] += 1  # 1.5e-4 in [1e-4, 1.64755e-4)
    expected[edges.index(0.04)] += 1  # 0.05 in [0.04, 0.065902)
    expected[edges.index(0.8)] += 1  # 0.9 in [0.8, 1.31804)
    expected[-1] += 4  # 15.99, 16 (the last bin is closed), 17 and 1e6 (above range: last bin)
    assert hist == expected


def test_top_frac_and_key():
    x = torch.arange(10, dtype=torch.float32)  # 0..9
    stats = entropy_stats(x)
    assert stats["entropy/top20_mean"] == pytest.approx((9 + 8) / 2)
    stats = entropy_stats(x, top_frac=0.25)  # ceil(2.5) = 3 -> (9+8+7)/3
    assert stats["entropy/top25_mean"] == pytest.approx(8.0)
    # 0.1 * 30 is 3.0000000000000004 in floats: still 3 tokens, not 4
    assert entropy_stats(torch.arange(30.0), top_frac=0.1)["entropy/top10_mean"] == pytest.approx(28.0)


def test_fork_positions_against_the_rest():
    # 10 tokens; the top 20% is k = ceil(0.2 * 10) = 2 tokens, 2.0 and 1.0 -> (2 + 1) / 2 = 1.5; the other 8:
    # 0.5 + 0.3 + 0.2 + 0.1 + 0.1 + 0.05 + 0.05 + 0 = 1.3 -> 1.3 / 8 = 0.1625 (order of the input is irrelevant)
    x = torch.tensor([0.1, 2.0, 0.0, 0.05, 0.3, 1.0, 0.2, 0.05, 0.5, 0.1])
    stats = entropy_stats(x)
    assert stats["entropy/top20_mean"] == pytest.approx(1.5)
    assert stats["entropy/bottom80_mean"] == pytest.approx(0.1625)
    # 0.25: k = ceil(2.5) = 3 (2, 1, 0.5) -> the other 7 average 0.8 / 7
    assert entropy_stats(x, top_frac=0.25)["entropy/bottom75_mean"] == pytest.approx(0.8 / 7)
    # no "other positions" left: one token, or the top fraction is every token
    assert "entropy/bottom80_mean" not in entropy_stats(torch.tensor([0.7]))
    assert not any(k.startswith("entropy/bottom") for k in entropy_stats(x, top_frac=1.0))


def test_keys_and_types():
    stats = entropy_stats(_entropies(50).to(torch.bfloat16))
    assert set(stats) == {
        "entropy/mean",
        "entropy/p10",
        "entropy/p50",
        "entropy/p90",
        "entropy/p99",
        "entropy/hist",
        "entropy/top20_mean",
        "entropy/bottom80_mean",
    }
    assert all(isinstance(v, float) for k, v in stats.items() if k != "entropy/hist")
    assert all(isinstance(c, int) for c in stats["entropy/hist"])


def test_empty_and_bad_input():
    assert entropy_stats(torch.empty(0)) == {}
    with pytest.raises(ValueError, match="flat"):
        entropy_stats(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="top_frac"):
        entropy_stats(torch.zeros(3), top_frac=0.0)


def test_nan_is_visible_not_binned():
    stats = entropy_stats(torch.tensor([0.5, float("nan"), 1.0]))
    assert math.isnan(stats["entropy/mean"])
    assert sum(stats["entropy/hist"]) == 2


def test_write_edges(tmp_path):
    import json

    path = write_entropy_edges(tmp_path)
    assert path == tmp_path / ENTROPY_EDGES_FILENAME
    assert json.loads(path.read_text()) == {"entropy/hist": list(ENTROPY_HIST_EDGES)}
