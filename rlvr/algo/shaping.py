"""DAPO reward shaping and sample filtering: dynamic sampling, soft overlong punishment, overlong filtering."""

from __future__ import annotations

import torch
from torch import Tensor

from rlvr.algo.advantages import as_groups


def groups_with_signal(rewards: Tensor, group_size: int) -> Tensor:
    """Groups whose values are not all equal. rewards: [N] grouped contiguously -> bool [N // group_size].

    On rewards: the groups with non-zero advantages. On correctness (1 correct, 0 not): DAPO's dynamic sampling
    constraint, Eq. 11, 0 < |{o_i : is_equivalent(a, o_i)}| < G.
    """
    groups = as_groups(rewards, group_size)
    return groups.amax(dim=1) != groups.amin(dim=1)


def overlong_penalty(lengths: Tensor, max_len: int, cache_len: int, penalty: float = 1.0) -> Tensor:
    """DAPO soft overlong punishment. lengths: [N] int response lengths -> [N] float32 reward to ADD:

      0                                               if L <= max_len - cache_len
      (max_len - cache_len - L) / cache_len * penalty if max_len - cache_len < L <= max_len (0 down to -penalty)
      -penalty                                        if L > max_len

    cache_len must be in [0, max_len]; cache_len=0 means no soft zone. penalty must be >= 0.
    """
    if lengths.dim() != 1:
        raise ValueError(f"lengths must be 1-D [N], got shape {tuple(lengths.shape)}")
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    if not 0 <= cache_len <= max_len:
        raise ValueError(f"cache_len must be in [0, max_len={max_len}], got {cache_len}")
    if penalty < 0:
        raise ValueError(f"penalty must be >= 0 (it is subtracted), got {penalty}")
    length = lengths.to(torch.float32)
    soft_start = max_len - cache_len
    # max(cache_len, 1) only avoids 0/0 in the branch torch.where discards when there is no soft zone.
    ramp = (soft_start - length) / max(cache_len, 1) * penalty
    zero = torch.zeros_like(length)
    shaped = torch.where(length > soft_start, ramp, zero)
    return torch.where(length > max_len, zero - penalty, shaped)


def overlong_filter_mask(mask: Tensor, truncated: Tensor) -> Tensor:
    """DAPO overlong filtering: exclude truncated responses from the loss.

    mask: [B, T], truncated: [B] bool -> mask with rows of truncated responses zeroed (same dtype as mask).
    """
    if mask.dim() != 2 or truncated.shape != mask.shape[:1]:
        raise ValueError(
            f"expected mask [B, T] and truncated [B], got {tuple(mask.shape)} and {tuple(truncated.shape)}"
        )
    return mask.masked_fill(truncated.bool().unsqueeze(1), 0)
