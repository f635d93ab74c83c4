"""Data parallelism across the processes `accelerate launch` (or torchrun) starts: who does which share, and
the few collectives the trainer needs. With one process every function is the identity.

The scheme (docs/SCALE_OUT.md, "What crosses ranks"): every rank samples and verifies a contiguous share of the
step's prompts (whole groups, so advantages never need another rank's rewards); the ranks gather each group's
metadata (rewards, verdicts, lengths: no tokens) and keep the completions they generated. Each rank then trains
on its slice of every mini-batch (rlvr.share): only the groups whose trainer is not the rank that generated them
move, once, to that trainer. Batch-wide quantities (loss normalisers, the forking-token quantile, Clip-Cov/KL-Cov
selections, entropy statistics) cross as sums, counts and per-row counts (rlvr.sharded), never as tokens.

Every collective here counts the bytes this rank receives (`bytes_received`), which the trainer logs as
dist/bytes_received and the 2-process tests bound.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as tdist

from rlvr.errors import ConfigError

T = TypeVar("T")


def make_accelerator(mixed_precision: str):
    """The Accelerator for the launcher's setup (`accelerate launch`, torchrun, or none). Without CUDA: gloo
    data parallelism (`cpu=True`; without it accelerate would start the process group but run every rank as
    a single process), or, under DeepSpeed, which `cpu=True` would turn off, a gloo process group."""
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    if torch.cuda.is_available():
        return Accelerator(mixed_precision=mixed_precision)
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        return Accelerator(
            mixed_precision=mixed_precision, kwargs_handlers=[InitProcessGroupKwargs(backend="gloo")]
        )
    return Accelerator(cpu=True, mixed_precision=mixed_precision)


def check_supported(accelerator, rollout_backend: str) -> None:
    """Refuse, before any step, the parallel setups whose checkpoints or collectives would go wrong.

    Supported: DDP, FSDP2 and DeepSpeed ZeRO-3 (checkpoints gather the full weights and optimizer state with
    `checkpoint.gather_full_state`; every rank runs the same number of forwards). Refused: DeepSpeed ZeRO
    stages 1 and 2 (their partitioned optimizer state is not gathered) and DeepSpeed's offload (it replaces the
    optimizer by DeepSpeed's compiled CPU Adam), FSDP1 (flat parameters: our weight sync and checkpoints read
    the module's own parameters), and sharded training with rollout.backend=hf, whose sampler calls the sharded
    module directly: each rank samples its own prompts, so ranks would run different numbers of forwards, each
    a gather the others never join."""
    name = getattr(accelerator.distributed_type, "value", accelerator.distributed_type)  # a str enum
    if name == "DEEPSPEED":
        plugin = accelerator.state.deepspeed_plugin
        if plugin.zero_stage != 3:
            raise ConfigError(
                "accelerate deepspeed_config.zero_stage",
                f"{plugin.zero_stage} is not supported: use 3 (configs/accelerate/zero3.yaml), FSDP2 or DDP "
                "(docs/SCALE_OUT.md)",
            )
        zero = plugin.deepspeed_config.get("zero_optimization", {})
        for key in ("offload_optimizer", "offload_param"):
            if (zero.get(key) or {}).get("device", "none") not in ("none", None):
                raise ConfigError(
                    f"accelerate deepspeed_config.{key}_device",
                    "offload is not supported (it swaps rlvr's optimizer for DeepSpeed's compiled CPU Adam, "
                    "whose state checkpoints cannot gather); set it to none",
                )
    if name == "FSDP" and not accelerator.is_fsdp2:
        raise ConfigError(
            "accelerate distributed_type",
            "FSDP version 1 is not supported: set fsdp_version: 2 in the accelerate config (docs/SCALE_OUT.md)",
        )
    if name in ("FSDP", "DEEPSPEED") and rollout_backend == "hf":
        raise ConfigError(
            "rollout.backend",
            "'hf' samples with the learner's sharded module, where every forward is a collective that ranks "
            f"sampling different prompts would not join alike; use rollout.backend=vllm under {name}",
        )


def check_still_tied(model: torch.nn.Module) -> None:
    """Refuse a policy whose tied input and output embeddings came out of `accelerator.prepare` as two
    parameters: it would train a different model than the checkpoint it saves (which stores one matrix).
    accelerate 1.15's FSDP2 prepare does this with fsdp_cpu_ram_efficient_loading: true."""
    config = getattr(model, "config", None)
    if not getattr(config, "tie_word_embeddings", False) or model.get_output_embeddings() is None:
        return
    if model.get_output_embeddings().weight is not model.get_input_embeddings().weight:
        raise ConfigError(
            "accelerate fsdp_cpu_ram_efficient_loading",
            "the model ties its input and output embeddings, but after accelerate's FSDP prepare they are "
            "two parameters (a different model); set fsdp_cpu_ram_efficient_loading: false "
            "(configs/accelerate/fsdp2.yaml)",
        )


