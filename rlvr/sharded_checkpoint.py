"""Sharded checkpoints (`trainer.checkpoint_format=sharded`): every rank writes its own shard of the policy's
weights, Adam's state and (after a reset) the KL reference's weights through torch.distributed.checkpoint (DCP);
nothing is gathered, so no rank ever holds the whole state.

    checkpoints/step_NNNNNN/sharded/.metadata       DCP's index: every tensor's shape and which file holds which piece
    checkpoints/step_NNNNNN/sharded/__R_0.distcp    what rank R wrote: "model.*" (policy), "optim.*" (Adam, keyed
                                                    by parameter name), "reference.*" (only after a reset)
    checkpoints/step_NNNNNN/sharded/.digests-R.json rank R's shard's size and sha256, for the manifest
    checkpoints/step_NNNNNN/policy_config/          the policy's config.json, generation_config.json and tokenizer:
                                                    what `rlvr-export` completes into a Hugging Face directory
    checkpoints/step_NNNNNN/state.pt                the trainer's state (sampler, RNG, scheduler...; no optimizer)
    checkpoints/step_NNNNNN/manifest.json           every file's size and sha256, as for full checkpoints

DDP's replicated tensors are written once, spread over the ranks; FSDP2's each by the rank holding the shard.
A checkpoint resumes at any world size and sharding (FSDP2, DDP, 1 process): each rank reads the pieces its
own parameters need (DCP reshards on load). DeepSpeed ZeRO-3 keeps its state in flat partitions that are not
DCP state dicts: refused (`check_supported`), use the full format there.

Atomic as full checkpoints are (rlvr.checkpoint): every rank writes into `.tmp-step_N/`; once every shard is on
disk rank 0 writes the manifest and renames the dir to `step_N` (`checkpoint.commit`). With
`trainer.checkpoint_async` the step's state is first copied to host memory, the shards are written on a background
thread while training goes on, and rank 0 commits on a thread of its own once DCP reports every rank's write
done; the next save (and the end of the run) waits for it. A crash before that commit leaves only the
`.tmp-step_N` dir, which resume ignores: the run resumes from the checkpoint before.
"""

from __future__ import annotations

import shutil
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint import FileSystemWriter

from rlvr import checkpoint
from rlvr import distributed as dist
from rlvr.errors import CheckpointSaveError, ConfigError

SHARDS = "sharded"
POLICY_CONFIG = "policy_config"


def is_sharded(checkpoint_dir: str | Path) -> bool:
    """Whether a checkpoint dir holds DCP shards (else it is a full one, with policy/)."""
    return (Path(checkpoint_dir) / SHARDS).is_dir()


def check_supported(sharding: str | None, checkpoint_format: str, resume_from: Path | None) -> None:
    """Refuse sharded checkpoints, written or resumed, under DeepSpeed ZeRO-3 (`sharding`), naming the key."""
    if sharding != "ZeRO-3":
        return
    if checkpoint_format == "sharded":
        raise ConfigError(
            "trainer.checkpoint_format",
            "sharded checkpoints are not supported under DeepSpeed ZeRO-3 (its optimizer state lives in flat "
            "partitions, not in torch.distributed.checkpoint state dicts): use full, or FSDP2",
        )
    if resume_from is not None and is_sharded(resume_from):
        raise ConfigError(
            "trainer.resume",
            f"{resume_from} is a sharded checkpoint, which DeepSpeed ZeRO-3 cannot load: resume it under FSDP2, "
            "DDP or in 1 process with trainer.checkpoint_format=full, then go on from that full checkpoint",
        )


def state_dicts(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, reference: torch.nn.Module | None = None
) -> dict[str, Any]:
    """{"model": weights, "optim": Adam's state, ["reference": weights]} keyed by parameter name, each tensor as
    this rank holds it (a DTensor shard under FSDP2): the live tensors DCP writes, or loads into. A collective.
    An empty optimizer state is filled in with zeros by a zero-lr step (torch's way to learn its layout)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    weights, optim = get_state_dict(model, optimizer)
    state = {"model": weights, "optim": optim}
    if reference is not None:
        state["reference"] = get_model_state_dict(reference)
    return state


def _saved_state(model, optimizer, reference) -> dict[str, Any]:
    """`state_dicts` to write: an empty optimizer state (fresh, or just reset) written empty, not as the zero-lr
    step's zeros, which a resume would count as Adam's first step."""
    fresh = not optimizer.state
    state = state_dicts(model, optimizer, reference)
    if fresh:
        optimizer.state.clear()
        state["optim"] = {**state["optim"], "state": {}}
    return state


def write_policy_config(directory: Path, policy, tokenizer) -> None:
    """The policy's Hugging Face files other than its weights (config, generation config, tokenizer)."""
    policy.config.save_pretrained(directory)
    if getattr(policy, "generation_config", None) is not None:
        policy.generation_config.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


