"""Batch-wide selections and statistics of per-token values whose rows are spread over the ranks, each rank holding
its own rows of the batch (rlvr.share). What crosses ranks is counts, sums and one count per batch row, never the
values: an order statistic is found by bisection on the values' bit patterns (32 all-reduces of one count per
statistic), ties are broken by the batch's (row, column) order from per-row counts.

With one process every collective is the identity and the results are those of the sort-based functions of
rlvr.algo (`top_entropy_mask`, `kl_cov_select`, `clip_cov_select`): the same token sets, exactly.

Tensors are [n, L]: this rank's n rows, `rows` [n] their indices in the whole batch of `n_rows` rows (or in a
mini-batch; None: the n rows are the whole batch); L any width (a row's columns are the same in every layout).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rlvr import distributed as dist
from rlvr.algo.cov import _count

_BITS = 32  # float32 keys span [-2^31, 2^31): 32 halvings find any of them


def total(t: Tensor) -> Tensor:
    """The sum over ranks of a local partial sum (a new tensor)."""
    return dist.all_reduce_sum_(t.clone())


def _keys(values: Tensor) -> Tensor:
    """float32 values -> int64 keys in the same order (-0.0 taken as 0.0, as comparisons do; NaN above +inf)."""
    bits = (values.detach().float() + 0.0).view(torch.int32).long()
    return torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)


def _from_keys(keys: Tensor) -> Tensor:
    bits = torch.where(keys < 0, keys ^ 0x7FFFFFFF, keys)
    return bits.int().view(torch.float32)


def kth_largest(values: Tensor, ks: Sequence[int]) -> Tensor:
    """The ks[i]-th largest (1-based) of every rank's `values` (flat float32) together, float32 [len(ks)]. Each
    of the 32 bisection steps all-reduces one count per k."""
    keys = _keys(values.flatten())
    target = torch.tensor(list(ks), dtype=torch.long, device=keys.device)
    lo = torch.full_like(target, -(2**31))  # the answer is in [lo, hi]
    hi = torch.full_like(target, 2**31 - 1)
    for _ in range(_BITS):
        mid = torch.div(lo + hi + 1, 2, rounding_mode="floor")
        at_least = total(torch.stack([(keys >= m).sum() for m in mid.tolist()]))
        enough = at_least >= target
        lo, hi = torch.where(enough, mid, lo), torch.where(enough, hi, mid - 1)
    return _from_keys(lo)


def kth_smallest(values: Tensor, ks: Sequence[int], n: int) -> Tensor:
    """The ks[i]-th smallest (1-based) of every rank's `values` together (n of them in all), float32."""
    return kth_largest(values, [n + 1 - k for k in ks])


def global_order(flags: Tensor, rows: Tensor | None, n_rows: int | None) -> tuple[Tensor, int]:
    """Each flagged token's place (0-based) among every rank's flagged tokens in the batch's (row, column) order,
    long [n, L] (meaningless where not flagged), and their count. Crosses: one count per batch row."""
    if rows is None:
        rows, n_rows = torch.arange(len(flags)), len(flags)
    per_row = torch.zeros(n_rows, dtype=torch.long, device=flags.device)
    per_row[rows.to(flags.device)] = flags.sum(1)
    per_row = dist.all_reduce_sum_(per_row)
    before = torch.cumsum(per_row, 0) - per_row
    order = before[rows.to(flags.device)].unsqueeze(1) + torch.cumsum(flags.long(), 1) - 1
    return order, int(per_row.sum())


def top_k_mask(values: Tensor, mask: Tensor, k: int, rows: Tensor | None, n_rows: int | None) -> Tensor:
    """The k tokens of `mask` (over every rank's rows) of largest value, ties to the earlier (row, column): bool
    [n, L], this rank's part of the set that a stable descending sort of the whole batch would pick."""
    m = mask.bool()
    if k <= 0:
        return torch.zeros_like(m)
    v = values.detach().float() + 0.0
    threshold = kth_largest(v[m], [k])[0]
    above = m & (v > threshold)
    ties = m & (v == threshold)
    room = k - int(total(above.sum()))
    order, _ = global_order(ties, rows, n_rows)
    return above | (ties & (order < room))


def top_frac_mask(
    values: Tensor, mask: Tensor, top_frac: float, rows: Tensor | None, n_rows: int | None
) -> Tensor:
    """`rlvr.algo.top_entropy_mask` over every rank's rows: the ceil(top_frac x N) tokens of highest value."""
    from rlvr.algo.entropy import top_count

    n = int(total(mask.bool().sum()))
    return (
        mask.bool().clone()
        if top_frac == 1
        else top_k_mask(values, mask, top_count(top_frac, n), rows, n_rows)
    )


def kl_cov_select(
    cov: Tensor, mask: Tensor, k_frac: float, rows: Tensor | None, n_rows: int | None
) -> Tensor:
    """`rlvr.algo.kl_cov_select` over every rank's rows."""
    n = int(total(mask.bool().sum()))
    return top_k_mask(cov, mask, min(_count(k_frac, n), n) if n else 0, rows, n_rows)


def clip_cov_select(cov, mask, clip_frac, bound_low, bound_high, generator, exclude, rows, n_rows) -> Tensor:
    """`rlvr.algo.clip_cov_select` over every rank's rows: the candidates numbered in the batch's order, the same
    draw of them on every rank (the generators are alike)."""
    m = mask.bool()
    n = int(total(m.sum()))
    if n == 0:
        return torch.zeros_like(m)
    candidates = m & ~exclude.bool() & (cov > bound_low) & (cov < bound_high)
    order, count = global_order(candidates, rows, n_rows)
    take = min(_count(clip_frac, n), count)
    drawn = torch.zeros(count + 1, dtype=torch.bool)
    drawn[torch.randperm(count, generator=generator)[:take]] = True
    return candidates & drawn.to(m.device)[order.clamp(0, count)]
