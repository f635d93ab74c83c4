"""Covariance-based entropy control: Clip-Cov and KL-Cov (Cui et al. 2025, "The Entropy Mechanism of
Reinforcement Learning for Reasoning Language Models").

Under a softmax policy the step change of entropy is driven by the covariance between a token's log-probability
and its advantage: confident tokens (high log p) with positive advantage lower the entropy. A tiny fraction of
tokens carries extreme covariance, so both methods act only on a few of them:

    Cov_i = (logp_i - mean_j logp_j) * (A_i - mean_j A_j)        over the N loss tokens of the (mini-)batch

* Clip-Cov: among tokens with omega_low < Cov_i < omega_high that the PPO clip does not already clip, pick
  floor(r * N) (at least 1) uniformly at random and remove them from the policy gradient (their loss becomes 0).
  Defaults r = 2e-4, bounds (1, 5).
* KL-Cov: pick the floor(k * N) (at least 1) tokens of largest Cov_i and add beta * |logp - old_logp| to their
  loss, a KL-like penalty against the rollout (old) policy. Defaults k = 2e-3, beta = 1.

Token counts, the open bounds and the exclusion of PPO-clipped tokens follow the authors' implementation (verl's
``compute_policy_loss_clip_cov``): N counts every loss token, clipped or not, and the covariance is the current
policy's. As there, the KL-Cov surrogate is the plain ratio objective -A * ratio (no PPO clip: the penalty is the
regulariser), while Clip-Cov keeps the PPO-clipped loss and zeroes the selected tokens.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rlvr.algo.policy_loss import per_token_advantages

COV_MODES = (None, "clip_cov", "kl_cov")


def token_covariance(logp: Tensor, advantages: Tensor, mask: Tensor, total=None) -> Tensor:
    """Per-token centred product of log-probability and advantage (Cui et al. 2025, eq. of Cov(y_i)).

    logp: [B, T]; advantages: [B] (one per sequence, broadcast over T) or [B, T]; mask: [B, T] bool of the
    tokens that count (N = mask.sum()). Means are over those N tokens (a sequence's advantage counts once per
    token). Returns float32 [B, T]: (logp - mean logp) * (A - mean A) on mask, 0 elsewhere. Its mean over the
    mask is the covariance. No gradient flows (selection statistic, not a loss). `total`: adds up a partial sum
    over the batch's other rows (on other data-parallel ranks: `rlvr.sharded.total`) when `logp` holds only some.
    """
    if logp.dim() != 2 or logp.shape != mask.shape:
        raise ValueError(
            f"logp and mask must be [B, T] of the same shape, got {tuple(logp.shape)}, {tuple(mask.shape)}"
        )
    advantages = per_token_advantages(advantages, logp)
    m = mask.bool()
    x = logp.detach().float()
    a = advantages.detach().float().expand_as(x)
    total = total or (lambda t: t)
    n = total(m.sum())
    if n == 0:
        return torch.zeros_like(x)
    mean_x = total(x[m].sum()) / n
    mean_a = total(a[m].sum()) / n
    return torch.where(m, (x - mean_x) * (a - mean_a), torch.zeros_like(x))


def _count(frac: float, n: int) -> int:
    # int() like the reference code; the 1e-9 keeps float noise (2e-3 * 1500 = 2.9999999999999996) from losing one
    return max(1, int(math.floor(frac * n + 1e-9)))


def clip_cov_select(
    cov: Tensor,
    mask: Tensor,
    clip_frac: float,
    bound_low: float,
    bound_high: float,
    generator: torch.Generator | None = None,
    exclude: Tensor | None = None,
) -> Tensor:
    """Clip-Cov token selection: bool [B, T].

    cov: [B, T] from ``token_covariance``; mask: [B, T] bool (N = mask.sum()); exclude: [B, T] bool of tokens that
    may not be drawn (those the PPO clip already clips: their gradient is 0 anyway). Candidates are mask tokens
    not excluded with bound_low < cov < bound_high (open bounds); max(1, floor(clip_frac * N)) of them are drawn
    uniformly without replacement (all of them when there are fewer). generator: a CPU torch.Generator for the
    draw (None = torch's global RNG, which the trainer seeds and checkpoints).
    """
    if cov.shape != mask.shape or cov.dim() != 2:
        raise ValueError(
            f"cov and mask must be [B, T] of the same shape, got {tuple(cov.shape)}, {tuple(mask.shape)}"
        )
    if exclude is not None and exclude.shape != mask.shape:
        raise ValueError(f"exclude {tuple(exclude.shape)} must match mask {tuple(mask.shape)}")
    if not 0 < clip_frac <= 1:
        raise ValueError(f"clip_frac must be in (0, 1], got {clip_frac}")
    if bound_low > bound_high:
        raise ValueError(f"need bound_low <= bound_high, got [{bound_low}, {bound_high}]")
    m = mask.bool()
    selected = torch.zeros(m.numel(), dtype=torch.bool, device=m.device)
    n = int(m.sum())
    if n == 0:
        return selected.view_as(m)
    allowed = m if exclude is None else m & ~exclude.bool()
    candidates = (allowed & (cov > bound_low) & (cov < bound_high)).flatten().nonzero().squeeze(1)
    take = min(_count(clip_frac, n), candidates.numel())
    pick = torch.randperm(candidates.numel(), generator=generator)[:take].to(candidates.device)
    selected[candidates[pick]] = True
    return selected.view_as(m)


def kl_cov_select(cov: Tensor, mask: Tensor, k_frac: float) -> Tensor:
    """KL-Cov token selection: bool [B, T], the max(1, floor(k_frac * N)) mask tokens of largest cov.

    cov: [B, T] from ``token_covariance``; mask: [B, T] bool (N = mask.sum()). Ties go to the lower flat index.
    """
    if cov.shape != mask.shape or cov.dim() != 2:
        raise ValueError(
            f"cov and mask must be [B, T] of the same shape, got {tuple(cov.shape)}, {tuple(mask.shape)}"
        )
    if not 0 < k_frac <= 1:
        raise ValueError(f"k_frac must be in (0, 1], got {k_frac}")
    m = mask.bool()
    selected = torch.zeros(m.numel(), dtype=torch.bool, device=m.device)
    valid = m.flatten().nonzero().squeeze(1)
    if valid.numel() == 0:
        return selected.view_as(m)
    k = min(_count(k_frac, valid.numel()), valid.numel())
    # only the valid positions are sorted, so padding is never picked; stable keeps ties in flat-index order
    order = torch.sort(cov.detach().flatten()[valid], descending=True, stable=True).indices
    selected[valid[order[:k]]] = True
    return selected.view_as(m)


def clip_cov_loss(pg_loss: Tensor, selected: Tensor) -> Tensor:
    """Clip-Cov: per-token loss [B, T] with the selected tokens' loss (and gradient) set to 0.

    pg_loss: [B, T] per-token policy loss (e.g. ``ppo_clip_loss``); selected: [B, T] bool from ``clip_cov_select``.
    """
    if pg_loss.shape != selected.shape:
        raise ValueError(f"pg_loss {tuple(pg_loss.shape)} and selected {tuple(selected.shape)} must match")
    return pg_loss * (~selected.bool()).to(pg_loss.dtype)


def kl_cov_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, selected: Tensor, kl_coef: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """KL-Cov per-token loss (to minimise) and info, with the same info keys as ``ppo_clip_loss``.

    logp (with grad), old_logp: [B, T]; advantages: [B] or [B, T]; selected: [B, T] bool from ``kl_cov_select``.
      ratio = exp(logp - old_logp)
      loss  = -A * ratio                                   (unselected tokens; no PPO clip, as the authors' code)
      loss  = -A * ratio + kl_coef * |logp - old_logp|      (selected tokens)
    Returns (loss [B, T], info) with info["ratio"] (detached), info["abs_kl"] = |logp - old_logp| (detached) and
    all-False "clipped_low", "clipped_high", "dual_clipped" (nothing is clipped).
    """
    if logp.dim() != 2 or logp.shape != old_logp.shape or logp.shape != selected.shape:
        raise ValueError(
            f"logp, old_logp and selected must be [B, T] of one shape, got {tuple(logp.shape)}, "
            f"{tuple(old_logp.shape)}, {tuple(selected.shape)}"
        )
    advantages = per_token_advantages(advantages, logp)
    if kl_coef < 0:
        raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
    log_ratio = logp - old_logp
    # same clamp as ppo_clip_loss: an overflowing ratio would turn a finite gradient into NaN
    ratio = torch.exp(log_ratio.clamp(-20.0, 20.0))
    abs_kl = log_ratio.abs()
    loss = -advantages * ratio + kl_coef * abs_kl * selected.to(logp.dtype)
    no = torch.zeros_like(selected, dtype=torch.bool)
    info = {
        "ratio": ratio.detach(),
        "abs_kl": abs_kl.detach(),
        "clipped_low": no,
        "clipped_high": no,
        "dual_clipped": no,
    }
    return loss, info