@contextmanager
def _quiet_in_one_process():
    """Without DCP's warning that it writes or reads "in a single process" (what one process means to do)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="torch.distributed is disabled, unavailable or uninitialized"
        )
        yield


def _process_group(asynchronous: bool):
    """The process group DCP coordinates the ranks' writes over: a gloo group of its own for background writes
    (their collectives must not interleave with training's on the default group); None (the default group) for
    synchronous ones; None with one process."""
    if not dist.active() or not asynchronous:
        return None
    import torch.distributed as tdist

    return tdist.new_group(backend="gloo")


def _on_main_rank(work, step: int):
    """work() on rank 0 alone, its CheckpointSaveError raised on every rank (a collective: no rank is left waiting
    for a save that failed). Returns what work returned (None on the other ranks)."""
    result, error = None, None
    if dist.is_main():
        try:
            result = work()
        except CheckpointSaveError as e:
            error = e
    if dist.any_rank(error is not None):
        raise error or CheckpointSaveError(f"rank 0 could not write checkpoint {checkpoint.step_name(step)}")
    return result


class _DigestingWriter(FileSystemWriter):
    """DCP's file writer that also records the size and sha256 of the files this rank wrote (sharded/.digests-R
    .json), before DCP gathers the ranks' results: rank 0's manifest then reads none of the other ranks' shards
    (a 7B model with Adam is ~90 GB). DCP calls write_data once per rank and waits for its result."""

    def write_data(self, plan, planner):
        written = super().write_data(plan, planner)
        names = sorted({result.storage_data.relative_path for result in written.wait()})
        checkpoint.record_digests(Path(str(self.path)), names, dist.rank())
        return written


def _dcp_failure() -> tuple[type[BaseException], ...]:
    """What DCP raises when a rank's write failed (a BaseException, on every rank)."""
    from torch.distributed.checkpoint.api import CheckpointException

    return (CheckpointException,)


class ShardWriter:
    """Writes sharded checkpoints, synchronously or (`asynchronous`) on background threads, one save in flight
    at a time. Every method is called by every rank, at the same step."""

    def __init__(self, output_dir: Path, tokenizer, keep_last: int, asynchronous: bool):
        self.output_dir, self.tokenizer, self.keep_last = output_dir, tokenizer, keep_last
        self.asynchronous = asynchronous
        self.group = _process_group(asynchronous)
        self.pending: Future | None = None  # this rank's write in flight (rank 0: the write and its commit)
        self.committer = ThreadPoolExecutor(max_workers=1) if asynchronous and dist.is_main() else None

    def save(
        self,
        step: int,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        reference: torch.nn.Module | None,
        state: dict[str, Any],
    ) -> None:
        """Checkpoint `step`: each rank's shard of `state_dicts(...)`, and rank 0's trainer `state` (state.pt)
        and policy config; committed at once, or (asynchronous) by rank 0 once every shard is written."""
        import torch.distributed.checkpoint as dcp

        self.wait()
        output_dir, keep_last = self.output_dir, self.keep_last
        tmp = checkpoint.temp_dir(output_dir, step)

        def begin() -> None:
            checkpoint.begin_write(output_dir, step)
            with checkpoint.save_errors(output_dir, step), checkpoint.no_transformers_bars():
                write_policy_config(tmp / POLICY_CONFIG, model, self.tokenizer)
                torch.save(state, tmp / "state.pt")

        _on_main_rank(begin, step)
        shards = _saved_state(model, optimizer, reference)
        options = {
            "checkpoint_id": tmp / SHARDS,
            "storage_writer": _DigestingWriter(tmp / SHARDS),
            "no_dist": not dist.active(),
            "process_group": self.group,
        }
        with checkpoint.save_errors(output_dir, step, also=_dcp_failure()):
            if not self.asynchronous:
                with _quiet_in_one_process():
                    dcp.save(shards, **options)
            else:  # returns once the state is copied to host memory
                self.pending = dcp.async_save(shards, **options)
        if not self.asynchronous:
            _on_main_rank(lambda: checkpoint.commit(output_dir, step, keep_last), step)
        elif self.committer is not None:
            self.pending = self.committer.submit(
                _commit_when_written, self.pending, output_dir, step, keep_last
            )

    def wait(self) -> None:
        """Wait for the save in flight, if any (rank 0: and its commit); raise CheckpointSaveError on every rank
        if it failed on any."""
        if self.pending is None:
            return
        pending, self.pending = self.pending, None
        error = pending.exception()
        if dist.any_rank(error is not None):
            if isinstance(error, CheckpointSaveError):
                raise error
            raise CheckpointSaveError(f"a background checkpoint write failed: {error or 'on another rank'}")

    def close(self) -> None:
        """Finish the save in flight, then stop the commit thread."""
        try:
            self.wait()
        finally:
            if self.committer is not None:
                self.committer.shutdown()


