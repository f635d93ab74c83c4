"""PPO-style clipped policy-gradient loss (GRPO/DAPO), truncated importance sampling, and loss aggregation."""

from __future__ import annotations

import torch
from torch import Tensor


def per_token_advantages(advantages: Tensor, logp: Tensor) -> Tensor:
    """advantages: [B] (one per sequence) or [B, T] -> a tensor that broadcasts against logp [B, T]."""
    if advantages.shape == logp.shape[:1]:
        return advantages.unsqueeze(1)
    if advantages.shape != logp.shape:
        raise ValueError(
            f"advantages must be [B] or [B, T] for logp {tuple(logp.shape)}, got {tuple(advantages.shape)}"
        )
    return advantages


def ppo_clip_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    eps_low: float,
    eps_high: float,
    dual_c: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-token clipped surrogate loss (to minimise), with clip-higher (eps_high != eps_low) and dual clip.

    logp, old_logp: [B, T]; advantages: [B] (broadcast over T) or [B, T].
      ratio = exp(logp - old_logp)
      loss  = -min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A)
      with dual_c (> 1, dual-clip PPO), for A < 0 only: loss = min(loss, -dual_c * A)
    Returns (loss [B, T], info) with info["ratio"] [B, T] (detached) and boolean [B, T] tensors:
      "clipped_low":  A < 0 and ratio < 1 - eps_low   (clip active, gradient zero)
      "clipped_high": A > 0 and ratio > 1 + eps_high  (clip active, gradient zero)
      "dual_clipped": dual_c is set, A < 0 and the dual cap is active (gradient zero)
    logp - old_logp is clamped to [-20, 20] before exp: beyond that the token is clipped anyway (or its
    loss is unbounded), and an overflowing ratio would turn the zero gradient of a clipped token into NaN.
    """
    if logp.dim() != 2 or logp.shape != old_logp.shape:
        raise ValueError(
            f"logp and old_logp must both be [B, T], got {tuple(logp.shape)} and {tuple(old_logp.shape)}"
        )
    advantages = per_token_advantages(advantages, logp)
    if not (0 <= eps_low <= 1 and eps_high >= 0):
        raise ValueError(
            f"need 0 <= eps_low <= 1 and eps_high >= 0, got eps_low={eps_low}, eps_high={eps_high}"
        )
    if dual_c is not None and dual_c <= 1:
        raise ValueError(f"dual_c must be > 1 (or None), got {dual_c}")

    ratio = torch.exp((logp - old_logp).clamp(-20.0, 20.0))
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    loss = torch.maximum(unclipped, clipped)
    negative = advantages < 0
    info = {
        "ratio": ratio.detach(),
        "clipped_low": negative & (ratio < 1.0 - eps_low),
        "clipped_high": (advantages > 0) & (ratio > 1.0 + eps_high),
        "dual_clipped": torch.zeros_like(loss, dtype=torch.bool),
    }
    if dual_c is not None:
        # With A < 0 and a huge ratio the clipped objective is unbounded below; the cap bounds the step.
        cap = -dual_c * advantages
        capped = negative & (loss > cap)
        loss = torch.where(capped, cap, loss)
        info["dual_clipped"] = capped
    return loss, info


def tis_weights(old_logp: Tensor, rollout_logp: Tensor, cap: float) -> Tensor:
    """Truncated importance sampling (TIS) weights for the rollout/learner mismatch.

    old_logp: [B, T] log-probabilities of the sampled tokens under the learner before the update (pi_learner);
    rollout_logp: [B, T] the same tokens' log-probabilities reported by the sampler (pi_rollout).
      w = min(exp(old_logp - rollout_logp), cap)     (detached: a correction factor, not a path for gradient)
    The per-token policy loss is multiplied by w: tokens the sampler over-sampled relative to the learner get
    weight < 1, under-sampled ones up to `cap`. The cap binds exactly where w == cap. cap must be >= 1.
    An overflowing exp gives inf, and min(inf, cap) = cap: no NaN for finite inputs.
    """
    if old_logp.shape != rollout_logp.shape:
        raise ValueError(
            f"old_logp {tuple(old_logp.shape)} and rollout_logp {tuple(rollout_logp.shape)} must have the same shape"
        )
    if cap < 1:
        raise ValueError(f"cap must be >= 1, got {cap}")
    return torch.exp(old_logp.detach() - rollout_logp.detach()).clamp(max=cap)


LOSS_AGG_MODES = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")


def loss_token_weights(mask: Tensor, mode: str, max_len: int | None = None) -> Tensor:
    """Per-token weights w (float32 [B, T]) such that the aggregate loss is (loss * w).sum().

    mask: [B, T] bool/0-1 of the response tokens that count. Computing w once on the full (mini-)batch and
    summing (loss * w) per micro-batch reproduces the full-batch normaliser exactly.
      token_mean (DAPO Eq. 12):           w = mask / mask.sum()           (every token counts equally)
      seq_mean_token_mean (GRPO Eq. 3):   w = mask / len_i / n_seq        (every sequence counts equally)
      seq_mean_token_sum_norm (Dr. GRPO): w = mask / max_len / n_seq     (constant per token: no length bias)
    len_i = kept tokens of row i; n_seq = rows with at least one kept token. max_len, needed by the Dr. GRPO
    mode only, is a constant of the run, the generation budget (rollout.max_new_tokens): a normaliser that
    followed the batch's padded width would change the step size from one batch to the next.
    An all-zero mask gives all-zero weights (no NaN).
    """
    if mode not in LOSS_AGG_MODES:
        raise ValueError(f"unknown loss aggregation {mode!r}; expected one of {LOSS_AGG_MODES}")
    if mask.dim() != 2:
        raise ValueError(f"mask must be [B, T], got shape {tuple(mask.shape)}")
    if mode == "seq_mean_token_sum_norm" and (max_len is None or max_len < 1):
        raise ValueError(f"seq_mean_token_sum_norm needs max_len >= 1 (the generation budget), got {max_len}")
    m = mask.to(torch.float32)
    # Clamping a denominator is enough to avoid 0/0: whenever it is 0 the numerator is 0 too.
    tiny = torch.finfo(torch.float32).tiny
    if mode == "token_mean":
        return m / m.sum().clamp_min(tiny)
    seq_len = m.sum(dim=1, keepdim=True)
    n_seq = (seq_len > 0).sum().clamp_min(1)
    if mode == "seq_mean_token_mean":
        return m / seq_len.clamp_min(tiny) / n_seq
    return m / max_len / n_seq


def aggregate_loss(loss: Tensor, mask: Tensor, mode: str, max_len: int | None = None) -> Tensor:
    """loss, mask: [B, T] -> scalar (loss * loss_token_weights(mask, mode, max_len)).sum()."""
    if loss.shape != mask.shape:
        raise ValueError(f"loss {tuple(loss.shape)} and mask {tuple(mask.shape)} must have the same shape")
    return (loss * loss_token_weights(mask, mode, max_len)).sum()
