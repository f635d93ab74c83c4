"""Moved: the step's pipeline (sample groups, reward, DAPO filter, advantages, batch) is `rlvr.pipeline`.

Kept so that `from rlvr.rollout.collect import ...` goes on working; new code imports rlvr.pipeline.
"""

from rlvr.pipeline import (
    Collected,
    Group,
    Sampled,
    collect,
    rollout_metrics,
    sample_groups,
    shape_rewards,
    to_batch,
)

__all__ = [
    "Collected",
    "Group",
    "Sampled",
    "collect",
    "rollout_metrics",
    "sample_groups",
    "shape_rewards",
    "to_batch",
]
