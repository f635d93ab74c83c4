"""The step's batch-wide metrics of the policy before the update, each rank holding only its rows of the batch.

One process holds the whole batch: the metric functions of rlvr.metrics, as they always were. Several: their
sharded forms, which add up each rank's sums and counts and find order statistics by bisection
(`rlvr.sharded.kth_largest`): the same values up to the order of float summation. What crosses ranks per step:
a few dozen scalars, 25 histogram counts, and 32 rounds of 6 counts for the quantiles and top means.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlvr import distributed as dist
from rlvr.algo.cov import token_covariance
from rlvr.batch import RolloutBatch
from rlvr.metrics import covariance_stats, entropy_above_threshold, entropy_by_outcome, entropy_stats
from rlvr.metrics.covariance import TOP_FRAC
from rlvr.metrics.entropy_stats import (
    QUANTILES,
    bottom_key,
    entropy_hist,
    interpolate,
    quantile_ranks,
    top_count,
    top_key,
)
from rlvr.sharded import kth_largest, total


def sampler_gap(batch: RolloutBatch, logp: Tensor) -> dict[str, float]:
    """|log-prob under the learner (`logp` [n, L]) - under the sampler| over the batch's response tokens: the gap
    that TIS (rollout.tis_cap) corrects, and a sign of a weight sync gone wrong when it grows."""
    mask = batch.response_mask.to(logp.device)
    diff = (logp[mask] - batch.rollout_logp.to(mask.device)[mask]).abs()
    if dist.world_size() == 1:
        return {"rollout/logp_diff_mean": diff.mean().item(), "rollout/logp_diff_max": diff.max().item()}
    sum_n = total(torch.stack([diff.double().sum(), torch.tensor(diff.numel(), device=diff.device).double()]))
    top = dist.all_reduce_max_(
        diff.max(0, keepdim=True).values if diff.numel() else diff.new_full((1,), -1.0)
    )
    return {"rollout/logp_diff_mean": (sum_n[0] / sum_n[1]).item(), "rollout/logp_diff_max": top.item()}


def entropy_metrics(
    entropy: Tensor, logp: Tensor, mask: Tensor, advantages: Tensor, correct: Tensor, threshold: float
) -> dict:
    """The entropy distribution, its split by outcome and the logp-advantage covariance over the response tokens
    (mask [n, L]) of this rank's rows: entropy, logp [n, L], advantages [n], correct [n] bool."""
    if dist.world_size() == 1:
        tokens = entropy[mask]
        return {
            **entropy_stats(tokens),
            **entropy_above_threshold(tokens, threshold),
            **entropy_by_outcome(entropy, mask, correct),
            **covariance_stats(logp, advantages.to(logp.device), mask),
        }
    return {
        **sharded_entropy_stats(entropy[mask].float(), threshold),
        **sharded_by_outcome(entropy, mask, correct),
        **sharded_covariance_stats(logp, advantages.to(logp.device), mask),
    }


def _top_sum(x: Tensor, k: int) -> Tensor:
    """The sum (float64) of the k largest of every rank's x together."""
    t = kth_largest(x, [k])[0]
    above = x > t
    sums = total(torch.stack([x[above].double().sum(), above.sum().double()]))
    return sums[0] + (k - sums[1]) * t.double()


def sharded_entropy_stats(x: Tensor, threshold: float, top_frac: float = 0.2) -> dict:
    """`entropy_stats` and `entropy_above_threshold` of every rank's token entropies x [n_rank] together."""
    counts = total(torch.stack([torch.tensor(x.numel(), device=x.device).double(), x.double().sum(),
                                (x > threshold).sum().double()]))  # fmt: skip
    n = int(counts[0])
    if n == 0:
        return {}
    ranks, weights = quantile_ranks(n)
    # the (i+1)-th smallest is the (n-i)-th largest
    quantiles = interpolate(kth_largest(x, [n - i for i in ranks]), weights).tolist()
    k = top_count(top_frac, n)
    top = _top_sum(x, k)
    out: dict = {"entropy/mean": (counts[1] / n).item()}
    out.update({key: q for (key, _), q in zip(QUANTILES, quantiles)})
    out["entropy/hist"] = dist.all_reduce_sum_(entropy_hist(x)).tolist()
    out[top_key(top_frac)] = (top / k).item()
    if n > k:
        out[bottom_key(top_frac)] = ((counts[1] - top) / (n - k)).item()
    out["entropy/above_threshold_frac"] = (counts[2] / n).item()
    return out


def sharded_by_outcome(entropy: Tensor, mask: Tensor, correct: Tensor) -> dict[str, float]:
    """`entropy_by_outcome` over every rank's rows."""
    m = mask.bool()
    row = correct.to(device=m.device, dtype=torch.bool).unsqueeze(1)
    x = entropy.detach().double()
    sums = total(
        torch.stack(
            [x[m & row].sum(), (m & row).sum().double(), x[m & ~row].sum(), (m & ~row).sum().double()]
        )
    )
    out: dict[str, float] = {}
    for key, s, n in (
        ("entropy/correct_mean", sums[0], sums[1]),
        ("entropy/incorrect_mean", sums[2], sums[3]),
    ):
        if n > 0:
            out[key] = (s / n).item()
    return out


def sharded_covariance_stats(logp: Tensor, advantages: Tensor, mask: Tensor) -> dict[str, float]:
    """`covariance_stats` over every rank's rows."""
    m = mask.bool()
    n = int(total(m.sum()))
    if n == 0:
        return {}
    c = token_covariance(logp, advantages, m, total=total)[m]
    k = top_count(TOP_FRAC, n)
    mean = total(c.double().sum()) / n
    return {"cov/mean": mean.item(), f"cov/top{100 * TOP_FRAC:g}pct_mean": (_top_sum(c, k) / k).item()}
