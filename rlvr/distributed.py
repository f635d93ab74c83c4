"""Data parallelism across the processes `accelerate launch` (or torchrun) starts: who does which share, and
the few collectives the trainer needs. With one process every function is the identity.

The scheme: every rank samples and verifies a contiguous share of the step's prompts (whole groups, so
advantages never need another rank's rewards), then all ranks gather every group and build the same full
batch. The learner splits that batch's micro-batches across ranks and sums per-token results back, so the
loss normaliser, the metrics and the entropy quantiles are those of the whole batch on every rank.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import torch
import torch.distributed as tdist

from rlvr.config import ConfigError

T = TypeVar("T")


SHARDED = ("FSDP", "DEEPSPEED")
"""accelerate's distributed types that shard the policy: not supported until checkpoints gather the shards."""


def check_supported(distributed_type: str) -> None:
    """Refuse FSDP / DeepSpeed before any step: rank 0 would checkpoint only its own shard of the weights and
    of Adam's state (and a save that gathers on rank 0 alone would wait forever for the other ranks)."""
    name = getattr(distributed_type, "value", distributed_type)  # accelerate's DistributedType is a str enum
    if name in SHARDED:
        raise ConfigError(
            "accelerate distributed_type",
            f"{name} (sharded training) is not supported yet: checkpoints do not gather sharded "
            "state; use configs/accelerate/ddp.yaml (docs/SCALE_OUT.md)",
        )


def active() -> bool:
    return tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1


def rank() -> int:
    return tdist.get_rank() if active() else 0


def world_size() -> int:
    return tdist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """[start, end) of rank's contiguous share of n items; the first n % world ranks get one more."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def my_shard(items: Sequence[T]) -> tuple[int, Sequence[T]]:
    """(start, this rank's contiguous share of items)."""
    start, end = shard_bounds(len(items), rank(), world_size())
    return start, items[start:end]


def gather_objects(obj: T) -> list[T]:
    """[obj of rank 0, obj of rank 1, ...] on every rank (pickled; for rollouts and small results)."""
    if not active():
        return [obj]
    out: list = [None] * world_size()
    tdist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: T) -> T:
    """Rank 0's obj on every rank."""
    if not active():
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (tensors whose rows each rank filled for its own share, zero elsewhere)."""
    if active():
        tdist.all_reduce(tensor, op=tdist.ReduceOp.SUM)
    return tensor


def any_rank(flag: bool) -> bool:
    """True on every rank when any rank's flag is true (e.g. a stop signal that reached one rank)."""
    if not active():
        return flag
    t = torch.tensor([int(flag)], device=_collective_device())
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return bool(t.item())


def barrier() -> None:
    if active():
        tdist.barrier()


def shutdown() -> None:
    """Leave the process group together: a rank that exits while gloo's threads still serve another rank can
    abort at interpreter exit ("terminate called without an active exception")."""
    if active():
        tdist.barrier()
        tdist.destroy_process_group()


def _collective_device() -> torch.device:
    if tdist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
