"""Checkpoints: written whole or not at all, found again on resume.

    checkpoints/step_NNNNNN/policy/        Hugging Face model dir (safetensors) + tokenizer
    checkpoints/step_NNNNNN/reference/     only when the reference differs from the base model (after a reset)
    checkpoints/step_NNNNNN/state.pt       optimizer, scheduler, RNG states, sampler position, trainer state
    checkpoints/step_NNNNNN/manifest.json  every other file's size and sha256, written last
    checkpoints/latest                     name of the newest complete checkpoint, written last

A checkpoint is first written to `checkpoints/.tmp-step_NNNNNN/`, then renamed into place; a directory named
`step_*` is therefore always complete, and a crash mid-write leaves only a `.tmp-*` directory, which resume
ignores and the next run's start removes.
A file damaged later (a truncated copy, a deleted file, a bad disk) fails `verify_checkpoint`, and a resume falls
back to the newest checkpoint that verifies (`find_resumable`). A save that fails (no space left, permissions)
removes its `.tmp-*` directory, leaves `latest` as it was and raises CheckpointSaveError, one line.

Weights and optimizer state are saved whole, whatever the sharding (`gather_full_state`), the optimizer state
keyed by parameter name: a checkpoint written by N processes, sharded (FSDP2, ZeRO-3) or not, resumes in M.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlvr import distributed as dist
from rlvr import hashing, zero3
from rlvr.errors import CheckpointSaveError
from rlvr.hashing import file_sha256

LATEST = "latest"
MANIFEST = "manifest.json"
RECORDED = ".digests-{}.json"  # a writer's record of the files it wrote (`record_digests`)


@contextmanager
def no_transformers_bars():
    """Without transformers' progress bars: save_pretrained draws a "Writing model shards" bar for every
    checkpoint, which would break the trainer's one-line progress bar at every save."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def step_name(step: int) -> str:
    return f"step_{step:06d}"