def _commit_when_written(written: Future, output_dir: Path, step: int, keep_last: int) -> Path:
    """Rank 0's background commit: DCP's future resolves once every rank's shard and the metadata are written."""
    with checkpoint.save_errors(output_dir, step, also=_dcp_failure()):
        written.result()
    return checkpoint.commit(output_dir, step, keep_last)


def load(
    checkpoint_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    reference: torch.nn.Module | None = None,
) -> None:
    """Load a sharded checkpoint's weights and Adam state into `model` and `optimizer` (and, when the checkpoint
    holds one, the reference's weights into `reference`), at any world size and sharding. A collective."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_state_dict,
    )

    shards = Path(checkpoint_dir) / SHARDS
    saved = set(dcp.FileSystemReader(shards).read_metadata().state_dict_metadata)
    fresh = not any(key.startswith("optim.state.") for key in saved)  # written empty (`_saved_state`)
    with_reference = reference is not None and any(key.startswith("reference.") for key in saved)
    state = state_dicts(model, optimizer, reference if with_reference else None)
    if fresh:
        state["optim"] = {**state["optim"], "state": {}}
    with _quiet_in_one_process():
        dcp.load(state, checkpoint_id=shards, no_dist=not dist.active())
    set_state_dict(
        model,
        optimizer,
        model_state_dict=state["model"],
        optim_state_dict=state["optim"],
        options=StateDictOptions(strict=not fresh),
    )
    if fresh:
        optimizer.state.clear()  # the zero-lr step that `state_dicts` took must not count as Adam's first
    if with_reference:
        set_model_state_dict(reference, state["reference"])


def read_full(checkpoint_dir: Path, part: str = "model") -> dict[str, torch.Tensor]:
    """One part of a sharded checkpoint ("model": the policy, "reference") as full CPU tensors keyed by parameter
    name, read in this one process from every rank's shard."""
    import torch.distributed.checkpoint as dcp

    shards = Path(checkpoint_dir) / SHARDS
    prefix = part + "."
    saved = dcp.FileSystemReader(shards).read_metadata().state_dict_metadata
    full = {
        key[len(prefix) :]: torch.empty(meta.size, dtype=meta.properties.dtype)
        for key, meta in saved.items()
        if key.startswith(prefix)
    }
    if not full:
        raise FileNotFoundError(f"{shards} holds no {part!r} weights")
    with _quiet_in_one_process():
        dcp.load({part: full}, checkpoint_id=shards, no_dist=True)
    return full


def export_hf(checkpoint_dir: Path, out: Path) -> None:
    """Merge a sharded checkpoint's policy into a Hugging Face model dir `out` (float32 safetensors, config,
    tokenizer) that `from_pretrained` loads. Holds the whole model in this process's memory once."""
    from transformers import AutoConfig, AutoModelForCausalLM

    weights = read_full(checkpoint_dir, "model")
    config = AutoConfig.from_pretrained(checkpoint_dir / POLICY_CONFIG)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(weights, assign=True)
    model.tie_weights()  # a tied output embedding: the input's tensor again, written once
    with checkpoint.no_transformers_bars():
        model.save_pretrained(out, safe_serialization=True)
    shutil.copytree(checkpoint_dir / POLICY_CONFIG, out, dirs_exist_ok=True)  # the run's own config files
