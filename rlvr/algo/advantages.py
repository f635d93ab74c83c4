"""Group-relative advantages for GRPO-style RL (one scalar reward per completion)."""

from __future__ import annotations

from torch import Tensor

ADVANTAGE_MODES = ("grpo", "drgrpo", "batch_std")


def as_groups(rewards: Tensor, group_size: int) -> Tensor:
    """rewards: [N] with each group's members contiguous -> view [N // group_size, group_size].

    Raises ValueError unless rewards is 1-D, non-empty and group_size (>= 1) divides N.
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [N], got shape {tuple(rewards.shape)}")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    n = rewards.numel()
    if n == 0 or n % group_size != 0:
        raise ValueError(f"group_size={group_size} must divide the number of rewards N={n} (N > 0)")
    return rewards.view(n // group_size, group_size)


def group_advantages(rewards: Tensor, group_size: int, mode: str = "grpo", eps: float = 1e-6) -> Tensor:
    """Advantage of each completion relative to the other completions of its prompt.

    rewards: [N] float, N = num_groups * group_size, each group's members contiguous. Returns [N].
      grpo:      A = (r - mean_group) / (std_group + eps), std unbiased (Bessel), as TRL/verl do.
      drgrpo:    A = r - mean_group (Dr. GRPO: no std normalisation).
      batch_std: A = (r - mean_group) / (std over the whole batch + eps), std unbiased.
    A group whose rewards are all equal gets advantage exactly 0 (in every mode).
    """
    if mode not in ADVANTAGE_MODES:
        raise ValueError(f"unknown advantage mode {mode!r}; expected one of {ADVANTAGE_MODES}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    groups = as_groups(rewards, group_size)
    if not groups.is_floating_point():
        groups = groups.float()
    centered = groups - groups.mean(dim=1, keepdim=True)
    if mode == "grpo":
        # Bessel's correction is undefined for one sample; such a group is all-equal and zeroed below.
        scale = groups.std(dim=1, keepdim=True) if group_size > 1 else groups.new_zeros(groups.shape[0], 1)
        adv = centered / (scale + eps)
    elif mode == "batch_std":
        scale = groups.std() if groups.numel() > 1 else groups.new_zeros(())
        adv = centered / (scale + eps)
    else:
        adv = centered
    # Rounding in the mean (e.g. three rewards of 0.1) leaves tiny residuals that a small std would blow
    # up; a group without signal must contribute no gradient at all.
    no_signal = groups.amax(dim=1, keepdim=True) == groups.amin(dim=1, keepdim=True)
    return adv.masked_fill(no_signal, 0.0).reshape(-1)
