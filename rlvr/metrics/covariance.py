"""Covariance between token log-probability and advantage: the driver of entropy change (Cui et al. 2025).

For a softmax policy trained by policy gradient, the change in entropy from one step is approximately
``-Cov(logp, A)`` over the batch's tokens: when confident tokens (high log p) get positive advantage the
entropy falls. The per-token centred products are heavy-tailed (a few tokens dominate), so besides their mean
(the covariance) the mean of the top 0.2% is logged, the tail that Clip-Cov and KL-Cov act on.
"""

from __future__ import annotations

import torch

from rlvr.algo.cov import token_covariance
from rlvr.metrics.entropy_stats import top_count

TOP_FRAC = 0.002


def covariance_stats(
    logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, top_frac: float = TOP_FRAC
) -> dict[str, float]:
    """``{"cov/mean", "cov/top0.2pct_mean"}`` over the response tokens.

    logp: [N, L] log-probabilities of the sampled tokens (the policy before the update); advantages: [N] per
    sequence (or [N, L]); mask: [N, L] bool of the response tokens. Per token c_i = (logp_i - mean logp) *
    (A_i - mean A), means over the n masked tokens. ``cov/mean`` = mean of c_i (the covariance);
    ``cov/top{pct}pct_mean`` = mean of the ceil(top_frac * n) largest c_i (at least one token). Empty mask: ``{}``.
    """
    if not 0 < top_frac <= 1:
        raise ValueError(f"top_frac must be in (0, 1], got {top_frac}")
    m = mask.bool()
    n = int(m.sum())
    if n == 0:
        return {}
    c = token_covariance(logp, advantages.to(logp.device), m)[m]
    k = top_count(top_frac, n)
    top = torch.topk(c, k).values.mean()
    return {"cov/mean": c.mean().item(), f"cov/top{100 * top_frac:g}pct_mean": top.item()}
