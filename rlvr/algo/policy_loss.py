"""PPO-style clipped policy-gradient loss (GRPO/DAPO), importance weights for the sampler gap, and loss aggregation."""

from __future__ import annotations

from dataclasses import dataclass

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


IS_MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask", "icepop")


def sampler_is_weights(
    old_logp: Tensor,
    rollout_logp: Tensor,
    resp: Tensor,
    mode: str,
    cap: float = 3.0,
    low: float = 0.5,
    high: float = 5.0,
) -> tuple[Tensor, Tensor]:
    """Importance weights for the gap between the policy that sampled (pi_rollout) and the learner's (pi_old).

    old_logp, rollout_logp: [B, T] the sampled tokens' log-probs under each; resp: [B, T] bool, the response
    tokens (a sequence's ratio multiplies over them). With r_t = pi_old / pi_rollout = exp(old_t - rollout_t) and
    a sequence's rho_i = exp(sum over its response tokens of (old_t - rollout_t)):

      token_truncate      w_t = min(r_t, cap)                       (TIS, Yao et al. 2025)
      token_mask          w_t = r_t if r_t <= cap else 0
      sequence_truncate   w_t = min(rho_i, cap) on every token of sequence i
      sequence_mask       w_t = rho_i if rho_i <= cap else 0        (TRL's default mode, cap 3)
      icepop              w_t = r_t if low <= r_t <= high else 0    (IcePop: Ling team 2025; INTELLECT-3 Eq. 1)

    Returns (w [B, T], acted [B, T] bool: the response tokens the rule truncated or masked), both detached and
    zero / False off the response. E.g. one sequence with log-ratios (0.5, 0.5): token_truncate at cap 1.5 gives
    (1.5, 1.5); sequence_mask at cap 3 gives rho = e = 2.718 on both; at cap 2, 0 on both."""
    if not old_logp.shape == rollout_logp.shape == resp.shape:
        raise ValueError(
            f"old_logp {tuple(old_logp.shape)}, rollout_logp {tuple(rollout_logp.shape)} and resp "
            f"{tuple(resp.shape)} must have one shape"
        )
    if mode not in IS_MODES:
        raise ValueError(f"mode must be one of {', '.join(IS_MODES)}, got {mode!r}")
    resp = resp.bool()
    log_ratio = (old_logp.detach() - rollout_logp.detach()).masked_fill(~resp, 0.0)
    if mode.startswith("sequence"):
        log_ratio = log_ratio.sum(-1, keepdim=True).expand_as(log_ratio)
    ratio = torch.exp(log_ratio)  # an overflow is inf, which every rule below truncates or masks
    if mode.endswith("truncate"):
        acted = ratio > cap
        w = ratio.clamp(max=cap)
    else:
        acted = (ratio > cap) if mode != "icepop" else (ratio < low) | (ratio > high)
        w = ratio.masked_fill(acted, 0.0)
    acted = acted & resp
    return w.masked_fill(~resp, 0.0), acted


@dataclass(frozen=True)
class ISCorrection:
    """One of `sampler_is_weights`' rules with its bounds (rollout.is_mode, is_cap, icepop_bounds)."""

    mode: str
    cap: float = 3.0
    low: float = 0.5
    high: float = 5.0

    def weights(self, old_logp: Tensor, rollout_logp: Tensor, resp: Tensor) -> tuple[Tensor, Tensor]:
        return sampler_is_weights(old_logp, rollout_logp, resp, self.mode, self.cap, self.low, self.high)


LOSS_AGG_MODES = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")


def loss_token_weights(
    mask: Tensor, mode: str, max_len: int | None = None, totals: tuple[Tensor, Tensor] | None = None
) -> Tensor:
    """Per-token weights w (float32 [B, T]) such that the aggregate loss is (loss * w).sum().

    mask: [B, T] bool/0-1 of the response tokens that count. Computing w once on the full (mini-)batch and
    summing (loss * w) per micro-batch reproduces the full-batch normaliser exactly.
      token_mean (DAPO Eq. 12):           w = mask / mask.sum()           (every token counts equally)
      seq_mean_token_mean (GRPO Eq. 3):   w = mask / len_i / n_seq        (every sequence counts equally)
      seq_mean_token_sum_norm (Dr. GRPO): w = mask / max_len / n_seq     (constant per token: no length bias)
    len_i = kept tokens of row i; n_seq = rows with at least one kept token. max_len, needed by the Dr. GRPO
    mode only, is a constant of the run, the generation budget (rollout.max_new_tokens): a normaliser that
    followed the batch's padded width would change the step size from one batch to the next.
    An all-zero mask gives all-zero weights (no NaN). `totals`: (mask.sum() as float32, n_seq as long) of the whole
    (mini-)batch when `mask` holds only some of its rows (a data-parallel rank's).
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
        return m / (m.sum() if totals is None else totals[0]).clamp_min(tiny)
    seq_len = m.sum(dim=1, keepdim=True)
    n_seq = ((seq_len > 0).sum() if totals is None else totals[1]).clamp_min(1)
    if mode == "seq_mean_token_mean":
        return m / seq_len.clamp_min(tiny) / n_seq
    return m / max_len / n_seq


def aggregate_loss(loss: Tensor, mask: Tensor, mode: str, max_len: int | None = None) -> Tensor:
    """loss, mask: [B, T] -> scalar (loss * loss_token_weights(mask, mode, max_len)).sum()."""
    if loss.shape != mask.shape:
        raise ValueError(f"loss {tuple(loss.shape)} and mask {tuple(mask.shape)} must have the same shape")
    return (loss * loss_token_weights(mask, mode, max_len)).sum()