def checkpoint_step(checkpoint_dir: str | Path) -> int:
    """The step a checkpoint holds, from its directory's name (step_NNNNNN), or its state.pt otherwise."""
    name = Path(checkpoint_dir).name
    return int(name[5:]) if re.fullmatch(r"step_\d+", name) else int(load_state(checkpoint_dir)["step"])


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for p in sorted(path.rglob("*")):
        if p.is_file():
            with p.open("rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(path)


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (np_state[0], np_state[1].tolist(), *np_state[2:]),
        "torch": torch.random.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    torch.random.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    output_dir: str | Path,
    step: int,
    policy,
    tokenizer,
    reference,
    state: dict[str, Any],
    keep_last: int,
    policy_state: dict[str, torch.Tensor] | None = None,
    reference_state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write checkpoint `step` atomically, point `latest` at it, and keep only the newest `keep_last`.
    `policy_state`, `reference_state`: the models' full weights (`gather_full_state`), where the modules hold
    only shards; None: the modules' own. Raises CheckpointSaveError (the partial write removed) on an OSError."""
    tmp = begin_write(output_dir, step)
    with save_errors(output_dir, step):
        # copies of the dicts: save_pretrained empties the state dict it is given
        with no_transformers_bars():
            policy.save_pretrained(tmp / "policy", state_dict=_copy(policy_state), safe_serialization=True)
            tokenizer.save_pretrained(tmp / "policy")
            if reference is not None:
                reference.save_pretrained(
                    tmp / "reference", state_dict=_copy(reference_state), safe_serialization=True
                )
        torch.save(state, tmp / "state.pt")
    return commit(output_dir, step, keep_last)


def temp_dir(output_dir: str | Path, step: int) -> Path:
    """Where checkpoint `step` is written before `commit` renames it into place."""
    return Path(output_dir) / "checkpoints" / f".tmp-{step_name(step)}"


@contextmanager
def save_errors(output_dir: str | Path, step: int, also: tuple[type[BaseException], ...] = ()):
    """Inside: an OSError (or torch.save's RuntimeError for a full disk, or one of `also`) while writing checkpoint
    `step` removes its temp dir and becomes a one-line CheckpointSaveError, which says that the previous checkpoint
    is intact."""
    try:
        yield
    except (OSError, RuntimeError, *also) as e:
        shutil.rmtree(temp_dir(output_dir, step), ignore_errors=True)
        reason = os.strerror(e.errno) if isinstance(e, OSError) and e.errno else (str(e) or type(e).__name__)
        raise CheckpointSaveError(
            f"could not write checkpoint {step_name(step)} in {Path(output_dir) / 'checkpoints'}: "
            f"{reason.splitlines()[0]}; the previous checkpoint ({find_latest(output_dir) or 'none'}) is intact"
        ) from None


def begin_write(output_dir: str | Path, step: int) -> Path:
    """A new, empty temp dir for checkpoint `step` (one left by a crash is removed)."""
    tmp = temp_dir(output_dir, step)
    with save_errors(output_dir, step):
        tmp.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    return tmp


def remove_stale_writes(output_dir: str | Path) -> list[Path]:
    """Remove the `.tmp-step_*` dirs of writes a crash interrupted, and return them. Call only when no save is in
    flight, as at a run's start (a save needs a trained step, which needs every rank past its start)."""
    root = Path(output_dir) / "checkpoints"
    stale = sorted(root.glob(".tmp-step_*")) if root.is_dir() else []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def commit(output_dir: str | Path, step: int, keep_last: int) -> Path:
    """Make the written temp dir of checkpoint `step` the checkpoint: its manifest, everything synced to disk, the
    rename to step_N, `latest` pointed at it, and only the newest `keep_last` kept. Returns its path."""
    root, tmp = Path(output_dir) / "checkpoints", temp_dir(output_dir, step)
    final = root / step_name(step)
    with save_errors(output_dir, step):
        write_manifest(tmp)
        _fsync_tree(tmp)
    if final.exists():  # re-saving the same step (e.g. after a resume): replace it
        shutil.rmtree(final)
    tmp.rename(final)
    _fsync_dir(root)
    latest_tmp = root / f".{LATEST}.tmp"
    latest_tmp.write_text(final.name + "\n")
    with latest_tmp.open("rb") as f:
        os.fsync(f.fileno())
    latest_tmp.replace(root / LATEST)
    _fsync_dir(root)
    for old in sorted(root.glob("step_*"))[:-keep_last]:
        shutil.rmtree(old)
    return final


def record_digests(directory: Path, names: list[str], writer: int) -> None:
    """Record the size and sha256 of the files `names` in `directory` that process `writer` just wrote, so that
    the manifest need not read them again (`RECORDED`; a sharded checkpoint's ranks each record their shard)."""
    digests = {
        n: {"bytes": (directory / n).stat().st_size, "sha256": hashing.file_sha256(directory / n)}
        for n in names
    }
    (directory / RECORDED.format(writer)).write_text(json.dumps(digests))


def _recorded(checkpoint_dir: Path) -> dict[str, dict]:
    """The digests that writers recorded under `checkpoint_dir`, keyed by path relative to it."""
    found: dict[str, dict] = {}
    for record in checkpoint_dir.rglob(RECORDED.format("*")):
        for name, digest in json.loads(record.read_text()).items():
            found[str((record.parent / name).relative_to(checkpoint_dir))] = digest
    return found


def write_manifest(checkpoint_dir: Path) -> None:
    """manifest.json: {relative path: {"bytes": size, "sha256": digest}} for every file of the checkpoint; a
    file whose writer recorded its digest (`record_digests`) is not read again if its size still matches."""
    files = sorted(p for p in checkpoint_dir.rglob("*") if p.is_file() and p.name != MANIFEST)
    recorded = _recorded(checkpoint_dir)
    manifest = {}
    for p in files:
        name, size = str(p.relative_to(checkpoint_dir)), p.stat().st_size
        known = recorded.get(name)
        manifest[name] = (
            known if known and known["bytes"] == size else {"bytes": size, "sha256": file_sha256(p)}
        )
    (checkpoint_dir / MANIFEST).write_text(json.dumps({"files": manifest}, indent=1) + "\n")


def verify_checkpoint(checkpoint_dir: str | Path) -> str | None:
    """What is wrong with a checkpoint (naming the file), or None when every file its manifest lists is there
    with its size and sha256. A checkpoint from before manifests is checked for its two essential files."""
    path = Path(checkpoint_dir)
    try:
        listed = json.loads((path / MANIFEST).read_text())["files"]
    except FileNotFoundError:
        listed = None
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{path / MANIFEST} is unreadable ({type(e).__name__})"
    if listed is None:  # written before manifests
        for name in ("state.pt", "policy/model.safetensors"):
            if not (path / name).is_file() and not (
                name.endswith(".safetensors") and _sharded(path / "policy")
            ):
                return f"{path / name} is missing"
        return None
    for name, want in listed.items():
        file = path / name
        if not file.is_file():
            return f"{file} is missing"
        size = file.stat().st_size
        if size != want["bytes"]:
            return f"{file} has {size} bytes, {want['bytes']} were written"
        if file_sha256(file) != want["sha256"]:
            return f"{file} does not match its sha256 (its bytes changed after the save)"
    return None


def _sharded(policy_dir: Path) -> bool:
    return (policy_dir / "model.safetensors.index.json").is_file()


def find_resumable(output_dir: str | Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """(the newest checkpoint that verifies or None, [(damaged checkpoint, what is wrong)] newer than it): the
    `latest` pointer's checkpoint first, then the others from the newest."""
    root = Path(output_dir) / "checkpoints"
    first = find_latest(output_dir)
    others = sorted(root.glob("step_*"), reverse=True) if root.is_dir() else []
    damaged = []
    for candidate in dict.fromkeys(([first] if first else []) + others):
        if not candidate.is_dir():
            continue
        problem = verify_checkpoint(candidate)
        if problem is None:
            return candidate, damaged
        damaged.append((candidate, problem))
    return None, damaged


def _copy(state: dict | None) -> dict | None:
    return None if state is None else dict(state)


def find_latest(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run dir, or None."""
    root = Path(output_dir) / "checkpoints"
    pointer = root / LATEST
    if pointer.exists():
        name = pointer.read_text().strip()
        # only a complete step dir counts: never checkpoints/ itself (empty pointer) or a .tmp-* dir
        if re.fullmatch(r"step_\d+", name) and (root / name).is_dir():
            return root / name
    complete = sorted(root.glob("step_*")) if root.is_dir() else []
    return complete[-1] if complete else None


def load_state(checkpoint_dir: str | Path) -> dict[str, Any]:
    # Our own file, holding only tensors and plain Python values; weights come from safetensors.
    return torch.load(Path(checkpoint_dir) / "state.pt", map_location="cpu", weights_only=False)


def gather_full_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """(weights, optimizer state) of `model` whole, on rank 0, on CPU; empty dicts on the other ranks. A
    collective: every rank calls it (under FSDP2 and ZeRO-3 each tensor is gathered from its shards).

    `model` is the module whose parameters `optimizer` holds, without wrappers (the learner's `unwrapped`).
    The optimizer state is keyed by parameter name (torch.distributed.checkpoint's full state dict), not by
    position: the names are the model's own whether it was plain, DDP-wrapped or sharded. Tensors of an
    unsharded CPU model may be its live ones: save them, do not change them."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    if zero3.is_zero3(model):
        return zero3.gather_full_state(model, with_optimizer=optimizer is not None)
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = _whole(get_model_state_dict(model, options=options))
    if weights:
        # tied weights (one parameter under two names) were gathered twice: one tensor again, which
        # save_pretrained then writes once, as it does for the model itself
        first: dict[int, str] = {}
        for name, tensor in model.state_dict(keep_vars=True).items():
            first.setdefault(id(tensor), name)
            weights[name] = weights[first[id(tensor)]]
    if optimizer is None:
        return weights, None
    fresh = not optimizer.state
    state = get_optimizer_state_dict(model, optimizer, options=options)
    if fresh:
        # to learn the state's layout torch.distributed.checkpoint took a zero-lr step: undone, or Adam's next
        # step would count as its second
        optimizer.state.clear()
        state = {**state, "state": {}} if state else state
    return weights, _whole(state)


def _whole(tree):
    """`tree` with any DTensor left in it replaced by its full tensor on CPU (a collective, in the same order
    on every rank: the trees have the same keys). torch's full state dicts should hold none, but one came back
    under accelerate's FSDP2 on one GPU."""
    from torch.distributed.tensor import DTensor

    if isinstance(tree, DTensor):
        return tree.full_tensor().cpu()
    if isinstance(tree, dict):
        return {k: _whole(v) for k, v in tree.items()}
    return tree


def _keyed_by_name(optimizer_state: dict[str, Any]) -> bool:
    return all(isinstance(p, str) for group in optimizer_state["param_groups"] for p in group["params"])


def load_optimizer_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """Load `gather_full_state`'s optimizer state into `optimizer` over `model` (as there), at any world size
    and sharding; under a process group rank 0's copy is the one loaded everywhere. A collective. Checkpoints
    from before it hold `optimizer.state_dict()` (keyed by position, never sharded): loaded as they are."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    if not _keyed_by_name(state):
        if dist.is_sharded(model) or zero3.is_zero3(model):
            raise ValueError(
                "this checkpoint's optimizer state is keyed by position (written before sharded checkpoints): "
                "resume it once unsharded (DDP or 1 process), then continue from the next checkpoint sharded"
            )
        optimizer.load_state_dict(state)
        return
    if zero3.is_zero3(model):
        zero3.load_optimizer_state(model, state)
        return
    # a fresh (empty) state has nothing for each parameter: not strict
    options = StateDictOptions(
        full_state_dict=True, broadcast_from_rank0=dist.active(), strict=bool(state["state"])
    )
    set_optimizer_state_dict(model, optimizer, state, options=options)
    if not state["state"]:
        optimizer.state.clear()  # the zero-lr step it took to learn the layout must not count as one


def load_full_state(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Load full weights (each rank holds them) into `model`, sharded or not; each rank keeps its shard. Not for
    a ZeRO-3 policy, whose fp32 masters this would leave behind (`Learner.restore`)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    if zero3.is_zero3(model):
        zero3.load_weights(model, weights)
        return
    # a copy: set_model_state_dict replaces the dict's values by the DTensor shards it makes of them
    set_model_state_dict(model, dict(weights), options=StateDictOptions(full_state_dict=True))
