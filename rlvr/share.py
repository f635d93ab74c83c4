"""Each rank keeps only its share of the step's batch: its slice of every mini-batch (`rlvr.microbatch.layout_of`).

After sampling, a rank holds the completions of the groups it generated and every other group's header
(`Group.header`: rewards, verdicts, lengths). The groups whose trainer is another rank move to it, once, in one
all-to-all (`distributed.exchange_objects`): what a rank receives are rows it trains on itself, never another
rank's. docs/SCALE_OUT.md counts the bytes.
"""

from __future__ import annotations

from rlvr import distributed as dist
from rlvr.batch import BatchLayout
from rlvr.config import AlgoConfig
from rlvr.microbatch import layout_of, minibatch_shares
from rlvr.pipeline import Group


def trainers(n_groups: int, cfg: AlgoConfig, world: int) -> list[int]:
    """The rank that trains on each of a batch's n_groups groups."""
    owner = [0] * n_groups
    for r in range(world):
        for share in minibatch_shares(n_groups, cfg.minibatch_prompts, cfg.num_minibatches, r, world):
            for k in share:
                owner[k] = r
    return owner


def share_groups(groups: list[Group], cfg: AlgoConfig) -> tuple[list[Group], BatchLayout]:
    """This rank's groups of the batch `groups` (every rank's kept groups in order, this rank's with their
    completions, the others' headers) with their completions, mini-batch after mini-batch, and their layout."""
    me, world = dist.rank(), dist.world_size()
    owner = trainers(len(groups), cfg, world)
    outgoing: list[list[tuple[int, Group]]] = [[] for _ in range(world)]
    for k, g in enumerate(groups):
        if g.home == me and owner[k] != me:
            outgoing[owner[k]].append((k, g))
    received = dict(item for part in dist.exchange_objects(outgoing) for item in part)
    layout = layout_of(len(groups), cfg.group_size, cfg.minibatch_prompts, cfg.num_minibatches, me, world)
    mine = [k for k, r in enumerate(owner) if r == me]  # in batch order: mini-batch after mini-batch
    return [received.get(k, groups[k]) for k in mine], layout
