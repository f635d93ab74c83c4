"""Token log-probabilities, policy entropy, and the high-entropy ("forking") token mask."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def entropy_from_logits(logits: Tensor) -> Tensor:
    """logits: [..., V] (finite) -> entropy [...] in nats, float32: H = logsumexp(z) - sum(softmax(z) * z).

    Computed in float32 because bf16 logsumexp over a large vocabulary is off by ~1e-3 nats.
    """
    z = logits.float()
    return torch.logsumexp(z, dim=-1) - (torch.softmax(z, dim=-1) * z).sum(dim=-1)


def logprobs_from_logits(logits: Tensor, labels: Tensor) -> Tensor:
    """logits: [..., V], labels: [...] int64 -> log softmax(logits)[label], float32, shape [...].

    Gathers before normalising (z[label] - logsumexp(z)) so no [..., V] log-softmax is kept.
    """
    if labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"labels {tuple(labels.shape)} must match logits {tuple(logits.shape)} without the last dim"
        )
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
    z = logits.float()
    return z.gather(-1, labels.long().unsqueeze(-1)).squeeze(-1) - torch.logsumexp(z, dim=-1)


def top_count(top_frac: float, n_valid: int) -> int:
    """Tokens the forking-token mask keeps of n_valid: ceil(top_frac * n_valid), at least 1, at most n_valid."""
    # The 1e-9 keeps float noise from adding a token: 0.1 * 30 is 3.0000000000000004 in binary.
    return min(n_valid, max(1, math.ceil(top_frac * n_valid - 1e-9)))


def top_entropy_mask(entropy: Tensor, mask: Tensor, top_frac: float) -> Tensor:
    """The 80/20 "forking tokens" mask (Wang et al. 2025): keep only the highest-entropy tokens.

    entropy: [B, T]; mask: [B, T] bool of valid response tokens. Over ALL valid tokens of the batch (not per
    sequence) keep exactly k = ceil(top_frac * n_valid) tokens of highest entropy; ties go to the lower flat
    index. Returns bool [B, T], a subset of mask. top_frac must be in (0, 1]; top_frac=1 returns mask.
    """
    if entropy.dim() != 2 or entropy.shape != mask.shape:
        raise ValueError(
            f"entropy and mask must be [B, T] of the same shape, got {tuple(entropy.shape)} and {tuple(mask.shape)}"
        )
    if not 0 < top_frac <= 1:
        raise ValueError(f"top_frac must be in (0, 1], got {top_frac}")
    valid = mask.bool()
    if top_frac == 1:
        return valid.clone()
    flat_valid = valid.flatten().nonzero().squeeze(1)
    k = top_count(top_frac, flat_valid.numel())
    # Sorting only the valid positions means padding can never be picked, whatever its entropy;
    # a stable sort keeps equal entropies in flat-index order.
    order = torch.sort(entropy.detach().flatten()[flat_valid], descending=True, stable=True).indices
    keep = torch.zeros(valid.numel(), dtype=torch.bool, device=valid.device)
    keep[flat_valid[order[:k]]] = True
    return keep.view_as(valid)
