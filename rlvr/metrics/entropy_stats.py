"""Summary statistics of per-token policy entropy, computed every RL step.

The mean alone hides how entropy collapses: the bulk of tokens goes to ~0 nats early while a
small set of high-entropy "forking" tokens carries the exploration. So each step logs the
mean, quantiles, the mean of the top 20% and a histogram over fixed bins.

Histogram bins (``ENTROPY_HIST_EDGES``, in nats) are fixed so that histograms of different
steps and runs can be compared and stacked into a heat map:

* edge 0 is ``0.0`` and edges 1..25 are 25 log-spaced values from ``1e-4`` to ``16`` (rounded
  to 6 significant digits so that the written values read cleanly); 25 bins in all.
  16 nats is above the entropy of a uniform distribution over any real vocabulary
  (ln 150k = 11.9).
* bin ``i`` counts values in ``[e_i, e_{i+1})``; the last bin is closed, ``[e_24, e_25]``,
  like ``numpy.histogram``.
* values above the last edge are counted in the last bin and values below 0 (tiny negative
  rounding from a logsumexp-based entropy) in the first, so the counts always sum to the
  number of non-NaN tokens.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

_N_LOG_EDGES = 25
_LOG_EDGE_MIN = 1e-4
_LOG_EDGE_MAX = 16.0


def _make_edges() -> tuple[float, ...]:
    ratio = _LOG_EDGE_MAX / _LOG_EDGE_MIN
    log_edges = [_LOG_EDGE_MIN * ratio ** (i / (_N_LOG_EDGES - 1)) for i in range(_N_LOG_EDGES)]
    return (0.0, *(float(f"{e:.6g}") for e in log_edges))


ENTROPY_HIST_EDGES: tuple[float, ...] = _make_edges()
"""Bin edges in nats: 0, then 25 log-spaced edges 1e-4 .. 16 (see the module docstring)."""

ENTROPY_EDGES_FILENAME = "entropy_hist_edges.json"
"""Name of the file in the run directory holding the edges that ``entropy/hist`` counts over."""

QUANTILES = (("entropy/p10", 0.10), ("entropy/p50", 0.50), ("entropy/p90", 0.90), ("entropy/p99", 0.99))


def entropy_edges() -> list[float]:
    """The histogram bin edges in nats, as a list (for writing once into the run directory)."""
    return list(ENTROPY_HIST_EDGES)


def write_entropy_edges(run_dir: str | os.PathLike) -> Path:
    """Write ``{"entropy/hist": [edges...]}`` to ``<run_dir>/entropy_hist_edges.json``; returns the path.

    ``rlvr-report`` reads it to label the histogram axis; without it, it uses ``ENTROPY_HIST_EDGES``.
    """
    path = Path(run_dir) / ENTROPY_EDGES_FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"entropy/hist": entropy_edges()}) + "\n")
    return path


def _pct_key(part: str, frac: float) -> str:
    pct = round(100 * frac, 6)
    return f"entropy/{part}{int(pct) if pct == int(pct) else pct:g}_mean"


def top_key(top_frac: float) -> str:
    return _pct_key("top", top_frac)


def bottom_key(top_frac: float) -> str:
    return _pct_key("bottom", 1.0 - top_frac)


def top_count(top_frac: float, n: int) -> int:
    """k = ceil(top_frac * n), at least 1: how many of n values a top-fraction mean averages."""
    # round() guards against float noise such as 0.1 * 30 = 3.0000000000000004 -> ceil 4.
    return max(1, math.ceil(round(top_frac * n, 9)))


def quantile_ranks(n: int) -> tuple[list[int], list[float]]:
    """For the QUANTILES of n values: the order statistics they interpolate between (0-based ranks in ascending
    order, every quantile's lower one, then every upper one) and the upper ones' weights. Linear interpolation
    at position q*(n-1), like numpy's default."""
    positions = [q * (n - 1) for _, q in QUANTILES]
    lo = [math.floor(p) for p in positions]
    hi = [min(i + 1, n - 1) for i in lo]
    return lo + hi, [p - i for p, i in zip(positions, lo)]


def interpolate(picked: torch.Tensor, weights: list[float]) -> torch.Tensor:
    """The quantiles (float32) from the order statistics `picked` at `quantile_ranks`' ranks and its weights."""
    v_lo, v_hi = picked[: len(weights)], picked[len(weights) :]
    return v_lo + (v_hi - v_lo) * torch.tensor(weights, device=picked.device, dtype=torch.float32)


def entropy_stats(entropy: torch.Tensor, top_frac: float = 0.2) -> dict[str, float | list[int]]:
    """Mean, quantiles, top-fraction mean and fixed-bin histogram of per-token entropies.

    entropy: [n] per-token entropies (nats) of the valid response tokens only (padding and
        prompt tokens already removed), any float dtype, any device.
    top_frac: fraction of tokens, by largest entropy, averaged into ``entropy/top{pct}_mean``
        (``entropy/top20_mean`` for the default 0.2); ``k = ceil(top_frac * n)`` tokens. The other
        ``n - k`` tokens are averaged into ``entropy/bottom{100 - pct}_mean`` (``entropy/bottom80_mean``):
        the 80/20 paper's contrast of the forking tokens against all other positions (left out when
        ``n - k`` is 0).

    Returns ``{"entropy/mean", "entropy/p10", "entropy/p50", "entropy/p90", "entropy/p99",
    "entropy/top20_mean", "entropy/bottom80_mean": float, "entropy/hist": list[int]}``; quantiles use linear
    interpolation between order statistics (``numpy.quantile``'s default); the histogram
    counts over ``ENTROPY_HIST_EDGES`` (NaNs are not counted; NaNs make the other values NaN).
    Empty input returns ``{}`` (the caller logs nothing).

    Everything is computed in float32 on the tensor's device with a single sort; only the
    small results are copied to the CPU (two transfers).
    """
    if entropy.ndim != 1:
        raise ValueError(
            f"entropy must be a flat [n] tensor of valid-token entropies, got shape {tuple(entropy.shape)}"
        )
    if not 0.0 < top_frac <= 1.0:
        raise ValueError(f"top_frac must be in (0, 1], got {top_frac}")
    n = entropy.numel()
    if n == 0:
        return {}

    x = entropy.detach().to(torch.float32)
    # torch.sort puts NaN last, so a NaN makes the high quantiles and the top mean NaN,
    # and the mean is NaN anyway: a NaN entropy is a bug upstream and should be visible.
    x_sorted = torch.sort(x).values

    ranks, weights = quantile_ranks(n)
    quantiles = interpolate(x_sorted[torch.tensor(ranks, device=x.device)], weights)

    k = top_count(top_frac, n)
    top_mean = x_sorted[n - k :].mean()
    # NaN sorts last, into the top k: the bottom mean stays finite unless more than k values are NaN
    bottom = [x_sorted[: n - k].mean().reshape(1)] if n > k else []

    scalars = torch.cat([x.mean().reshape(1), quantiles, top_mean.reshape(1), *bottom]).tolist()

    hist = entropy_hist(x_sorted).tolist()  # the sorted copy keeps this one pass over n values

    out: dict[str, float | list[int]] = {"entropy/mean": scalars[0]}
    for (key, _), value in zip(QUANTILES, scalars[1:5]):
        out[key] = value
    out["entropy/hist"] = hist
    out[top_key(top_frac)] = scalars[5]
    if bottom:
        out[bottom_key(top_frac)] = scalars[6]
    return out


def entropy_hist(x: torch.Tensor) -> torch.Tensor:
    """Counts (long [25]) of the values x [n] over ``ENTROPY_HIST_EDGES``, NaNs left out."""
    # Compare in float64 against the exact edges, so a value is binned exactly as numpy.histogram
    # bins it (float32(1e-4) < 1e-4).
    edges = torch.tensor(ENTROPY_HIST_EDGES, device=x.device, dtype=torch.float64)
    n_bins = len(ENTROPY_HIST_EDGES) - 1
    finite = x[~torch.isnan(x)].to(torch.float64)
    # right=True gives i with edges[i-1] <= v < edges[i], i.e. bin i-1 of a half-open [e_i, e_{i+1});
    # the clamp closes the last bin (v == 16 and above) and folds v < 0 into the first.
    bins = (torch.bucketize(finite, edges, right=True) - 1).clamp_(0, n_bins - 1)
    return torch.bincount(bins, minlength=n_bins)


def entropy_above_threshold(entropy: torch.Tensor, threshold: float) -> dict[str, float]:
    """``{"entropy/above_threshold_frac": fraction of tokens with entropy > threshold}``.

    entropy: [n] per-token entropies (nats) of the valid response tokens. The default threshold of the
    trainer (``monitor.entropy_threshold`` = 0.672 nats) is the 80th percentile of token entropy that Wang
    et al. 2025 ("Beyond the 80/20 rule") report for Qwen3: the fraction tracks how many "forking" tokens
    are left. Empty input returns ``{}``.
    """
    if entropy.ndim != 1:
        raise ValueError(f"entropy must be a flat [n] tensor, got shape {tuple(entropy.shape)}")
    if entropy.numel() == 0:
        return {}
    frac = (entropy.detach().to(torch.float32) > threshold).float().mean().item()
    return {"entropy/above_threshold_frac": frac}


def entropy_by_outcome(entropy: torch.Tensor, mask: torch.Tensor, correct: torch.Tensor) -> dict[str, float]:
    """Mean token entropy of the correct and of the incorrect responses.

    entropy: [N, L] per-token entropies; mask: [N, L] bool of the response tokens that count; correct: [N]
    bool, one verdict per sequence. Means pool the tokens of all sequences in the class (as
    ``entropy/mean`` pools all tokens), so long responses weigh more. Returns
    ``{"entropy/correct_mean", "entropy/incorrect_mean"}``, leaving out a class with no tokens.
    """
    if entropy.dim() != 2 or entropy.shape != mask.shape:
        raise ValueError(
            f"entropy and mask must be [N, L] of one shape, got {tuple(entropy.shape)}, {tuple(mask.shape)}"
        )
    if correct.shape != entropy.shape[:1]:
        raise ValueError(
            f"correct must be [N] = {entropy.shape[0]} per-sequence flags, got {tuple(correct.shape)}"
        )
    m = mask.bool()
    row = correct.to(device=m.device, dtype=torch.bool).unsqueeze(1)
    x = entropy.detach().to(torch.float32)
    out: dict[str, float] = {}
    for key, sel in (("entropy/correct_mean", m & row), ("entropy/incorrect_mean", m & ~row)):
        n = int(sel.sum())
        if n:
            out[key] = (x[sel].sum() / n).item()
    return out