def is_sharded(module: torch.nn.Module) -> bool:
    """Whether the module's parameters are DTensors (FSDP2 `fully_shard`): then every forward all-gathers them,
    a collective every rank must join."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in module.parameters())


def shard_like(module: torch.nn.Module, like: torch.nn.Module) -> None:
    """`fully_shard` module (each transformer block that its transformers models name in `_no_split_modules`,
    then the whole) in place, on the mesh of the sharded module `like`, resharding after every forward.

    For a frozen copy of the policy (the KL reference): FSDP modules cannot be deep-copied and accelerate
    shards a model only together with its optimizer. Each parameter is sharded on dim 0 like the policy's,
    so `load_state_dict` of one's sharded state into the other copies local shards."""
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    mesh = next(p.device_mesh for p in like.parameters() if isinstance(p, DTensor))
    blocks = {name for m in module.modules() for name in getattr(m, "_no_split_modules", None) or ()}
    for m in list(module.modules())[1:]:
        if type(m).__name__ in blocks:
            fully_shard(m, mesh=mesh, reshard_after_forward=True)
    # the root too: without a backward to reshard it, it would keep the embeddings gathered between forwards
    fully_shard(module, mesh=mesh, reshard_after_forward=True)


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


@dataclass
class _Traffic:
    """The bytes this process received from other ranks through the collectives below, since it started."""

    received: int = 0


_TRAFFIC = _Traffic()


def bytes_received() -> int:
    """Bytes this rank has received from the others through this module's collectives so far (0 alone). Counted
    as payload: a gathered object's pickle, an all-reduced tensor's size (what a rank receives of the result),
    the sizes exchanged before variable-size payloads."""
    return _TRAFFIC.received


def _received(nbytes: int) -> None:
    _TRAFFIC.received += int(nbytes)


def _pickled(obj) -> torch.Tensor:
    """obj as a uint8 tensor on the collective device."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).to(_collective_device())


def _unpickled(data: torch.Tensor):
    return pickle.loads(data.cpu().numpy().tobytes())


def gather_objects(obj: T) -> list[T]:
    """[obj of rank 0, obj of rank 1, ...] on every rank (pickled; for small results: every rank receives every
    rank's obj)."""
    if not active():
        return [obj]
    data = _pickled(obj)
    sizes = [torch.zeros(1, dtype=torch.long, device=data.device) for _ in range(world_size())]
    tdist.all_gather(sizes, torch.tensor([data.numel()], device=data.device))
    longest = max(int(n) for n in sizes)
    parts = [torch.empty(longest, dtype=torch.uint8, device=data.device) for _ in sizes]
    tdist.all_gather(parts, torch.nn.functional.pad(data, (0, longest - data.numel())))
    _received((world_size() - 1) * (8 + longest))
    return [_unpickled(part[: int(n)]) for part, n in zip(parts, sizes)]


def exchange_objects(outgoing: Sequence) -> list:
    """All-to-all: outgoing[r] (any picklable, None for nothing) goes to rank r; returns what each rank sent this
    one, [from rank 0, from rank 1, ...]. A rank receives only what is addressed to it."""
    if not active():
        return [outgoing[0]]
    me, device = rank(), _collective_device()
    chunks = [_pickled(obj) for obj in outgoing]
    out_sizes = torch.tensor([c.numel() for c in chunks], dtype=torch.long, device=device)
    in_sizes = torch.empty_like(out_sizes)
    tdist.all_to_all_single(in_sizes, out_sizes)
    counts = in_sizes.tolist()
    received = torch.empty(sum(counts), dtype=torch.uint8, device=device)
    tdist.all_to_all_single(received, torch.cat(chunks), counts, out_sizes.tolist())
    _received(sum(n for r, n in enumerate(counts) if r != me) + 8 * (world_size() - 1))
    return [_unpickled(part) for part in received.split(counts)]


def gather_to_main(obj: T) -> list[T] | None:
    """[obj of every rank] on rank 0 (None on the others), which alone receives them."""
    if not active():
        return [obj]
    parts = exchange_objects([obj] + [None] * (world_size() - 1))
    return parts if is_main() else None


def broadcast_object(obj: T) -> T:
    """Rank 0's obj on every rank."""
    if not active():
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    if not is_main():
        _received(len(pickle.dumps(box[0])))
    return box[0]


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (each rank's partial sums, or rows each rank filled for its own share)."""
    if active():
        tdist.all_reduce(tensor, op=tdist.ReduceOp.SUM)
        _received(tensor.numel() * tensor.element_size())
    return tensor


def all_reduce_max_(tensor: torch.Tensor) -> torch.Tensor:
    """In-place maximum over ranks."""
    if active():
        tdist.all_reduce(tensor, op=tdist.ReduceOp.MAX)
        _received(tensor.numel() * tensor.element_size())
    return tensor


def any_rank(flag: bool) -> bool:
    """True on every rank when any rank's flag is true (e.g. a stop signal that reached one rank)."""
    if not active():
        return flag
    t = torch.tensor([int(flag)], device=_collective_device())
    return bool(all_reduce_max_(t).item())


def barrier() -> None:
    if active():
        tdist.barrier()


def shutdown() -> None:
    """Leave the process group together: a rank that exits while gloo's threads still serve another rank can
    abort at interpreter exit ("terminate called without an active exception")."""
    if active():
        tdist.barrier()
        tdist.destroy_process_group()


def exit_launched_rank() -> None:
    """End a process that `accelerate launch`/torchrun started as one of several ranks (WORLD_SIZE > 1), once
    its work is done, its files closed and the process group left (`shutdown`): exit 0 at once, without
    interpreter finalization. Finalization frees the torch communication objects that Python still holds (DDP's
    reducer, for one, holds its gloo group past `destroy_process_group`) in no set order, and under gloo a rank
    that had finished could still abort there ("terminate called without an active exception", SIGABRT): the
    launcher then reports a finished run as failed. Seen twice in the 2-process tests, the second time (in CI)
    after `shutdown` was added; not reproduced in 70 launches here. With one process: returns."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(0)


def _collective_device() -> torch.device:
    if tdist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
