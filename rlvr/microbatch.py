"""Laying a batch's sequences out for the learner: mini-batches of whole groups (one optimizer step each), and
each mini-batch's micro-batches (one forward/backward each), padded or packed several sequences to a row.

Pure functions of sequence lengths and index lists (packing also of the token tensors); no model, no config.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

from rlvr.batch import BatchLayout
from rlvr.distributed import shard_bounds

# A micro-batch is a list of forward rows, each a list of sequence indices: one per row unless packed.
MicroBatch = list[list[int]]


def micro_batch_positions(rows: MicroBatch, lengths: Sequence[int]) -> int:
    """Positions one forward pass over these rows computes: every row right-padded to the longest row, a row
    as long as the real lengths of its sequences together."""
    return len(rows) * max(sum(lengths[i] for i in row) for row in rows)


def pack_sequences(order: Sequence[int], lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """First-fit: each sequence, taken in `order`, goes into the first row with room for it (its tokens plus
    the row's <= capacity), else opens a new row; a sequence longer than capacity gets a row to itself. Rows
    in the order they were opened."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in order:
        for r, left in enumerate(room):
            if lengths[i] <= left:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return rows


def plan_micro_batches(
    lengths: Sequence[int],
    micro_batch_size: int,
    max_tokens: int | None,
    pack: bool,
    row_tokens: int | None = None,
) -> list[MicroBatch]:
    """Sequences 0..n-1, of these real lengths, laid out in micro-batches of forward rows.

    max_tokens None: runs of micro_batch_size consecutive sequences, one per row. Otherwise a token budget,
    sequences taken longest first: unpacked, one sequence per row; packed, first-fit decreasing into rows of
    at most `row_tokens` tokens (None: the longest sequence's length, so that no packed row costs more attention
    than a padded one: under sdpa/eager a packed row's attention spans the whole row). Rows then go longest
    first, consecutive ones sharing a micro-batch while `micro_batch_positions <= max_tokens`; a row longer than
    the budget gets a micro-batch to itself."""
    n = len(lengths)
    if max_tokens is None:
        return [[[i] for i in range(s, min(s + micro_batch_size, n))] for s in range(0, n, micro_batch_size)]
    order = sorted(range(n), key=lambda i: -lengths[i])
    if pack:
        capacity = min(row_tokens or max(lengths, default=1), max_tokens)
        rows = pack_sequences(order, lengths, capacity)
        rows.sort(key=lambda row: -sum(lengths[i] for i in row))  # rows of like length share a micro-batch
    else:
        rows = [[i] for i in order]
    plan: list[MicroBatch] = []
    for row in rows:
        if plan and micro_batch_positions(plan[-1] + [row], lengths) <= max_tokens:
            plan[-1].append(row)
        else:
            plan.append([row])
    return plan


def flat(micro_batch: MicroBatch) -> torch.Tensor:
    """A micro-batch's sequence indices, row after row: the order pack_rows' row_sizes refer to."""
    return torch.tensor([i for row in micro_batch for i in row])


def padding_positions(lengths: Sequence[int], micro_batches: Sequence[MicroBatch]) -> tuple[int, int]:
    """(positions that forward passes over these micro-batches compute, real tokens among them)."""
    computed = sum(micro_batch_positions(mb, lengths) for mb in micro_batches)
    real = sum(lengths[i] for mb in micro_batches for row in mb for i in row)
    return computed, real


def padding_fraction(lengths: Sequence[int], micro_batches: Sequence[MicroBatch]) -> float:
    """Share of the positions that forward passes over these micro-batches compute that are not real tokens."""
    computed, real = padding_positions(lengths, micro_batches)
    return 1.0 - real / max(computed, 1)


def pack_rows(
    input_ids: torch.Tensor, response_mask: torch.Tensor, lengths: torch.Tensor, row_sizes: Sequence[int]
):
    """Right-padded sequences input_ids, response_mask [n, L] with real lengths [n] -> packed rows: the first
    row_sizes[0] sequences back to back in row 0, the next row_sizes[1] in row 1, and so on, right-padded to
    the longest row. Returns (ids, position_ids, response_mask) [k, W] and the map (src_rows, src_cols,
    dst_rows, dst_cols), [T] each: token [src_rows, src_cols] went to [dst_rows, dst_cols].

    Position ids are the columns, so they restart at 0 for each sequence (the same rotary positions as unpacked,
    and the boundaries transformers reads); padding positions are all 0, so each pad token is a sequence of its
    own, which nothing else attends to. A sequence's first token is never predicted (unpacked, nothing precedes
    it), so it is dropped from the response mask: packed, the previous sequence's last token would predict it."""
    device = lengths.device
    n_rows = len(row_sizes)
    seq_row = torch.repeat_interleave(
        torch.arange(n_rows, device=device), torch.tensor(row_sizes, device=device)
    )
    starts = torch.cumsum(lengths, 0) - lengths  # each sequence's offset in all tokens back to back
    row_lengths = torch.zeros(n_rows, dtype=lengths.dtype, device=device).index_add_(0, seq_row, lengths)
    row_starts = torch.cumsum(row_lengths, 0) - row_lengths
    src_rows = torch.repeat_interleave(torch.arange(len(lengths), device=device), lengths)
    token = torch.arange(len(src_rows), device=device)  # each real token's index, all back to back
    src_cols = token - starts[src_rows]
    dst_rows = seq_row[src_rows]
    dst_cols = token - row_starts[dst_rows]
    shape = (n_rows, int(row_lengths.max()))
    ids = input_ids.new_zeros(shape)
    pos = torch.zeros(shape, dtype=torch.long, device=device)
    resp = torch.zeros(shape, dtype=torch.bool, device=device)
    ids[dst_rows, dst_cols] = input_ids[src_rows, src_cols]
    pos[dst_rows, dst_cols] = src_cols
    resp[dst_rows, dst_cols] = response_mask[src_rows, src_cols] & (src_cols > 0)
    return ids, pos, resp, (src_rows, src_cols, dst_rows, dst_cols)


def unpack_rows(packed: torch.Tensor, index: tuple[torch.Tensor, ...], shape: tuple[int, int]):
    """Inverse of pack_rows' layout for a per-token tensor: packed [k, W] -> [n, L] (pack_rows' map as
    `index`), zero where nothing was packed. Differentiable."""
    src_rows, src_cols, dst_rows, dst_cols = index
    out = packed.new_zeros(shape)
    out[src_rows, src_cols] = packed[dst_rows, dst_cols]
    return out


def minibatch_indices(
    n_groups: int, group_size: int, minibatch_prompts: int | None, num_minibatches: int = 1
) -> list[torch.Tensor]:
    """The sequence indices [n] of each mini-batch of a batch of n_groups groups laid out group after group:
    whole groups, in order. ceil(n_groups / minibatch_prompts) mini-batches (None: num_minibatches, at most one
    per group), their sizes equal give or take one group. A full batch is cut into mini-batches of exactly
    minibatch_prompts groups (validate asks that it divides trainer.prompts_per_step); a short one (dynamic
    sampling out of rounds: 27 groups for mini-batches of 8) into as many steps as it fills, evenly (7, 7, 7, 6),
    never into full steps and a remnant of a few groups whose one noisy step would count as much as the others."""
    if minibatch_prompts is not None:
        count = -(-n_groups // minibatch_prompts)
    else:
        count = min(num_minibatches, n_groups)
    count = max(count, 1)
    sizes = [n_groups // count + (i < n_groups % count) for i in range(count)]  # the larger ones first
    ends = list(itertools.accumulate(sizes))
    return [torch.arange((end - n) * group_size, end * group_size) for n, end in zip(sizes, ends)]


def minibatch_shares(
    n_groups: int, minibatch_prompts: int | None, num_minibatches: int, rank: int, world: int
) -> list[range]:
    """The groups (their places in the batch) that `rank` of `world` trains on in each mini-batch: its contiguous
    share (`shard_bounds`) of each mini-batch's groups. Which groups make up a mini-batch does not depend on the
    world size (a run resumes at another with the same metrics); a rank may get none of a small one."""
    shares = []
    for mb in minibatch_indices(n_groups, 1, minibatch_prompts, num_minibatches):
        start, end = shard_bounds(len(mb), rank, world)
        shares.append(range(int(mb[0]) + start, int(mb[0]) + end))
    return shares


def layout_of(
    n_groups: int, group_size: int, minibatch_prompts: int | None, num_minibatches: int, rank: int, world: int
) -> BatchLayout:
    """The BatchLayout of `rank` of `world` for a batch of n_groups >= 1 groups of group_size rows: its
    `minibatch_shares`, in order (world 1: the whole batch, its mini-batches `minibatch_indices`')."""
    whole = minibatch_indices(n_groups, 1, minibatch_prompts, num_minibatches)
    shares = minibatch_shares(n_groups, minibatch_prompts, num_minibatches, rank, world)
    rows = [g * group_size + i for share in shares for g in share for i in range(group_size)]
    ends = list(itertools.accumulate(len(share) * group_size for share in shares))
    local = [torch.arange(end - len(share) * group_size, end) for share, end in zip(shares, ends)]
    spans = [(int(mb[0]) * group_size, (int(mb[-1]) + 1) * group_size) for mb in whole]
    return BatchLayout(torch.tensor(rows, dtype=torch.long), local, spans, n_groups * group_size)
